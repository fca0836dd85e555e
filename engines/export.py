"""Export pipelines: animator -> ONNX (+ parity check) -> TensorRT engine, or -> AOTInductor package.

Each step is cached on disk under names that carry what invalidates it (engines/cache.py), so a
second call returns the existing artifact at once. Used by `knotanim export` and by
`select_backend` when a backend is requested whose artifact does not exist yet.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from knotanim.engines.cache import EngineKey, animator_hash, aoti_path, onnx_path, resolve_precision
from knotanim.engines.descriptors import NetworkDescriptor, chunk_step_descriptor, warp_renderer_descriptor
from knotanim.stream.step import ChunkStep


@dataclass
class ExportResult:
    format: str
    path: Path
    descriptor: NetworkDescriptor
    model_hash: str
    reused: bool = False  # the artifact was already in the cache
    parity: object | None = None  # ParityReport, when a parity check ran
    notes: list[str] = field(default_factory=list)


def export_step(animator, knot: bool = True, steps: int | None = None) -> tuple[ChunkStep, NetworkDescriptor]:
    """A float32 CPU ChunkStep for export (a copy when the animator runs elsewhere or in another dtype)."""
    model = animator.model
    if next(model.parameters()).dtype != torch.float32 or animator.device.type != "cpu":
        model = copy.deepcopy(model).float().cpu().eval()
    cfg = animator.config
    steps = steps or cfg.sampler.steps
    return ChunkStep(model, cfg.stream.chunk, steps, cfg.sampler.shift), chunk_step_descriptor(cfg, knot=knot, steps=steps)


def ensure_onnx(animator, out_dir: str | Path, *, knot: bool = True, steps: int | None = None, model_path=None,
                model_hash: str | None = None, opset: int = 17, tolerance: float = 1e-3, force: bool = False,
                progress: Callable[[str], None] = print) -> ExportResult:
    """The ChunkStep's ONNX graph in out_dir (exported and parity-checked unless already there).

    The parity report (max abs error per output vs eager torch, ONNX Runtime CPU) is written beside
    the graph as JSON; a graph above `tolerance` is deleted and KnotAnimError raised.
    """
    step, desc = export_step(animator, knot, steps)
    model_hash = model_hash or animator_hash(animator, model_path)
    return _checked_onnx(step, desc, out_dir, model_hash, opset, tolerance, force, progress, "")


def ensure_renderer_onnx(animator, out_dir: str | Path, *, model_path=None, model_hash: str | None = None,
                         opset: int = 17, tolerance: float = 1e-3, force: bool = False,
                         progress: Callable[[str], None] = print) -> ExportResult:
    """A warp codec's renderer (WarpRenderStep: latents and reference -> flow, visibility, fill) as ONNX in
    out_dir, exported and parity-checked against torch with ONNX Runtime (CPU) unless already there."""
    from knotanim.model.warp import WarpRenderStep

    desc = warp_renderer_descriptor(animator.config)
    codec = animator.autoencoder
    if animator.device.type != "cpu" or next(codec.parameters()).dtype != torch.float32:
        codec = copy.deepcopy(codec).float().cpu()
    model_hash = model_hash or animator_hash(animator, model_path)
    return _checked_onnx(WarpRenderStep(codec.eval()), desc, out_dir, model_hash, opset, tolerance, force, progress,
                         "renderer ")


def _checked_onnx(module, desc: NetworkDescriptor, out_dir: str | Path, model_hash: str, opset: int, tolerance: float,
                  force: bool, progress: Callable[[str], None], what: str) -> ExportResult:
    """`module` as ONNX in out_dir under desc's tag and the model hash: reused when there (with its parity report),
    else exported, parity-checked against torch with ONNX Runtime (CPU; deleted above `tolerance`) and its
    report written beside it."""
    from knotanim.engines.onnxrt import OnnxRuntimeBackend, ParityReport, export_onnx, parity_check

    path = onnx_path(out_dir, desc.tag, model_hash)
    report_path = path.with_suffix(".json")
    if path.is_file() and report_path.is_file() and not force:
        progress(f"export: {path} is already there (model {model_hash[:12]}); --force rebuilds it")
        meta = json.loads(report_path.read_text(encoding="utf-8"))
        return ExportResult("onnx", path, desc, model_hash, reused=True, parity=ParityReport(**meta["parity"]))
    export_onnx(module, desc, path, opset=opset, progress=progress)
    progress(f"export: {what}parity check against torch with ONNX Runtime (CPU)")
    backend = OnnxRuntimeBackend(path, desc, "cpu", providers=["CPUExecutionProvider"])
    try:
        report = parity_check(module, backend, desc, tolerance=tolerance)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    progress(f"export: {report.line()}")
    meta = {"descriptor": {"tag": desc.tag, "inputs": [s.describe() for s in desc.inputs],
                           "outputs": [s.describe() for s in desc.outputs], **desc.meta},
            "model_hash": model_hash, "opset": opset, "parity": asdict(report)}
    report_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return ExportResult("onnx", path, desc, model_hash, parity=report)


def ensure_onnx_int8(animator, out_dir: str | Path, *, knot: bool = True, steps: int | None = None, model_path=None,
                     model_hash: str | None = None, tolerance: float | None = None, force: bool = False,
                     progress: Callable[[str], None] = print) -> ExportResult:
    """The int8 (dynamic quantization, CPU) graph `<tag>-<model12>-int8.onnx` in out_dir, made from the
    float32 graph (ensure_onnx) unless already there.

    Its parity report against eager torch is written beside it; the tolerance is a fraction of each
    output's scale (default INT8_TOLERANCE), and a graph above it is deleted and KnotAnimError raised.
    """
    from knotanim.engines.onnxrt import INT8_TOLERANCE, OnnxRuntimeBackend, ParityReport, parity_check, quantize_int8

    tolerance = INT8_TOLERANCE if tolerance is None else tolerance
    step, desc = export_step(animator, knot, steps)
    model_hash = model_hash or animator_hash(animator, model_path)
    path = onnx_path(out_dir, desc.tag, model_hash, "int8")
    report_path = path.with_suffix(".json")
    if path.is_file() and report_path.is_file() and not force:
        progress(f"export: {path} is already there (model {model_hash[:12]}); --force rebuilds it")
        meta = json.loads(report_path.read_text(encoding="utf-8"))
        return ExportResult("onnx-int8", path, desc, model_hash, reused=True, parity=ParityReport(**meta["parity"]))
    fp32 = ensure_onnx(animator, out_dir, knot=knot, steps=steps, model_hash=model_hash, force=force, progress=progress)
    quantize_int8(fp32.path, path, progress=progress)
    progress("export: int8 parity check against torch with ONNX Runtime (CPU)")
    backend = OnnxRuntimeBackend(path, desc, "cpu", providers=["CPUExecutionProvider"], precision="int8")
    try:
        report = parity_check(step, backend, desc, tolerance=tolerance, relative=True)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    progress(f"export: {report.line()}")
    meta = {"descriptor": {"tag": desc.tag, **desc.meta}, "model_hash": model_hash, "from": fp32.path.name,
            "quantization": "onnxruntime dynamic, MatMul weights int8 per channel (7-bit), activations uint8 per call",
            "parity": asdict(report)}
    report_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return ExportResult("onnx-int8", path, desc, model_hash, parity=report)


def ensure_engine(animator, out_dir: str | Path, *, knot: bool = True, steps: int | None = None, model_path=None,
                  precision: str = "auto", device: torch.device | str = "cuda", force: bool = False,
                  progress: Callable[[str], None] = print) -> ExportResult:
    """A TensorRT engine for this GPU in out_dir: ONNX first (ensure_onnx), then the build, both cached."""
    from knotanim.engines.tensorrt_engine import build_engine, engine_key, import_tensorrt

    import_tensorrt()  # fail early and clearly, before an ONNX export
    device = torch.device(device)
    onnx_result = ensure_onnx(animator, out_dir, knot=knot, steps=steps, model_path=model_path, progress=progress)
    precision = resolve_precision(precision, torch.cuda.get_device_properties(device))
    key = engine_key(device, onnx_result.model_hash, precision, onnx_result.descriptor.tag)
    path = Path(out_dir) / f"{key.stem}.engine"
    if path.is_file() and path.with_suffix(".json").is_file() and not force:
        progress(f"tensorrt: {path} is already built for this GPU")
        return ExportResult("tensorrt", path, onnx_result.descriptor, key.model_hash, reused=True, parity=onnx_result.parity)
    build_engine(onnx_result.path, path, key, progress=progress)
    return ExportResult("tensorrt", path, onnx_result.descriptor, key.model_hash, parity=onnx_result.parity,
                        notes=["fp8 needs Q/DQ nodes in the graph to use FP8 kernels"] if precision == "fp8" else [])


def expected_engine_key(animator, *, desc: NetworkDescriptor, model_hash: str, precision: str = "auto") -> EngineKey:
    """The EngineKey an engine must carry to run for `animator` on its CUDA device."""
    from knotanim.engines.tensorrt_engine import engine_key

    props = torch.cuda.get_device_properties(animator.device)
    return engine_key(animator.device, model_hash, resolve_precision(precision, props), desc.tag)


def ensure_aoti(animator, out_dir: str | Path, *, knot: bool = True, steps: int | None = None, model_path=None,
                device: torch.device | str | None = None, force: bool = False,
                progress: Callable[[str], None] = print) -> ExportResult:
    """An AOTInductor package of the ChunkStep for `device` (default: the animator's), cached."""
    from knotanim.engines.aoti import export_aoti

    device = torch.device(device or animator.device)
    cfg = animator.config
    steps = steps or cfg.sampler.steps
    model = copy.deepcopy(animator.model).to(device).eval() if device != animator.device else animator.model
    step = ChunkStep(model, cfg.stream.chunk, steps, cfg.sampler.shift)
    desc = chunk_step_descriptor(cfg, knot=knot, steps=steps, kv_dtype=next(model.parameters()).dtype)
    model_hash = animator_hash(animator, model_path)
    path = aoti_path(out_dir, desc.tag, model_hash, device.type)
    if path.is_file() and not force:
        progress(f"aoti: {path} is already there")
        return ExportResult("aoti", path, desc, model_hash, reused=True)
    export_aoti(step, desc, path, device, progress=progress)
    return ExportResult("aoti", path, desc, model_hash)
