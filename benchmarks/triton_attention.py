"""Fused attention forward in Triton, for long key sequences on Hopper-class GPUs, in bf16 or FP8.

softmax(q k^T / sqrt(d)) v with no mask, one program per (block of queries, head, slice of the keys): the scores
never leave the chip (online softmax, exp2). Two storage modes:

- bf16: q, k and v as they are (any strides; the keys may be a slice of a longer cache).
- FP8 (`Fp8Keys`): k stored as float8_e4m3, v stored transposed ([..., head_dim, keys], float8_e4m3: p @ v reduces
  over the keys, which FP8 tensor cores need contiguous), with float32 scales either one per head (folded into
  each query row's factor and the output: no extra work per score; the fast one, ~700 TFLOP/s on an H200 inside
  the Wan stream's CUDA graph at its full window, docs/benchmarks.md) or one per key (each key's absolute
  maximum: two more multiplies per score and a rescaled p, slower than bf16). q is quantized inside the kernel,
  one scale per row. The probabilities p (in [0, 1]) are cast to float8 for p @ v, as FlashAttention-3 does; the
  row sums stay float32.
  `write_fp8_keys` writes a chunk's new keys and values into such a cache in one kernel.

`key_splits` > 1 splits the keys into that many slices run as separate programs, each with its own running maximum
and sum, merged afterwards: with 4,680 queries and 12 heads there are 444 query blocks of 128, which fill 132
multiprocessors in 3.4 waves (the last a third full); splitting the keys evens the waves out.

Used by benchmarks/bench_wan_shape.py (the triton, fp8-triton, fp8-triton-h and fp8s-triton-h variants) and timed
alone by benchmarks/bench_attention.py. Without Triton or a CUDA device, `unavailable()` says why and nothing else runs.
tests/test_triton_attention.py checks it against float32 attention in Triton's CPU interpreter.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # torch's CUDA wheels bring it; CPU-only installs have none
    triton = None
    tl = None

E4M3_MAX = 448.0
LOG2E = 1.4426950408889634


def unavailable(device: torch.device | str) -> str | None:
    """None where the kernel can run on `device`, else why not (one line)."""
    if triton is None:
        return "Triton is not installed (it comes with torch's CUDA wheels)"
    device = torch.device(device)
    interpreted = __import__("os").environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" and not interpreted:
        return f"the Triton attention kernel runs on CUDA devices (device {device.type})"
    return None


@dataclass
class Fp8Keys:
    """Keys and values in FP8 for the kernel: k [B, H, N, D] float8_e4m3fn; v_t [B, H, D, N] float8_e4m3fn, transposed
    (p @ v reduces over the keys, which FP8 tensor cores need contiguous), its rows `key_stride_multiple`-aligned
    (new_fp8_keys pads them); float32 scales k_scale and v_scale, either one per key [B, H, N] or one per head
    [B, H] (then the kernel folds them into the row scale and the output: less work per score)."""
    k: torch.Tensor
    k_scale: torch.Tensor
    v_t: torch.Tensor
    v_scale: torch.Tensor

    @property
    def per_key(self) -> bool:
        return self.k_scale.shape == self.k.shape[:-1]

    def layer(self, i: int) -> "Fp8Keys":
        """Entry i of a leading dimension the four tensors share (a cache of every layer: one layer's; views)."""
        return Fp8Keys(self.k[i], self.k_scale[i], self.v_t[i], self.v_scale[i])

    def narrow(self, n: int) -> "Fp8Keys":
        """The first n keys (views, no copy)."""
        cut = (lambda t: t[..., :n]) if self.per_key else (lambda t: t)
        return Fp8Keys(self.k[..., :n, :], cut(self.k_scale), self.v_t[..., :n], cut(self.v_scale))


KEY_STRIDE_MULTIPLE = 128  # v_t's rows start 128-byte aligned: 16-byte vector loads of FP8 values


def new_fp8_keys(lead: tuple, n: int, head_dim: int, device, per_key: bool = True) -> Fp8Keys:
    """An empty FP8 key/value buffer (zero codes, unit scales) for lead = (..., B, H) and n keys, v_t's rows padded
    to KEY_STRIDE_MULTIPLE keys and narrowed back to n (the padding is never read)."""
    padded = -(-n // KEY_STRIDE_MULTIPLE) * KEY_STRIDE_MULTIPLE
    fp8 = torch.float8_e4m3fn
    scales = (*lead, n) if per_key else lead
    return Fp8Keys(torch.zeros(*lead, n, head_dim, device=device, dtype=fp8), torch.ones(scales, device=device),
                   torch.zeros(*lead, head_dim, padded, device=device, dtype=fp8)[..., :n],
                   torch.ones(scales, device=device))


def amax_scale(x: torch.Tensor, dims, margin: float = 1.0) -> torch.Tensor:
    """float32 scales that map margin * x's absolute maximum over `dims` to 448, e4m3's largest value."""
    return (margin * x.float().abs().amax(dims) / E4M3_MAX).clamp(min=1e-12)


def _to_e4m3(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale (scale broadcast against x) in float8_e4m3fn; values beyond 448 scales saturate."""
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (float8_e4m3fn [..., D], float32 scale [...]): one scale per row, its absolute maximum / 448."""
    scale = amax_scale(x, -1)
    return _to_e4m3(x, scale[..., None]), scale


def quantize_with(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, H, N, D] in float8_e4m3fn at a given per-head scale [B, H] (values beyond 448 scales saturate)."""
    return _to_e4m3(x, scale[..., None, None])


def quantize_keys(k: torch.Tensor, v: torch.Tensor, per_key: bool = True) -> Fp8Keys:
    """bf16 k, v [B, H, N, D] -> Fp8Keys in a new buffer (a stream writes each chunk's keys into its cache instead),
    with a scale per key, or per head (each head's absolute maximum over all its keys)."""
    out = new_fp8_keys(tuple(k.shape[:2]), k.shape[2], k.shape[3], k.device, per_key)
    if per_key:
        (k8, ks), (v8, vs) = quantize_rows(k), quantize_rows(v)
    else:
        ks, vs = amax_scale(k, (-1, -2)), amax_scale(v, (-1, -2))
        k8, v8 = quantize_with(k, ks), quantize_with(v, vs)
    out.k.copy_(k8)
    out.v_t.copy_(v8.transpose(-1, -2))
    out.k_scale.copy_(ks)
    out.v_scale.copy_(vs)
    return out


if triton is not None:
    @triton.jit
    def _fold_block(acc, l_i, m_i, qk, v, row_factor, p_factor, inside,
                    MASKED: tl.constexpr, SCALE_P: tl.constexpr, EXP16: tl.constexpr, SUM16: tl.constexpr):
        """Fold one block's raw scores qk [BLOCK_M, BLOCK_N] and values v [BLOCK_N, D] into the running output, row
        sum and row maximum (base 2). row_factor [BLOCK_M] (> 0) turns qk into base-2 scores in the same FMA that
        subtracts the maximum; p_factor [BLOCK_N] scales p before p @ v (FP8 with a scale per key).
        EXP16: p = 2 ** x in half precision, two per instruction (PTX ex2.approx.f16x2, sm_75+; x <= 0, so p in
        [0, 1] with 11 significant bits, more than the e4m3 it is cast to): half the special-function work of the
        float32 exp2. GPU only (inline PTX; Triton's interpreter cannot run it). SUM16 (with EXP16): the block's row
        sums added in half precision too (no conversion back per score; each block's sum of <= BLOCK_N values in
        [0, 1] then carries ~1e-3 relative error, below the e4m3 rounding of p itself), the running sum float32."""
        if MASKED:
            qk = tl.where(inside[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * row_factor)
        x = qk * row_factor[:, None] - m_new[:, None]
        if EXP16:
            p = tl.inline_asm_elementwise("ex2.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)],
                                          dtype=tl.float16, is_pure=True, pack=2)
            if SUM16:
                row_sum = tl.sum(p, 1).to(tl.float32)
            else:
                row_sum = tl.sum(p.to(tl.float32), 1)
        else:
            p = tl.math.exp2(x)
            row_sum = tl.sum(p, 1)
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + row_sum
        acc = acc * alpha[:, None]
        if SCALE_P:
            p = p * p_factor[None, :]
        acc = tl.dot(p.to(v.dtype), v, acc)
        return acc, l_i, m_new

    @triton.jit
    def _load_q(Q, b, h, pid_m, n_queries, stride_qb, stride_qh, stride_qm, stride_qd, KS, VS, VS_MAX, pid_bh,
                stride_sb, stride_sh, qk_scale, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, FP8: tl.constexpr,
                PER_KEY: tl.constexpr):
        """The program's query block (FP8: quantized, one scale per row), each row's score factor, and the factor
        the output is multiplied by at the end (FP8: the values' scale)."""
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
        q = tl.load(q_ptrs, mask=offs_m[:, None] < n_queries, other=0.0)
        row_factor = tl.full([BLOCK_M], 1.0, dtype=tl.float32) * qk_scale
        out_factor = 1.0
        if FP8:  # one scale per query row, the row's absolute maximum over 448
            q_scale = tl.maximum(tl.max(tl.abs(q.to(tl.float32)), 1) / 448.0, 1e-12)
            q = (q.to(tl.float32) / q_scale[:, None]).to(tl.float8e4nv)
            row_factor = q_scale * qk_scale
            if PER_KEY:
                out_factor = tl.load(VS_MAX + pid_bh)
            else:  # one scale per head: folded into the rows' factor and the output's
                row_factor = row_factor * tl.load(KS + b * stride_sb + h * stride_sh)
                out_factor = tl.load(VS + b * stride_sb + h * stride_sh)
        return q, row_factor, out_factor, offs_m

    @triton.jit
    def _store_out(O, M_OUT, L_OUT, acc, l_i, m_i, out_factor, split, b, h, pid_bh, offs_m, n_queries,  # noqa: E741
                   stride_os, stride_ob, stride_oh, stride_om, stride_od, HEAD_DIM: tl.constexpr, SPLIT: tl.constexpr):
        offs_d = tl.arange(0, HEAD_DIM)
        rows = offs_m < n_queries
        acc = acc * out_factor
        if SPLIT:  # unnormalised partial output, its row maximum and sum: merged by the caller
            o_ptrs = O + split * stride_os + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om \
                + offs_d[None, :] * stride_od
            tl.store(o_ptrs, acc, mask=rows[:, None])
            ml = (split * tl.num_programs(1) + pid_bh) * n_queries + offs_m  # [S, B*H, M], contiguous
            tl.store(M_OUT + ml, m_i, mask=rows)
            tl.store(L_OUT + ml, l_i, mask=rows)
        else:
            o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
            tl.store(o_ptrs, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=rows[:, None])

    @triton.jit
    def _block_scores(q, k_base, ks_base, start_n, n_keys, stride_kn, stride_kd, stride_s,
                      BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, PER_KEY_FP8: tl.constexpr, MASKED: tl.constexpr):
        """q k^T for one block of keys (plain pointer loads; FP8 with a scale per key: times each key's scale)."""
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        k_ptrs = k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd  # k^T block [D, BLOCK_N]
        inside = offs_n < n_keys
        if MASKED:
            k_t = tl.load(k_ptrs, mask=inside[None, :], other=0.0)
        else:
            k_t = tl.load(k_ptrs)
        qk = tl.dot(q, k_t)
        if PER_KEY_FP8:
            if MASKED:
                qk = qk * tl.load(ks_base + offs_n * stride_s, mask=inside, other=0.0)[None, :]
            else:
                qk = qk * tl.load(ks_base + offs_n * stride_s)[None, :]
        return qk

    @triton.jit
    def _fold_values(acc, l_i, m_i, qk, row_factor, v_base, vs_base, vs_max, start_n, n_keys,
                     stride_vn, stride_vd, stride_s, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                     PER_KEY_FP8: tl.constexpr, MASKED: tl.constexpr, EXP16: tl.constexpr, SUM16: tl.constexpr):
        """Fold the block of keys at start_n, whose scores are qk, with its values into the running state."""
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd  # v block [BLOCK_N, D]
        inside = offs_n < n_keys
        if MASKED:
            v = tl.load(v_ptrs, mask=inside[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        p_factor = tl.full([BLOCK_N], 1.0, dtype=tl.float32)
        if PER_KEY_FP8:
            if MASKED:
                p_factor = tl.load(vs_base + offs_n * stride_s, mask=inside, other=0.0) / vs_max
            else:
                p_factor = tl.load(vs_base + offs_n * stride_s) / vs_max
        return _fold_block(acc, l_i, m_i, qk, v, row_factor, p_factor, inside, MASKED, PER_KEY_FP8, EXP16, SUM16)

    @triton.jit
    def _attention_forward(Q, K, V, KS, VS, VS_MAX, O, M_OUT, L_OUT,  # noqa: E741
                           stride_qb, stride_qh, stride_qm, stride_qd,
                           stride_kb, stride_kh, stride_kn, stride_kd,
                           stride_vb, stride_vh, stride_vn, stride_vd,
                           stride_sb, stride_sh, stride_s,
                           stride_os, stride_ob, stride_oh, stride_om, stride_od,
                           heads, n_queries, n_keys, keys_per_split, qk_scale,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                           FP8: tl.constexpr, PER_KEY: tl.constexpr, SPLIT: tl.constexpr,
                           QK_AHEAD: tl.constexpr, EXP16: tl.constexpr, SUM16: tl.constexpr):
        """One program: BLOCK_M queries of one head against one slice of the keys. FP8: k and v_t float8 (q is
        quantized here); PER_KEY: FP8 with a scale per key (False in bf16 and with a scale per head)."""
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        split = tl.program_id(2)
        b = pid_bh // heads
        h = pid_bh % heads
        q, row_factor, out_factor, offs_m = _load_q(
            Q, b, h, pid_m, n_queries, stride_qb, stride_qh, stride_qm, stride_qd, KS, VS, VS_MAX, pid_bh,
            stride_sb, stride_sh, qk_scale, BLOCK_M, HEAD_DIM, FP8, PER_KEY)
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        ks_base = KS + b * stride_sb + h * stride_sh
        vs_base = VS + b * stride_sb + h * stride_sh
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        lo = split * keys_per_split
        hi = tl.minimum(lo + keys_per_split, n_keys)
        full_end = lo + ((hi - lo) // BLOCK_N) * BLOCK_N
        if QK_AHEAD:  # software-pipelined: the next block's q k^T is issued before this block's softmax and p v
            qk = _block_scores(q, k_base, ks_base, lo, hi, stride_kn, stride_kd, stride_s,
                               BLOCK_N, HEAD_DIM, PER_KEY, False)  # the caller guarantees each slice a full block
            for start_n in range(lo, full_end - BLOCK_N, BLOCK_N):
                qk_next = _block_scores(q, k_base, ks_base, start_n + BLOCK_N, hi, stride_kn, stride_kd, stride_s,
                                        BLOCK_N, HEAD_DIM, PER_KEY, False)
                acc, l_i, m_i = _fold_values(acc, l_i, m_i, qk, row_factor, v_base, vs_base, out_factor, start_n, hi,
                                             stride_vn, stride_vd, stride_s, BLOCK_N, HEAD_DIM, PER_KEY, False,
                                             EXP16, SUM16)
                qk = qk_next
            acc, l_i, m_i = _fold_values(acc, l_i, m_i, qk, row_factor, v_base, vs_base, out_factor, full_end - BLOCK_N,
                                         hi, stride_vn, stride_vd, stride_s, BLOCK_N, HEAD_DIM, PER_KEY, False,
                                         EXP16, SUM16)
        else:
            for start_n in range(lo, full_end, BLOCK_N):
                qk = _block_scores(q, k_base, ks_base, start_n, hi, stride_kn, stride_kd, stride_s,
                                   BLOCK_N, HEAD_DIM, PER_KEY, False)
                acc, l_i, m_i = _fold_values(acc, l_i, m_i, qk, row_factor, v_base, vs_base, out_factor, start_n, hi,
                                             stride_vn, stride_vd, stride_s, BLOCK_N, HEAD_DIM, PER_KEY, False,
                                             EXP16, SUM16)
        if full_end < hi:
            qk = _block_scores(q, k_base, ks_base, full_end, hi, stride_kn, stride_kd, stride_s,
                               BLOCK_N, HEAD_DIM, PER_KEY, True)
            acc, l_i, m_i = _fold_values(acc, l_i, m_i, qk, row_factor, v_base, vs_base, out_factor, full_end, hi,
                                         stride_vn, stride_vd, stride_s, BLOCK_N, HEAD_DIM, PER_KEY, True, EXP16, SUM16)
        _store_out(O, M_OUT, L_OUT, acc, l_i, m_i, out_factor, split, b, h, pid_bh, offs_m, n_queries,
                   stride_os, stride_ob, stride_oh, stride_om, stride_od, HEAD_DIM, SPLIT)


if triton is not None:
    @triton.jit
    def _write_fp8_keys(K, V, K8, VT8, KS, VS, START, n_new,
                        stride_kh, stride_kn, stride_vh, stride_vn, stride_k8h, stride_k8n, stride_vth, stride_vtd,
                        stride_sh, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
        """One head's block of new keys and values, divided by the head's scale and cast to FP8, written at cache
        slot START[0] + j: keys as rows, values transposed (a tile transpose, so both writes are contiguous)."""
        pid = tl.program_id(0)
        h = tl.program_id(1)
        start = tl.load(START)
        offs_n = pid * BLOCK + tl.arange(0, BLOCK)
        offs_d = tl.arange(0, HEAD_DIM)
        rows = offs_n < n_new
        k = tl.load(K + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :], mask=rows[:, None])
        v = tl.load(V + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :], mask=rows[:, None])
        k8 = tl.clamp(k.to(tl.float32) / tl.load(KS + h * stride_sh), -448.0, 448.0).to(tl.float8e4nv)
        v8 = tl.clamp(v.to(tl.float32) / tl.load(VS + h * stride_sh), -448.0, 448.0).to(tl.float8e4nv)
        tl.store(K8 + h * stride_k8h + (start + offs_n)[:, None] * stride_k8n + offs_d[None, :], k8, mask=rows[:, None])
        tl.store(VT8 + h * stride_vth + offs_d[:, None] * stride_vtd + (start + offs_n)[None, :], tl.trans(v8),
                 mask=rows[None, :])


def write_fp8_keys(cache: Fp8Keys, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor, block: int = 64):
    """Quantize new keys and values k, v [1, H, n, D] with cache's per-head scales ([1, H]) and write them at slots
    start[0] .. start[0] + n - 1 (start: a device tensor, so a captured CUDA graph can move the slot): one fused
    kernel instead of casts, a transpose and scattered byte copies."""
    if cache.per_key:
        raise ValueError("write_fp8_keys writes caches with a scale per head")
    B, H, n, D = k.shape
    if B != 1 or k.stride(-1) != 1 or v.stride(-1) != 1 or cache.k.stride(-1) != 1 or cache.v_t.stride(-1) != 1:
        raise ValueError("write_fp8_keys takes one batch with the channels contiguous")
    grid = (triton.cdiv(n, block), H)
    _write_fp8_keys[grid](k, v, cache.k, cache.v_t, cache.k_scale, cache.v_scale, start, n,
                          k.stride(1), k.stride(2), v.stride(1), v.stride(2), cache.k.stride(1), cache.k.stride(2),
                          cache.v_t.stride(1), cache.v_t.stride(2), cache.k_scale.stride(1),
                          BLOCK=block, HEAD_DIM=D)


def default_blocks(fp8: bool) -> dict:
    """Block sizes, warps and pipeline stages: the fastest of bench_attention.py's sweep on the H200 at head_dim 128
    (docs/benchmarks.md): bf16 128x128, 8 warps, 3 stages; FP8 64x128, 4 warps, 3 stages (with
    key_splits 1: its 888 programs at the Wan shape already fill the waves, and splitting lost 5-50 %)."""
    plain = {"QK_AHEAD": False, "EXP16": False, "SUM16": False}
    if fp8:
        return {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3, **plain}
    return {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3, **plain}


def parse_blocks(text: str) -> dict:
    """'128x64w4s3' -> BLOCK_M 128, BLOCK_N 64, 4 warps, 3 stages (bench_attention.py's --configs), with optional
    letters after it: 'a' issues each block's q k^T one block ahead (QK_AHEAD), 'h' takes exp2 in half precision
    (EXP16, _fold_block), 'f' with 'h' also sums each block's rows in half precision (SUM16), e.g. 64x128w4s3ahf.
    On the H200 every letter lost to the plain default (docs/benchmarks.md); they stay for other GPUs."""
    found = re.fullmatch(r"(\d+)x(\d+)w(\d+)s(\d+)([ahf]*)", text.strip())
    if not found:
        raise ValueError(f"kernel config {text!r}: expected BLOCK_MxBLOCK_NwWARPSsSTAGES[a][h][f], e.g. 128x64w4s3")
    m, n, w, st = map(int, found.groups()[:4])
    return {"BLOCK_M": m, "BLOCK_N": n, "num_warps": w, "num_stages": st,
            "QK_AHEAD": "a" in found.group(5), "EXP16": "h" in found.group(5), "SUM16": "f" in found.group(5)}


def auto_key_splits(query_blocks: int, multiprocessors: int, key_blocks: int) -> int:
    """How many slices to split the keys into so that the programs fill whole waves of the multiprocessors (one
    program each): the S in 1..4 with the fullest last wave, each slice keeping >= 8 blocks of keys."""
    best, best_fill = 1, 0.0
    for s in range(1, 5):
        if s > 1 and key_blocks < 8 * s:
            break
        programs = query_blocks * s
        fill = programs / (math.ceil(programs / multiprocessors) * multiprocessors)
        if fill > best_fill + 0.02:
            best, best_fill = s, fill
    return best


def attention(q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None, *,
              fp8_keys: Fp8Keys | None = None, fp8: bool | str = False, key_splits: int | str = 1,
              blocks: dict | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for q [B, H, M, D] and k, v [B, H, N, D] (bf16/fp16/fp32, any strides), or with
    `fp8_keys` (or `fp8=True` / "per-head", which quantizes k and v here with a scale per key / per head: for
    benchmarks; a stream keeps its cache in FP8) in FP8.
    key_splits: an int, or "auto" (auto_key_splits: whole waves on this GPU). Returns [B, H, M, D] in q's dtype
    (unsplit: a view of [B, M, H, D] memory, the heads side by side as an output projection reads them).
    (Measured slower on the H200 and removed: a version loading k and v through TMA descriptors, git history;
    rescaling the output only when a row maximum grew past a threshold, commit 9980f45.)"""
    if fp8 and fp8_keys is None:
        fp8_keys = quantize_keys(k, v, per_key=fp8 != "per-head")
    B, H, M, D = q.shape
    if fp8_keys is not None:
        k, v = fp8_keys.k, fp8_keys.v_t.transpose(-1, -2)  # v as a [B, H, N, D] view of the transposed buffer
        ks, vs = fp8_keys.k_scale, fp8_keys.v_scale
        per_key = fp8_keys.per_key
        vs_max = vs.amax(-1).float().contiguous() if per_key else vs  # [B, H]
    else:
        ks = vs = vs_max = torch.ones(1, 1, 1, device=q.device, dtype=torch.float32)
        per_key = False
    N = k.shape[2]
    if D not in (16, 32, 64, 128, 256):
        raise ValueError(f"head_dim {D}: the kernel takes a power of two from 16 to 256")
    cfg = dict(default_blocks(fp8_keys is not None), **(blocks or {}))
    if key_splits == "auto":
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 132
        key_splits = auto_key_splits(triton.cdiv(M, cfg["BLOCK_M"]) * B * H, sms, triton.cdiv(N, cfg["BLOCK_N"]))
    splits = max(1, min(int(key_splits), math.ceil(N / cfg["BLOCK_N"])))
    per_split = math.ceil(math.ceil(N / splits) / cfg["BLOCK_N"]) * cfg["BLOCK_N"]
    splits = math.ceil(N / per_split)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]), B * H, splits)
    split = splits > 1
    if split:
        out = torch.empty(splits, B, H, M, D, device=q.device, dtype=torch.float32)
        m_out = torch.empty(splits, B, H, M, device=q.device, dtype=torch.float32)
        l_out = torch.empty_like(m_out)
        so = out.stride()
    else:  # [B, M, H, D] in memory, a [B, H, M, D] view: the heads side by side, as the output projection reads them
        out = torch.empty(B, M, H, D, device=q.device, dtype=q.dtype).transpose(1, 2)
        m_out = l_out = vs_max
        so = (0,) + out.stride()
    sks = tuple(ks.stride()) + (0,) * (3 - ks.dim())  # per head: the key stride unused
    _attention_forward[grid](
        q, k, v, ks, vs, vs_max, out, m_out, l_out,
        *q.stride(), *k.stride(), *v.stride(), *sks, *so,
        H, M, N, per_split, D ** -0.5 * LOG2E,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], HEAD_DIM=D, FP8=fp8_keys is not None, PER_KEY=per_key,
        SPLIT=split, QK_AHEAD=cfg["QK_AHEAD"] and N - (splits - 1) * per_split >= cfg["BLOCK_N"],  # a full block each
        EXP16=cfg["EXP16"], SUM16=cfg["EXP16"] and cfg["SUM16"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return merge_splits(out, m_out, l_out).to(q.dtype) if split else out


def merge_splits(out: torch.Tensor, row_max: torch.Tensor, row_sum: torch.Tensor) -> torch.Tensor:
    """The attention over all keys from S slices' unnormalised outputs out [S, ..., M, D], each row's maximum score
    (base 2) [S, ..., M] and sum of exp2(score - maximum) [S, ..., M]: float32 [..., M, D]."""
    weight = torch.exp2(row_max - row_max.amax(0, keepdim=True))
    return (out * weight[..., None]).sum(0) / (weight * row_sum).sum(0)[..., None]
