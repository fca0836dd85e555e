"""Where exported artifacts live and what invalidates them.

An ONNX file depends on the model and the static variant (descriptor tag). A TensorRT engine also
depends on the GPU (compute capability), the TensorRT version and the precision: all of these go
into its `EngineKey`, which is part of the file name and is stored beside the engine as JSON, so
an engine is never silently reused on another GPU or with another TensorRT.

Layout of a cache folder (default: $KNOTANIM_CACHE, else $XDG_CACHE_HOME/knotanim, else
~/.cache/knotanim):
  <tag>-<model12>.onnx  + .json            ONNX graph and its export report (parity numbers)
  <tag>-<model12>-int8.onnx + .json       its int8 dynamic quantization (CPU) and parity report
  <tag>-<model12>-<precision>-sm<cc>-trt<version>.engine + .json (the EngineKey)
  <tag>-<model12>-<device>.pt2             AOTInductor package
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from knotanim.errors import BackendUnavailable

PRECISIONS = ("fp32", "fp16", "bf16", "fp8")


def default_cache_dir() -> Path:
    env = os.environ.get("KNOTANIM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "knotanim"


def checkpoint_hash(folder: str | Path) -> str:
    """sha256 over a checkpoint's config.json shard checksums and config (not the weights' bytes)."""
    meta = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    shards = sorted((s["file"], s["sha256"]) for s in meta.get("shards", []))
    blob = json.dumps({"shards": shards, "config": meta.get("config")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def animator_hash(animator, model_path: str | Path | None = None) -> str:
    """The model hash of an animator: its checkpoint's (when loaded from a folder), else its weights'.

    Hashing the weights (a few hundred MB/s) is for models without a folder, e.g. from_config.
    """
    if model_path is not None and (Path(model_path) / "config.json").is_file():
        return checkpoint_hash(model_path)
    h = hashlib.sha256(json.dumps(animator.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(animator.model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def onnx_path(folder: str | Path, tag: str, model_hash: str, precision: str = "fp32") -> Path:
    """The float32 graph `<tag>-<model12>.onnx`, or its int8 quantization `<tag>-<model12>-int8.onnx`."""
    suffix = "" if precision == "fp32" else f"-{precision}"
    return Path(folder) / f"{tag}-{model_hash[:12]}{suffix}.onnx"


def aoti_path(folder: str | Path, tag: str, model_hash: str, device: str) -> Path:
    return Path(folder) / f"{tag}-{model_hash[:12]}-{device}.pt2"


@dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT engine is only valid for."""

    compute_capability: str  # "9.0"
    gpu_name: str  # informative only; not compared
    tensorrt: str  # TensorRT version, e.g. "10.9.0"
    model_hash: str  # checkpoint_hash / animator_hash
    precision: str  # one of PRECISIONS
    tag: str  # descriptor tag: static variant of the graph

    @classmethod
    def for_device(cls, props, tensorrt_version: str, model_hash: str, precision: str, tag: str) -> "EngineKey":
        """props: anything with .major, .minor, .name (torch.cuda.get_device_properties, or a fake in tests)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        return cls(f"{props.major}.{props.minor}", str(props.name), tensorrt_version, model_hash, precision, tag)

    @property
    def stem(self) -> str:
        cc = self.compute_capability.replace(".", "")
        return f"{self.tag}-{self.model_hash[:12]}-{self.precision}-sm{cc}-trt{self.tensorrt}"

    def mismatches(self, other: "EngineKey") -> list[str]:
        """Fields (except gpu_name) in which `other` differs, as 'field: ours != theirs'."""
        a, b = asdict(self), asdict(other)
        return [f"{k}: {b[k]} != {a[k]}" for k in a if k != "gpu_name" and a[k] != b[k]]

    def write(self, engine_path: str | Path) -> Path:
        path = Path(engine_path).with_suffix(".json")
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, engine_path: str | Path) -> "EngineKey":
        path = Path(engine_path).with_suffix(".json")
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise BackendUnavailable(f"{engine_path}: no key file {path.name} beside the engine; cannot tell which GPU, "
                                     f"TensorRT and model it was built for (rebuild with knotanim export --format tensorrt)") from None
        except (TypeError, ValueError) as e:
            raise BackendUnavailable(f"{path}: not an engine key ({e})") from None


def check_engine(engine_path: str | Path, expected: EngineKey) -> None:
    """Raise BackendUnavailable, saying what differs, unless the engine was built for `expected`."""
    stored = EngineKey.read(engine_path)
    diff = expected.mismatches(stored)
    if diff:
        raise BackendUnavailable(
            f"{engine_path} was built for another setup ({stored.gpu_name}, sm {stored.compute_capability}, "
            f"TensorRT {stored.tensorrt}, {stored.precision}); here: {expected.gpu_name}, sm {expected.compute_capability}, "
            f"TensorRT {expected.tensorrt}, {expected.precision}. Differs in {'; '.join(diff)} "
            f"(stored != here). Rebuild with knotanim export --format tensorrt")


def capability(props) -> tuple[int, int]:
    return int(props.major), int(props.minor)


def resolve_precision(requested: str, props) -> str:
    """'auto' -> the best the GPU has (bf16 on sm >= 8.0, else fp16); refuse fp8/bf16 where absent.

    FP8 kernels need compute capability >= 8.9 (Ada, Hopper) and Q/DQ nodes in the ONNX graph;
    the flag alone only permits them.
    """
    cc = capability(props)
    if requested == "auto":
        return "bf16" if cc >= (8, 0) else "fp16"
    if requested == "fp8" and cc < (8, 9):
        raise BackendUnavailable(f"FP8 needs compute capability >= 8.9; {props.name} is {cc[0]}.{cc[1]}")
    if requested == "bf16" and cc < (8, 0):
        raise BackendUnavailable(f"BF16 needs compute capability >= 8.0; {props.name} is {cc[0]}.{cc[1]}")
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {requested!r}")
    return requested
