"""The state a stream carries between chunks, each of a fixed size for the life of the stream."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class ReferenceCache:
    """Per-layer K/V of the reference frame: [Lyr, B, H, P, Dh] each. Recomputed only on a swap.

    render: what the frame codec needs of the reference to make frames (the warp codec's
    `WarpReference`); None for a codec that decodes from the latents alone."""

    k: torch.Tensor
    v: torch.Tensor
    render: Any = None


class HistoryRing:
    """K/V of the last L committed frames in a preallocated ring; written in place, never grown.

    Slot of absolute frame f is f mod L. Keys are stored un-rotated in time; `relative_positions`
    gives each slot's frame position relative to a chunk start, for rotation at read time.
    """

    def __init__(self, layers: int, batch: int, heads: int, window: int, tokens_per_frame: int, head_dim: int,
                 device, dtype):
        self.window, self.tokens = window, tokens_per_frame
        shape = (layers, batch, heads, window * tokens_per_frame, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.frame = np.full(window, -1, dtype=np.int64)  # absolute frame index per slot
        self.valid = np.zeros(window, dtype=bool)

    def clear(self) -> None:
        self.k.zero_()
        self.v.zero_()
        self.frame[:] = -1
        self.valid[:] = False

    def write(self, first_frame: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store committed frames first_frame .. first_frame + n - 1. k, v: [Lyr, B, H, n*P, Dh]."""
        if self.window == 0:
            return
        n = k.shape[3] // self.tokens
        for i in range(max(0, n - self.window), n):  # only the last L frames can survive
            f = first_frame + i
            slot = f % self.window
            dst = slice(slot * self.tokens, (slot + 1) * self.tokens)
            src = slice(i * self.tokens, (i + 1) * self.tokens)
            self.k[:, :, :, dst].copy_(k[:, :, :, src])
            self.v[:, :, :, dst].copy_(v[:, :, :, src])
            self.frame[slot] = f
            self.valid[slot] = True

    def relative_positions(self, chunk_start: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """([L] float positions relative to chunk_start, [L] bool valid)."""
        rel = np.where(self.valid, self.frame - chunk_start, 0).astype(np.float32)
        return torch.from_numpy(rel).to(device), torch.from_numpy(self.valid.copy()).to(device)

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


@dataclass
class KnotState:
    """The frame carried across a chunk boundary: the last denoised, not yet committed latent."""

    latent: torch.Tensor  # [B, c, h, w]
    valid: bool = False

    def mask(self, device) -> torch.Tensor:
        return torch.full((self.latent.shape[0],), 1.0 if self.valid else 0.0, device=device)
