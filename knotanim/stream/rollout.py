"""The per-chunk loop shared by the live stream and by self-rollout training.

`ChunkLoop` owns what carries over from one chunk to the next (the history ring, the knot, the
running-ahead schedule, the chunk counter) and advances by one chunk through any callable with
the ChunkStep signature (a ChunkStep, or a backend's `run`). `KnotStream` wraps it with audio
buffering and decoding; `rollout_latents` runs it for a batch of training clips in lock-step, so
stage 3 conditions the model on its own history exactly as the stream does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from knotanim.config import KnotAnimConfig
from knotanim.model.layout import RunAhead
from knotanim.stream.caches import HistoryRing, KnotState, ReferenceCache
from knotanim.stream.sampler import share_noise
from knotanim.stream.step import ChunkStep


class ChunkLoop:
    def __init__(self, config: KnotAnimConfig, batch: int, knot: bool, run_ahead: RunAhead, device, dtype):
        m, s = config.model, config.stream
        self.chunk, self.span, self.knot_enabled, self.run_ahead = s.chunk, run_ahead.span, knot, run_ahead
        self.device = device
        self.ring = HistoryRing(m.depth, batch, m.heads, s.window, config.tokens_per_frame, m.width // m.heads,
                                device, dtype)
        c, size = config.autoencoder.latent_channels, config.latent_size
        self.knot = KnotState(torch.zeros(batch, c, size, size, device=device))
        self.chunk_index = 0

    @property
    def chunk_start(self) -> int:
        return self.chunk_index * self.chunk

    def clear(self) -> None:
        self.ring.clear()
        self.knot.valid = False
        self.chunk_index = 0

    def advance(self, run, reference: ReferenceCache, audio: torch.Tensor, noise: torch.Tensor,
                motion: torch.Tensor) -> torch.Tensor:
        """One chunk. audio [B, F, n_mels, W], noise [B, F, c, h, w], motion [B] -> committed [B, C, c, h, w]."""
        s, dev = self.chunk_start, self.device
        hist_pos, hist_valid = self.ring.relative_positions(s, dev)
        ref_pos = torch.tensor(float(self.run_ahead.relative(s)), device=dev)
        committed, next_knot, new_k, new_v = run(reference.k, reference.v, self.ring.k, self.ring.v, hist_pos,
                                                 hist_valid, self.knot.latent, self.knot.mask(dev), ref_pos,
                                                 audio, noise, motion)
        self.ring.write(s, new_k, new_v)
        if self.knot_enabled:
            self.knot.latent.copy_(next_knot)
            self.knot.valid = True
        self.chunk_index += 1
        return committed


@dataclass
class Rollout:
    committed: torch.Tensor  # [B, n_chunks * C, c, h, w] generated committed latents
    knots: torch.Tensor  # [B, n_chunks, c, h, w]: the knot chunk j was conditioned on (zeros for j = 0)


@torch.no_grad()
def rollout_latents(step: ChunkStep, ref_latent: torch.Tensor, audio: torch.Tensor, motion: torch.Tensor,
                    n_chunks: int, knot: bool, run_ahead: RunAhead,
                    generator: torch.Generator | None = None,
                    noise_correlation: float | torch.Tensor = 0.0) -> Rollout:
    """ref_latent [B, c, h, w]; audio [B, T, n_mels, W] with T >= (n_chunks - 1) * C + F; motion [B].
    noise_correlation: each chunk's starting noise shares that part across its frames, as the stream draws it
    (knotanim.stream.sampler.share_noise; a number or a [h, w] map)."""
    model = step.model
    ks, vs = model.reference_kv(ref_latent)
    reference = ReferenceCache(torch.stack(ks), torch.stack(vs))
    B, dev = ref_latent.shape[0], ref_latent.device
    loop = ChunkLoop(model.cfg, B, knot, run_ahead, dev, reference.k.dtype)
    committed, knots = [], []
    for _ in range(n_chunks):
        s = loop.chunk_start
        shape = (B, loop.span, *ref_latent.shape[1:])
        noise = torch.randn(shape, generator=generator).to(dev) if generator is not None else torch.randn(shape, device=dev)
        noise = share_noise(noise, noise_correlation, 1, generator)
        knots.append(loop.knot.latent.clone() if loop.knot.valid else torch.zeros_like(loop.knot.latent))
        committed.append(loop.advance(step, reference, audio[:, s : s + loop.span], noise, motion))
    return Rollout(torch.cat(committed, 1), torch.stack(knots, 1))
