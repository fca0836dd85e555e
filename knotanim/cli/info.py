"""`knotanim info`: what is installed and usable here: versions, models, devices, backends, profiles.

The first thing to paste into a bug report.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, installed models and profiles, devices and backends",
                       description="Show what knotanim finds on this machine (paste it into bug reports).")
    p.add_argument("--model", help="also describe this checkpoint folder")
    p.set_defaults(run=run)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def describe_model(path) -> list[str]:
    from knotanim.checkpoint import read_manifest

    cfg, meta = read_manifest(path)
    size = sum(int(e.get("bytes", 0)) for e in meta.get("shards", []))
    m = cfg.model
    return [f"  {path}",
            f"    {cfg.name}: {cfg.frame_size}x{cfg.frame_size} at {cfg.fps} fps, DiT width {m.width} x {m.depth} blocks, "
            f"chunk {cfg.stream.chunk}+{cfg.stream.knot}, window {cfg.stream.window}, {cfg.sampler.steps} steps",
            f"    {len(meta.get('shards', []))} shard(s), {size / 2**20:.1f} MiB, trained steps {meta.get('trained_steps', 'n/a')}",
            f"    audio look-ahead {cfg.audio_lookahead_seconds * 1000:.1f} ms; chunk {cfg.stream.chunk / cfg.fps * 1000:.0f} ms"]


def run(args: argparse.Namespace) -> int:
    import torch

    import knotanim
    from knotanim.profiles import installed_profiles

    lines = [f"knotanim {knotanim.__version__} on Python {platform.python_version()} ({platform.system()} {platform.machine()})",
             f"torch {torch.__version__}; CPU threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cap = torch.cuda.get_device_capability(i)
            lines.append(f"CUDA device {i}: {torch.cuda.get_device_name(i)} (compute capability {cap[0]}.{cap[1]})")
    else:
        lines.append("CUDA: not available (models run on the CPU)")
    lines.append("profiles installed:")
    for prof in installed_profiles():
        lines += describe_model(prof.path)
    if args.model:
        lines.append("model given:")
        lines += describe_model(args.model)
    optional = {"onnxruntime": "ONNX Runtime backend", "tensorrt": "TensorRT backend", "PyQt6": "desktop app",
                "sounddevice": "microphone", "pyvirtualcam": "virtual camera", "av": "audio/video files"}
    lines.append("optional parts:")
    for module, what in optional.items():
        lines.append(f"  {what:<20} {'yes' if _has(module) else 'no  (' + module + ' not installed)'}")
    if _has("onnxruntime"):
        import onnxruntime

        lines.append(f"  onnxruntime providers: {', '.join(onnxruntime.get_available_providers())}")
    print("\n".join(lines))
    return 0
