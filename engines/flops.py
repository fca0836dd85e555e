"""FLOPs of the streaming step, from a model config alone (no weights, no tracing).

`frame_flops(cfg, steps)`: matmul FLOPs (2 per multiply-add) the DiT spends per generated frame:
each chunk runs `steps` denoising calls over its C frames plus the knot, and one cache pass over
the C frames, every call attending to the reference, the history ring and itself. Only the
transformer blocks are counted (Q/K/V and output projections, the MLP, attention, audio
cross-attention); the embeddings and the frame decoder are left out, so this is a little below
the true work. The start-up choice compares profiles with it (knotanim.profiles), and, where nothing
is measured yet on a CPU, against `matmul_rate`, the device's measured matmul FLOP/s.
"""
from __future__ import annotations

from typing import Any


def call_flops(cfg: Any, frames: int, extra_keys: int) -> float:
    """FLOPs of the transformer blocks in one DiT call over `frames` frames, batch 1, with `extra_keys`
    cached keys (reference + ring) besides the call's own tokens."""
    m = cfg.model
    d, hidden = m.width, int(m.width * m.mlp_ratio)
    n = frames * cfg.tokens_per_frame  # query tokens
    linear = n * (2 * 4 * d * d + 2 * 2 * d * hidden)  # q, k, v, output projection; MLP in and out
    attention = 4 * n * (extra_keys + n) * d  # QK^T and AV over all heads (heads x head dim = width)
    if getattr(m, "audio_attention", False):  # each frame's tokens attend to its window of audio tokens
        w, ad = cfg.audio_window, m.audio_attention_dim
        linear += 2 * n * d * ad * 2 + 2 * frames * w * ad * 2 * ad  # q and output; k, v
        attention += 4 * n * w * ad
    return float(m.depth * (linear + attention))


def frame_flops(cfg: Any, steps: int | None = None, knot: bool = True) -> float:
    """DiT FLOPs per generated frame at `steps` sampler steps (None: the model's)."""
    st = cfg.stream
    s = steps or cfg.sampler.steps
    p = cfg.tokens_per_frame
    extra = p + st.window * p  # the reference frame and the full history ring
    denoise = call_flops(cfg, st.chunk + (st.knot if knot else 0), extra)
    cache = call_flops(cfg, st.chunk, extra)
    return (s * denoise + cache) / st.chunk


def matmul_rate(device: Any = "cpu", dtype: Any = None, seconds: float = 0.1, n: int = 512) -> float:
    """The best FLOP/s of an (n x 2n) @ (2n x 2n) matmul on `device` in `dtype` (None: float32) over about
    `seconds`: the most this device's torch threads can multiply, a ceiling for any model's rate."""
    import time

    import torch

    dtype = dtype or torch.float32
    # Any values multiply at the same speed (no denormals here); torch's random generator is left alone.
    a = torch.full((n, 2 * n), 0.5, device=device, dtype=dtype)
    b = torch.full((2 * n, 2 * n), 0.25, device=device, dtype=dtype)
    a @ b  # first call: allocation, kernel choice
    best, end = 0.0, time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n * 2 * n * 2 * n / max(time.perf_counter() - t0, 1e-9))
        if time.perf_counter() >= end:
            return best
