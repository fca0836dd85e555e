#!/usr/bin/env python
"""Same-work benchmark (issue #7, benchmark 2): a Wan2.1-1.3B-shaped causal DiT run as Self Forcing runs it.

Self-contained: our own compact Wan-like block (adaLN modulation from a per-frame timestep,
self-attention with q/k RMSNorm and 3D RoPE over a KV cache, text cross-attention, GELU FFN),
random weights, no model files. One chunk = `steps` denoising calls over `chunk` latent frames plus
one cache-write call on the clean chunk (timestep 0), each attending to cache + chunk.

Workloads: clip: 21 latent frames in 7 chunks, cache 0..18 frames before each chunk (81 video
frames, as Self Forcing counts them); steady: a 21-frame window (18 cached + 3 new) in a ring
buffer of fixed size, 4 video frames per latent frame. VAE decode and text encoding are excluded;
the text K/V of cross-attention are computed once per prompt (as Self Forcing caches them).

Variants: eager (PyTorch SDPA), compile (torch.compile of everything but the cache read/write and
self-attention call), graphs (compile + CUDA graphs, preallocated in-place cache, one graph per cache
length for clip, one for steady), fp8 (graphs + torch._scaled_mm per-tensor scales; Hopper+), cudnn
(graphs with every scaled_dot_product_attention call, self and cross, restricted to cuDNN's fused
attention, SDPBackend.CUDNN_ATTENTION, during compilation, capture and replay), fp8-cudnn (fp8 linears +
cuDNN attention), fp8-flex (fp8 linears + the self-attention in FP8 through a compiled FlexAttention: q, k and v
cast to float8_e4m3 with per-tensor scales computed on the device each call, the scales applied to the scores
(score_mod) and the output; the text cross-attention stays bf16 SDPA; its error against eager is in the
table), fp8-flex16 (the same with q, k and v in bf16: FlexAttention's own speed against SDPA's, apart from FP8's), triton
(graphs with the self-attention through our Triton kernel, benchmarks/triton_attention.py, in bf16), fp8-triton (fp8
linears, the KV cache stored in FP8 with a scale per key, written once per pass as each chunk's keys enter it, and
the Triton kernel's FP8 path: q quantized in the kernel, p @ v in FP8), fp8-triton-h (the same with one scale per
head, set from each layer's first keys and then fixed: one multiply per score fewer; the cache written by one fused
Triton kernel, triton_attention.write_fp8_keys), fp8s and fp8s-triton-h (fp8 and fp8-triton-h with each linear's activation scale calibrated
once on two random chunks and then fixed, so its cast fuses into the kernel that made the input instead of a
maximum and a cast of their own), fp8s-triton-f (fp8s-triton-h with the q/k RMSNorms + RoPE and the FFN's GELU +
FP8 cast each one Triton kernel, benchmarks/triton_fused.py; compiled around them). The cuDNN variants run only
where a tiny SDPA call under that backend succeeds on the
device; elsewhere (CPU, an older GPU or torch, the backend raising) they are listed as skipped with the
reason. Switching the attention backend clears torch.compile's caches (torch._dynamo.reset): the compiled
code does not guard on the backend, so it would otherwise reuse the previous variant's kernels.

Each run records the 1-minute load average at its start (LOADAVG_FILE, default /proc/loadavg) and the
CPU count, so a run timed on a busy machine can be told apart.

  python benchmarks/bench_wan_shape.py --out $OUT/wan.json
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

PUBLISHED_TFLOPS = 800.0  # H200 bf16 dense matmul on random data, measured earlier (KINDS.md)
VARIANTS = ("eager", "compile", "graphs", "fp8", "cudnn", "fp8-cudnn", "fp8-flex", "fp8-flex16", "triton", "fp8-triton",
            "fp8-triton-h", "fp8s", "fp8s-triton-h", "fp8s-triton-f")
GRAPH_VARIANTS = VARIANTS[2:]  # compiled and captured in CUDA graphs
FP8_VARIANTS = ("fp8", "fp8-cudnn", "fp8-flex", "fp8-flex16", "fp8-triton", "fp8-triton-h", "fp8s", "fp8s-triton-h",
                "fp8s-triton-f")  # the block linears through torch._scaled_mm
# activation scales calibrated once (calibrate_activation_scales)
STATIC_SCALE_VARIANTS = ("fp8s", "fp8s-triton-h", "fp8s-triton-f")
# the q/k norms + RoPE and the GELU + FP8 cast through triton_fused (fused_pre_attn, fused_post_attn)
FUSED_VARIANTS = ("fp8s-triton-f",)
# the self-attention through triton_attention (its default blocks; key splits "auto" in bf16, 1 in FP8):
# its KV cache in bf16 (None) or in FP8 with a scale per key or per head
TRITON_VARIANTS = {"triton": None, "fp8-triton": "per key", "fp8-triton-h": "per head", "fp8s-triton-h": "per head",
                   "fp8s-triton-f": "per head"}
# the self-attention through a compiled FlexAttention, its q, k and v stored in this dtype (quantized_flex_attention)
FLEX_VARIANTS = {"fp8-flex": torch.float8_e4m3fn, "fp8-flex16": torch.bfloat16}
CUDNN_VARIANTS = ("cudnn", "fp8-cudnn")  # every SDPA call restricted to cuDNN's fused attention


@dataclass
class Shape:
    layers: int = 30
    width: int = 1536
    heads: int = 12
    ffn: int = 8960
    text_tokens: int = 512
    tokens_per_frame: int = 1560
    chunk: int = 3
    steps: int = 4
    window: int = 21  # latent frames: the clip's length and the steady stream's window
    in_dim: int = 64  # 16 latent channels x patch 1x2x2
    freq_dim: int = 256


def grid_for(p: int) -> tuple[int, int]:
    if p == 1560:
        return 30, 52  # 480/16 x 832/16
    h = max(i for i in range(1, int(p ** 0.5) + 1) if p % i == 0)
    return h, p // h


# --- FLOPs ---------------------------------------------------------------------------------------
def pass_flops(s: Shape, kv_tokens: int, cache_only: bool = False) -> dict:
    """One DiT call over a chunk of N = chunk*P tokens attending to kv_tokens keys (matmuls only). cache_only: the
    cache-write pass as Stream.forward runs it, whose last layer stops after its q, k, v projections."""
    d, n, fr = s.width, s.chunk * s.tokens_per_frame, s.chunk
    full = s.layers - 1 if cache_only else s.layers
    linear = full * n * (12 * d * d + 4 * d * s.ffn)  # qkv+o (8d^2), cross q+o (4d^2), FFN
    linear += 2 * n * s.in_dim * d * (1 if cache_only else 2)  # embed, head
    linear += 2 * fr * (s.freq_dim * d + 7 * d * d)  # time MLP
    if cache_only:
        linear += 6 * n * d * d  # the last layer's q, k, v
    attention = full * 4 * n * d * (kv_tokens + s.text_tokens)  # QK^T and AV, self + cross
    return {"linear": linear, "attention": attention}


def chunk_flops(s: Shape, cache_frames: int) -> dict:
    """The steps' calls and the cache-write call."""
    kv = (cache_frames + s.chunk) * s.tokens_per_frame
    step, cache = pass_flops(s, kv), pass_flops(s, kv, cache_only=True)
    out = {k: step[k] * s.steps + cache[k] for k in step}
    out["total"] = out["linear"] + out["attention"]
    return out


