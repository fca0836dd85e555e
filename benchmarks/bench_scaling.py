#!/usr/bin/env python
"""Cost growth (issue #7, benchmark 3): per-chunk time against window, chunk length, resolution and stream length.

The model has the default model's sizes (read from assets/default/config.json) with random weights:
the speed does not depend on the weights. Each measurement drives a real `KnotStream` (audio pushed
one chunk at a time, so every push runs exactly one chunk once warm) through the chosen backend
(default: eager torch), wrapped so that each `backend.run` (the ChunkStep: S denoising calls + the
cache pass) is timed on its own: CUDA events around it on a GPU (read after a synchronize), with the
host time of the call beside it (host_step_ms: perf_counter, no synchronize), perf_counter on the CPU.
The whole push (audio features, noise, the step, the ring write, the decode to uint8 frames) is timed
too, with perf_counter and a synchronize, as "chunk".

Backends (--backend): torch (eager; on a GPU the small default model is bound by the host's kernel
launches, ~90 ms per step at every size: the sweep then shows launch overhead, not compute); graphs
(this script's own, for the GPU: each point's eager ChunkStep captured into one torch.cuda.CUDAGraph at
its first chunk, two warm-up calls on a side stream first, then replayed each chunk from static input
tensors; a few eager steps to build, not torch.compile's ~30 s; the replay alone is timed with CUDA events,
gpu_step_ms, the GPU time per step; capture_check compares the first replay with the eager warm-up. Where
it cannot capture, on the CPU or when the capture fails, it prints the reason once, records it as the
point's backend_fallback with backend "graphs->torch", and measures eagerly); compiled, onnxruntime,
tensorrt, aoti (knotanim.engines).

Sweeps, one parameter at a time around the default (every other size stays at the default):
  window   L, committed frames of history           (0, 3, 6, 12, 24)
  chunk    C, frames committed per chunk (F = C + 1) (1, 2, 3, 4, 6)
  frame    frame side in pixels -> tokens per frame  (128, 192, 256, 320 -> 64, 144, 256, 400)
  long     one stream of many chunks at the default sizes: per-chunk time against chunk index,
           with a least-squares slope reported as the relative change per 1,000 chunks.
Every point also carries the FLOPs per chunk, from the formula (docs/benchmarks.md, with the
embeddings and heads added) and counted by torch.utils.flop_counter.FlopCounterMode on meta tensors.
A point that the config validation refuses, that runs out of memory or whose backend is unavailable
is recorded as skipped with the reason; an unexpected error is recorded as failed (exit status 1).

Output in --out: scaling.json (every measurement, raw per-chunk times, device and torch info) and
scaling.png (four panels; needs matplotlib).

  python3 benchmarks/bench_scaling.py --device cuda --backend graphs --out $OUT/scaling  # the H200 run: compute
  python3 benchmarks/bench_scaling.py --device cuda --out $OUT/scaling     # eager: host launch overhead (~1.5-3 min)
  python benchmarks/bench_scaling.py --quick --base-frame-size 128 --frame-sizes 64,128,192 --out /tmp/scaling
                                            # a CPU check (~8 min on the shared 2-core machine)
  python benchmarks/bench_scaling.py --tiny --quick --out /tmp/scaling     # tiny sizes (what the test runs)
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def ensure_knotanim_importable() -> None:
    """Let the script run from a source checkout where knotanim is not pip-installed (the device machine):
    put the checkout on sys.path and load engines/ as knotanim.engines, as pyproject.toml maps it."""
    try:
        import knotanim.engines  # noqa: F401
        return
    except ModuleNotFoundError:
        pass
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    package = importlib.import_module("knotanim")
    if "knotanim.engines" not in sys.modules:
        spec = importlib.util.spec_from_file_location("knotanim.engines", REPO / "engines" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "engines")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["knotanim.engines"] = module
        spec.loader.exec_module(module)
        package.engines = module


ensure_knotanim_importable()

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from knotanim.config import KnotAnimConfig, tiny_config  # noqa: E402
from knotanim.engines.base import synchronize  # noqa: E402
from knotanim.errors import BackendUnavailable, ConfigError, KnotAnimError  # noqa: E402
from knotanim.profiles import cpu_name  # noqa: E402


@dataclass(frozen=True)
class Sweeps:
    windows: tuple[int, ...]  # L values
    chunks: tuple[int, ...]  # C values
    frame_sizes: tuple[int, ...]  # frame sides in pixels


SWEEPS = {  # (tiny, quick) -> values; the default model is L 6, C 3, 256 px; tiny_config is L 3, C 2, 64 px
    (False, False): Sweeps((0, 3, 6, 12, 24), (1, 2, 3, 4, 6), (128, 192, 256, 320)),
    (False, True): Sweeps((0, 6, 12), (1, 3, 6), (128, 256)),
    (True, False): Sweeps((0, 1, 3, 6, 12), (1, 2, 3, 4), (32, 48, 64, 80)),
    (True, True): Sweeps((0, 3, 6), (1, 2, 3), (32, 48, 64)),
}


@dataclass(frozen=True)
class Timing:
    warmup: int  # chunks run before timing starts (allocation, cuDNN/cuBLAS choice, compilation)
    chunks: int  # timed chunks per sweep point
    long_chunks: int  # timed chunks of the long stream
    long_budget_s: float  # wall-clock limit of the long stream; it stops early (and says so) past it


def default_timing(device: torch.device, quick: bool, tiny: bool) -> Timing:
    if device.type == "cuda":
        return Timing(warmup=5, chunks=50, long_chunks=2000, long_budget_s=120.0)
    if tiny:
        return Timing(warmup=1, chunks=3, long_chunks=24, long_budget_s=60.0)
    if quick:
        return Timing(warmup=1, chunks=3, long_chunks=30, long_budget_s=150.0)
    return Timing(warmup=2, chunks=8, long_chunks=200, long_budget_s=900.0)


# --- sizes ------------------------------------------------------------------------------------------------
def default_config_path() -> Path:
    path = REPO / "assets" / "default" / "config.json"
    if path.is_file():
        return path
    from knotanim.animator import default_model_path

    return default_model_path() / "config.json"


def base_config(tiny: bool) -> KnotAnimConfig:
    """The default model's config (its checkpoint's config.json), or tiny_config()."""
    return tiny_config() if tiny else KnotAnimConfig.load(default_config_path())


def sweep_points(sweeps: Sweeps) -> list[tuple[str, int, dict]]:
    """(sweep name, value, KnotAnimConfig.replace overrides) for every point, in order."""
    points = [("window", L, {"stream": {"window": L}}) for L in sweeps.windows]
    points += [("chunk", C, {"stream": {"chunk": C}}) for C in sweeps.chunks]
    points += [("frame", s, {"frame_size": s}) for s in sweeps.frame_sizes]
    return points


def describe(cfg: KnotAnimConfig, knot: bool = True) -> dict:
    st = cfg.stream
    k = st.knot if knot else 0
    return {"frame_size": cfg.frame_size, "latent_size": cfg.latent_size, "tokens_per_frame": cfg.tokens_per_frame,
            "chunk": st.chunk, "knot": k, "frames_per_chunk": st.chunk + k, "window": st.window,
            "steps": cfg.sampler.steps, "width": cfg.model.width, "depth": cfg.model.depth, "heads": cfg.model.heads,
            "audio_attention": bool(getattr(cfg.model, "audio_attention", False))}


# --- FLOPs ------------------------------------------------------------------------------------------------
def dit_call_flops(cfg: KnotAnimConfig, frames: int, extra_keys: int) -> dict:
    """Matmul FLOPs (2 per multiply-add) of one KnotDiT.forward over `frames` frames, batch 1, with
    `extra_keys` cached keys (reference + ring). 'attention': QK^T and AV; 'linear': every Linear."""
    m, a, ae = cfg.model, cfg.audio, cfg.autoencoder
    d, depth, hidden = m.width, m.depth, int(m.width * m.mlp_ratio)
    P = cfg.tokens_per_frame
    N = frames * P  # query tokens
    keys = extra_keys + N
    c, p = ae.latent_channels, m.patch
    audio_in = a.n_mels * cfg.audio_window
    embed = 2 * N * (2 * c + 1) * p * p * d + 2 * N * d * c * p * p  # x_embed, output head
    per_frame = (2 * (256 * d + d * d) + 2 * (audio_in * m.audio_hidden + m.audio_hidden * d)  # t, audio embeddings
                 + 2 * d * 6 * d + 2 * d * 2 * d)  # adaLN and final adaLN tables
    conditions = frames * per_frame + 2 * (d + d * d)  # t/audio embeddings, adaLN tables; motion once per call
    blocks = depth * N * (2 * 3 * d * d + 2 * d * d + 2 * 2 * d * hidden)  # qkv, proj, MLP
    attention = depth * 4 * N * keys * d  # QK^T + AV over all heads (H * Dh = d)
    if getattr(m, "audio_attention", False):  # per-frame cross-attention to W audio tokens of width ad
        W, ad = cfg.audio_window, m.audio_attention_dim
        blocks += depth * (2 * N * d * ad * 2 + 2 * frames * W * ad * 2 * ad)  # q, proj; kv
        conditions += 2 * frames * W * (a.n_mels * ad + ad * ad)  # audio token encoder
        attention += depth * 4 * N * W * ad
    return {"linear": embed + conditions + blocks, "attention": attention}


def chunk_flops_formula(cfg: KnotAnimConfig, knot: bool = True, steps: int | None = None) -> dict:
    """FLOPs of one ChunkStep: S denoising calls over F = C + k frames + one cache pass over C frames,
    each attending to the reference (P keys) + the full ring (L*P keys, the static graph) + itself."""
    st = cfg.stream
    S = steps or cfg.sampler.steps
    C, P = st.chunk, cfg.tokens_per_frame
    F = C + (st.knot if knot else 0)
    extra = P + st.window * P
    denoise, cache = dit_call_flops(cfg, F, extra), dit_call_flops(cfg, C, extra)
    out = {part: S * denoise[part] + cache[part] for part in ("linear", "attention")}
    out["denoise"] = S * (denoise["linear"] + denoise["attention"])
    out["cache_pass"] = cache["linear"] + cache["attention"]
    out["total"] = out["linear"] + out["attention"]
    return out


@torch.no_grad()
def counted_chunk_flops(cfg: KnotAnimConfig, knot: bool = True, steps: int | None = None) -> dict:
    """FLOPs of one ChunkStep and of decoding its C frames, counted by FlopCounterMode on meta tensors
    (no memory, no compute). Step 'attention' is bmm (SDPA on meta runs its math path), 'linear' the rest."""
    from knotanim.engines.descriptors import chunk_step_descriptor
    from knotanim.model.codec import build_autoencoder
    from knotanim.model.dit import KnotDiT
    from knotanim.stream.step import ChunkStep

    meta = torch.device("meta")
    with meta:
        model, autoencoder = KnotDiT(cfg), build_autoencoder(cfg.autoencoder)
    step = ChunkStep(model, cfg.stream.chunk, steps or cfg.sampler.steps, cfg.sampler.shift)
    desc = chunk_step_descriptor(cfg, knot=knot, steps=steps)
    inputs = [torch.empty(spec.shape, dtype=spec.dtype, device=meta) for spec in desc.inputs]
    with FlopCounterMode(display=False) as counter:
        step(*inputs)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    total = int(counter.get_total_flops())
    attention = sum(n for op, n in by_op.items() if "bmm" in op or "scaled_dot_product" in op)
    latent = torch.empty(cfg.stream.chunk, cfg.autoencoder.latent_channels, cfg.latent_size, cfg.latent_size,
                         device=meta)
    with FlopCounterMode(display=False) as counter:
        autoencoder.decode(latent)
    return {"total": total, "attention": attention, "linear": total - attention, "by_op": by_op,
            "decode": int(counter.get_total_flops())}


# --- timing -----------------------------------------------------------------------------------------------
class TimedBackend:
    """A ChunkBackend that times each `run` of the backend it wraps (events on CUDA, perf_counter on CPU), and
    on CUDA also the host time of the call (perf_counter, no synchronize: how long the CPU spends issuing it)."""

    def __init__(self, inner):
        self.inner, self.device = inner, inner.device
        self.cuda = self.device.type == "cuda"
        self._pending: list = []  # (start, end) events or (t0, t1) seconds, not yet read
        self._host: list[float] = []  # CUDA: host ms of each run, not yet read

    @property
    def name(self) -> str:  # the inner backend's, read late: the graphs backend renames itself when it falls back
        return self.inner.name

    def run(self, *inputs):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            out = self.inner.run(*inputs)
            end.record()
            self._host.append((time.perf_counter() - t0) * 1000.0)
            self._pending.append((start, end))
            return out
        t0 = time.perf_counter()
        out = self.inner.run(*inputs)
        self._pending.append((t0, time.perf_counter()))
        return out

    def take_times_ms(self) -> list[float]:
        """Milliseconds of every run since the last call; on CUDA call after a synchronize."""
        if self.cuda:
            times = [start.elapsed_time(end) for start, end in self._pending]
        else:
            times = [(t1 - t0) * 1000.0 for t0, t1 in self._pending]
        self._pending = []
        return times

    def take_host_ms(self) -> list[float]:
        """CUDA: the host milliseconds of every run since the last call (the CPU: [], the step times say it)."""
        times, self._host = self._host, []
        return times


def say(message: str) -> None:
    print(f"bench_scaling: {message}", file=sys.stderr, flush=True)


class SayOnce:
    """`say`, but each distinct message once (a fall-back reason: one line per run, not one per sweep point)."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def __call__(self, message: str) -> None:
        if message not in self.said:
            self.said.add(message)
            say(message)


