"""Model profiles and the automatic choice at start-up (issue #10).

A profile is a model folder shipped in the package: `assets/default` (best quality) and, once it is
trained, `assets/lite` (the CPU profile, docs/lite.md). `installed_profiles()` lists those present,
best quality first. `choose_profile` loads each in turn, picks its backend
(`engines.select_backend`), streams a few seconds of random audio through it
(`measure_stream`, the code path `knotanim bench` reports) and keeps the first that sustains the
target rate (25 frames/s); when none does it keeps the fastest and says so, with the rate it will
run at. Measurements are cached per (profile, model, backend, device, threads, torch version) in
`<cache>/profile_speed.json` ($KNOTANIM_CACHE, else $XDG_CACHE_HOME/knotanim, else
~/.cache/knotanim), so the second start is fast; `remeasure=True` ignores the cache.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from knotanim.errors import InputError

PROFILE_NAMES = ("default", "lite")  # best quality first
DESCRIPTIONS = {
    "default": "best quality; real time on an NVIDIA GPU, about 1 frame/s on a CPU",
    "lite": "160x160 crop, small DiT, 2 steps: live on a laptop CPU (docs/lite.md)",
}
CACHE_FILE = "profile_speed.json"


@dataclass(frozen=True)
class Profile:
    name: str  # "default" | "lite"
    path: Path  # checkpoint folder
    description: str


def assets_root() -> Path:
    from importlib.resources import files

    return Path(str(files("knotanim.assets")))


def installed_profiles(root: str | Path | None = None) -> list[Profile]:
    """The profiles whose model folder exists (config.json present), best quality first."""
    base = Path(root) if root is not None else assets_root()
    return [Profile(name, base / name, DESCRIPTIONS[name]) for name in PROFILE_NAMES
            if (base / name / "config.json").is_file()]


def find_profile(name: str, profiles: list[Profile] | None = None) -> Profile:
    """The installed profile `name`, or "auto": the best-quality one; InputError (one line) otherwise."""
    profiles = installed_profiles() if profiles is None else profiles
    if not profiles:
        raise InputError("no model profile is installed (the package's assets/default is missing); reinstall knotanim "
                         "or give --model PATH")
    if name == "auto":
        return profiles[0]
    for p in profiles:
        if p.name == name:
            return p
    if name not in PROFILE_NAMES:
        raise InputError(f"unknown profile {name!r}; choose auto, {', '.join(PROFILE_NAMES)}")
    installed = ", ".join(p.name for p in profiles)
    raise InputError(f"profile {name!r} is not installed (installed: {installed}); the lite model is not trained yet: "
                     "see docs/lite.md, or give --model PATH")


# --- measuring a stream ------------------------------------------------------------------------------
@dataclass
class StreamSpeed:
    frames: int
    compute_s: float  # seconds spent in push_audio calls that produced frames
    wall_s: float  # seconds from the stream's creation to the end
    first_frame_s: float | None  # seconds to the first frame (compute; audio pushed faster than real time)
    chunk_times: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.compute_s if self.compute_s > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_stream(animator: Any, seconds: float, *, backend: Any = None, steps: int | None = None,
                   warmup_frames: int = 12, time_budget: float | None = None, min_chunks: int = 2,
                   seed: int = 0) -> StreamSpeed:
    """Stream `seconds` of random audio, one frame of audio per push as a microphone would, after a
    warm-up stream of `warmup_frames` frames. `time_budget`: stop once that many wall seconds have
    passed and at least `min_chunks` chunks were timed. The warm-up uses a fresh stream on the same
    backend (allocations, kernels, caches)."""
    cfg, dev = animator.config, animator.device
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    audio = (rng.standard_normal(int(seconds * cfg.audio.sample_rate)) * 0.1).astype(np.float32)
    spf = cfg.samples_per_frame
    if warmup_frames > 0:
        warm = animator.stream(ref, steps=steps, backend=backend)
        warm.push_audio(audio[: spf * warmup_frames])
        _sync(dev)
    t0 = time.perf_counter()
    stream = animator.stream(ref, steps=steps, backend=backend)
    first, chunk_times, frames = None, [], 0
    for start in range(0, audio.size, spf):
        c0 = time.perf_counter()
        out = stream.push_audio(audio[start : start + spf])
        _sync(dev)
        if out:
            chunk_times.append(time.perf_counter() - c0)
            frames += len(out)
            if first is None:
                first = time.perf_counter() - t0
            if time_budget is not None and len(chunk_times) >= min_chunks and time.perf_counter() - t0 >= time_budget:
                break
    return StreamSpeed(frames, sum(chunk_times), time.perf_counter() - t0, first, chunk_times)


def measure_profile(animator: Any, backend: Any = None, seconds: float = 2.0, steps: int | None = None) -> float:
    """Frames/s of compute over a short stream: about `seconds` of wall time after a one-chunk
    warm-up (at least two timed chunks, at most 8 s of audio)."""
    chunk = animator.config.stream.chunk
    return measure_stream(animator, 8.0, backend=backend, steps=steps, warmup_frames=chunk,
                          time_budget=seconds, min_chunks=2).fps


# --- the cache ------------------------------------------------------------------------------------------
def device_label(device: torch.device) -> str:
    """What the rate depends on: the GPU's name, or the CPU and its torch thread count."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, {torch.get_num_threads()} threads"


