"""`knotanim export`: the per-chunk step as ONNX (+ parity check), a TensorRT engine, or an AOTInductor package."""
from __future__ import annotations

import argparse
import sys
import time


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export the per-chunk step for a fast backend (ONNX, TensorRT, AOTInductor)",
        description="Export the streaming ChunkStep with static shapes. onnx: torch.onnx export, then a parity "
        "check against torch in ONNX Runtime (fails above --tolerance). tensorrt: an engine built from that "
        "ONNX for this GPU (cached by GPU, TensorRT version, model and precision). aoti: an AOTInductor "
        "package (the compiled path without TensorRT). Artifacts are reused when already in --out.")
    p.add_argument("--format", choices=("onnx", "tensorrt", "aoti"), default="onnx")
    p.add_argument("--model", metavar="PATH", help="checkpoint folder (default: the embedded model)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the knotanim cache, where "
                   "--backend onnxruntime/tensorrt/aoti/auto look)")
    p.add_argument("--no-knot", action="store_true", help="export the knot-off ablation variant (F = C frames)")
    p.add_argument("--steps", type=int, help="sampler steps baked into the graph (default: the model's)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16", "fp8"), default="auto",
                   help="TensorRT precision (auto: bf16 on sm >= 8.0, else fp16; fp8 needs sm >= 8.9)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device for tensorrt/aoti")
    p.add_argument("--opset", type=int, default=17, choices=range(17, 21), metavar="17-20", help="ONNX opset")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs error allowed by the parity check")
    p.add_argument("--force", action="store_true", help="rebuild even if the artifact exists")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from knotanim.animator import KnotAnimator, default_model_path, resolve_device
    from knotanim.engines import export as ex
    from knotanim.engines.cache import default_cache_dir

    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    out = args.out or str(default_cache_dir())
    model_path = args.model or str(default_model_path())
    device = resolve_device(args.device) if args.format != "onnx" else torch.device("cpu")
    if args.format == "tensorrt" and device.type != "cuda":
        from knotanim.engines.tensorrt_engine import import_tensorrt

        import_tensorrt()  # says "not installed" first where that is the real problem
        from knotanim.errors import BackendUnavailable

        raise BackendUnavailable("a TensorRT engine is built for a CUDA GPU; none is available here")
    progress(f"loading model {model_path}")
    # ONNX / TensorRT start from a float32 CPU graph; AOTInductor compiles for the device it runs on.
    load_device = device if args.format == "aoti" else "cpu"
    dtype = torch.bfloat16 if args.format == "aoti" and device.type == "cuda" else torch.float32
    anim = KnotAnimator.from_pretrained(model_path, device=load_device, dtype=dtype)
    common = dict(knot=not args.no_knot, steps=args.steps, model_path=model_path, force=args.force, progress=progress)
    if args.format == "onnx":
        result = ex.ensure_onnx(anim, out, opset=args.opset, tolerance=args.tolerance, **common)
        if anim.renders_from_reference:  # the warp codec's renderer is exported beside the step
            renderer = ex.ensure_renderer_onnx(anim, out, model_path=model_path, opset=args.opset,
                                               tolerance=args.tolerance, force=args.force, progress=progress)
            print(renderer.parity.line())
            print(f"onnx renderer: {renderer.path}{' (reused)' if renderer.reused else ''}")
    elif args.format == "tensorrt":
        result = ex.ensure_engine(anim, out, precision=args.precision, device=device, **common)
    else:
        result = ex.ensure_aoti(anim, out, device=device, **common)
    for note in result.notes:
        progress(f"note: {note}")
    if result.parity is not None:
        print(result.parity.line())
    print(f"{result.format}: {result.path}{' (reused)' if result.reused else ''}")
    return 0
