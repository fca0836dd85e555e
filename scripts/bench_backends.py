#!/usr/bin/env python
"""Compare inference backends on one machine: frames/s, per-chunk latency, time to first frame, peak memory.

Not a test. Each backend runs in its own child process (so peak memory is its own, and compile
caches do not leak between them); the parent prints one Markdown row per backend with the exact
command and device, and with --append adds them to docs/benchmarks.md (`| date | command | result |`).

  python scripts/bench_backends.py --tiny --seconds 4
  python scripts/bench_backends.py --seconds 2 --backends torch,onnxruntime --append docs/benchmarks.md
  python scripts/bench_backends.py --seconds 3 --seconds-for onnxruntime=1 --timeout-s 100 --json $OUT/backends.json
                                                                              # the H200 call

--json writes every backend's measurement (or why it has none) after each backend, so a run stopped
from outside keeps the backends already done; --timeout-s stops one backend's child process (a
compile that hangs) and goes on with the next. A backend that cannot be built here (not installed,
no GPU) is "unavailable"; one that crashes or times out is "failed", and the exit status is then 1.
Runs from a source checkout without installing knotanim (the checkout is put on sys.path).

Timing: after a warm-up stream (compilation, allocation, graph capture), audio is pushed one
frame at a time, faster than real time; chunk latency is the compute time of each push that
produced frames (DiT step + decode), fps = frames / summed chunk latency, time to first frame
counts from stream creation (reference cache included). Export/compile time is reported apart.
--seconds-for gives one backend a shorter (or longer) timed stream than --seconds: on the H200 machine
onnxruntime is a CPU session (its export, parity check on the CPU and every chunk take seconds), so the
device call times it over 1 s of audio; each JSON result says its "seconds".
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:  # a source checkout where knotanim is not installed (the device machine): use the checkout
    import knotanim  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--tiny", action="store_true", help="the tiny test config with random weights")
    p.add_argument("--backends", default="torch,compiled,onnxruntime", help="comma-separated (torch, compiled, onnxruntime, tensorrt, aoti)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds of audio per timed stream")
    p.add_argument("--seconds-for", default="", metavar="NAME=S[,NAME=S]",
                   help="per-backend seconds of audio instead of --seconds, e.g. onnxruntime=1 (a CPU session: "
                        "every chunk takes a large part of a second, fewer of them say as much)")
    p.add_argument("--threads", type=int, help="torch / ONNX Runtime CPU threads")
    p.add_argument("--artifacts", help="folder for exported graphs (default: a fresh temporary folder)")
    p.add_argument("--append", metavar="MD", help="append the rows to this Markdown file")
    p.add_argument("--json", metavar="PATH", help="write every backend's result here (rewritten after each)")
    p.add_argument("--timeout-s", type=float, help="wall-clock limit of each backend's child process, seconds")
    p.add_argument("--only", help=argparse.SUPPRESS)  # child mode: run one backend, print JSON
    args = p.parse_args(argv)
    try:
        args.seconds_by_backend = parse_seconds_for(args.seconds_for)
    except ValueError as e:
        p.error(f"--seconds-for: {e}")
    return args


def parse_seconds_for(text: str) -> dict[str, float]:
    """'onnxruntime=1,compiled=2' -> {'onnxruntime': 1.0, 'compiled': 2.0}; '' -> {}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item!r} is not NAME=SECONDS")
        seconds = float(value)
        if not seconds > 0:
            raise ValueError(f"{item!r}: the seconds must be > 0")
        out[name.strip()] = seconds
    return out


