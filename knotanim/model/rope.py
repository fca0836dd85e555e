"""3D rotary position embedding split into a temporal and a spatial part.

The head dimension is split into (time, height, width) segments (`ModelConfig.rope_dims`). The
spatial part is fixed for a token's place in its frame, so it is applied once when keys are made.
The temporal part is applied separately, at read time, from a position passed with each read:
that is what lets the stream cache keys un-rotated in time and move the reference ("running
ahead") for free, with positions relative to the current chunk so they stay small forever.
"""
from __future__ import annotations

import torch


def rope_frequencies(dim: int, theta: float, device=None) -> torch.Tensor:
    """[dim/2] angular frequencies for one axis."""
    return theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


def rotate(x: torch.Tensor, angles: torch.Tensor, offset: int) -> torch.Tensor:
    """Rotate the segment x[..., offset : offset + 2*len] by `angles` (rotate-half convention).

    x: [..., D]; angles: broadcastable to [..., len]. Returns a new tensor; other dims untouched.
    """
    half = angles.shape[-1]
    seg = x[..., offset : offset + 2 * half].float()
    a, b = seg[..., :half], seg[..., half:]
    cos, sin = angles.cos(), angles.sin()
    rotated = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).to(x.dtype)
    return torch.cat((x[..., :offset], rotated, x[..., offset + 2 * half :]), dim=-1)


class Rope3D(torch.nn.Module):
    """Holds the per-axis frequencies and the spatial angles of one frame's token grid."""

    def __init__(self, dims: tuple[int, int, int], theta: float, grid: int):
        super().__init__()
        self.t_dim, self.h_dim, self.w_dim = dims
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        h_angles = ys.reshape(-1, 1).float() * rope_frequencies(self.h_dim, theta)  # [P, h/2]
        w_angles = xs.reshape(-1, 1).float() * rope_frequencies(self.w_dim, theta)  # [P, w/2]
        self.register_buffer("h_angles", h_angles, persistent=False)
        self.register_buffer("w_angles", w_angles, persistent=False)
        self.register_buffer("t_freqs", rope_frequencies(self.t_dim, theta), persistent=False)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, F*P, Dh] with tokens frame-major; rotate the height and width segments."""
        n_frames = x.shape[-2] // self.h_angles.shape[0]
        h = self.h_angles.repeat(n_frames, 1)
        w = self.w_angles.repeat(n_frames, 1)
        x = rotate(x, h, self.t_dim)
        return rotate(x, w, self.t_dim + self.h_dim)

    def temporal(self, x: torch.Tensor, token_positions: torch.Tensor) -> torch.Tensor:
        """x: [B, H, N, Dh]; token_positions: [N] float frame positions, or [B, N]."""
        angles = token_positions.float().unsqueeze(-1) * self.t_freqs  # [(B,) N, t/2]
        if angles.dim() == 3:
            angles = angles.unsqueeze(1)  # [B, 1, N, t/2]
        return rotate(x, angles, 0)
