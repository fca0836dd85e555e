"""`knotanim bench`: frames/s, per-chunk latency, time to first frame and peak memory of the streaming engine,
for one backend or several side by side.

One --backend is measured in this process. Several (`--backend torch --backend compiled --backend onnxruntime`)
each run in a child process of their own, so each peak memory is its own and compile caches do not leak between
them; a child that crashes or passes --timeout-s is "failed" (exit status 1), one whose backend cannot be built
here (not installed, no GPU) is "unavailable" (not a failure). --json keeps every backend's result, rewritten
after each, so a run stopped early keeps what it measured.

Timing (knotanim.profiles.measure_stream, the path the live profile choice takes): after a warm-up stream
(compilation, allocation, graph capture), random audio is pushed one frame at a time, faster than real time;
chunk latency is the compute time of each push that produced frames (DiT step + decode), frames/s = frames /
summed chunk latency, time to first frame counts from stream creation. Building the backend (export, compile)
is reported apart.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from knotanim.cli.main import command_line
from knotanim.config import BACKENDS
from knotanim.request import ModelRequest, add_model_arguments, positive_float


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure streaming speed (frames/s, per-chunk latency, time to first frame)",
                       description="Stream random audio through a model and report its speed, per backend. "
                       "A measurement, not a test.")
    add_model_arguments(p, flags=("model", "tiny", "device", "dtype", "backend", "steps", "engine-dir"),
                        several_backends=True)
    p.add_argument("--config", help="a config YAML/JSON to benchmark with random weights instead of a checkpoint")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="seconds of audio to stream (default 10)")
    p.add_argument("--seconds-for", type=parse_seconds_for, default={}, metavar="NAME=S[,NAME=S]",
                   help="per-backend seconds of audio instead of --seconds, e.g. onnxruntime=1 (a slow backend: "
                   "fewer chunks say as much)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--timeout-s", type=positive_float, help="wall-clock limit of each backend's child process")
    p.add_argument("--json", metavar="PATH", help="write every backend's result here (rewritten after each)")
    p.add_argument("--append", metavar="MD", help="append the result as table rows to this Markdown file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one backend, print its JSON result
    p.set_defaults(run=run)


def parse_seconds_for(text: str) -> dict[str, float]:
    """'onnxruntime=1,compiled=2' -> {'onnxruntime': 1.0, 'compiled': 2.0}; '' -> {}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in BACKENDS:
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=SECONDS with NAME one of {', '.join(BACKENDS)}")
        try:
            seconds = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not a number") from None
        if not seconds > 0:
            raise argparse.ArgumentTypeError(f"{item!r}: the seconds must be > 0")
        out[name.strip()] = seconds
    return out


def run(args: argparse.Namespace) -> int:
    ModelRequest.from_args(args)  # a bad --device etc. is one line before anything loads
    backends = args.backend or ["torch"]
    if args.child:
        from knotanim.errors import BackendUnavailable

        try:
            result = measure(args, backends[0], args.seconds)
        except BackendUnavailable as e:  # not installed / no such device here: a row that says so, not a failure
            print(f"knotanim bench: {backends[0]}: {e}", file=sys.stderr)
            result = {"backend": backends[0], "unavailable": str(e)}
        print(json.dumps(result))
        return 0
    if len(backends) == 1 and args.timeout_s is None:
        name = backends[0]
        result = measure(args, name, args.seconds_for.get(name, args.seconds))
        results = [dict(result, status="ok", seconds=args.seconds_for.get(name, args.seconds))]
    else:
        results = []
        for name in backends:
            results.append(_run_child(args, name))
            print(_row(results[-1]), flush=True)
            _write_json(args, results)
    if len(results) == 1 and results[0]["status"] == "ok":
        print(_line(results[0]))
    _write_json(args, results)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("".join(f"| {time.strftime('%Y-%m-%d')} | `{_command(args)}` | {_row(r)} |\n" for r in results))
    return 1 if any(r["status"] == "failed" for r in results) else 0


