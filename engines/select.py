"""select_backend: a backend by name, or "auto": the fastest of those ready, by a short measurement.

Names: "torch" (eager), "compiled" (torch.compile), "onnxruntime", "tensorrt", "aoti", "auto".
A named backend whose artifact is missing is exported (and cached) first. "auto" never builds
anything: it measures eager torch and whatever is already ready (an exported ONNX graph, a
TensorRT engine built for this GPU, an AOTInductor package; torch.compile on CUDA, where the
one-time compile pays for itself), and returns the fastest with a reason naming the timings and
what was skipped. Backends are built for one static variant (knot on/off, sampler steps).
ONNX Runtime sessions on the CPU use torch's thread count (`torch.set_num_threads`, `--threads`).
A "compiled" backend also compiles the animator's frame decoder (`CompiledTorchBackend.decode`) unless
`compile_decoder=False`.

`StepBackends` holds one backend name built for each sampler step count a stream may switch to
(`KnotStream.set_steps`, the live quality ladder): `prepare(steps)` builds (exports, compiles) them
ahead of time; calling it, `step_backends(steps)`, returns the one for that count. A stream's state (reference
cache, history ring, knot) is the stream's own tensors, handed to the backend each chunk, so
swapping backends between chunks carries it over. `live_candidates` lists what the live start-up
measurement tries on a device (on a CPU, torch.compile only when asked: the lite profile).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from knotanim.engines.base import ChunkBackend, CompiledTorchBackend, TorchBackend, measure
from knotanim.engines.cache import animator_hash, aoti_path, default_cache_dir, onnx_path
from knotanim.engines.descriptors import chunk_step_descriptor, warp_renderer_descriptor
from knotanim.config import BACKENDS
from knotanim.errors import BackendUnavailable, KnotAnimError


def _quiet(_: str) -> None:
    pass


def build_backend(name: str, animator, *, knot: bool = True, steps: int | None = None, model_path=None,
                  artifacts: str | Path | None = None, precision: str = "auto", export: bool = True,
                  progress: Callable[[str], None] = _quiet, compile_decoder: bool = True) -> ChunkBackend:
    """One named backend for `animator`'s device; exports its artifact first when `export` and missing.
    compile_decoder: a "compiled" backend also decodes through torch.compile (False: eager decode)."""
    from knotanim.engines import export as ex

    if name not in BACKENDS or name == "auto":
        raise BackendUnavailable(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    dev = animator.device
    if name == "torch":
        return TorchBackend(animator.chunk_step(steps), dev)
    if name == "compiled":
        return CompiledTorchBackend(animator.chunk_step(steps), dev, autoencoder=animator.autoencoder,
                                    compile_decoder=compile_decoder, decode_dtype=animator.dtype)
    folder = Path(artifacts) if artifacts is not None else default_cache_dir()
    model_hash = animator_hash(animator, model_path)
    cfg = animator.config
    if name == "onnxruntime":
        from knotanim.engines.onnxrt import OnnxRuntimeBackend

        desc = chunk_step_descriptor(cfg, knot=knot, steps=steps)
        path = onnx_path(folder, desc.tag, model_hash)
        if not path.is_file():
            if not export:
                raise BackendUnavailable(f"no exported ONNX graph {path.name} in {folder}")
            path = ex.ensure_onnx(animator, folder, knot=knot, steps=steps, model_hash=model_hash, progress=progress).path
        threads = torch.get_num_threads() if dev.type == "cpu" else None
        backend = OnnxRuntimeBackend(path, desc, dev, threads=threads)
        if animator.renders_from_reference:  # the warp codec's renderer runs in ONNX Runtime too
            from knotanim.engines.onnxrt import OnnxWarpRenderer

            rdesc = warp_renderer_descriptor(cfg)
            rpath = onnx_path(folder, rdesc.tag, model_hash)
            if not rpath.is_file():
                if not export:
                    raise BackendUnavailable(f"no exported ONNX renderer {rpath.name} in {folder}")
                rpath = ex.ensure_renderer_onnx(animator, folder, model_hash=model_hash, progress=progress).path
            backend.render_parts = OnnxWarpRenderer(rpath, rdesc, dev, threads=threads)
        return backend
    if name == "tensorrt":
        from knotanim.engines.tensorrt_engine import TensorRTBackend, import_tensorrt

        import_tensorrt()
        if dev.type != "cuda":
            raise BackendUnavailable("TensorRT needs a CUDA device (use --device cuda)")
        desc = chunk_step_descriptor(cfg, knot=knot, steps=steps)
        key = ex.expected_engine_key(animator, desc=desc, model_hash=model_hash, precision=precision)
        path = folder / f"{key.stem}.engine"
        if not path.is_file():
            others = sorted(p.name for p in folder.glob(f"{desc.tag}-{model_hash[:12]}-*.engine"))
            if not export:
                hint = f" (engines for other setups: {', '.join(others)})" if others else ""
                raise BackendUnavailable(f"no TensorRT engine {path.name} for this GPU in {folder}{hint}")
            path = ex.ensure_engine(animator, folder, knot=knot, steps=steps, model_path=model_path,
                                    precision=precision, device=dev, progress=progress).path
        return TensorRTBackend(path, desc, dev, key)
    # aoti
    from knotanim.engines.aoti import AotiBackend

    desc = chunk_step_descriptor(cfg, knot=knot, steps=steps, kv_dtype=animator.dtype)
    path = aoti_path(folder, desc.tag, model_hash, dev.type)
    if not path.is_file():
        if not export:
            raise BackendUnavailable(f"no AOTInductor package {path.name} in {folder}")
        path = ex.ensure_aoti(animator, folder, knot=knot, steps=steps, model_path=model_path, progress=progress).path
    return AotiBackend(path, desc, dev)


def backend_kind(backend: ChunkBackend) -> str | None:
    """The BACKENDS name a built backend runs as ("onnxruntime[CPU]" -> "onnxruntime", "compiled->torch" ->
    "torch", "tensorrt[bf16]" -> "tensorrt"); None for anything else (e.g. the int8 measurement path)."""
    name = str(getattr(backend, "name", "")).split("->")[-1].split("[")[0]
    return name if name in BACKENDS and name != "auto" else None


class StepBackends:
    """Backends of one name (`BACKENDS`, not "auto") for `animator`, one per sampler step count.

    `prepare(steps_list)` builds every count ahead (exporting artifacts that are missing when
    `export`; a "compiled" backend is also run once on sample inputs, and its decoder once on a chunk
    of latents, so both compile now and not at the first chunk); calling it, `step_backends(steps)`,
    returns the backend built for `steps` (None: the model's), building it first unless
    `build=False`, which raises BackendUnavailable instead (the live pipeline's inference thread
    never builds).
    """

    def __init__(self, name: str, animator, *, knot: bool = True, model_path=None, artifacts: str | Path | None = None,
                 precision: str = "auto", export: bool = True, progress: Callable[[str], None] = _quiet):
        if name not in BACKENDS or name == "auto":
            raise BackendUnavailable(f"unknown backend {name!r}; choose from {', '.join(b for b in BACKENDS if b != 'auto')}")
        self.name, self.animator, self.knot = name, animator, knot
        self.model_path, self.artifacts, self.precision, self.export = model_path, artifacts, precision, export
        self.progress = progress
        self._built: dict[int, ChunkBackend] = {}

    @classmethod
    def around(cls, backend: ChunkBackend, animator, *, knot: bool = True, steps: int | None = None,
               **kwargs) -> "StepBackends | None":
        """StepBackends of `backend`'s kind with `backend` as the one for `steps`; None when its kind
        is not a backend name."""
        kind = backend_kind(backend)
        if kind is None:
            return None
        backends = cls(kind, animator, knot=knot, **kwargs)
        backends._built[backends.count(steps)] = backend
        return backends

    def count(self, steps: int | None) -> int:
        return int(steps or self.animator.config.sampler.steps)

    @property
    def prepared(self) -> tuple[int, ...]:
        """The step counts built so far, most first."""
        return tuple(sorted(self._built, reverse=True))

    def prepare(self, steps_list) -> "StepBackends":
        """Build the backend for every step count in `steps_list` that is not built yet; errors propagate."""
        todo = sorted({self.count(s) for s in steps_list} - set(self._built), reverse=True)
        if todo and self.name != "torch" and self.export:  # export=False only opens ready artifacts: quick
            counts = ", ".join(str(s) for s in todo)
            self.progress(f"preparing the {self.name} backend for {counts} sampler step{'s' if todo != [1] else ''}…")
        for steps in todo:
            backend = build_backend(self.name, self.animator, knot=self.knot, steps=steps, model_path=self.model_path,
                                    artifacts=self.artifacts, precision=self.precision, export=self.export,
                                    progress=self.progress)
            if self.name == "compiled":  # compile (and capture CUDA graphs) now, not in the stream's first chunk
                desc = chunk_step_descriptor(self.animator.config, knot=self.knot, steps=steps,
                                             kv_dtype=self.animator.dtype)
                with torch.no_grad():
                    committed = backend.run(*desc.sample_inputs(0, self.animator.device))[0]
                    if getattr(backend, "decode", None) is not None:
                        backend.decode(committed[0])
            self._built[steps] = backend
        return self

    def __call__(self, steps: int | None = None, build: bool = True) -> ChunkBackend:
        count = self.count(steps)
        if count not in self._built:
            if not build:
                raise BackendUnavailable(f"the {self.name} backend was not prepared for {count} sampler steps "
                                         f"(prepared: {', '.join(map(str, self.prepared)) or 'none'})")
            self.prepare([count])
        return self._built[count]


def live_candidates(device: torch.device) -> list[tuple[str, bool]]:
    """(name, export) pairs the live start-up measurement tries on `device`, in order of preference
    for ties. export=False: used only when its artifact is already built (TensorRT engines and
    AOTInductor packages take minutes to build). On a GPU, ONNX Runtime (exported if missing) is
    tried only when its build has a GPU provider, and torch.compile is tried. On a CPU nothing is
    built at start, where it would hold the first frame back by a minute or more (an ONNX export and
    its parity check, Inductor's C++ compile): eager torch, and ONNX Runtime when its graph is already
    exported (`knotanim export`); `--backend compiled|onnxruntime` builds one on request."""
    if device.type != "cuda":
        return [("onnxruntime", False), ("torch", True)]
    names = [("tensorrt", False), ("aoti", False)]
    try:
        from knotanim.engines.onnxrt import providers_for

        if providers_for(device)[0] != "CPUExecutionProvider":
            names.append(("onnxruntime", True))
    except BackendUnavailable:
        pass
    return names + [("compiled", True), ("torch", True)]


def auto_candidates(device: torch.device, allow_compile: bool | None = None) -> list[str]:
    """Backends "auto" considers on `device`, in order of preference for ties."""
    names = ["tensorrt", "aoti", "onnxruntime"]
    if allow_compile if allow_compile is not None else device.type == "cuda":
        names.append("compiled")
    return names + ["torch"]


def select_backend(name: str, animator, *, knot: bool = True, steps: int | None = None, model_path=None,
                   artifacts: str | Path | None = None, precision: str = "auto", allow_compile: bool | None = None,
                   runs: int = 2, progress: Callable[[str], None] = _quiet,
                   compile_decoder: bool = True) -> tuple[ChunkBackend, str]:
    """(backend, reason). A name other than "auto" returns that backend (exporting if needed) or raises
    BackendUnavailable; "auto" measures the ready candidates on sample inputs and keeps the fastest."""
    if name != "auto":
        backend = build_backend(name, animator, knot=knot, steps=steps, model_path=model_path, artifacts=artifacts,
                                precision=precision, progress=progress, compile_decoder=compile_decoder)
        return backend, f"{backend.name}: requested"
    ready: list[ChunkBackend] = []
    skipped: list[str] = []
    for cand in auto_candidates(animator.device, allow_compile):
        try:
            ready.append(build_backend(cand, animator, knot=knot, steps=steps, model_path=model_path,
                                       artifacts=artifacts, precision=precision, export=False,
                                       compile_decoder=compile_decoder))
        except KnotAnimError as e:
            skipped.append(f"{cand} ({e})")
    if len(ready) == 1:
        return ready[0], f"{ready[0].name}: the only backend ready" + (f"; skipped {'; '.join(skipped)}" if skipped else "")
    desc = chunk_step_descriptor(animator.config, knot=knot, steps=steps, kv_dtype=animator.dtype)
    inputs = desc.sample_inputs(0, animator.device)
    timings: list[tuple[float, ChunkBackend]] = []
    for backend in ready:
        try:
            timings.append((measure(backend, inputs, runs=runs), backend))
        except Exception as e:  # noqa: BLE001 - a backend that fails to run is not a candidate
            skipped.append(f"{backend.name} (failed to run: {type(e).__name__}: {str(e)[:120]})")
    if not timings:
        raise BackendUnavailable("no backend could run: " + "; ".join(skipped))
    timings.sort(key=lambda tb: tb[0])
    best = timings[0][1]
    measured = ", ".join(f"{b.name} {t * 1000:.1f} ms" for t, b in timings)
    reason = f"{best.name}: fastest per chunk ({measured})" + (f"; skipped {'; '.join(skipped)}" if skipped else "")
    return best, reason

