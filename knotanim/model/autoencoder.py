"""Frame autoencoders: frames <-> per-frame latents.

Any module with `encode(frames) -> latents` and `decode(latents) -> frames` fits; frames are
float [B, 3, H, W] in [-1, 1], latents [B, c, H/f, W/f] scaled to roughly unit variance (the
`latent_mean`/`latent_std` buffers are measured after autoencoder training).

- `ConvAutoencoder`: learned, small residual conv encoder/decoder (the default).
- `PixelAutoencoder`: space-to-depth, no weights; c must be 3 * f^2. Useful for tests and as a
  baseline.
- `knotanim.model.warp.WarpCodec`: motion latents; frames made by warping the reference's pixels.

Every codec has `prepare_reference(image)` (what decoding needs of the reference: None for the two
here, which decode from the latents alone) and `decode(latents, dtype=None, reference=None)`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from knotanim.config import AutoencoderConfig


def frames_to_tensor(frames: np.ndarray, device=None, dtype=torch.float32) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device=device)
    return (t.movedim(-1, -3).to(dtype) / 127.5 - 1.0)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(32, cin // 4) or 1, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(32, cout // 4) or 1, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class ConvAutoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        n_down = int(round(np.log2(cfg.factor)))
        if 2**n_down != cfg.factor or len(cfg.channel_mult) != n_down + 1:
            raise ValueError("conv autoencoder needs factor = 2**n and len(channel_mult) = n + 1")
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        enc: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        for i in range(n_down):
            enc += [ResBlock(widths[i], widths[i]), nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1)]
        enc += [ResBlock(widths[-1], widths[-1]), nn.GroupNorm(min(32, widths[-1] // 4), widths[-1]), nn.SiLU(),
                nn.Conv2d(widths[-1], cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1), ResBlock(widths[-1], widths[-1])]
        for i in reversed(range(n_down)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[i + 1], widths[i], 3, padding=1),
                    ResBlock(widths[i], widths[i])]
        dec += [nn.GroupNorm(min(32, widths[0] // 4), widths[0]), nn.SiLU(), nn.Conv2d(widths[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    def encode_raw(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        z = self.encode_raw(frames)
        return (z - self.latent_mean.view(1, -1, 1, 1)) / self.latent_std.view(1, -1, 1, 1)

    def prepare_reference(self, image: torch.Tensor) -> None:
        """Nothing: this codec decodes from the latents alone."""
        return None

    def reconstruct(self, frames: torch.Tensor, reference: torch.Tensor | None = None):
        """Training: frames [N, 3, H, W] -> (decoded frames, None, raw latents); the reference is not used."""
        z = self.encode_raw(frames)
        return self.decode_raw(z), None, z

    def decode(self, latents: torch.Tensor, dtype: torch.dtype | None = None, reference: None = None) -> torch.Tensor:
        """Normalised latents [N, c, h, w] -> float frames [N, 3, H, W] (inference; training calls decode_raw).
        On a CPU the convolutions run channels-last (NHWC; oneDNN's fast layout, what Inductor picks when it
        compiles the decoder): the lite decoder takes about a fifth less time eagerly, same values within float
        rounding; the frames come back channels-last. dtype bfloat16: the convolutions run in bf16 (autocast;
        the weights stay float32), as the DiT does in a bf16 animator: the shipped decoders' uint8 frames differ
        from float32's by at most a level or two (docs/benchmarks.md); any other dtype: float32."""
        z = latents * self.latent_std.view(1, -1, 1, 1) + self.latent_mean.view(1, -1, 1, 1)
        if z.device.type == "cpu" and z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        if dtype == torch.bfloat16:
            with torch.autocast(z.device.type, dtype=torch.bfloat16):
                return self.decode_raw(z).float()
        return self.decode_raw(z)


class PixelAutoencoder(nn.Module):
    """Lossless space-to-depth: [B, 3, H, W] -> [B, 3 f^2, H/f, W/f]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        if cfg.latent_channels != 3 * cfg.factor**2:
            raise ValueError(f"pixel autoencoder needs latent_channels = 3 * factor^2 = {3 * cfg.factor ** 2}")
        self.factor = cfg.factor

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(frames, self.factor)

    def prepare_reference(self, image: torch.Tensor) -> None:
        return None

    def decode(self, latents: torch.Tensor, dtype: torch.dtype | None = None, reference: None = None) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.factor)  # exact: no arithmetic for a dtype to change