def _where(error: BaseException) -> str:
    """' at FILE:LINE (CODE)' for the innermost frame of the error's traceback inside knotanim, or ''."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__) if "knotanim" in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {Path(f.filename).name}:{f.lineno} ({(f.line or '').strip()[:80]})"


class CudaGraphBackend:
    """The eager ChunkStep captured into one torch.cuda.CUDAGraph at its first `run` (static shapes: every
    chunk of a stream has the same twelve input shapes), then replayed: inputs copied into the static input
    tensors, one graph replay, the outputs cloned (the next replay overwrites them). Building it costs a few
    eager steps (two warm-up calls on a side stream, the capture), not torch.compile's half a minute, so every
    sweep point gets its own. The replay alone is timed with CUDA events: `take_replay_ms` (GPU time per step,
    without the copies in and out).

    Where it cannot run (no CUDA device, or the capture fails: a host synchronisation inside the step, out of
    memory) it says why in one line on stderr, keeps the reason in `fallback_reason`, renames itself
    "graphs->torch" and runs the step eagerly from then on: the point is still measured."""

    def __init__(self, step, device: torch.device | str, say: Callable[[str], None] = say):
        self.step, self.device, self.say = step, torch.device(device), say
        self.name = "graphs"
        self.fallback_reason: str | None = None
        self.capture_check: dict | None = None  # the first replay against the eager warm-up, same inputs
        self._graph = None
        self._inputs: list[torch.Tensor] = []
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._replays: list = []
        if self.device.type != "cuda":
            self._fall_back(f"CUDA graphs need a CUDA device (device {self.device.type})")

    def _fall_back(self, why: str) -> None:
        self.fallback_reason = why
        self.name = "graphs->torch"
        self._graph, self._inputs, self._outputs = None, [], ()
        self.say(f"graphs backend: {why}; running the step eagerly")

    def _capture(self, inputs) -> None:
        static = [x.detach().clone() for x in inputs]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS handles, workspace, allocator pool
            for _ in range(2):
                eager = self.step(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.step(*static)
        self._graph, self._inputs, self._outputs = graph, static, tuple(outputs)
        graph.replay()
        errors = [float((a.float() - b.float()).abs().max()) if a.numel() else 0.0 for a, b in zip(outputs, eager)]
        scale = max([float(a.float().abs().max()) for a in eager if a.numel()] + [1e-12])
        self.capture_check = {"max_abs_error": max(errors + [0.0]), "output_scale": scale}

    def run(self, *inputs):
        if self.fallback_reason is None and self._graph is None:
            try:
                self._capture(inputs)
            except Exception as e:  # noqa: BLE001 - any capture failure means "measure eagerly", said once
                torch.cuda.synchronize(self.device)
                self._fall_back(f"capture failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
                                f"{_where(e)})")
        if self._graph is None:
            return self.step(*inputs)
        for static, x in zip(self._inputs, inputs):
            static.copy_(x, non_blocking=True)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        self._graph.replay()
        end.record()
        self._replays.append((start, end))
        return tuple(t.clone() for t in self._outputs)

    def take_replay_ms(self) -> list[float]:
        """The GPU milliseconds of every replay since the last call (call after a synchronize)."""
        times = [a.elapsed_time(b) for a, b in self._replays]
        self._replays = []
        return times


def make_backend(name: str, animator, artifacts: Path, say: Callable[[str], None] = say):
    if name == "torch":  # eager: the stream's default, built here without importing the export machinery
        from knotanim.engines.base import TorchBackend

        return TorchBackend(animator.chunk_step(), animator.device)
    if name == "graphs":  # this script's own: the eager step in one CUDA graph (eager where it cannot be)
        return CudaGraphBackend(animator.chunk_step(), animator.device, say)
    from knotanim.engines import build_backend

    return build_backend(name, animator, artifacts=artifacts)


def memory_in_use(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"cuda_allocated_mib": torch.cuda.memory_allocated(device) / 2**20}
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return {"rss_mib": pages * os.sysconf("SC_PAGE_SIZE") / 2**20}
    except (OSError, ValueError, IndexError):
        return {}


@torch.no_grad()
def time_stream(cfg: KnotAnimConfig, device: torch.device, dtype: torch.dtype, backend_name: str, warmup: int,
                chunks: int, seed: int = 0, budget_s: float | None = None, artifacts: Path | None = None,
                say: Callable[[str], None] = say) -> dict:
    """Run one stream of `warmup + chunks` chunks; per-chunk step and whole-push times in ms.

    Returns {"step_ms", "chunk_ms", "host_ms", "gpu_step_ms", "memory", "chunks_run", "stopped_early",
    "backend_fallback", ...}; the lists hold the timed chunks only (warm-up excluded); chunk_ms[i] is None when
    that push ran more than one chunk; host_ms (CUDA only) and gpu_step_ms (the graphs backend's replays
    only) are None where not measured.
    """
    from knotanim.animator import KnotAnimator

    animator = KnotAnimator.from_config(cfg, device=device, dtype=dtype, seed=seed)
    backend = TimedBackend(make_backend(backend_name, animator, artifacts or Path("artifacts"), say))
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    stream = animator.stream(reference, seed=seed, backend=backend)
    push = cfg.stream.chunk * cfg.samples_per_frame  # one chunk's worth of audio per push
    total = warmup + chunks
    memory_every = max(1, total // 20)
    step_ms: list[float] = []
    chunk_ms: list[float | None] = []
    host_ms: list[float | None] = []  # CUDA: the host time of each backend.run (no synchronize)
    gpu_ms: list[float | None] = []  # graphs backend: the GPU time of each replay (CUDA events around it)
    memory: list[dict] = []
    t_start = time.perf_counter()
    stopped_early = False
    while len(step_ms) < total:
        if budget_s is not None and time.perf_counter() - t_start > budget_s:
            stopped_early = True
            break
        samples = (rng.standard_normal(push) * 0.1).astype(np.float32)
        synchronize(device)
        t0 = time.perf_counter()
        stream.push_audio(samples)
        synchronize(device)
        wall_ms = (time.perf_counter() - t0) * 1000.0
        runs = backend.take_times_ms()
        step_ms += runs
        host = backend.take_host_ms()
        host_ms += host if len(host) == len(runs) else [None] * len(runs)
        replays = backend.inner.take_replay_ms() if hasattr(backend.inner, "take_replay_ms") else []
        gpu_ms += replays if len(replays) == len(runs) else [None] * len(runs)
        chunk_ms += [wall_ms] if len(runs) == 1 else [None] * len(runs)
        if runs and len(step_ms) > len(memory) * memory_every:  # every memory_every chunks, from the first
            memory.append({"chunk": len(step_ms) - 1, **memory_in_use(device)})
    elapsed = time.perf_counter() - t_start
    out = {"backend": backend.name, "warmup": min(warmup, len(step_ms)), "chunks_run": len(step_ms),
           "step_ms": step_ms[warmup:], "chunk_ms": chunk_ms[warmup:], "memory": memory,
           "host_ms": host_ms[warmup:], "gpu_step_ms": gpu_ms[warmup:],
           "backend_fallback": getattr(backend.inner, "fallback_reason", None),
           "capture_check": getattr(backend.inner, "capture_check", None),
           "stopped_early": stopped_early, "wall_s": elapsed}
    del stream, backend, animator
    return out


def stats(values: list[float | None]) -> dict | None:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None
    return {"n": int(v.size), "median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
            "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def flatness(values: list[float | None], first_index: int) -> dict | None:
    """Least-squares line through (chunk index, ms); the slope as a change per 1,000 chunks, relative to the
    median; and the medians of the first and last tenth of the stream."""
    pairs = [(first_index + i, x) for i, x in enumerate(values) if x is not None]
    if len(pairs) < 3:
        return None
    idx, ms = (np.array(col, dtype=np.float64) for col in zip(*pairs))
    slope, intercept = np.polyfit(idx, ms, 1)
    median = float(np.median(ms))
    tenth = max(1, len(ms) // 10)
    first, last = float(np.median(ms[:tenth])), float(np.median(ms[-tenth:]))
    return {"slope_ms_per_1000_chunks": float(slope * 1000), "intercept_ms": float(intercept), "median_ms": median,
            "relative_change_per_1000_chunks": float(slope * 1000 / median) if median > 0 else None,
            "first_tenth_median_ms": first, "last_tenth_median_ms": last,
            "last_over_first": last / first if first > 0 else None, "chunks": len(ms),
            "index_range": [int(idx[0]), int(idx[-1])]}


def is_out_of_memory(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    return (oom is not None and isinstance(error, oom)) or "out of memory" in str(error).lower()


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_point(base: KnotAnimConfig, sweep: str, value: int, overrides: dict, device: torch.device,
                  dtype: torch.dtype, backend: str, timing: Timing, seed: int = 0, artifacts: Path | None = None,
                  long: bool = False, count_flops: bool = True, flops: dict | None = None,
                  say: Callable[[str], None] = say) -> dict:
    """One sweep point: FLOPs and timings, or status 'skipped' / 'failed' with the reason.
    `flops`: this config's FLOPs if already counted (the long stream runs the base point's config)."""
    point = {"sweep": sweep, "value": value, "overrides": overrides}
    try:
        cfg = base.replace(**overrides) if overrides else base.validate()
    except ConfigError as e:
        return {**point, "status": "skipped", "reason": str(e)}
    point["config"] = describe(cfg)
    try:
        point["flops"] = flops or {"formula": chunk_flops_formula(cfg),
                                   "counted": counted_chunk_flops(cfg) if count_flops else None}
    except Exception as e:  # noqa: BLE001 - a counting failure must not lose the timing
        point["flops"] = {"formula": chunk_flops_formula(cfg), "counted": None,
                          "counted_error": f"{type(e).__name__}: {str(e)[:300]}"}
    n = timing.long_chunks if long else timing.chunks
    try:
        run = time_stream(cfg, device, dtype, backend, timing.warmup, n, seed=seed,
                          budget_s=timing.long_budget_s if long else None, artifacts=artifacts, say=say)
    except (BackendUnavailable, ConfigError) as e:
        release(device)
        return {**point, "status": "skipped", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - out of memory is a skip; anything else is recorded, not raised
        release(device)
        if is_out_of_memory(e):
            return {**point, "status": "skipped", "reason": f"out of memory: {str(e).splitlines()[0][:300]}"}
        message = str(e).splitlines()[0][:300] if str(e) else ""
        return {**point, "status": "failed", "reason": f"{type(e).__name__}: {message}"}
    release(device)
    step, chunk = stats(run["step_ms"]), stats(run["chunk_ms"])
    point.update(status="ok", backend=run["backend"], backend_fallback=run["backend_fallback"], step_ms=step,
                 chunk_ms=chunk, gpu_step_ms=stats(run["gpu_step_ms"]), host_step_ms=stats(run["host_ms"]),
                 capture_check=run["capture_check"],
                 chunks_run=run["chunks_run"], warmup=run["warmup"], stopped_early=run["stopped_early"],
                 wall_s=run["wall_s"], memory=run["memory"],
                 raw={"step_ms": run["step_ms"], "chunk_ms": run["chunk_ms"], "gpu_step_ms": run["gpu_step_ms"],
                      "host_step_ms": run["host_ms"]})
    if step:
        total = (point["flops"]["counted"] or point["flops"]["formula"])["total"]
        point["step_tflops_per_s"] = total / (step["median"] / 1000.0) / 1e12
        if point["gpu_step_ms"]:
            point["gpu_step_tflops_per_s"] = total / (point["gpu_step_ms"]["median"] / 1000.0) / 1e12
        point["step_ms_per_frame"] = step["median"] / cfg.stream.chunk
    if long:
        point["flat"] = {"step": flatness(run["step_ms"], run["warmup"]),
                         "chunk": flatness(run["chunk_ms"], run["warmup"])}
    return point


# --- reporting --------------------------------------------------------------------------------------------
def machine_info(device: torch.device, dtype: torch.dtype) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "processor": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "dtype": str(dtype).replace("torch.", "")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    gpu_memory_gib=props.total_memory / 2**30, compute_capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count)
    return info


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def summary_line(p: dict) -> str:
    where = f"{p['sweep']:>6} {p['value']:>4}"
    if p["status"] != "ok":
        return f"{where}: {p['status']}: {p['reason']}"
    c, f = p["config"], p["flops"]
    gflop = (f["counted"] or f["formula"])["total"] / 1e9
    s, ch = p["step_ms"], p["chunk_ms"]
    if s is None:
        return f"{where}: no timed chunk ({p['chunks_run']} run, all warm-up; stopped early: {p['stopped_early']})"
    text = (f"{where}: L {c['window']:>2}, C {c['chunk']}, F {c['frames_per_chunk']}, {c['frame_size']}px = "
            f"{c['tokens_per_frame']} tok/frame | {gflop:9.4g} GFLOP/chunk | step median {s['median']:9.2f} ms "
            f"p95 {s['p95']:9.2f} ms (n {s['n']})")
    if p.get("gpu_step_ms"):
        text += f" | GPU (replay) median {p['gpu_step_ms']['median']:8.3f} ms"
    if p.get("host_step_ms"):
        text += f" | host median {p['host_step_ms']['median']:8.2f} ms"
    if ch:
        text += f" | whole chunk median {ch['median']:9.2f} ms"
    if p.get("backend_fallback"):
        text += f" | {p['backend']}: {p['backend_fallback']}"
    if p.get("stopped_early"):
        text += " | stopped at the time budget"
    return text


def markdown_table(points: list[dict]) -> str:
    rows = ["| sweep | L | C | frame (tokens) | GFLOP/chunk (formula / counted) | step median / p95 ms | "
            "GPU step (graph replay) median ms | whole chunk median ms | TFLOP/s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        if p["status"] != "ok":
            rows.append(f"| {p['sweep']} {p['value']} | | | | | {p['status']}: {p['reason'][:80]} | | | |")
            continue
        gpu = f"{p['gpu_step_ms']['median']:.3f}" if p.get("gpu_step_ms") else "-"
        c, f, s, ch = p["config"], p["flops"], p["step_ms"], p["chunk_ms"]
        counted = f"{f['counted']['total'] / 1e9:.4g}" if f["counted"] else "-"
        whole = f"{ch['median']:.1f}" if ch else "-"
        step = f"{s['median']:.1f} / {s['p95']:.1f}" if s else "-"
        rate = f"{p['step_tflops_per_s']:.3g}" if s else "-"
        rows.append(f"| {p['sweep']} | {c['window']} | {c['chunk']} | {c['frame_size']} ({c['tokens_per_frame']}) | "
                    f"{f['formula']['total'] / 1e9:.4g} / {counted} | {step} | {gpu} | {whole} | {rate} |")
    return "\n".join(rows)


def make_figure(result: dict, path: Path) -> str | None:
    """Four panels: time against L, C, tokens per frame (FLOPs on a second axis), and against chunk index.
    Returns None when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no figure (pip install matplotlib)"
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    panels = (("window", "window L (frames of history)", "window"),
              ("chunk", "chunk length C (frames committed; F = C + 1)", "chunk"),
              ("frame", "tokens per frame (frame side px)", "tokens_per_frame"))
    for ax, (sweep, label, key) in zip(axes.flat, panels):
        ok = [p for p in result["points"] if p["sweep"] == sweep and p["status"] == "ok"]
        if not ok:
            ax.set_title(f"{sweep}: no measured point")
            continue
        x = [p["config"][key] for p in ok]
        med = [p["step_ms"]["median"] for p in ok]
        p95 = [p["step_ms"]["p95"] for p in ok]
        ax.errorbar(x, med, yerr=[[0] * len(med), [b - a for a, b in zip(med, p95)]], marker="o", capsize=3,
                    label="step (ChunkStep) median, bar to p95")
        whole = [(xi, p["chunk_ms"]["median"]) for xi, p in zip(x, ok) if p["chunk_ms"]]
        if whole:
            ax.plot(*zip(*whole), marker="s", linestyle="--", label="whole chunk (features, step, decode) median")
        gpu = [(xi, p["gpu_step_ms"]["median"]) for xi, p in zip(x, ok) if p.get("gpu_step_ms")]
        if gpu:
            ax.plot(*zip(*gpu), marker="^", linestyle="-.", label="GPU step (CUDA graph replay) median")
        ax.set_xlabel(label)
        ax.set_ylabel("ms per chunk")
        ax.set_ylim(0, max(p95 + [v for _, v in whole]) * 1.45)  # headroom for the legend
        if sweep == "frame":
            ax.set_xticks(x)
            ax.set_xticklabels([f"{p['config']['tokens_per_frame']}\n({p['config']['frame_size']})" for p in ok])
        twin = ax.twinx()
        gflop = [(p["flops"]["counted"] or p["flops"]["formula"])["total"] / 1e9 for p in ok]
        twin.plot(x, gflop, color="grey", marker="x", linestyle=":", label="GFLOP per chunk (step)")
        twin.set_ylabel("GFLOP per chunk", color="grey")
        twin.set_ylim(0, max(gflop) * 1.45)
        lines = ax.get_legend_handles_labels()
        extra = twin.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="upper left")
        ax.set_title(f"per-chunk time against {sweep}")
    ax = axes.flat[3]
    long = result.get("long")
    if long and long["status"] == "ok" and long["raw"]["step_ms"]:
        ms = np.array(long["raw"]["step_ms"])
        idx = np.arange(long["warmup"], long["warmup"] + ms.size)
        whole = [(i, v) for i, v in zip(idx, long["raw"]["chunk_ms"]) if v is not None]
        if whole:
            ax.plot(*zip(*whole), ".", color="tab:orange", markersize=3, alpha=0.4, label="whole chunk")
        ax.plot(idx, ms, ".", color="tab:blue", markersize=3, alpha=0.6, label="step per chunk")
        flat = long["flat"]["step"]
        if flat:
            slope = flat["slope_ms_per_1000_chunks"] / 1000
            ax.plot(idx, flat["intercept_ms"] + slope * idx, "r-",
                    label=f"fit: {flat['relative_change_per_1000_chunks'] * 100:+.2f}% per 1,000 chunks")
        top = max([float(np.percentile(ms, 99))] + [float(np.percentile([v for _, v in whole], 99))] * bool(whole))
        ax.set_ylim(0, top * 1.4)
        ax.legend(fontsize=7)
    ax.set_xlabel("chunk index")
    ax.set_ylabel("ms per chunk")
    b = result["base"]
    ax.set_title(f"long stream (L {b['window']}, C {b['chunk']}, {b['frame_size']} px): flat over stream length?")
    m = result["machine"]
    fig.suptitle(f"knotanim cost growth (issue #7 benchmark 3): {m.get('gpu', m['processor'])}, {m['dtype']}, "
                 f"backend {result['settings']['backend']}, torch {m['torch']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def parse_list(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(v) for v in text.split(",") if v.strip()) if text else None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="model dtype (auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--backend", default="torch",
                   help="torch (eager, default), graphs (the eager step captured in one CUDA graph per point: "
                        "compute, not launch overhead; eager with a one-line reason where it cannot), compiled, "
                        "onnxruntime, tensorrt, aoti")
    p.add_argument("--out", default="bench_scaling_out", help="folder for scaling.json and scaling.png")
    p.add_argument("--quick", action="store_true", help="a small sweep (CPU checks)")
    p.add_argument("--tiny", action="store_true", help="tiny_config sizes (the test)")
    p.add_argument("--windows", help="comma-separated L values (overrides the sweep)")
    p.add_argument("--chunk-lengths", help="comma-separated C values")
    p.add_argument("--frame-sizes", help="comma-separated frame sides in pixels")
    p.add_argument("--base-frame-size", type=int,
                   help="frame side of the base point (window/chunk sweeps, long stream); default: the model's")
    p.add_argument("--warmup", type=int, help="warm-up chunks per point (excluded)")
    p.add_argument("--chunks", type=int, help="timed chunks per sweep point")
    p.add_argument("--long-chunks", type=int, help="timed chunks of the long stream (0: skip it)")
    p.add_argument("--long-budget-s", type=float, help="wall-clock limit of the long stream, seconds")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-count", action="store_true", help="formula FLOPs only (skip FlopCounterMode on meta)")
    p.add_argument("--no-figure", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> dict:
    from knotanim.animator import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = dtypes[args.dtype] if args.dtype != "auto" else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    preset = SWEEPS[(args.tiny, args.quick)]
    sweeps = Sweeps(parse_list(args.windows) or preset.windows, parse_list(args.chunk_lengths) or preset.chunks,
                    parse_list(args.frame_sizes) or preset.frame_sizes)
    timing = default_timing(device, args.quick, args.tiny)
    timing = dataclasses.replace(timing, **{k: v for k, v in (
        ("warmup", args.warmup), ("chunks", args.chunks), ("long_chunks", args.long_chunks),
        ("long_budget_s", args.long_budget_s)) if v is not None})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = base_config(args.tiny)
    if args.base_frame_size:
        base = base.replace(frame_size=args.base_frame_size)  # ConfigError: the base itself is invalid
    timer = ("CUDA events (step; with --backend graphs also around the graph replay alone: gpu_step_ms), "
             "perf_counter without synchronize (host_step_ms), perf_counter + synchronize (whole chunk)"
             if device.type == "cuda" else "perf_counter (step and whole chunk)")
    machine = machine_info(device, dtype)
    result = {"benchmark": "issue #7 benchmark 3: cost growth", "command": command,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "git": git_commit(), "machine": machine, "load_average_start": load_average(),
              "settings": {"backend": args.backend, "tiny": args.tiny, "quick": args.quick, "seed": args.seed,
                           "sweeps": dataclasses.asdict(sweeps), "timing": dataclasses.asdict(timing), "timer": timer},
              "base_config": base.to_dict(), "base": describe(base), "points": [], "long": None}
    print(f"bench_scaling: {machine.get('gpu', machine['processor'])}, {machine['dtype']}, backend {args.backend}, "
          f"torch {torch.__version__}; base {describe(base)}", flush=True)
    measured: dict[str, dict] = {}  # one measurement per distinct config (the default appears in each sweep)
    artifacts = out / "artifacts"
    say_once = SayOnce()
    for sweep, value, overrides in sweep_points(sweeps):
        try:
            key = json.dumps(base.replace(**overrides).to_dict(), sort_keys=True)
        except ConfigError:
            key = None
        if key in measured:
            point = {**measured[key], "sweep": sweep, "value": value, "overrides": overrides,
                     "same_measurement_as": f"{measured[key]['sweep']} {measured[key]['value']}"}
        else:
            point = measure_point(base, sweep, value, overrides, device, dtype, args.backend, timing, args.seed,
                                  artifacts, count_flops=not args.no_count, say=say_once)
            if key is not None:
                measured[key] = point
        result["points"].append(point)
        print(summary_line(point), flush=True)
        write_json(result, out / "scaling.json")
    if timing.long_chunks > 0:
        base_point = measured.get(json.dumps(base.to_dict(), sort_keys=True), {})
        long = measure_point(base, "long", timing.long_chunks, {}, device, dtype, args.backend, timing, args.seed,
                             artifacts, long=True, count_flops=not args.no_count, flops=base_point.get("flops"),
                             say=say_once)
        result["long"] = long
        print(summary_line(long), flush=True)
        if long["status"] == "ok":
            for what in ("step", "chunk"):
                f = long["flat"][what]
                if f:
                    print(f"  long stream {what}: {f['chunks']} chunks, slope {f['slope_ms_per_1000_chunks']:+.3f} ms "
                          f"per 1,000 chunks = {f['relative_change_per_1000_chunks'] * 100:+.2f}% of the median "
                          f"{f['median_ms']:.2f} ms; first tenth {f['first_tenth_median_ms']:.2f} ms, last tenth "
                          f"{f['last_tenth_median_ms']:.2f} ms"
                          + (" (too few chunks to judge a slope)" if f["chunks"] < 200 else ""), flush=True)
    result["load_average_end"] = load_average()
    write_json(result, out / "scaling.json")
    if not args.no_figure:
        why_not = make_figure(result, out / "scaling.png")
        result["figure"] = str(out / "scaling.png") if why_not is None else None
        if why_not:
            result["figure_missing"] = why_not
            print(why_not, flush=True)
        write_json(result, out / "scaling.json")
    print(markdown_table(result["points"] + ([result["long"]] if result["long"] else [])), flush=True)
    return result


def write_json(result: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    tmp.replace(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/bench_scaling.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        result = run(args, command.strip())
    except KnotAnimError as e:  # an invalid base (--base-frame-size 100), no CUDA; sweep points are skipped instead
        print(f"bench_scaling: {e}", file=sys.stderr)
        return 2
    points = result["points"] + ([result["long"]] if result["long"] else [])
    return 1 if any(p["status"] == "failed" for p in points) else 0


if __name__ == "__main__":
    sys.exit(main())