def measure(args: argparse.Namespace, name: str, seconds: float) -> dict:
    """One backend's speed in this process: a JSON-ready dict."""
    import numpy as np
    import torch

    from knotanim.animator import KnotAnimator, default_model_path, resolve_device
    from knotanim.config import KnotAnimConfig, tiny_config
    from knotanim.profiles import cpu_name, measure_stream

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = ModelRequest.from_args(args).torch_dtype() or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model_path = None
    if args.tiny or args.config:
        cfg = tiny_config() if args.tiny else KnotAnimConfig.load(args.config)
        anim, model = KnotAnimator.from_config(cfg, device=device, dtype=dtype), cfg.name
    else:
        model_path = args.model or str(default_model_path())
        anim, model = KnotAnimator.from_pretrained(model_path, device=device, dtype=dtype), Path(model_path).name
    cfg = anim.config
    t0 = time.perf_counter()
    backend = None
    if name != "torch":
        from knotanim.engines import select_backend

        backend, _ = select_backend(name, anim, steps=args.steps, model_path=model_path, artifacts=args.engine_dir,
                                    progress=lambda m: print(f"backend: {m}", file=sys.stderr, flush=True))
    build_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup = 2 * cfg.stream.chunk + cfg.stream.knot + 2  # two chunks: compilation and capture happen here
    speed = measure_stream(anim, seconds, backend=backend, steps=args.steps, warmup_frames=warmup)
    lat = np.array(speed.chunk_times) * 1000
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB GPU"
        dev_name = torch.cuda.get_device_name(device)
    else:
        import resource

        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS"
        dev_name = f"{cpu_name()} CPU, {torch.get_num_threads()} threads"
    params = anim.parameter_count()
    return {"backend": backend.name if backend is not None else "torch", "model": model, "fps": speed.fps,
            "median_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95)),
            "first_ms": speed.first_frame_s * 1000, "frames": speed.frames, "wall_s": speed.wall_s, "peak": peak,
            "build_s": build_s, "device": dev_name, "dtype": str(dtype).replace("torch.", ""),
            "shape": f"frame {cfg.frame_size}², {cfg.tokens_per_frame} tokens/frame, chunk {cfg.stream.chunk}+"
                     f"{cfg.stream.knot}, window {cfg.stream.window}, steps {args.steps or cfg.sampler.steps}, "
                     f"DiT {params['dit'] / 1e6:.1f}M + AE {params['autoencoder'] / 1e6:.1f}M params",
            "torch": torch.__version__}


def _run_child(args: argparse.Namespace, name: str) -> dict:
    """`name` measured in a child process: its result, or status failed / unavailable with the reason."""
    seconds = args.seconds_for.get(name, args.seconds)
    child = [sys.executable, "-m", "knotanim.cli.main", "bench", "--child", "--backend", name, "--seconds",
             str(seconds), "--device", args.device]
    for flag in ("model", "config", "dtype", "steps", "threads", "engine_dir"):
        if getattr(args, flag) is not None:
            child += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    child += ["--tiny"] if args.tiny else []
    t0 = time.perf_counter()
    try:  # the child's stderr (progress, warnings, a traceback) goes straight to ours, for the log
        proc = subprocess.run(child, stdout=subprocess.PIPE, text=True, timeout=args.timeout_s)
        rc, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired:  # run() has killed the child
        rc, out = None, ""
    result = {"backend": name, "child_wall_s": round(time.perf_counter() - t0, 1), "returncode": rc,
              "seconds": seconds}
    last = (out.strip().splitlines() or [""])[-1]
    try:  # the child's result line; a crash mid-print leaves a line that is not JSON: no result
        r = json.loads(last) if last.startswith("{") else None
    except ValueError:
        r = None
    if rc is None:
        return dict(result, status="failed", reason=f"timed out after {args.timeout_s:g} s (--timeout-s)")
    if r is None or rc != 0:  # a crash (its traceback is above), or a KnotAnimError's one line (exit status 2)
        return dict(result, status="failed", reason=f"no result, exit status {rc}")
    if "unavailable" in r:
        return dict(result, status="unavailable", reason=r["unavailable"])
    return dict(result, status="ok", **{k: v for k, v in r.items() if k != "backend"}, name=r["backend"])


def _line(r: dict) -> str:
    return (f"{r['model']} ({r.get('name', r['backend'])}): {r['fps']:.1f} frames/s (compute), chunk latency median "
            f"{r['median_ms']:.1f} ms / p95 {r['p95_ms']:.1f} ms, time to first frame {r['first_ms']:.0f} ms (compute; "
            f"audio pushed faster than real time), {r['frames']} frames in {r['wall_s']:.1f} s wall, peak {r['peak']}, "
            f"build {r['build_s']:.1f} s; device {r['device']}, dtype {r['dtype']}, {r['shape']}, torch {r['torch']}")


def _row(r: dict) -> str:
    return _line(r) if r["status"] == "ok" else f"{r['backend']}: {r['status']}: {r['reason']}"


def _write_json(args: argparse.Namespace, results: list[dict]) -> None:
    if args.json:
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps({"command": _command(args), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "results": results}, indent=1), encoding="utf-8")
        tmp.replace(args.json)


def _command(args: argparse.Namespace) -> str:
    """The command line that repeats this run, without its output files."""
    return command_line(args, leave_out=("append", "json", "child"))
