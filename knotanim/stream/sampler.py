"""Flow-matching sampling schedule: x_t = (1 - t) x_0 + t * noise, the model predicts v = noise - x_0."""
from __future__ import annotations

import torch


def sampling_times(steps: int, shift: float) -> list[float]:
    """steps + 1 times from 1 (pure noise) to 0 (clean), shifted towards high noise when shift > 1."""
    times = []
    for i in range(steps + 1):
        u = 1.0 - i / steps
        times.append(shift * u / (1.0 + (shift - 1.0) * u))
    return times


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Training-time interpolation. t broadcasts against x0 (e.g. [B, F, 1, 1, 1])."""
    return (1.0 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def shift_time(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Map uniform u in [0, 1] to the shifted time used at sampling, for training-time sampling of t."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def share_noise(noise: torch.Tensor, correlation: float | torch.Tensor, frame_dim: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """noise (N(0, I)) with a part common along `frame_dim` mixed in: sqrt(1 - c) * noise + sqrt(c) * shared, so
    each frame's noise stays N(0, I) and two frames' correlate by c. `correlation` is a number or a map that
    broadcasts over the last dimensions ([size, size] per latent cell: `noise_correlation_map`); c = 0
    everywhere returns `noise` itself and draws nothing. The shared part is drawn from `generator` (on its
    device, then moved) or, without one, on noise's device."""
    c = torch.as_tensor(correlation)
    if not bool((c > 0).any()):  # checked where the map lives (the CPU): no wait for a GPU
        return noise
    c = c.to(device=noise.device, dtype=noise.dtype)
    shape = list(noise.shape)
    shape[frame_dim] = 1
    shared = (torch.randn(shape, generator=generator, dtype=noise.dtype).to(noise.device) if generator is not None
              else torch.randn(shape, dtype=noise.dtype, device=noise.device))
    return (1 - c).sqrt() * noise + c.sqrt() * shared
