"""Fused pointwise and normalisation kernels in Triton for the FP8 step of a Wan-shaped DiT (benchmarks/bench_wan_shape.py).

Two places where the compiled step spent several times the memory traffic's time (docs/benchmarks.md):

- `rms_norm_rope`: the q and k RMSNorm over the whole width, then the interleaved-pair rotary embedding, of both
  from the q, k, v projection, in one kernel: a program holds whole rows (one read, one write; Inductor's reduction
  over the 1,536-wide rows read each twice).
- `gelu_tanh_fp8`: the feed-forward's tanh GELU and the cast to float8_e4m3 at the next linear's fixed activation
  scale, in one pass. tanh GELU is x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): one exp2 and one division
  per value instead of a libdevice tanh, which made Inductor's kernel compute-bound.

Both run in Triton's CPU interpreter (TRITON_INTERPRET=1), where tests/test_triton_fused.py checks them against
the PyTorch expressions they replace.
"""
from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # torch's CUDA wheels bring it; CPU-only installs have none
    triton = None
    tl = None

E4M3_MAX = 448.0
# 2 u log2(e) = x (GELU_K0 + GELU_K1 x^2): sigmoid(2u) = 1 / (1 + 2 ** -(2 u log2 e))
GELU_K0 = 2.0 * math.sqrt(2.0 / math.pi) / math.log(2.0)
GELU_K1 = GELU_K0 * 0.044715


if triton is not None:
    @triton.jit
    def _rms_norm_rope(X, WQ, WK, COS, SIN, OUT, n_rows, stride_xr, stride_xp, stride_cr, stride_op, stride_or, eps,
                       WIDTH: tl.constexpr, PAIRS_P2: tl.constexpr, HALF_HEAD: tl.constexpr, ROWS: tl.constexpr):
        """ROWS rows of part p (program axis 1: 0 q, 1 k) of X: RMSNorm over WIDTH channels with the part's weight,
        then each head's channel pairs (2j, 2j + 1) rotated by the row's angle j (cos, sin [rows, HALF_HEAD])."""
        part = tl.program_id(1)
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        pairs = tl.arange(0, PAIRS_P2)
        live = (rows < n_rows)[:, None] & (pairs < WIDTH // 2)[None, :]
        src = X + part * stride_xp + rows[:, None] * stride_xr + 2 * pairs[None, :]
        a = tl.load(src, mask=live, other=0.0).to(tl.float32)
        b = tl.load(src + 1, mask=live, other=0.0).to(tl.float32)
        rstd = tl.rsqrt((tl.sum(a * a, 1) + tl.sum(b * b, 1)) / WIDTH + eps)
        inside = pairs < WIDTH // 2
        if part == 0:
            wa = tl.load(WQ + 2 * pairs, mask=inside, other=0.0).to(tl.float32)
            wb = tl.load(WQ + 2 * pairs + 1, mask=inside, other=0.0).to(tl.float32)
        else:
            wa = tl.load(WK + 2 * pairs, mask=inside, other=0.0).to(tl.float32)
            wb = tl.load(WK + 2 * pairs + 1, mask=inside, other=0.0).to(tl.float32)
        a = a * rstd[:, None] * wa[None, :]
        b = b * rstd[:, None] * wb[None, :]
        angle = rows[:, None] * stride_cr + (pairs % HALF_HEAD)[None, :]
        c = tl.load(COS + angle, mask=live, other=0.0)
        s = tl.load(SIN + angle, mask=live, other=0.0)
        dst = OUT + part * stride_op + rows[:, None] * stride_or + 2 * pairs[None, :]
        tl.store(dst, (a * c - b * s).to(OUT.dtype.element_ty), mask=live)
        tl.store(dst + 1, (a * s + b * c).to(OUT.dtype.element_ty), mask=live)

    @triton.jit
    def _gelu_tanh_fp8(X, Y, SCALE, n, BLOCK: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        live = offs < n
        x = tl.load(X + offs, mask=live, other=0.0).to(tl.float32)
        y = x / (1.0 + tl.math.exp2(-x * (K0 + K1 * x * x)))
        y = tl.clamp(y * (1.0 / tl.load(SCALE)), -448.0, 448.0)
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=live)


def rms_norm_rope(qkv: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor], cos: torch.Tensor, sin: torch.Tensor,
                  eps: float = 1e-6, rows_per_program: int = 4) -> torch.Tensor:
    """q and k of a projection qkv [N, 3 * W] (q, k, v side by side, channels contiguous): each RMSNorm'd over its
    W channels with its weight (weights = (q's, k's), [W]), then every head's interleaved channel pairs rotated by
    the row's angles (cos, sin: [N, head_dim / 2] float32). Returns [2, N, W] in qkv's dtype: q, then k."""
    n, width = qkv.shape[0], qkv.shape[1] // 3
    half_head = cos.shape[1]
    if qkv.stride(1) != 1 or cos.stride(1) != 1 or sin.stride() != cos.stride() or width % (2 * half_head):
        raise ValueError("rms_norm_rope: qkv and the angle tables need contiguous channels, whole heads")
    out = torch.empty(2, n, width, device=qkv.device, dtype=qkv.dtype)
    grid = (triton.cdiv(n, rows_per_program), 2)
    _rms_norm_rope[grid](qkv, weights[0], weights[1], cos, sin, out, n, qkv.stride(0), width, cos.stride(0),
                         out.stride(0), out.stride(1), eps, WIDTH=width, PAIRS_P2=triton.next_power_of_2(width // 2),
                         HALF_HEAD=half_head, ROWS=rows_per_program, num_warps=4)
    return out


def gelu_tanh_fp8(x: torch.Tensor, scale: torch.Tensor, block: int = 2048, out: torch.Tensor | None = None):
    """float8_e4m3fn of gelu_tanh(x) / scale (scale: a float32 scalar tensor; beyond +-448 saturates), x contiguous.
    out: where to write (default: a new float8_e4m3fn tensor; another dtype gets the values before the cast)."""
    if not x.is_contiguous():
        raise ValueError("gelu_tanh_fp8 takes a contiguous input")
    y = torch.empty(x.shape, device=x.device, dtype=torch.float8_e4m3fn) if out is None else out
    n = x.numel()
    _gelu_tanh_fp8[(triton.cdiv(n, block),)](x, y, scale, n, BLOCK=block, K0=GELU_K0, K1=GELU_K1, num_warps=4)
    return y
