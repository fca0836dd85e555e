"""Where frames sit in time: chunk starts, the running-ahead reference index, and attention masks.

One place for the arithmetic that streaming and full-sequence training must agree on.

Chunk j starts at frame s_j = j * C. It denoises F = C + k frames [s_j, s_j + F); it commits the
first C; with the knot (k = 1) the last frame is carried into chunk j+1, where it sits at
position 0 as image-to-video conditioning. Each chunk attends to the reference, to the last L
committed frames [s_j - L, s_j), and to itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from knotanim.config import StreamConfig


@dataclass(frozen=True)
class RunAhead:
    """The reference's temporal RoPE index as a pure function of the chunk start.

    With running ahead, the index n starts at `start` and, whenever a chunk's end s_j + F passes
    it, advances by whole strides until the chunk ends at or before it: the reference stays a
    future anchor, between F and F + stride - 1 frames ahead of the chunk start. Without it, the
    index stays at `fixed` and the rollout leaves it further behind with every chunk.
    """

    start: int
    stride: int
    span: int  # F: frames denoised per chunk
    enabled: bool = True
    fixed: int = -1

    @classmethod
    def from_config(cls, s: StreamConfig, knot: bool, enabled: bool, start: int | None = None) -> "RunAhead":
        span = s.chunk + (s.knot if knot else 0)
        return cls(start=s.run_ahead_start if start is None else start, stride=s.run_ahead_stride,
                   span=span, enabled=enabled, fixed=s.reference_fixed_position)

    def position(self, chunk_start: int) -> int:
        """Absolute frame index of the reference for the chunk starting at `chunk_start`."""
        if not self.enabled:
            return self.fixed
        behind = chunk_start + self.span - self.start
        if behind <= 0:
            return self.start
        return self.start + self.stride * -(-behind // self.stride)  # ceil division

    def relative(self, chunk_start: int) -> int:
        """Reference index relative to the chunk start: bounded in [span, span + stride) when enabled."""
        return self.position(chunk_start) - chunk_start


@dataclass(frozen=True)
class SequenceLayout:
    """Frame-level layout of a teacher-forced training sequence over `n_chunks` chunks.

    Query frames: the clean committed frames 0..n_chunks*C-1 (their K/V play the history, as the
    stream's cache pass writes them), then every chunk's F noisy frames. Key frames: one reference
    copy per distinct reference index, then the query frames.
    """

    n_chunks: int
    chunk: int  # C
    span: int  # F = C + k
    window: int  # L
    ref_positions: tuple[int, ...]  # per chunk, absolute

    @classmethod
    def build(cls, s: StreamConfig, n_chunks: int, run_ahead: RunAhead) -> "SequenceLayout":
        """The layout of `n_chunks` chunks under `run_ahead`, whose span says whether the knot is on."""
        refs = tuple(run_ahead.position(j * s.chunk) for j in range(n_chunks))
        return cls(n_chunks=n_chunks, chunk=s.chunk, span=run_ahead.span, window=s.window, ref_positions=refs)

    @property
    def n_clean(self) -> int:
        return self.n_chunks * self.chunk

    @property
    def n_frames(self) -> int:
        """Frames of the clip this layout covers (audio and ground truth needed)."""
        return (self.n_chunks - 1) * self.chunk + self.span

    @property
    def ref_copies(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.ref_positions)))

    def query_positions(self) -> torch.Tensor:
        """[n_clean + n_chunks*F] absolute frame index of each query frame."""
        clean = list(range(self.n_clean))
        noisy = [j * self.chunk + o for j in range(self.n_chunks) for o in range(self.span)]
        return torch.tensor(clean + noisy, dtype=torch.float32)

    def frame_mask(self) -> torch.Tensor:
        """[Q, R + Q] bool, True where query frame may attend to key frame (R reference copies)."""
        C, F, L = self.chunk, self.span, self.window
        copies = self.ref_copies
        n_q = self.n_clean + self.n_chunks * F
        mask = torch.zeros(n_q, len(copies) + n_q, dtype=torch.bool)
        R = len(copies)
        for j in range(self.n_chunks):
            s = j * C
            ref_col = copies.index(self.ref_positions[j])
            hist = slice(R + max(0, s - L), R + s)
            clean_rows = slice(s, s + C)
            noisy_rows = slice(self.n_clean + j * F, self.n_clean + (j + 1) * F)
            for rows in (clean_rows, noisy_rows):
                mask[rows, ref_col] = True
                mask[rows, hist] = True
            mask[clean_rows, R + s : R + s + C] = True
            mask[noisy_rows, R + self.n_clean + j * F : R + self.n_clean + (j + 1) * F] = True
        return mask


def expand_frame_mask(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """[Qf, Kf] frame mask -> [Qf*P, Kf*P] token mask."""
    p = tokens_per_frame
    return frame_mask.repeat_interleave(p, 0).repeat_interleave(p, 1)
