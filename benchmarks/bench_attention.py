#!/usr/bin/env python
"""The attention kernel alone at the Wan2.1-shaped benchmark's sizes (issue #7, benchmark 2's remaining gap).

bench_wan_shape.py found the self-attention to be 59 % (clip) and 71 % (steady) of the Wan-shaped chunk's FLOPs, and
restricting SDPA to cuDNN to change nothing. This times each attention implementation on its own, at the query
length of one chunk (3 latent frames x 1,560 tokens) against the key lengths the workloads use (the chunk alone,
the clip's middle, the full 21-frame window; the 512 text tokens), with the keys and values read as a slice of a
longer cache, as the stream reads them. It says which kernel PyTorch's default SDPA choice runs (kernel names from
torch.profiler), each implementation's TFLOP/s (4 * Nq * Nk * head_dim * heads per call; calls timed back to back,
`time_ms`) and its error against a float32 reference.

Implementations: sdpa (PyTorch's default choice), flash / efficient / cudnn (SDPA restricted to one backend), flex
(compiled FlexAttention), and, where triton_attention imports and the device is CUDA, triton (our Triton
kernel, bf16), triton-fp8 (the same with float8 q, k, v and p, the keys from an FP8 cache with a scale per key) and
triton-fp8h (the same with a scale per head), each at every kernel
config of --configs and key split of --splits. An implementation that cannot run here is listed as skipped with the
reason.

  python benchmarks/bench_attention.py --out $OUT/attention.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

# our Triton kernel: its FP8 keys (none, a scale per key or per head)
TRITON_IMPLS = {"triton": None, "triton-fp8": "per key", "triton-fp8h": "per head"}
IMPLS = ("sdpa", "flash", "efficient", "cudnn", "flex") + tuple(TRITON_IMPLS)
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION"}


def attention_flops(heads: int, nq: int, nk: int, head_dim: int) -> float:
    return 4.0 * heads * nq * nk * head_dim  # q k^T and p v, two flops per multiply-add


def reference(q, k, v) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in float32, one head at a time (the full score matrix of every head is GBs)."""
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for h in range(q.shape[1]):
        s = (q[:, h].float() @ k[:, h].float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        out[:, h] = s.softmax(-1) @ v[:, h].float()
    return out


def implementation(name: str, device):
    """(callable(q, k, v) -> out, None) or (None, why it cannot run here)."""
    if name == "sdpa":
        return F.scaled_dot_product_attention, None
    if name in SDPA_BACKENDS:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backend = getattr(SDPBackend, SDPA_BACKENDS[name], None)
        if backend is None:
            return None, f"torch {torch.__version__} has no SDPBackend.{SDPA_BACKENDS[name]}"

        def run(q, k, v, backend=backend):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v)
        return run, None
    if name == "flex":
        from torch.nn.attention.flex_attention import flex_attention
        return torch.compile(flex_attention, dynamic=False), None
    raise ValueError(name)


def triton_problem(device) -> str | None:
    if device.type != "cuda":
        return "the Triton kernel needs a CUDA device"
    try:
        import triton_attention
    except ImportError as exc:
        return f"triton_attention does not import: {exc}"
    return triton_attention.unavailable(device)


def triton_variants(impl: str, configs: list[str], splits: list[str], k_cache, v_cache) -> dict:
    """name -> callable(q, k, v) for each kernel config and key split. triton-fp8(h) reads its keys from an FP8 copy of
    the whole cache made once here (as a stream keeps its cache), narrowed to the call's key length: the timed call
    quantizes only q (inside the kernel)."""
    import triton_attention as ta
    scales = TRITON_IMPLS[impl]
    fp8_cache = ta.quantize_keys(k_cache, v_cache, per_key=scales == "per key") if scales else None
    out = {}
    for cfg in configs:
        blocks = ta.parse_blocks(cfg)
        for sp in splits:
            key_splits = sp if sp == "auto" else int(sp)

            def run(q, k, v, blocks=blocks, key_splits=key_splits):
                if fp8_cache is None:
                    return ta.attention(q, k, v, key_splits=key_splits, blocks=blocks)
                return ta.attention(q, fp8_keys=fp8_cache.narrow(k.shape[2]), key_splits=key_splits, blocks=blocks)
            out[f"{impl} {cfg} splits {sp}"] = run
    return out


def compiled_triton_kernels() -> dict:
    """{cache key: compiled kernel} of triton_attention's kernel compiled so far in this process, each with
    its registers per thread and spilled bytes once launched (`n_regs`, `n_spills`). Triton's internals, which
    differ between versions: {} where they are not there."""
    try:
        import triton_attention as ta
        return {key: kernel for cache, *_ in ta._attention_forward.device_caches.values()
                for key, kernel in cache.items()}
    except Exception:  # no Triton, or another layout of its caches
        return {}


