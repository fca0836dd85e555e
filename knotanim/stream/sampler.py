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