def speed_cache_path() -> Path:
    from knotanim.engines.cache import default_cache_dir

    return default_cache_dir() / CACHE_FILE


def cache_key(profile: Profile, backend_name: str, device: torch.device, steps: int | None) -> str:
    from knotanim.engines.cache import checkpoint_hash

    try:
        model = checkpoint_hash(profile.path)[:12]
    except (OSError, ValueError):
        model = "unknown"
    return "|".join([profile.name, model, backend_name, device_label(device), f"steps {steps or 'model'}",
                     f"torch {torch.__version__}"])


def read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(path: Path, key: str, fps: float) -> None:
    """Best effort: a read-only cache folder only costs a measurement next time."""
    data = read_cache(path)
    data[key] = {"fps": fps, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


# --- the choice ---------------------------------------------------------------------------------------
@dataclass
class Choice:
    profile: Profile
    animator: Any  # KnotAnimator
    backend: Any  # ChunkBackend for animator.stream(backend=...)
    measured_fps: float | None  # None: not measured (measure=False)
    message: str  # one line for the user
    holds: bool = True  # measured_fps >= target (True when not measured)
    cached: bool = False  # the rate came from the cache
    backend_name: str = "torch"
    tried: list[tuple[str, str, float]] = field(default_factory=list)  # (profile, backend, fps) measured


def _quiet(_: str) -> None:
    pass


def _load(profile: Profile, device: Any) -> Any:
    from knotanim.animator import KnotAnimator

    return KnotAnimator.from_pretrained(profile.path, device=device)


def choose_profile(device: Any = "auto", requested: str = "auto", target_fps: float = 25.0, budget_s: float = 2.0, *,
                   backend: str = "auto", steps: int | None = None, profiles: list[Profile] | None = None,
                   remeasure: bool = False, cache_path: str | Path | None = None,
                   measure: Callable[..., float] | None = None, load: Callable[[Profile, Any], Any] | None = None,
                   progress: Callable[[str], None] = _quiet) -> Choice:
    """Pick the installed profile and backend that hold `target_fps` on `device`.

    requested "auto": profiles best quality first, each with `select_backend(backend)`; the first
    whose measured rate (about `budget_s` seconds of streaming, or the cache) reaches `target_fps`
    wins; if none does, the fastest, with a message naming the rate it will run at. A named
    profile is used as asked (still measured, so the message can warn); absent -> InputError.
    `measure(animator, backend, seconds)` and `load(profile, device)` are injectable for tests.
    """
    from knotanim.animator import resolve_device
    from knotanim.engines import select_backend

    measure, load = measure or measure_profile, load or _load
    profiles = installed_profiles() if profiles is None else profiles
    candidates = [find_profile(requested, profiles)] if requested != "auto" else profiles
    if not candidates:
        find_profile("auto", profiles)  # raises the "nothing installed" error
    dev = resolve_device(device)
    cpath = Path(cache_path) if cache_path is not None else speed_cache_path()
    cache = {} if remeasure else read_cache(cpath)
    best: Choice | None = None
    tried: list[tuple[str, str, float]] = []
    for profile in candidates:
        animator = load(profile, dev)
        chunk_backend, _reason = select_backend(backend, animator, steps=steps, model_path=profile.path)
        key = cache_key(profile, chunk_backend.name, dev, steps)
        hit = cache.get(key)
        if isinstance(hit, dict) and isinstance(hit.get("fps"), (int, float)):
            fps, cached = float(hit["fps"]), True
        else:
            progress(f"measuring profile {profile.name!r} with {chunk_backend.name} on {device_label(dev)}…")
            fps, cached = float(measure(animator, chunk_backend, budget_s)), False
            write_cache(cpath, key, fps)
        tried.append((profile.name, chunk_backend.name, fps))
        choice = Choice(profile, animator, chunk_backend, fps, "", fps >= target_fps, cached, chunk_backend.name)
        if choice.holds:
            best = choice
            break
        if best is None or fps > (best.measured_fps or 0.0):
            best = choice  # the slower animator is released when `best` moves on
    assert best is not None
    best.tried = tried
    best.message = choice_message(best, profiles, dev, target_fps, requested)
    return best


def choice_message(choice: Choice, profiles: list[Profile], device: torch.device, target_fps: float,
                   requested: str = "auto") -> str:
    where = f"this GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "this CPU"
    src = " (cached; --remeasure to measure again)" if choice.cached else ""
    rate = f"{choice.measured_fps:.1f} frames/s with {choice.backend_name}{src}"
    name = choice.profile.name
    if choice.holds:
        how = "requested" if requested != "auto" else f"holds {target_fps:g} fps"
        return f"profile {name!r} ({how}) on {where}: {rate}"
    installed = {p.name for p in profiles}
    if requested != "auto":
        head = f"profile {name!r} (requested) does not hold {target_fps:g} fps on {where}: {rate}"
    else:
        head = (f"no installed profile holds {target_fps:g} fps on {where}; running {name!r} at "
                f"{choice.measured_fps:.1f} frames/s with {choice.backend_name}{src}")
    tail = " (the app will repeat frames)"
    if "lite" not in installed:
        tail += ". Install or train the lite profile (docs/lite.md)"
    elif device.type != "cuda":
        tail += ". An NVIDIA GPU or fewer --steps helps"
    return head + tail