def run_one(args) -> dict:
    import numpy as np
    import torch

    from knotanim.animator import KnotAnimator, default_model_path, resolve_device
    from knotanim.config import tiny_config
    from knotanim.engines import build_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.tiny:
        anim, model_path = KnotAnimator.from_config(tiny_config(), device=device, dtype=dtype), None
    else:
        model_path = args.model or str(default_model_path())
        anim = KnotAnimator.from_pretrained(model_path, device=device, dtype=dtype)
    cfg = anim.config
    t0 = time.perf_counter()
    backend = build_backend(args.only, anim, model_path=model_path, artifacts=args.artifacts,
                            progress=lambda m: print(m, file=sys.stderr))
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    audio = (rng.standard_normal(int(args.seconds * cfg.audio.sample_rate)) * 0.1).astype(np.float32)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    spf = cfg.samples_per_frame
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    t0 = time.perf_counter()
    warm = anim.stream(ref, backend=backend)  # warm-up: the first chunk compiles / captures
    warm.push_audio(audio[: spf * (2 * cfg.stream.chunk + cfg.stream.knot + 2)])
    sync()
    warm_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    stream = anim.stream(ref, backend=backend)
    first, chunk_times, frames = None, [], 0
    for start in range(0, audio.size, spf):
        c0 = time.perf_counter()
        out = stream.push_audio(audio[start : start + spf])
        sync()
        if out:
            chunk_times.append(time.perf_counter() - c0)
            frames += len(out)
            if first is None:
                first = time.perf_counter() - t0
    lat = np.array(chunk_times) * 1000
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB GPU"
        dev_name = torch.cuda.get_device_name(device)
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS"
        from knotanim.profiles import cpu_name

        dev_name = f"{cpu_name()} CPU, {torch.get_num_threads()} threads"
    params = anim.parameter_count()
    return {"backend": backend.name, "fps": frames / lat.sum() * 1000, "median_ms": float(np.median(lat)),
            "p95_ms": float(np.percentile(lat, 95)), "first_ms": first * 1000, "frames": frames, "peak": peak,
            "build_s": build_s, "warm_s": warm_s, "device": dev_name, "dtype": str(dtype).replace("torch.", ""),
            "model": "tiny" if args.tiny else Path(model_path).name,
            "shape": f"frame {cfg.frame_size}², {cfg.tokens_per_frame} tokens/frame, chunk {cfg.stream.chunk}+"
                     f"{cfg.stream.knot}, window {cfg.stream.window}, steps {cfg.sampler.steps}, "
                     f"DiT {params['dit'] / 1e6:.1f}M params",
            "torch": torch.__version__}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.only:
        from knotanim.errors import BackendUnavailable

        try:
            print(json.dumps(run_one(args)))
        except BackendUnavailable as e:  # not installed / no such device here: a row that says so, not a failure
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            print(json.dumps({"backend": args.only, "unavailable": str(e)}))
        except Exception as e:  # noqa: BLE001 - the traceback to stderr (the log), one line to the parent
            import traceback

            traceback.print_exc()
            print(json.dumps({"backend": args.only, "error": f"{type(e).__name__}: {str(e).strip()[:300]}"}))
            return 1
        return 0
    artifacts = args.artifacts or tempfile.mkdtemp(prefix="knotanim-bench-")
    cmd = "python scripts/bench_backends.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows, results = [], []
    for name in args.backends.split(","):
        seconds = args.seconds_by_backend.get(name, args.seconds)
        child = [sys.executable, __file__, "--only", name, "--artifacts", artifacts, "--seconds", str(seconds),
                 "--device", args.device] + (["--tiny"] if args.tiny else []) + (["--model", args.model] if args.model else []) \
            + (["--threads", str(args.threads)] if args.threads else [])
        t0 = time.perf_counter()
        try:  # the child's stderr (progress, warnings, a traceback) goes straight to ours, for the log
            proc = subprocess.run(child, stdout=subprocess.PIPE, text=True, timeout=args.timeout_s)
            rc, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired:  # run() has killed the child
            rc, out = None, ""
        result = {"backend": name, "wall_s": round(time.perf_counter() - t0, 1), "returncode": rc, "seconds": seconds}
        last = (out.strip().splitlines() or [""])[-1]
        try:  # the child's result line; a crash mid-print leaves a line that is not JSON: no result
            r = json.loads(last) if last.startswith("{") else None
        except ValueError:
            r = None
        if r is None or "unavailable" in r or "error" in r:
            if rc is None:
                why = f"timed out after {args.timeout_s:g} s (--timeout-s)"
            elif r is not None:
                why = r.get("unavailable") or r["error"]
            else:
                why = f"no result, exit status {rc}"
            result.update(status="unavailable" if r is not None and "unavailable" in r else "failed", reason=why)
            row = f"| {time.strftime('%Y-%m-%d')} | `{cmd}` | {name}: {result['status']}: {why} |"
        else:
            result.update(status="ok", **{k: v for k, v in r.items() if k != "backend"}, name=r["backend"])
            row = (f"| {time.strftime('%Y-%m-%d')} | `{cmd}` | **{r['backend']}** ({r['model']}): {r['fps']:.2f} frames/s, "
                   f"chunk latency median {r['median_ms']:.1f} ms / p95 {r['p95_ms']:.1f} ms, time to first frame "
                   f"{r['first_ms']:.0f} ms, peak {r['peak']}, {r['frames']} frames; export/build {r['build_s']:.1f} s, "
                   f"warm-up {r['warm_s']:.1f} s; device {r['device']}, {r['dtype']}, {r['shape']}, torch {r['torch']} |")
        result["row"] = row
        print(row, flush=True)
        rows.append(row)
        results.append(result)
        if args.json:
            tmp = Path(args.json + ".tmp")
            tmp.write_text(json.dumps({"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                       "results": results}, indent=1), encoding="utf-8")
            tmp.replace(args.json)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
