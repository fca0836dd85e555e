"""ONNX export of a described network, the ONNX Runtime parity check, and the ONNX Runtime backend.

onnx / onnxruntime are optional (`pip install knotanim[onnx]`) and imported only when used.
The graph is exported in float32 (TensorRT lowers precision itself from builder flags); the
backend casts inputs to the graph's dtypes and the K/V outputs back to the caller's ring dtype.

int8 (`quantize_int8`, `export.ensure_onnx_int8`, `OnnxRuntimeBackend(precision="int8")`): ONNX
Runtime dynamic quantization of the float32 graph for the CPU: every MatMul with a weight operand
runs as MatMulInteger (int8 weights, per output channel, 7-bit range so AVX2 CPUs without VNNI do
not saturate; activations quantized per call), the attention products and everything else stay
float32. It is a measurement path (scripts/lite_speed.py --backends onnxruntime-int8), not a
backend name: on the lite model it was no faster than the float32 graph and changes the output a
little (docs/lite.md).
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from knotanim.engines.descriptors import NetworkDescriptor
from knotanim.errors import BackendUnavailable, KnotAnimError

DEFAULT_OPSET = 17
ONNX_PRECISIONS = ("fp32", "int8")
INT8_TOLERANCE = 0.05  # parity check of an int8 graph: max abs error per output, as a fraction of its scale


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
    except Exception as e:  # noqa: BLE001 - try the other exporter, then report both
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
    session reads and writes torch's device memory through IOBinding. `precision` names the graph
    ("fp32", or "int8" for a `quantize_int8` graph, CPU only) in the backend's name:
    "onnxruntime[CPU]", "onnxruntime-int8[CPU]".

    `spinning`: whether ONNX Runtime's CPU threads busy-wait for work between and after runs (its
    default). Off by default here: the stream runs torch (audio features, decode) between chunk
    steps on the same cores, and spinning threads take those cores from it (docs/lite.md measures
    both).
    """

    def __init__(self, onnx_path: str | Path, desc: NetworkDescriptor, device: torch.device | str = "cpu",
                 providers: list[str] | None = None, threads: int | None = None, precision: str = "fp32",
                 spinning: bool = False):
        ort = _import_ort()
        self.desc, self.device, self.path = desc, torch.device(device), Path(onnx_path)
        if precision not in ONNX_PRECISIONS:
            raise BackendUnavailable(f"ONNX Runtime precision must be one of {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
        if precision == "int8" and self.device.type != "cpu":
            raise BackendUnavailable("the int8 ONNX graph is a CPU path (dynamic quantization); on a GPU use "
                                     "onnxruntime or tensorrt")
        if not self.path.is_file():
            raise BackendUnavailable(f"no ONNX graph at {self.path} (run knotanim export --format onnx)")
        self.precision = precision
        self.providers = providers_for(self.device, providers)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.spinning = spinning
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        self.on_device = self.device.type == "cuda" and self.session.get_providers()[0] != "CPUExecutionProvider"
        label = "onnxruntime" if precision == "fp32" else f"onnxruntime-{precision}"
        self.name = f"{label}[{self.session.get_providers()[0].replace('ExecutionProvider', '')}]"

    def run(self, *inputs: torch.Tensor):
        self.desc.check(inputs)
        cast = [t.to(spec.dtype).contiguous() for spec, t in zip(self.desc.inputs, inputs)]
        if self.on_device:
            outs = self._run_bound(cast)
        else:
            feeds = {s.name: t.cpu().numpy() for s, t in zip(self.desc.inputs, cast)}
            outs = [torch.from_numpy(a).to(self.device) for a in self.session.run(self.desc.output_names, feeds)]
        if self.desc.name != "chunk_step":
            return tuple(outs)
        out_dtype = inputs[2].dtype  # hist_k: the ring's dtype
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


class OnnxWarpRenderer:
    """A warp codec's exported renderer (WarpRenderStep) in ONNX Runtime, called as KnotAnimator.render_parts:
    (latents [N, c, h, w], ReferenceCache) -> WarpParts. Latents of another N than the graph's are refused."""

    def __init__(self, onnx_path: str | Path, desc: NetworkDescriptor, device: torch.device | str = "cpu",
                 threads: int | None = None):
        self.session = OnnxRuntimeBackend(onnx_path, desc, device, threads=threads)
        self.name = self.session.name

    def __call__(self, latents: torch.Tensor, reference):
        from knotanim.model.warp import WarpParts

        r = reference.render
        flow, visibility, fill = self.session.run(latents.float(), r.latent.float(), r.features.float())
        return WarpParts(flow=flow, visibility=visibility, fill=fill)


@contextmanager
def _without_root_warnings():
    """onnxruntime.quantization logs advice ("consider pre-processing") on the root logger; hide it for
    the duration of the call only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def fold_weight_aliases(model) -> int:
    """Point every consumer of an `Identity(initializer)` node at the initializer itself; returns how
    many Identity nodes were removed.

    The TorchScript exporter shares the DiT's weights between its calls in one ChunkStep (each sampler
    step and the cache pass) by routing the later calls through Identity nodes. Dynamic quantization
    only quantizes a MatMul whose weight operand is an initializer, so without this only the first
    call would run in int8 and the float32 weights would stay in the file beside the int8 ones.
    """
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in graph_outputs}
    if not alias:
        return 0
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)
    return len(alias)


def weight_matmuls(model) -> dict[str, int]:
    """{"int8": MatMulInteger nodes, "float32": MatMul nodes whose second operand is a weight} of an
    ONNX model: after `quantize_int8`, "float32" is 0."""
    weights = {t.name for t in model.graph.initializer}
    weights |= {n.output[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in weights}
    counts = {"int8": 0, "float32": 0}
    for n in model.graph.node:
        if n.op_type == "MatMulInteger":
            counts["int8"] += 1
        elif n.op_type == "MatMul" and n.input[1] in weights:
            counts["float32"] += 1
    return counts


def quantize_int8(fp32_path: str | Path, out_path: str | Path, progress: Callable[[str], None] = print) -> Path:
    """ONNX Runtime dynamic int8 quantization of an exported float32 graph (see the module docstring)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise BackendUnavailable(f"int8 quantization needs onnx and onnxruntime ({e.name} is not installed; "
                                 "pip install 'knotanim[onnx]')") from None
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    t0 = time.perf_counter()
    model = onnx.load(str(fp32_path))
    folded = fold_weight_aliases(model)
    staged = out_path.with_suffix(".fp32-folded.onnx")
    onnx.save(model, str(staged))
    try:
        with _without_root_warnings():
            quantize_dynamic(str(staged), str(out_path), op_types_to_quantize=["MatMul"], per_channel=True,
                             reduce_range=True, weight_type=QuantType.QInt8)
    except Exception as e:  # noqa: BLE001 - any quantizer failure is one line for the user
        out_path.unlink(missing_ok=True)
        raise KnotAnimError(f"int8 quantization of {fp32_path.name} failed ({type(e).__name__}: {str(e)[:200]})") from e
    finally:
        staged.unlink(missing_ok=True)
    counts = weight_matmuls(onnx.load(str(out_path)))
    progress(f"export: int8 dynamic quantization: {counts['int8']} weight MatMuls in int8, {counts['float32']} left in "
             f"float32 ({folded} shared-weight aliases folded); wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB) "
             f"in {time.perf_counter() - t0:.1f} s")
    return out_path


