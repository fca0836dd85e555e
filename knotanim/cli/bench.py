"""`knotanim bench`: frames/s, per-chunk latency and time to first frame of the streaming engine."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure streaming speed (frames/s, per-chunk latency, time to first frame)",
                       description="Stream random audio through a model and report its speed. A script, not a test.")
    p.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--config", help="a config YAML/JSON to benchmark with random weights instead of a checkpoint")
    p.add_argument("--tiny", action="store_true", help="benchmark the tiny test config with random weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of audio to stream (default 10)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--append", metavar="MD", help="append the result as a table row to this Markdown file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from knotanim.animator import KnotAnimator, resolve_device
    from knotanim.config import KnotAnimConfig, tiny_config
    from knotanim.profiles import measure_stream
    from knotanim.profiles import cpu_name

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if args.tiny or args.config:
        cfg = tiny_config() if args.tiny else KnotAnimConfig.load(args.config)
        anim, name = KnotAnimator.from_config(cfg, device=device, dtype=dtype), cfg.name
    else:
        anim = KnotAnimator.from_pretrained(args.model, device=device, dtype=dtype)
        name = args.model or "default"
    cfg = anim.config
    speed = measure_stream(anim, args.seconds, steps=args.steps)  # the code path the profile choice measures
    frames, total, first, chunk_times, fps = speed.frames, speed.wall_s, speed.first_frame_s, speed.chunk_times, speed.fps
    lat = np.array(chunk_times) * 1000
    params = anim.parameter_count()
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()} CPU, {torch.get_num_threads()} threads"
    line = (f"{name}: {fps:.1f} frames/s (compute), chunk latency median {np.median(lat):.1f} ms / p95 "
            f"{np.percentile(lat, 95):.1f} ms, time to first frame {first * 1000:.0f} ms (compute; audio pushed faster "
            f"than real time), {frames} frames in {total:.1f} s wall; "
            f"device {dev_name}, dtype {str(dtype).replace('torch.', '')}, frame {cfg.frame_size}², {cfg.tokens_per_frame} tokens/frame, "
            f"chunk {cfg.stream.chunk}+{cfg.stream.knot}, window {cfg.stream.window}, steps {args.steps or cfg.sampler.steps}, "
            f"DiT {params['dit'] / 1e6:.1f}M + AE {params['autoencoder'] / 1e6:.1f}M params, torch {torch.__version__}")
    print(line)
    if args.append:
        path = Path(args.append)
        cmd = "knotanim bench " + " ".join(f"--{k.replace('_', '-')} {v}" if v is not True else f"--{k.replace('_', '-')}"
                                           for k, v in vars(args).items() if k not in ("run", "command", "debug", "append") and v not in (None, False))
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"| {time.strftime('%Y-%m-%d')} | `{cmd}` | {line} |\n")
    return 0
