"""TensorRT (>= 10) engine build from an exported ONNX graph, and the TensorRT backend.

Only the TensorRT 10 API is used: `build_serialized_network`, named I/O tensors
(`get_tensor_name` / `get_tensor_mode` / `set_tensor_address`) and `execute_async_v3`. TensorRT is
imported only here and only when used; where it is missing every entry point raises
`BackendUnavailable` saying so. Engines are cached by `EngineKey` (see engines/cache.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from knotanim.engines.cache import EngineKey, check_engine
from knotanim.engines.descriptors import NetworkDescriptor
from knotanim.errors import BackendUnavailable, KnotAnimError

MIN_VERSION = (10, 0)


def import_tensorrt():
    """The tensorrt module (>= 10), or BackendUnavailable with the reason."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed (needs tensorrt >= 10 with a CUDA GPU: "
                                 "pip install 'knotanim[trt]' from NVIDIA's index); use --backend onnxruntime or compiled") from None
    version = tuple(int(x) for x in trt.__version__.split(".")[:2])
    if version < MIN_VERSION:
        raise BackendUnavailable(f"TensorRT {trt.__version__} is too old; knotanim needs TensorRT >= 10")
    return trt


def tensorrt_version() -> str | None:
    try:
        return import_tensorrt().__version__
    except BackendUnavailable:
        return None


def engine_key(device: torch.device, model_hash: str, precision: str, tag: str) -> EngineKey:
    trt = import_tensorrt()
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs a CUDA GPU")
    return EngineKey.for_device(torch.cuda.get_device_properties(device), trt.__version__, model_hash, precision, tag)


def _progress_monitor(trt, progress: Callable[[str], None]):
    """A TensorRT IProgressMonitor that prints top-level build phases (long builds say where they are)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.started: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.started[phase_name] = time.perf_counter()
            if parent_phase is None:
                progress(f"tensorrt: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            t = time.perf_counter() - self.started.pop(phase_name, time.perf_counter())
            if t > 5:
                progress(f"tensorrt: {phase_name} done in {t:.0f} s")

    return Monitor()


def build_engine(onnx_file: str | Path, engine_path: str | Path, key: EngineKey, workspace_gib: float = 8.0,
                 progress: Callable[[str], None] = print) -> Path:
    """Parse `onnx_file`, build with the precision flags of `key`, write engine + key JSON beside it."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    progress(f"tensorrt: parsing {onnx_file}")
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise KnotAnimError(f"TensorRT could not parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    flags = {"fp16": ["FP16"], "bf16": ["BF16"], "fp8": ["FP8", "BF16"], "fp32": []}[key.precision]
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if hasattr(config, "progress_monitor"):
        monitor = _progress_monitor(trt, progress)  # must outlive the build
        config.progress_monitor = monitor
    progress(f"tensorrt: building {key.precision} engine for {key.gpu_name} (sm {key.compute_capability}); "
             f"this takes minutes")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise KnotAnimError("TensorRT engine build failed (see the TensorRT messages above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    key.write(engine_path)
    progress(f"tensorrt: wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s")
    return engine_path


def _torch_dtype(trt, dt):
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BOOL: torch.bool,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    return table[dt]


class TensorRTBackend:
    """Runs a deserialized engine: I/O bound by name to torch CUDA tensors, execute_async_v3 on torch's stream.

    The engine's key (stored beside it) must match this GPU, TensorRT version, model and precision.
    """

    def __init__(self, engine_path: str | Path, desc: NetworkDescriptor, device: torch.device | str, expected: EngineKey):
        trt = import_tensorrt()
        self.trt, self.desc, self.device = trt, desc, torch.device(device)
        check_engine(engine_path, expected)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"TensorRT could not deserialize {engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        missing = set(desc.input_names + desc.output_names) - set(names)
        if missing:
            raise BackendUnavailable(f"{engine_path} lacks tensors {sorted(missing)}; rebuild it")
        self.outputs = [torch.empty(s.shape, dtype=self.dtypes[s.name], device=self.device) for s in desc.outputs]
        for spec, t in zip(desc.outputs, self.outputs):
            self.context.set_tensor_address(spec.name, t.data_ptr())
        self.name = f"tensorrt[{expected.precision}]"

    def run(self, *inputs: torch.Tensor):
        self.desc.check(inputs)
        out_dtype = inputs[2].dtype
        keep = []  # casts must stay alive until the engine has run
        for spec, t in zip(self.desc.inputs, inputs):
            t = t.to(device=self.device, dtype=self.dtypes[spec.name]).contiguous()
            keep.append(t)
            self.context.set_input_shape(spec.name, tuple(spec.shape))
            self.context.set_tensor_address(spec.name, t.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise KnotAnimError("TensorRT execution failed")
        # Outputs are reused by the next call: hand out copies (the stream keeps them past it).
        committed, next_knot, new_k, new_v = (t.clone() for t in self.outputs)
        return committed.float(), next_knot.float(), new_k.to(out_dtype), new_v.to(out_dtype)