@dataclass
class ParityReport:
    """Max abs error per output of a backend against eager torch on the descriptor's sample inputs."""

    backend: str
    max_abs: dict[str, float]
    scale: dict[str, float]  # max |torch output|, for context
    tolerance: float
    seconds: float
    relative: bool = False  # tolerance is a fraction of each output's scale (int8), not an absolute error

    @property
    def worst(self) -> float:
        return max(self.max_abs.values())

    @property
    def worst_relative(self) -> float:
        return max(v / self.scale[k] if self.scale[k] > 0 else (0.0 if v == 0 else float("inf"))
                   for k, v in self.max_abs.items())

    @property
    def ok(self) -> bool:
        return (self.worst_relative if self.relative else self.worst) <= self.tolerance

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.2e} (of {self.scale[k]:.2f})" for k, v in self.max_abs.items())
        if self.relative:
            return (f"parity {self.backend} vs torch: max abs error {self.worst_relative:.1e} of the output's scale "
                    f"(tolerance {self.tolerance:.0e}): {parts}")
        return f"parity {self.backend} vs torch: max abs error {self.worst:.2e} (tolerance {self.tolerance:.0e}): {parts}"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


@torch.no_grad()
def parity_check(module: torch.nn.Module, backend, desc: NetworkDescriptor, tolerance: float = 1e-3,
                 seed: int = 0, raise_on_failure: bool = True, relative: bool = False) -> ParityReport:
    """Run eager torch and `backend` on the same sample inputs; fail loudly above `tolerance` (an absolute
    error, or with `relative` a fraction of each output's max |value|)."""
    inputs = desc.sample_inputs(seed, backend.device)
    ref = module(*inputs)
    t0 = time.perf_counter()
    got = backend.run(*inputs)
    seconds = time.perf_counter() - t0
    errs, scale = {}, {}
    for name, r, g in zip(desc.output_names, ref, got):
        errs[name] = float((r.float() - g.float().to(r.device)).abs().max())
        scale[name] = float(r.float().abs().max())
    report = ParityReport(backend.name, errs, scale, tolerance, seconds, relative)
    if raise_on_failure and not report.ok:
        raise KnotAnimError(f"{report.line()}: above tolerance, the exported graph does not match torch")
    return report
