"""3D rotary position embedding split into a temporal and a spatial part.

The head dimension is split into (time, height, width) segments (`ModelConfig.rope_dims`); each
segment is rotated with the rotate-half convention (dims i and i + half of the segment form a
pair). The spatial part is fixed for a token's place in its frame, so it is applied once when keys
are made. The temporal part is applied separately, at read time, from a position passed with each
read: that is what lets the stream cache keys un-rotated in time and move the reference
("running ahead") for free, with positions relative to the current chunk so they stay small.

Because the segments are disjoint, any combination of the three rotations is one elementwise
operation: x * cos + partner(x) * signed_sin, with tables over the full head dim (cos = 1, sin = 0
where a segment is not rotated). One permutation and two multiplies per call, whatever is rotated.

partner(x) swaps the two halves of each segment. It is a split and a cat (plain copies), not an
index `x[..., partner]`: the backward of an index is an accumulating index_put, whose CUDA kernel
(indexing_backward_kernel) took 43% of the GPU time of an eager training step on an H200 (three
rotations per block, in the reference pass and the sequence pass); the cat's backward is one copy.
Same values and gradients, bit for bit (`tests/test_rope.py`).
"""
from __future__ import annotations

import torch


def rope_frequencies(dim: int, theta: float, device=None) -> torch.Tensor:
    """[dim/2] angular frequencies for one axis."""
    return theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


class Rope3D(torch.nn.Module):
    """Rotations for tokens laid out frame-major, P = grid * grid tokens per frame."""

    def __init__(self, dims: tuple[int, int, int], theta: float, grid: int):
        super().__init__()
        self.t_dim, self.h_dim, self.w_dim = dims
        self.pair_sizes = tuple(seg // 2 for seg in dims)  # pairs per segment: head dims / 2
        self.half_sizes = tuple(h for h in self.pair_sizes for _ in (0, 1))  # (t1, t2, h1, h2, w1, w2)
        sign = [s for h in self.pair_sizes for s in [-1.0] * h + [1.0] * h]  # first half -, second +
        self.register_buffer("sign", torch.tensor(sign), persistent=False)
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        spatial = torch.cat((torch.zeros(grid * grid, self.t_dim // 2),
                             ys.reshape(-1, 1).float() * rope_frequencies(self.h_dim, theta),
                             xs.reshape(-1, 1).float() * rope_frequencies(self.w_dim, theta)), dim=1)
        self.register_buffer("spatial_angles", spatial, persistent=False)  # [P, Dh/2] per pair
        self.register_buffer("t_freqs", rope_frequencies(self.t_dim, theta), persistent=False)

    def _temporal_angles(self, token_positions: torch.Tensor) -> torch.Tensor:
        """[..., N] positions -> [..., N, Dh/2] pair angles (zero outside the time segment)."""
        t = token_positions.float().unsqueeze(-1) * self.t_freqs
        pad = self.spatial_angles.shape[1] - t.shape[-1]
        return torch.nn.functional.pad(t, (0, pad))

    def _spatial_for(self, n_tokens: int) -> torch.Tensor:
        return self.spatial_angles.repeat(n_tokens // self.spatial_angles.shape[0], 1)

    def _partner(self, x: torch.Tensor) -> torch.Tensor:
        """x with the halves of each segment swapped: dim i of a segment gets dim i + half and back."""
        halves = x.split(self.half_sizes, dim=-1)
        return torch.cat([halves[i ^ 1] for i in range(len(halves))], dim=-1)

    def _per_dim(self, pair_angles: torch.Tensor) -> torch.Tensor:
        """[..., Dh/2] pair angles -> [..., Dh]: each segment's pair angles, for its first then second half."""
        return torch.cat([a for a in pair_angles.split(self.pair_sizes, dim=-1) for _ in (0, 1)], dim=-1)

    def _rotate(self, x: torch.Tensor, pair_angles: torch.Tensor) -> torch.Tensor:
        """x: [B, H, N, Dh]; pair_angles: [N, Dh/2] or [B, N, Dh/2]."""
        if pair_angles.dim() == 3:
            pair_angles = pair_angles.unsqueeze(1)
        angles = self._per_dim(pair_angles)
        xf = x.float()
        return (xf * angles.cos() + self._partner(xf) * (angles.sin() * self.sign)).to(x.dtype)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate the height and width segments of x: [B, H, F*P, Dh]."""
        return self._rotate(x, self._spatial_for(x.shape[-2]))

    def temporal(self, x: torch.Tensor, token_positions: torch.Tensor) -> torch.Tensor:
        """Rotate the time segment; token_positions: [N] float frame positions, or [B, N]."""
        return self._rotate(x, self._temporal_angles(token_positions))

    def spatial_temporal(self, x: torch.Tensor, token_positions: torch.Tensor) -> torch.Tensor:
        """Both at once (equal to temporal(spatial(x), pos)); x: [B, H, F*P, Dh] frame-major."""
        return self._rotate(x, self._spatial_for(x.shape[-2]) + self._temporal_angles(token_positions))
