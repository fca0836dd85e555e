"""Interleaved A/B of whole-stream frames/s on the CPU: several backends (and DiT dtypes) in one process.

    python scripts/lite_ab.py --model assets/lite --threads 2 --variants torch,compiled,onnxruntime
    taskset -c 0-3 python scripts/lite_ab.py --model assets/lite --threads 4 \
        --variants torch,compiled,onnxruntime,torch@bfloat16,compiled@bfloat16

Not a test. scripts/lite_speed.py times each backend once, one after the other, so a load change on a
shared machine lands on one backend; this builds every variant first (compiles, exports; the build
seconds are printed), then streams with each in turn for --rounds rounds (the order reversed every
other round), each stream timed by `knotanim.profiles.measure_stream` (the path lite_speed and the
live start-up choice use), and reports the median frames/s per variant, every round's value, the
median of the fastest chunk, and the load average (1 min) after each round. A variant is a backend
name (torch, compiled, onnxruntime), optionally `@bfloat16` for a bf16 DiT (the autoencoder stays
float32; outputs within bf16 rounding of float32, not float tolerance).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--model", default="assets/lite", help="checkpoint folder (default assets/lite)")
    what.add_argument("--config", help="a model config (e.g. configs/models/lite.yaml) with random weights instead")
    p.add_argument("--variants", default="torch,compiled,onnxruntime",
                   help="comma-separated backend names, each optionally @bfloat16 (default torch,compiled,onnxruntime)")
    p.add_argument("--threads", type=int, default=2, help="torch (and ONNX Runtime) CPU threads (default 2)")
    p.add_argument("--rounds", type=int, default=4, help="streams per variant, interleaved (default 4)")
    p.add_argument("--frames", type=int, default=48, help="frames a stream (default 48)")
    p.add_argument("--artifacts", help="folder for exported graphs (default: a fresh temporary folder)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from lite_speed import load_animator, seconds_for  # this folder's speed script: the same models and streams

    from knotanim.animator import KnotAnimator
    from knotanim.engines.select import StepBackends
    from knotanim.profiles import cpu_name, load_average_1min, measure_stream

    animators: dict[torch.dtype, KnotAnimator] = {}

    def animator(dtype: torch.dtype) -> KnotAnimator:
        if dtype not in animators:
            animators[dtype] = load_animator(None if args.config else args.model, args.config, dtype)
        return animators[dtype]

    variants = args.variants.split(",")
    print(f"{time.strftime('%Y-%m-%d %H:%M')} lite_ab {' '.join(argv if argv is not None else sys.argv[1:])}; "
          f"{cpu_name()}, {os.cpu_count()} logical cores, {args.threads} threads, torch {torch.__version__}; "
          f"load average (1 min) {load_average_1min():.2f}", flush=True)
    artifacts = args.artifacts or tempfile.mkdtemp(prefix="knotanim-lite-ab-")
    built = {}
    for v in variants:
        name, _, dtype_name = v.partition("@")
        dtype = getattr(torch, dtype_name or "float32")
        anim = animator(dtype)
        t0 = time.perf_counter()
        backend = StepBackends(name, anim, artifacts=artifacts)()
        built[v] = (anim, backend)
        print(f"built {v} ({backend.name}) in {time.perf_counter() - t0:.1f} s", flush=True)
    fps: dict[str, list[float]] = {v: [] for v in variants}
    best: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            anim, backend = built[v]
            speed = measure_stream(anim, seconds_for(anim.config, args.frames), backend=backend)
            fps[v].append(speed.fps)
            best[v].append(anim.config.stream.chunk / min(speed.chunk_times))
        print(f"round {r + 1}: " + ", ".join(f"{v} {fps[v][-1]:.1f}" for v in variants)
              + f"; load {load_average_1min():.2f}", flush=True)
    print("| variant | backend | median frames/s | rounds | median best chunk as frames/s |")
    print("|---|---|---|---|---|")
    for v in variants:
        rounds = " ".join(f"{x:.1f}" for x in fps[v])
        print(f"| {v} | {built[v][1].name} | {statistics.median(fps[v]):.1f} | {rounds} | "
              f"{statistics.median(best[v]):.1f} |")
    try:
        loads = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # a system that gives no load average (sandboxed kernels may not)
        loads = "n/a"
    print(f"{args.threads} threads, {args.frames} frames a stream, load average (1/5/15 min) {loads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
