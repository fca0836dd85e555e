"""ONNX export of a described network, the ONNX Runtime parity check, and the ONNX Runtime backend.

onnx / onnxruntime are optional (`pip install knotanim[onnx]`) and imported only when used.
The graph is exported in float32 (TensorRT lowers precision itself from builder flags); the
backend casts inputs to the graph's dtypes and the K/V outputs back to the caller's ring dtype.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from knotanim.engines.descriptors import NetworkDescriptor
from knotanim.errors import BackendUnavailable, KnotAnimError

DEFAULT_OPSET = 17


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed (pip install 'knotanim[onnx]')") from None
    return onnxruntime


@torch.no_grad()
def export_onnx(module: torch.nn.Module, desc: NetworkDescriptor, path: str | Path, opset: int = DEFAULT_OPSET,
                progress: Callable[[str], None] = print) -> Path:
    """Export `module` (called with desc's inputs, in order) to `path` with named, static I/O.

    Uses the TorchScript exporter (dynamo=False; SDPA with a boolean mask exports as plain ops),
    falling back to the dynamo exporter if that fails.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise BackendUnavailable("onnx is not installed (pip install 'knotanim[onnx]')") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = desc.sample_inputs(0, "cpu")
    if next(module.parameters()).dtype != torch.float32:
        raise KnotAnimError("export the model in float32 (TensorRT lowers precision from builder flags)")
    t0 = time.perf_counter()
    kwargs = dict(input_names=desc.input_names, output_names=desc.output_names, opset_version=opset)
    try:
        progress(f"export: tracing {desc.tag} to ONNX (opset {opset}, TorchScript exporter)")
        with warnings.catch_warnings():  # tracer notes on Python-level loops/branches: shapes are static
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module, inputs, str(path), dynamo=False, **kwargs)
    except Exception as e:  # noqa: BLE001: try the other exporter, then report both
        progress(f"export: TorchScript exporter failed ({type(e).__name__}: {str(e)[:200]}); trying dynamo=True")
        try:
            torch.onnx.export(module, inputs, str(path), dynamo=True, **kwargs)
        except Exception as e2:  # noqa: BLE001
            raise KnotAnimError(f"ONNX export failed with both exporters: {e}; {e2}") from e2
    progress(f"export: wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return path


def providers_for(device: torch.device, providers: list[str] | None = None) -> list[str]:
    """Execution providers to use, best first, among those the installed onnxruntime build offers."""
    ort = _import_ort()
    available = ort.get_available_providers()
    if providers:
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailable(f"onnxruntime providers {missing} are not in this build (it has {available})")
        return providers
    wanted = (["TensorrtExecutionProvider", "CUDAExecutionProvider"] if device.type == "cuda" else []) + ["CPUExecutionProvider"]
    return [p for p in wanted if p in available]


_NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.bool: np.bool_, torch.int64: np.int64}


class OnnxRuntimeBackend:
    """Runs an exported ChunkStep graph in an ONNX Runtime session.

    On CPU tensors go through numpy without copies where possible; on CUDA (CUDA/TensorRT EP) the
    session reads and writes torch's device memory through IOBinding.
    """

    def __init__(self, onnx_path: str | Path, desc: NetworkDescriptor, device: torch.device | str = "cpu",
                 providers: list[str] | None = None, threads: int | None = None):
        ort = _import_ort()
        self.desc, self.device, self.path = desc, torch.device(device), Path(onnx_path)
        if not self.path.is_file():
            raise BackendUnavailable(f"no ONNX graph at {self.path} (run knotanim export --format onnx)")
        self.providers = providers_for(self.device, providers)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        self.on_device = self.device.type == "cuda" and self.session.get_providers()[0] != "CPUExecutionProvider"
        self.name = f"onnxruntime[{self.session.get_providers()[0].replace('ExecutionProvider', '')}]"

    def run(self, *inputs: torch.Tensor):
        self.desc.check(inputs)
        out_dtype = inputs[2].dtype  # hist_k: the ring's dtype
        cast = [t.to(spec.dtype).contiguous() for spec, t in zip(self.desc.inputs, inputs)]
        if self.on_device:
            outs = self._run_bound(cast)
        else:
            feeds = {s.name: t.cpu().numpy() for s, t in zip(self.desc.inputs, cast)}
            outs = [torch.from_numpy(a).to(self.device) for a in self.session.run(self.desc.output_names, feeds)]
        committed, next_knot, new_k, new_v = outs
        return committed, next_knot, new_k.to(out_dtype), new_v.to(out_dtype)

    def _run_bound(self, cast: list[torch.Tensor]) -> list[torch.Tensor]:
        binding = self.session.io_binding()
        idx = self.device.index or 0
        for spec, t in zip(self.desc.inputs, cast):
            binding.bind_input(spec.name, "cuda", idx, _NP_DTYPES[spec.dtype], tuple(t.shape), t.data_ptr())
        outs = [torch.empty(s.shape, dtype=s.dtype, device=self.device) for s in self.desc.outputs]
        for spec, t in zip(self.desc.outputs, outs):
            binding.bind_output(spec.name, "cuda", idx, _NP_DTYPES[spec.dtype], tuple(t.shape), t.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch must be ready
        self.session.run_with_iobinding(binding)
        return outs


@dataclass
class ParityReport:
    """Max abs error per output of a backend against eager torch on the descriptor's sample inputs."""

    backend: str
    max_abs: dict[str, float]
    scale: dict[str, float]  # max |torch output|, for context
    tolerance: float
    seconds: float

    @property
    def worst(self) -> float:
        return max(self.max_abs.values())

    @property
    def ok(self) -> bool:
        return self.worst <= self.tolerance

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.2e} (of {self.scale[k]:.2f})" for k, v in self.max_abs.items())
        return f"parity {self.backend} vs torch: max abs error {self.worst:.2e} (tolerance {self.tolerance:.0e}): {parts}"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


@torch.no_grad()
def parity_check(module: torch.nn.Module, backend, desc: NetworkDescriptor, tolerance: float = 1e-3,
                 seed: int = 0, raise_on_failure: bool = True) -> ParityReport:
    """Run eager torch and `backend` on the same sample inputs; fail loudly above `tolerance`."""
    inputs = desc.sample_inputs(seed, backend.device)
    ref = module(*inputs)
    t0 = time.perf_counter()
    got = backend.run(*inputs)
    seconds = time.perf_counter() - t0
    errs, scale = {}, {}
    for name, r, g in zip(desc.output_names, ref, got):
        errs[name] = float((r.float() - g.float().to(r.device)).abs().max())
        scale[name] = float(r.float().abs().max())
    report = ParityReport(backend.name, errs, scale, tolerance, seconds)
    if raise_on_failure and not report.ok:
        raise KnotAnimError(f"{report.line()}: above tolerance, the exported graph does not match torch")
    return report
