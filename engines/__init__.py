"""Inference backends and export (installed as knotanim.engines).

The stream runs each chunk through a `ChunkBackend` (`run(...)` with the ChunkStep's tensors):
  TorchBackend          eager PyTorch (the default; the reference for every parity check)
  CompiledTorchBackend  torch.compile, CUDA graphs on CUDA; falls back to eager, saying why
  OnnxRuntimeBackend    an exported ONNX graph in ONNX Runtime (CPU / CUDA / TensorRT EP)   [engines/onnxrt.py]
  TensorRTBackend       a TensorRT >= 10 engine built for this GPU                        [engines/tensorrt_engine.py]
  AotiBackend           an AOTInductor package                                            [engines/aoti.py]
`select_backend(name, animator, ...)` returns (backend, reason); "auto" measures what is ready.
Export pipelines (ONNX + parity check, engine build, AOTInductor) are in engines/export.py, the
network descriptors in engines/descriptors.py, the artifact cache and engine keys in engines/cache.py.
onnx, onnxruntime and tensorrt are imported only when used.
"""
from knotanim.engines.base import ChunkBackend, CompiledTorchBackend, TorchBackend, measure
from knotanim.engines.cache import EngineKey, default_cache_dir
from knotanim.engines.descriptors import NetworkDescriptor, TensorSpec, chunk_step_descriptor
from knotanim.engines.select import BACKENDS, build_backend, select_backend

__all__ = ["ChunkBackend", "TorchBackend", "CompiledTorchBackend", "measure", "EngineKey", "default_cache_dir",
           "NetworkDescriptor", "TensorSpec", "chunk_step_descriptor", "BACKENDS", "build_backend", "select_backend"]