def plan(s: Shape, workload: str) -> dict:
    """cache frames before each chunk, and the video frames the workload produces."""
    if workload == "clip":
        caches = list(range(0, s.window, s.chunk))
        return {"caches": caches, "video_frames": 4 * s.window - 3}
    return {"caches": [s.window - s.chunk], "video_frames": 4 * s.chunk}


def workload_flops(s: Shape, workload: str) -> float:
    return float(sum(chunk_flops(s, c)["total"] for c in plan(s, workload)["caches"]))


# --- model (functional; weights are plain tensors so one compiled graph serves every layer) -------
def make_params(s: Shape, device, dtype, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    d = s.width

    def w(o, i):
        return (torch.randn(o, i, device=device) / math.sqrt(i)).to(dtype)

    def b(o, std=0.02):
        return (torch.randn(o, device=device) * std).to(dtype)

    def layer():
        return {"qkv": w(3 * d, d), "qkv_b": b(3 * d), "o": w(d, d), "o_b": b(d),
                "nq": 1 + b(d, 0.1), "nk": 1 + b(d, 0.1), "cq": w(d, d), "cq_b": b(d),
                "cnq": 1 + b(d, 0.1), "co": w(d, d), "co_b": b(d), "n3": 1 + b(d, 0.1), "n3_b": b(d),
                "f1": w(s.ffn, d), "f1_b": b(s.ffn), "f2": w(d, s.ffn), "f2_b": b(d), "mod": b(6 * d, 0.2).view(6, d)}

    return {"emb": w(d, s.in_dim), "emb_b": b(d), "t1": w(d, s.freq_dim), "t1_b": b(d), "t2": w(d, d),
            "t2_b": b(d), "tp": w(6 * d, d), "tp_b": b(6 * d), "head": w(s.in_dim, d), "head_b": b(s.in_dim),
            "head_mod": b(2 * d, 0.2).view(2, d), "layers": [layer() for _ in range(s.layers)]}


FP8_KEYS = ("qkv", "o", "cq", "co", "f1", "f2")
E4M3_MAX = 448.0  # the largest finite float8_e4m3fn value


def e4m3_scale(x: torch.Tensor, max_value: float = E4M3_MAX) -> torch.Tensor:
    """The per-tensor scale that maps x's absolute maximum to max_value (float32, on x's device: no host sync)."""
    return (x.abs().amax().float() / max_value).clamp(min=1e-12)


def to_fp8(params: dict) -> dict:
    """Per-tensor scaled float8_e4m3 copies of the block linears (weights [out, in], row-major)."""
    out = dict(params, layers=[])
    for lp in params["layers"]:
        q = dict(lp)
        for k in FP8_KEYS:
            wt = lp[k].float()
            scale = e4m3_scale(wt)
            q[k] = ((wt / scale).to(torch.float8_e4m3fn), scale)
        out["layers"].append(q)
    return out


class ActivationAmax:
    """The largest |x| a linear's input reached while calibrating (a float32 scalar on the device)."""

    def __init__(self, device):
        self.value = torch.zeros((), device=device)


def lin(x, w, bias):
    """F.linear, or with an FP8 weight (w8, w_scale) through torch._scaled_mm: the input quantized with a per-tensor
    scale computed from it on the device each call (dynamic; no host sync), or with a third element, a fixed scale
    from calibration (static: the cast then fuses into the kernel that produced x), or an ActivationAmax that
    records |x|'s maximum while the dynamic scale is used."""
    if not isinstance(w, tuple):
        return F.linear(x, w, bias)
    fixed = w[2:]  # the calibrated scale or its recorder, if any
    if fixed and not isinstance(fixed[0], ActivationAmax):
        xs = fixed[0]
    else:
        xs = e4m3_scale(x)
        if fixed:
            torch.maximum(fixed[0].value, x.abs().amax().float(), out=fixed[0].value)
    x8 = (x / xs).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return fp8_linear(x8, xs, w, bias, x.dtype)


def fp8_linear(x8, xs, w, bias, out_dtype):
    """x8 (float8_e4m3fn, its scale xs) through the FP8 weight w = (w8, w_scale, ...), in out_dtype."""
    w8, ws = w[:2]
    return torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, bias=bias, out_dtype=out_dtype, use_fast_accum=True)