def kernel_names(fn, q, k, v) -> list[str]:
    """The GPU kernels one call runs (torch.profiler), most time first."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(q, k, v)
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    rows.sort(key=lambda e: -getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)))
    return [e.key[:160] for e in rows[:4]]


def time_ms(fn, q, k, v, iters: int, warmup: int, reps: int = 10) -> float:
    """Milliseconds per call: the median over `iters` samples, each `reps` calls back to back between two CUDA
    events, divided by reps. Back to back, the host queues the next call while the GPU runs this one, so a
    call's own launch time (Python, Triton's launcher) is not in the figure unless the kernels are shorter than
    it (timed singly, an FP8 call that takes ~1.34 ms inside the Wan stream's CUDA graph measured 1.66 ms)."""
    for _ in range(warmup):
        fn(q, k, v)
    if q.device.type != "cuda":
        import time
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn(q, k, v)
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn(q, k, v)
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / reps)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=3 * 1560)
    ap.add_argument("--keys", default="512,4680,18720,32760", help="key lengths, comma-separated")
    ap.add_argument("--cache", type=int, default=21 * 1560, help="the cache the keys are a slice of")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--configs", default="64x128w4s3,128x128w8s3,64x128w4s3a,64x128w4s3h,64x128w4s3hf,64x128w4s3ahf",
                    help="the Triton kernel's BLOCK_MxBLOCK_NwWARPSsSTAGES, comma-separated, each optionally followed "
                         "by a (q k^T one block ahead), h (exp2 in half precision) and f (with h: row sums in half "
                         "precision; triton_attention.parse_blocks) (default: %(default)s)")
    ap.add_argument("--splits", default="1,auto", help="the Triton kernel's key splits, comma-separated: numbers or auto")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10, help="calls back to back per timed sample (GPU)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    keys = [int(n) for n in a.keys.split(",")]
    impls = [i for i in a.impls.split(",") if i]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        ap.error(f"unknown implementation(s) {','.join(unknown)}; choose from {','.join(IMPLS)}")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {name}, {dtype}, torch {torch.__version__}; heads {a.heads} x {a.head_dim}, {a.queries} queries")
    g = torch.Generator(device="cpu").manual_seed(0)
    cache = max(a.cache, max(keys))
    q = torch.randn(1, a.heads, a.queries, a.head_dim, generator=g).to(dev, dtype)
    k_cache = torch.randn(1, a.heads, cache, a.head_dim, generator=g).to(dev, dtype)
    v_cache = torch.randn(1, a.heads, cache, a.head_dim, generator=g).to(dev, dtype)
    res = {"device": name, "dtype": str(dtype), "torch": torch.__version__, "heads": a.heads, "head_dim": a.head_dim,
           "queries": a.queries, "runs": [], "skipped": []}
    fns = {}
    for impl in impls:
        try:
            if impl.startswith("triton"):
                why = triton_problem(dev)
                found = {} if why else triton_variants(impl, a.configs.split(","), a.splits.split(","), k_cache, v_cache)
            else:
                fn, why = implementation(impl, dev)
                found = {impl: fn} if fn is not None else {}
        except Exception as exc:  # never a crash: the others' numbers matter more
            found, why = {}, f"{type(exc).__name__}: {exc}"
        if not found:
            res["skipped"].append({"impl": impl, "reason": why})
            print(f"{impl}: skipped ({why})")
        fns.update(found)
    registers = {}  # Triton implementation -> (registers per thread, spilled bytes) of the kernel it compiled
    for nk in keys:
        k, v = k_cache[:, :, :nk], v_cache[:, :, :nk]
        ref = reference(q, k, v)
        flops = attention_flops(a.heads, a.queries, nk, a.head_dim)
        for impl, fn in fns.items():
            try:
                before = compiled_triton_kernels()
                out = fn(q, k, v)
                new = [kern for key, kern in compiled_triton_kernels().items() if key not in before]
                if new:  # a key length may compile anew (Triton specializes integers by divisibility)
                    registers[impl] = (max(getattr(kern, "n_regs", None) or 0 for kern in new),
                                       max(getattr(kern, "n_spills", None) or 0 for kern in new))
                err = float((out.float() - ref).norm() / ref.norm())
                ms = time_ms(fn, q, k, v, a.iters, a.warmup, a.reps)
                kernels = kernel_names(fn, q, k, v) if dev.type == "cuda" else []
            except Exception as exc:
                res["skipped"].append({"impl": impl, "keys": nk, "reason": f"{type(exc).__name__}: {exc}"[:400]})
                print(f"{impl} @ {nk} keys FAILED: {exc}", file=sys.stderr)
                continue
            r = {"impl": impl, "keys": nk, "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12, "rel_err": err,
                 "kernels": kernels}
            if impl in registers:
                r["registers"], r["spilled_bytes"] = registers[impl]
            res["runs"].append(r)
            print(f"{impl} @ {nk} keys: {ms:.3f} ms, {r['tflops']:.0f} TFLOP/s, rel err {err:.1e}; "
                  f"{kernels[:1]}", flush=True)
            if a.out:
                with open(a.out, "w") as f:
                    json.dump(res, f, indent=1)
    print("\n| implementation | keys | ms | TFLOP/s | rel err vs float32 | main kernel | registers / spilled bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in res["runs"]:
        regs = f"{r['registers']} / {r['spilled_bytes']}" if "registers" in r else "-"
        print(f"| {r['impl']} | {r['keys']} | {r['ms']:.3f} | {r['tflops']:.0f} | {r['rel_err']:.1e} "
              f"| {(r['kernels'] or ['-'])[0][:70]} | {regs} |")
    for s in res["skipped"]:
        print(f"| {s['impl']} | {s.get('keys', 'all')} | skipped: {s['reason'][:100]} | | | | |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
