"""A batched chunk-by-chunk rollout in latent space, as the stream runs it, for self-rollout training.

Training stage 3 conditions the model on its own generated history and knots, exactly as it sees
them at run time. This runs the same ChunkStep the stream runs (reference cache, history ring,
knot, running ahead), for a batch of clips in lock-step, and returns the committed latents and
the knot each chunk was conditioned on. No decoding, no audio buffering: features come whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from knotanim.model.layout import RunAhead
from knotanim.stream.caches import HistoryRing, KnotState
from knotanim.stream.step import ChunkStep


@dataclass
class Rollout:
    committed: torch.Tensor  # [B, n_chunks * C, c, h, w] generated committed latents
    knots: torch.Tensor  # [B, n_chunks, c, h, w]: the knot chunk j was conditioned on (zeros for j = 0)


@torch.no_grad()
def rollout_latents(step: ChunkStep, ref_latent: torch.Tensor, audio: torch.Tensor, motion: torch.Tensor,
                    n_chunks: int, knot: bool, run_ahead: RunAhead, window: int,
                    generator: torch.Generator | None = None) -> Rollout:
    """ref_latent [B, c, h, w]; audio [B, T, n_mels, W] with T >= (n_chunks - 1) * C + F; motion [B]."""
    model = step.model
    cfg = model.cfg
    B, c, h, w = ref_latent.shape
    C, F = step.chunk, run_ahead.span
    dev = ref_latent.device
    ks, vs = model.reference_kv(ref_latent)
    ref_k, ref_v = torch.stack(ks), torch.stack(vs)
    ring = HistoryRing(cfg.model.depth, B, cfg.model.heads, window, model.grid**2, cfg.model.width // cfg.model.heads,
                       dev, ref_k.dtype)
    state = KnotState(torch.zeros(B, c, h, w, device=dev))
    committed, knots = [], []
    for j in range(n_chunks):
        s = j * C
        hist_pos, hist_valid = ring.relative_positions(s, dev)
        noise = torch.randn((B, F, c, h, w), generator=generator, device="cpu" if generator is not None else dev).to(dev)
        knots.append(state.latent.clone() if state.valid else torch.zeros_like(state.latent))
        out, next_knot, new_k, new_v = step(ref_k, ref_v, ring.k, ring.v, hist_pos, hist_valid, state.latent,
                                            state.mask(dev), torch.tensor(float(run_ahead.relative(s)), device=dev),
                                            audio[:, s : s + F], noise, motion)
        ring.write(s, new_k, new_v)
        if knot:
            state.latent.copy_(next_knot)
            state.valid = True
        committed.append(out)
    return Rollout(torch.cat(committed, 1), torch.stack(knots, 1))