def calibrate_activation_scales(st: "Stream", chunks: int = 2, margin: float = 4.0):
    """Give every FP8 linear of st's parameters a fixed activation scale: run `chunks` steady chunks uncompiled
    over a random full window, recording each linear input's largest |x|, then scale = margin * that / 448
    (inputs beyond it saturate at +-448). As a calibrated engine does; the fp8s variants."""
    s = st.s
    layers = st.p["layers"]
    for lp in layers:
        for k in FP8_KEYS:
            lp[k] = (*lp[k][:2], ActivationAmax(st.device))
    st.randomize_cache()
    st.set_slot(0)
    for _ in range(chunks):
        st.chunk(s.window * s.tokens_per_frame)
    for lp in layers:
        for k in FP8_KEYS:
            w8, ws, amax = lp[k]
            lp[k] = (w8, ws, (amax.value * margin / E4M3_MAX).clamp(min=1e-12))


def quantize_qkv(q, k, v, dtype=torch.float8_e4m3fn, max_value: float = E4M3_MAX):
    """q, k and v stored in `dtype` with per-tensor scales from each one's absolute maximum, computed on the
    device (no host sync, so it can be captured): (q8, k8, v8, the scores' scale q_scale * k_scale, v_scale)."""
    def cast(x):
        scale = e4m3_scale(x, max_value)
        return (x.float() / scale).clamp(-max_value, max_value).to(dtype), scale

    (q8, sq), (k8, sk), (v8, sv) = cast(q), cast(k), cast(v)
    return q8, k8, v8, sq * sk, sv


def quantized_flex_attention(q, k, v, dtype=torch.float8_e4m3fn, max_value: float = E4M3_MAX,
                             quantize=quantize_qkv, attend=None):
    """softmax(q k^T / sqrt(Dh)) v with q, k and v stored in `dtype` (`quantize`), through FlexAttention (`attend`,
    default torch's flex_attention). The q and k scales multiply the scores (score_mod), the v scale the output;
    the output comes back in q's dtype. `dtype` float32 or bfloat16 checks the algebra on a CPU; float8_e4m3fn is
    the GPU variant, with `quantize` and `attend` each compiled on its own: compiled as one function, Inductor
    fuses the cast into FlexAttention's inputs, and torch 2.11's FlexAttention lowering on CUDA rejects such an
    input ("convert FlexibleLayout to FixedLayout first")."""
    if attend is None:
        from torch.nn.attention.flex_attention import flex_attention as attend
    q8, k8, v8, qk_scale, sv = quantize(q, k, v, dtype, max_value)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score * qk_scale

    out = attend(q8, k8, v8, score_mod=score_mod)
    return (out.float() * sv).to(q.dtype)


def compiled_quantized_flex_attention(mode=None, dtype=torch.float8_e4m3fn):
    """The fp8-flex variants' self-attention: quantize_qkv and flex_attention compiled separately (see
    quantized_flex_attention), so FlexAttention's inputs are the realized outputs of the first graph.
    dtype: q, k and v's storage (float8_e4m3fn: fp8-flex; bfloat16: fp8-flex16, the same kernel path in bf16)."""
    from torch.nn.attention.flex_attention import flex_attention

    quantize = torch.compile(quantize_qkv, dynamic=False, mode=mode)
    attend = torch.compile(flex_attention, dynamic=False, mode=mode)
    return functools.partial(quantized_flex_attention, dtype=dtype, quantize=quantize, attend=attend)


def rms(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * weight


def rope(x, cos, sin):
    """Interleaved pairs as in Wan; x: [1, H, N, Dh]; cos, sin: [N, Dh/2] float32."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2).to(x.dtype)


def rope_tables(s: Shape, first_frame: int, device):
    dh = s.width // s.heads
    dims = (dh - 4 * (dh // 6), 2 * (dh // 6), 2 * (dh // 6))  # time, height, width (Wan's split)
    gh, gw = grid_for(s.tokens_per_frame)
    f, y, x = torch.meshgrid(torch.arange(first_frame, first_frame + s.chunk), torch.arange(gh),
                             torch.arange(gw), indexing="ij")
    ang = [pos.reshape(-1, 1).float() / 10000.0 ** (torch.arange(0, dm, 2).float() / dm)
           for pos, dm in zip((f, y, x), dims)]
    ang = torch.cat(ang, 1).to(device)
    return ang.cos(), ang.sin()


def time_mod(p, t, s: Shape):
    """t: [F] in [0, 1] -> e [F, d], mod [F, 6, d] (Wan's time embedding and projection)."""
    half = s.freq_dim // 2
    fr = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = (t.float() * 1000.0).unsqueeze(-1) * fr
    e = torch.cat((arg.cos(), arg.sin()), -1).to(p["t1"].dtype)
    e = F.linear(F.silu(F.linear(e, p["t1"], p["t1_b"])), p["t2"], p["t2_b"])
    return e, F.linear(F.silu(e), p["tp"], p["tp_b"]).view(-1, 6, s.width)


def to_heads(z, s: Shape):
    """[N, d] -> a [1, H, N, Dh] view."""
    return z.reshape(z.shape[0], s.heads, s.width // s.heads).transpose(0, 1).unsqueeze(0)


def qkv_projection(x, mod, lp, s: Shape):
    """x: [N, d] -> the self-attention's q, k, v projection [N, 3d] of the modulated LayerNorm."""
    n, d = x.shape[0], s.width
    m = mod + lp["mod"]
    y = (F.layer_norm(x, (d,), eps=1e-6).view(s.chunk, -1, d) * (1 + m[:, 1, None]) + m[:, 0, None]).view(n, d)
    return lin(y, lp["qkv"], lp["qkv_b"])


def pre_attn(x, mod, lp, cos, sin, s: Shape):
    """x: [N, d] -> q, k, v [1, H, N, Dh] for the self-attention."""
    q, k, v = qkv_projection(x, mod, lp, s).split(s.width, -1)
    q, k = rms(q, lp["nq"]), rms(k, lp["nk"])
    q, k, v = (to_heads(z, s) for z in (q, k, v))
    return rope(q, cos, sin), rope(k, cos, sin), v  # k, v views of the projection: the cache write reads strides


def attn_out_and_text(x, a, mod, lp, tk, tv, s: Shape):
    """The self-attention's output projection and the text cross-attention, each a residual; x: [N, d];
    a: [1, H, N, Dh]. Returns x and the FFN's hidden layer before its GELU ([N, ffn])."""
    n, d = x.shape[0], s.width
    m = mod + lp["mod"]
    a = lin(a[0].transpose(0, 1).reshape(n, d), lp["o"], lp["o_b"])
    x = x + (a.view(s.chunk, -1, d) * m[:, 2, None]).view(n, d)
    y = F.layer_norm(x, (d,), lp["n3"], lp["n3_b"], 1e-6)
    q = to_heads(rms(lin(y, lp["cq"], lp["cq_b"]), lp["cnq"]), s)
    c = F.scaled_dot_product_attention(q, tk, tv)[0].transpose(0, 1).reshape(n, d)
    x = x + lin(c, lp["co"], lp["co_b"])
    y = (F.layer_norm(x, (d,), eps=1e-6).view(s.chunk, -1, d) * (1 + m[:, 4, None]) + m[:, 3, None]).view(n, d)
    return x, lin(y, lp["f1"], lp["f1_b"])


def ffn_out(x, f, mod, lp, s: Shape):
    """The FFN's output f [N, d] added to x [N, d] through its per-frame gate."""
    n, d = x.shape[0], s.width
    return x + (f.view(s.chunk, -1, d) * (mod + lp["mod"])[:, 5, None]).view(n, d)


def post_attn(x, a, mod, lp, tk, tv, s: Shape):
    """Self-attention output projection, text cross-attention and FFN; x: [N, d]; a: [1, H, N, Dh]."""
    x, hidden = attn_out_and_text(x, a, mod, lp, tk, tv, s)
    return ffn_out(x, lin(F.gelu(hidden, approximate="tanh"), lp["f2"], lp["f2_b"]), mod, lp, s)


def ffn_out_fp8(x, g8, mod, lp, s: Shape):
    """ffn_out with the FFN's second linear from its FP8 input g8 (quantized at the linear's fixed scale)."""
    return ffn_out(x, fp8_linear(g8, lp["f2"][2], lp["f2"], lp["f2_b"], x.dtype), mod, lp, s)


def fused_pre_attn(projection=qkv_projection):
    """pre_attn with the q/k RMSNorms and RoPE in one Triton kernel (triton_fused.rms_norm_rope) after
    `projection` (qkv_projection, or a compiled one)."""
    from triton_fused import rms_norm_rope

    def pre(x, mod, lp, cos, sin, s: Shape):
        qkv = projection(x, mod, lp, s)
        qk = rms_norm_rope(qkv, (lp["nq"], lp["nk"]), cos, sin)
        return to_heads(qk[0], s), to_heads(qk[1], s), to_heads(qkv[:, 2 * s.width:], s)
    return pre


def fused_post_attn(middle=attn_out_and_text, out=ffn_out_fp8):
    """post_attn for calibrated FP8 linears with the GELU and the cast to FP8 at the second FFN linear's fixed scale
    in one Triton kernel (triton_fused.gelu_tanh_fp8) between `middle` and `out` (or compiled ones)."""
    from triton_fused import gelu_tanh_fp8

    def post(x, a, mod, lp, tk, tv, s: Shape):
        x, hidden = middle(x, a, mod, lp, tk, tv, s)
        return out(x, gelu_tanh_fp8(hidden, lp["f2"][2]), mod, lp, s)
    return post


def embed(x, p):
    return F.linear(x, p["emb"], p["emb_b"])


def head(x, e, p, s: Shape):
    sh, sc = (p["head_mod"][None] + e[:, None]).unbind(1)
    y = F.layer_norm(x, (s.width,), eps=1e-6).view(s.chunk, -1, s.width) * (1 + sc[:, None]) + sh[:, None]
    return F.linear(y.view(x.shape[0], -1), p["head"], p["head_b"])


# --- the stream: static buffers, in-place cache ----------------------------------------------------
class Stream:
    """Preallocated state: KV cache [layers, 1, H, window*P, Dh] (K and V), chunk inputs, text K/V."""

    def __init__(self, s: Shape, params: dict, device, dtype, seed: int = 1):
        self.s, self.p, self.device, self.dtype = s, params, device, dtype
        h, dh, P, n = s.heads, s.width // s.heads, s.tokens_per_frame, s.chunk * s.tokens_per_frame
        g = torch.Generator(device="cpu").manual_seed(seed)
        rnd = lambda *shape: torch.randn(*shape, generator=g).to(device, dtype)  # noqa: E731
        self.k_cache = torch.full((s.layers, 1, h, s.window * P, dh), float("nan"), device=device, dtype=dtype)
        self.v_cache = torch.full_like(self.k_cache, float("nan"))
        self.x_in, self.noise, self.out = rnd(n, s.in_dim), rnd(s.steps, n, s.in_dim), torch.empty(n, s.in_dim, device=device, dtype=dtype)
        shift, ts = 5.0, [1.0 - i / s.steps for i in range(s.steps)]  # Self Forcing: 1000, 750, 500, 250
        self.sigmas = [shift * t / (1 + (shift - 1) * t) for t in ts]
        self.t = [torch.full((s.chunk,), t, device=device) for t in self.sigmas] + [torch.zeros(s.chunk, device=device)]
        self.idx = torch.zeros(n, dtype=torch.long, device=device)  # cache slots written by this chunk
        self.cos, self.sin = (t.contiguous() for t in rope_tables(s, s.window - s.chunk, device))
        text = rnd(s.text_tokens, s.width)
        self.tk, self.tv = [], []
        for lp in params["layers"]:  # once per prompt, as Self Forcing's cross-attention cache
            kw, vw = rnd(s.width, s.width) / math.sqrt(s.width), rnd(s.width, s.width) / math.sqrt(s.width)
            self.tk.append(rms(F.linear(text, kw), 1.0).view(-1, h, dh).transpose(0, 1).unsqueeze(0).contiguous())
            self.tv.append(F.linear(text, vw).view(-1, h, dh).transpose(0, 1).unsqueeze(0).contiguous())
        self.fns = {"pre": pre_attn, "post": post_attn, "embed": embed, "head": head, "time": time_mod}
        self.attend = F.scaled_dot_product_attention  # the self-attention over cache + chunk (fp8-flex: FP8)
        self.fp8_cache = None  # fp8-triton: triton_attention.Fp8Keys of every layer ([layers, ...] leading)
        self.trace: list[dict] = []  # per chunk: slot start, kv tokens (for tests)

    def use_fp8_cache(self, per_key: bool = True):
        """Keep the KV cache in FP8 (the fp8-triton variants): keys [layers, 1, H, N, Dh], values transposed
        [layers, 1, H, Dh, N] (triton_attention.new_fp8_keys), float8_e4m3fn, with a float32 scale per key
        [layers, 1, H, N] or per head [layers, 1, H]. A per-head scale is set from each layer's first write (twice its keys' absolute
        maximum over 448, on the device; during the warm-up, before any capture) and then fixed, as a calibrated
        engine's are."""
        from triton_attention import new_fp8_keys
        L, B, H, N, D = self.k_cache.shape
        self.fp8_cache = new_fp8_keys((L, B, H), N, D, self.k_cache.device, per_key)
        self.fp8_calibrated = [per_key] * L

    def randomize_cache(self):
        self.k_cache.normal_()
        self.v_cache.normal_()
        if self.fp8_cache is not None:  # random finite codes
            c = self.fp8_cache
            for t in (c.k, c.v_t):
                t.view(torch.uint8).copy_(torch.randint_like(t.view(torch.uint8), 0, 0x7E))

    def poison_cache(self):
        """NaN everywhere a chunk could read before this clip wrote it."""
        self.k_cache.fill_(float("nan"))
        self.v_cache.fill_(float("nan"))
        if self.fp8_cache is not None:  # 0x7F: float8_e4m3fn's NaN
            self.fp8_cache.k.view(torch.uint8).fill_(0x7F)
            self.fp8_cache.v_t.view(torch.uint8).fill_(0x7F)

    def write_fp8(self, i: int, k, v):
        """Quantize this pass's keys and values into layer i's FP8 cache at self.idx (scale per key or per head)."""
        from triton_attention import amax_scale, quantize_rows, quantize_with, write_fp8_keys
        c = self.fp8_cache
        if c.per_key:
            (k8, ks), (v8, vs) = quantize_rows(k), quantize_rows(v)
            c.k_scale[i].index_copy_(2, self.idx, ks)
            c.v_scale[i].index_copy_(2, self.idx, vs)
        else:
            if not self.fp8_calibrated[i]:
                for scale, x in ((c.k_scale[i], k), (c.v_scale[i], v)):
                    scale.copy_(amax_scale(x, (-1, -2), margin=2.0))
                self.fp8_calibrated[i] = True
            if k.is_cuda:  # one fused kernel: cast, transpose and write at the slot self.idx[0] (device-side)
                write_fp8_keys(c.layer(i), k, v, self.idx[:1])
                return
            k8, v8 = quantize_with(k, c.k_scale[i]), quantize_with(v, c.v_scale[i])
        c.k[i].view(torch.uint8).index_copy_(2, self.idx, k8.view(torch.uint8))
        c.v_t[i].view(torch.uint8).index_copy_(3, self.idx, v8.transpose(-1, -2).view(torch.uint8))

    def set_slot(self, start_frame: int):
        P, n = self.s.tokens_per_frame, self.s.chunk * self.s.tokens_per_frame
        self.idx.copy_(torch.arange(start_frame * P, start_frame * P + n, device=self.device))

    def forward(self, x, t, kv: int, cache_only: bool = False):
        """The model's output for x at timestep t; cache_only (the cache-write pass, whose output is discarded):
        only every layer's keys and values into the cache, so the last layer stops after writing its own (its
        attention, feed-forward and the head would compute nothing anything reads)."""
        s, p, fn = self.s, self.p, self.fns
        e, mod = fn["time"](p, t, s)
        h = fn["embed"](x, p)
        last = len(p["layers"]) - 1
        for i, lp in enumerate(p["layers"]):
            q, k, v = fn["pre"](h, mod, lp, self.cos, self.sin, s)
            if self.fp8_cache is not None:
                self.write_fp8(i, k, v)
            else:
                self.k_cache[i].index_copy_(2, self.idx, k)
                self.v_cache[i].index_copy_(2, self.idx, v)
            if cache_only and i == last:
                return None
            if self.fp8_cache is not None:
                a = self.attend(q, fp8_keys=self.fp8_cache.layer(i).narrow(kv))
            else:
                a = self.attend(q, self.k_cache[i][:, :, :kv], self.v_cache[i][:, :, :kv])
            h = fn["post"](h, a, mod, lp, self.tk[i], self.tv[i], s)
        return fn["head"](h, e, p, s)

    def chunk(self, kv: int):
        """steps denoising calls + one cache-write call; reads x_in/noise, writes out (all static)."""
        x = self.x_in
        for i, sig in enumerate(self.sigmas):
            x0 = x - sig * self.forward(x, self.t[i], kv)
            x = (1 - self.sigmas[i + 1]) * x0 + self.sigmas[i + 1] * self.noise[i] if i + 1 < len(self.sigmas) else x0
        self.forward(x0, self.t[-1], kv, cache_only=True)
        self.out.copy_(x0)


def triton_attend(cache: str | None, config: str | None = None, key_splits: str | None = None):
    """A Triton variant's self-attention: triton_attention.attention with the kernel config's blocks (None:
    the kernel's defaults) and key splits (a number or "auto"; None: 1 with an FP8 cache, whose 64-row blocks
    already give ~3.4 waves, else auto)."""
    import triton_attention
    blocks = triton_attention.parse_blocks(config) if config else None
    splits = key_splits or (1 if cache else "auto")
    return functools.partial(triton_attention.attention, blocks=blocks,
                             key_splits=splits if splits == "auto" else int(splits))


def runners(st: Stream, workload: str, graphs: bool):
    """A list of callables, one per chunk of the workload (clip: 7 cache lengths; steady: 1)."""
    s, P = st.s, st.s.tokens_per_frame
    if workload == "clip":
        jobs = [(c, (c + s.chunk) * P) for c in plan(s, "clip")["caches"]]
    else:
        ring = [0]  # rotating slot of the steady window: the oldest chunk is overwritten

        def steady_slot():
            start = ring[0] * s.chunk
            ring[0] = (ring[0] + 1) % (s.window // s.chunk)
            return start
        jobs = [(steady_slot, s.window * P)]
    out = []
    for slot, kv in jobs:
        pick = slot if callable(slot) else (lambda c=slot: c)

        def step(pick=pick, kv=kv, graph=None):
            start = pick()
            st.set_slot(start)
            st.trace.append({"slot": start, "kv": kv})  # host-side record, for the tests
            graph.replay() if graph is not None else st.chunk(kv)
        if not graphs:
            out.append(step)
            continue
        st.set_slot(0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                st.chunk(kv)  # warm-up: compile, cuBLAS handles, allocator
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            st.chunk(kv)
        out.append(lambda step=step, g=g: step(graph=g))
    return out


# --- attention backend ---------------------------------------------------------------------------
def cudnn_attention_problem(device, dtype, head_dim: int) -> str | None:
    """None where cuDNN's fused attention runs here, else why not (one line). Found by trying it: a tiny
    SDPA call on the device under SDPBackend.CUDNN_ATTENTION alone (query and key lengths that are not
    multiples of 64, as the workload's), checked against the math backend."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError as exc:
        return f"torch {torch.__version__} has no torch.nn.attention ({exc})"
    if not hasattr(SDPBackend, "CUDNN_ATTENTION"):
        return f"torch {torch.__version__} has no SDPBackend.CUDNN_ATTENTION"
    if device.type != "cuda":
        return f"cuDNN attention needs a CUDA device (device {device.type})"
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, head_dim, generator=g).to(device, dtype) for n in (40, 72, 72))
    try:
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            out = F.scaled_dot_product_attention(q, k, v)
        torch.cuda.synchronize(device)
    except Exception as exc:  # RuntimeError ("No available kernel") above all; never a crash
        cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
        return f"cuDNN attention raised on sm_{cap}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    err = float((out.float() - ref).norm() / ref.norm())
    if not err < 0.05:
        return f"cuDNN attention gives wrong results on this device (rel err {err:.2e} vs the math backend)"
    return None


def attention_backend(variant: str):
    """The context every call of a variant runs in: cuDNN attention only, or PyTorch's default choice."""
    if variant not in CUDNN_VARIANTS:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])


def attention_kind(variant: str) -> str:
    """How a variant's self-attention runs, for its result row."""
    if variant in CUDNN_VARIANTS:
        return "cudnn"
    if variant in FLEX_VARIANTS:
        return "fp8 flex" if variant == "fp8-flex" else "bf16 flex"
    if variant in TRITON_VARIANTS:
        cache = TRITON_VARIANTS[variant]
        return "triton " + (f"fp8, a scale {cache}" if cache else "bf16")
    return "default"


def cores() -> int:
    """The cores this process may run on (as nproc counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load1() -> float | None:
    """The 1-minute load average (LOADAVG_FILE, default /proc/loadavg); None where unreadable."""
    try:
        with open(os.environ.get("LOADAVG_FILE") or "/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --- measurement ---------------------------------------------------------------------------------
def sync(device):
    torch.cuda.synchronize(device) if device.type == "cuda" else None


def timed(fn, device) -> float:
    """Milliseconds of fn: CUDA events on the GPU, a synchronized host clock elsewhere."""
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def matmul_rate(device, dtype, n: int = 8192, iters: int = 10) -> float:
    """TFLOP/s of an n^3 matmul on random data, median of iters after 3 warm-ups."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    [a @ b for _ in range(3)]
    sync(device)
    ms = statistics.median(timed(lambda: a @ b, device) for _ in range(iters))
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


KERNEL_KINDS = (  # (kind, substrings of the GPU kernel's name), the first match wins
    ("attention", ("sdpa", "flash", "fmha", "attention")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "wgmma", "scaled_mm")),
)


def kernel_kind(name: str) -> str:
    if name.startswith("triton_"):  # Inductor's fused pointwise/reduction kernels, even those named after the
        return "other"              # matmul or attention they feed (triton_poi_fused__scaled_mm_..._gelu: a cast)
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def kernel_breakdown(fn) -> dict:
    """GPU time of one call of fn by kind of kernel (attention, matmul, other: norms, RoPE, modulation, casts,
    copies), in ms, and the twenty kernels that took longest (torch.profiler, CUDA activity)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kinds: dict[str, float] = {"attention": 0.0, "matmul": 0.0, "other": 0.0}
    top = []
    for e in prof.key_averages():
        if e.device_type.name != "CUDA":
            continue
        us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0.0)
        kinds[kernel_kind(e.key)] += us / 1e3
        top.append((us / 1e3, e.key[:160], e.count))
    top.sort(reverse=True)
    return {"ms": kinds, "top": [{"ms": ms, "kernel": k, "calls": n} for ms, k, n in top[:20]]}


def run_variant(st: Stream, variant: str, workload: str, iters: int, warmup: int, breakdown: bool = False) -> dict:
    s, dev = st.s, st.device
    pl = plan(s, workload)
    st.randomize_cache()  # graph warm-ups and the steady window read the whole cache
    chunks = runners(st, workload, graphs=variant in GRAPH_VARIANTS)
    if workload == "clip":  # poison: a clip chunk must read only what this clip wrote
        st.poison_cache()
    st.trace.clear()
    check = None
    if workload == "clip":  # first chunk from the fixed inputs: compared with eager's output
        chunks[0]()
        check = st.out.float().clone()
    for _ in range(warmup):
        for c in chunks:
            c()
    sync(dev)
    totals, per = [], []
    for _ in range(iters):
        ms = [timed(c, dev) for c in chunks]
        totals.append(sum(ms))
        per.append(ms)
    med = statistics.median(totals)
    flops = workload_flops(s, workload)
    out = {"variant": variant, "workload": workload, "ms_total": med, "ms_per_chunk": med / len(chunks),
           "chunk_ms_median": [statistics.median(col) for col in zip(*per)],
           "fps": pl["video_frames"] / (med * 1e-3), "tflops": flops / (med * 1e-3) / 1e12,
           "finite": bool(torch.isfinite(st.out).all()), "check": check}
    if breakdown and dev.type == "cuda":  # the workload's last chunk (the longest cache), once more, profiled
        out["breakdown"] = kernel_breakdown(chunks[-1])
    return out


def parse_variants(text: str) -> list[str]:
    """'eager,cudnn' -> ['eager', 'cudnn'], in the given order; an unknown name is an argparse error."""
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {','.join(unknown) or '(none given)'}; "
                                         f"choose from {','.join(VARIANTS)}")
    return variants


def save(res: dict, path: str | None):
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fields = ("layers", "width", "heads", "ffn", "text_tokens", "tokens_per_frame", "chunk", "steps", "window")
    for name in fields:
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(Shape(), name))
    ap.add_argument("--workloads", default="clip,steady")
    ap.add_argument("--variants", default=",".join(VARIANTS), type=parse_variants,
                    help="comma-separated, run in this order: eager (PyTorch SDPA), compile (torch.compile), graphs "
                         "(compile + CUDA graphs), fp8 (graphs + torch._scaled_mm block linears, sm_89+), cudnn "
                         "(graphs + cuDNN fused attention only), fp8-cudnn (fp8 + cuDNN attention), fp8-flex (fp8 + FP8 "
                         "self-attention through compiled FlexAttention), fp8-flex16 (the same FlexAttention in bf16); "
                         "default: %(default)s")
    ap.add_argument("--compile-mode", default=None, choices=("default", "max-autotune-no-cudagraphs"),
                    help="torch.compile mode of the compiled variants (default: torch's default; "
                         "max-autotune-no-cudagraphs tunes the matmul and attention kernels, a much longer compile; "
                         "the graph variants capture their own CUDA graphs either way)")
    ap.add_argument("--attention-config", default=None,
                    help="the Triton variants' kernel config, e.g. 64x128w4s3a (triton_attention.parse_blocks; "
                         "default: its default_blocks)")
    ap.add_argument("--key-splits", default=None,
                    help="the Triton variants' key splits: a number or auto (default: 1 with an FP8 cache, else auto)")
    ap.add_argument("--calibration-margin", type=float, default=4.0,
                    help="the fp8s variants: activation scale = margin x the calibrated maximum / 448 (inputs beyond it "
                         "saturate; on the H200 1 gave 1.5e-1 relative error against eager, 4 gave 7.5e-2, the dynamic "
                         "scales' own)")
    ap.add_argument("--breakdown", action="store_true",
                    help="profile each run's last chunk once more: GPU time in attention, matmul and other kernels")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", help="write the JSON results here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    variants = a.variants
    s = Shape(**{k: getattr(a, k) for k in fields})
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {name}, {dtype}, torch {torch.__version__}; shape {asdict(s)}")
    rate = matmul_rate(dev, dtype, 8192 if dev.type == "cuda" else 1024)
    print(f"measured {dtype} matmul rate: {rate:.1f} TFLOP/s (published/earlier: {PUBLISHED_TFLOPS:.0f})")
    res = {"shape": asdict(s), "device": name, "dtype": str(dtype), "torch": torch.__version__,
           "matmul_tflops": rate, "cpu_count": cores(), "compile_mode": a.compile_mode or "default",
           "attention_config": a.attention_config, "key_splits": a.key_splits,
           "calibration_margin": a.calibration_margin, "floors": {},
           "inductor_env": {k: v for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR_")},
           "runs": [], "skipped": []}
    workloads = a.workloads.split(",")
    for w in workloads:
        pl, fl = plan(s, w), workload_flops(s, w)
        per = [chunk_flops(s, c) for c in pl["caches"]]
        lin_share = sum(c["linear"] for c in per) / fl
        floor = res["floors"][w] = {"tflop": fl / 1e12, "linear_share": lin_share, "chunks": len(per),
                                    "video_frames": pl["video_frames"], "ms_at_measured": fl / rate / 1e9,
                                    "ms_at_800": fl / PUBLISHED_TFLOPS / 1e9, "fps_at_measured": pl["video_frames"]
                                    * rate * 1e12 / fl, "fps_at_800": pl["video_frames"] * PUBLISHED_TFLOPS * 1e12 / fl}
        print(f"floor {w}: {fl / 1e12:.1f} TFLOP over {len(per)} chunk(s) ({lin_share:.0%} linear), "
              f"{floor['ms_at_measured']:.1f} ms -> {floor['fps_at_measured']:.1f} FPS at measured rate; "
              f"{floor['ms_at_800']:.1f} ms -> {floor['fps_at_800']:.1f} FPS at 800 TFLOP/s (VAE decode excluded)")
    params = make_params(s, dev, dtype)
    cudnn_problem = None
    if any(v in CUDNN_VARIANTS for v in variants):
        cudnn_problem = cudnn_attention_problem(dev, dtype, s.width // s.heads)
        res["cudnn_attention"] = cudnn_problem or "available"
        print(f"cuDNN attention: {res['cudnn_attention']}")
    mode = a.compile_mode if a.compile_mode != "default" else None  # torch.compile's mode (None: its default)
    ref, compiled_cudnn = None, None  # the attention backend torch.compile's caches were filled under
    for v in variants:
        if v in GRAPH_VARIANTS and dev.type != "cuda":
            res["skipped"].append({"variant": v, "reason": "CUDA graphs need a CUDA device"
                                   + (f"; {cudnn_problem}" if v in CUDNN_VARIANTS and cudnn_problem else "")})
            continue
        if v in FP8_VARIANTS and not (hasattr(torch, "_scaled_mm") and torch.cuda.get_device_capability(dev) >= (8, 9)):
            res["skipped"].append({"variant": v, "reason": "needs torch._scaled_mm on sm_89+ (Ada/Hopper)"})
            continue
        if v in TRITON_VARIANTS:
            from triton_attention import unavailable
            if unavailable(dev):
                res["skipped"].append({"variant": v, "reason": unavailable(dev)})
                continue
        if v in CUDNN_VARIANTS and cudnn_problem:
            res["skipped"].append({"variant": v, "reason": cudnn_problem})
            continue
        st = Stream(s, to_fp8(params) if v in FP8_VARIANTS else params, dev, dtype)
        if v in STATIC_SCALE_VARIANTS:
            calibrate_activation_scales(st, margin=a.calibration_margin)
        if v != "eager":
            if compiled_cudnn is not None and compiled_cudnn != (v in CUDNN_VARIANTS):
                torch._dynamo.reset()  # compiled code does not guard on the SDPA backend: compile afresh
            compiled_cudnn = v in CUDNN_VARIANTS
            for knob in ("cache_size_limit", "recompile_limit"):  # the name differs between versions
                if hasattr(torch._dynamo.config, knob):  # setting a name this version lacks raises
                    setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 64))
            st.fns = {k: torch.compile(f, dynamic=False, mode=mode) for k, f in st.fns.items()}
            if v in FUSED_VARIANTS:  # compiled around the Triton kernels (after calibrating, which runs unfused)
                st.fns["pre"] = fused_pre_attn(torch.compile(qkv_projection, dynamic=False, mode=mode))
                st.fns["post"] = fused_post_attn(torch.compile(attn_out_and_text, dynamic=False, mode=mode),
                                                 torch.compile(ffn_out_fp8, dynamic=False, mode=mode))
            if v in FLEX_VARIANTS:  # FlexAttention runs fast only compiled; cast and attention apart
                st.attend = compiled_quantized_flex_attention(mode, FLEX_VARIANTS[v])
            if v in TRITON_VARIANTS:
                cache = TRITON_VARIANTS[v]
                st.attend = triton_attend(cache, a.attention_config, a.key_splits)
                if cache:
                    st.use_fp8_cache(per_key=cache == "per key")
        for w in workloads:
            t0, load_start = time.perf_counter(), load1()
            try:
                with attention_backend(v):  # compile, capture and replay under the variant's backend
                    r = run_variant(st, v, w, a.iters, a.warmup, a.breakdown)
            except Exception as exc:  # one variant failing must not lose the others' numbers
                res["skipped"].append({"variant": v, "workload": w, "reason": f"{type(exc).__name__}: {exc}"[:500]})
                print(f"{v}/{w} FAILED: {exc}", file=sys.stderr)
                continue
            chk = r.pop("check")
            if chk is not None and v == "eager":
                ref = chk
            if chk is not None and ref is not None:
                r["rel_err_vs_eager"] = float((chk - ref).norm() / ref.norm())
            fl = res["floors"][w]
            r["pct_floor_measured"] = 100 * fl["ms_at_measured"] / r["ms_total"]
            r["pct_floor_800"] = 100 * fl["ms_at_800"] / r["ms_total"]
            r["wall_s"] = time.perf_counter() - t0
            r["activation_scales"] = ("static" if v in STATIC_SCALE_VARIANTS else "dynamic" if v in FP8_VARIANTS
                                      else None)
            r["attention"] = attention_kind(v)
            r["load1_at_start"] = load_start
            res["runs"].append(r)
            save(res, a.out)  # after every run: a run cut short by the time limit keeps what it measured
            print(f"{v}/{w}: {r['fps']:.1f} FPS, {r['ms_per_chunk']:.1f} ms/chunk, {r['tflops']:.0f} TFLOP/s, "
                  f"rel err {r.get('rel_err_vs_eager', float('nan')):.2e}, {r['wall_s']:.0f} s incl. compile", flush=True)
            if "breakdown" in r:
                ms = r["breakdown"]["ms"]
                print("  last chunk's GPU time: " + ", ".join(f"{k} {t:.1f} ms" for k, t in ms.items())
                      + "; longest: " + "; ".join(f"{t['kernel'][:60]} {t['ms']:.1f} ms" for t in r["breakdown"]["top"][:3]))
        del st
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    save(res, a.out)
    print(f"\nDiT only (VAE decode excluded); floor = FLOPs / measured matmul rate ({rate:.0f} TFLOP/s)")
    print("| variant | workload | FPS | ms per chunk | achieved TFLOP/s | % of floor | % of 800 TFLOP/s | rel err vs eager "
          "| load1 at start |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        ld = r.get("load1_at_start")
        print(f"| {r['variant']} | {r['workload']} | {r['fps']:.1f} | {r['ms_per_chunk']:.1f} | {r['tflops']:.1f} "
              f"| {r['pct_floor_measured']:.0f}% | {r['pct_floor_800']:.0f}% | {r.get('rel_err_vs_eager', float('nan')):.1e} "
              f"| {'n/a' if ld is None else f'{ld:.2f}'} |")
    for sk in res["skipped"]:
        print(f"| {sk['variant']} | {sk.get('workload', 'all')} | skipped: {sk['reason'][:120]} | | | | | | |")
    return res


if __name__ == "__main__":
    main()
