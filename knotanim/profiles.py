"""Model profiles and the automatic choice at start-up (issues #7, #10): which profile, on which backend.

A profile is a model folder shipped in the package: `assets/default` (best quality) and `assets/lite`
(the CPU profile, docs/lite.md). `installed_profiles()` lists those present,
best quality first. `choose_profile` loads each in turn and, through `choose_backend`, streams a
short stretch of random audio (`measure_stream`, the code path `knotanim bench` reports) on each
candidate backend (`engines.select.live_candidates`: on a CPU eager torch, and ONNX Runtime when its
graph is already exported, so nothing is built before the first frame; ready TensorRT / AOTInductor
artifacts, ONNX Runtime with a GPU provider, torch.compile and torch on a GPU; or the one named);
the best-quality profile whose fastest backend sustains the target rate (25 frames/s) wins; when
none does it keeps the fastest (profile, backend) and says so, with the rate it will run at.
On a CPU ("auto") the profiles are measured cheapest first (`engines.flops.frame_flops`), and a
profile that cannot hold the target there is not even loaded: one whose rate, extrapolated from a
cheaper profile's measured rate by their FLOPs per frame and given `CPU_CEILING_MARGIN` of slack,
stays below the target (the default model on a laptop CPU: ~1 frame/s, where loading, warming and
measuring it would take longer than the whole start should). `knotanim live` and the app go further
on a CPU with no rates cached (`quick`, `estimated_choice`): nothing is measured before the first
frame. The winner is then built for every step count of the live quality ladder
(`knotanim.ladder.ladder_steps`), so the pipeline never exports or compiles mid-stream; a backend that
cannot be built falls back to eager torch with a one-line note. On a CPU that computes bf16 natively
(`cpu_has_native_bf16`: AVX512-BF16 or AMX-BF16), the profiles in `CPU_BF16_PROFILES` (lite) are
loaded in bfloat16 first and measured with the torch backends ("compiled", "torch"; an ONNX graph is
float32 whatever the model's dtype); float32 is measured only when bf16 does not hold the target, and
the faster is kept; the message then says "(bf16)". `dtype` ("float32" / "bfloat16", `--dtype`)
forces one dtype instead. Measurements are cached per (profile, model, backend, dtype, device,
threads, steps, torch version, RATES_VERSION) in `<cache>/profile_speed.json` ($KNOTANIM_CACHE, else
$XDG_CACHE_HOME/knotanim, else ~/.cache/knotanim), so the second start is fast; `remeasure=True`
ignores the cache.
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

# Part of every cached rate's key: raise it when a change makes the rates measured before it stale (the same
# model, backend, dtype and torch now stream at another speed), so every machine measures once more.
# 2: a bf16 animator's decoder runs in bf16.
RATES_VERSION = 2

# On a CPU a bigger model uses the cores better than a small one (per FLOP: the default model ran at 1.3x the
# lite model's FLOP/s on 2 cores), so a rate extrapolated from a cheaper profile by FLOPs is pessimistic: a
# profile is skipped only when even this many times its extrapolated rate stays below the target.
CPU_CEILING_MARGIN = 4.0
# Profiles also measured in bfloat16 on a CPU with native bf16 (cpu_has_native_bf16), when no dtype is asked for:
# on the lite model bf16 is faster there (eager and compiled) and KnotBench quality equals float32 within noise.
# Never on a CPU without native bf16, where bf16 is emulated and much slower.
CPU_BF16_PROFILES = ("lite",)
BF16_BACKENDS = ("compiled", "torch")  # the backends whose speed depends on the model's dtype
DTYPES = ("auto", "float32", "bfloat16")  # the --dtype values a profile runs in (float16: eval and bench only)


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
    raise InputError(f"profile {name!r} is not installed (installed: {installed}); reinstall knotanim, which ships it "
                     "(docs/lite.md), or give --model PATH")


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
def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows (often just "x86_64")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average_1min() -> float:
    """The 1-minute load average (what else ran while a rate was measured); NaN where the system gives
    none (sandboxed kernels may not)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def native_bf16_flags(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo text lists a native bf16 instruction set (avx512_bf16 or amx_bf16)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux: /proc/cpuinfo flags avx512_bf16 or
    amx_bf16); False where unknown (no /proc/cpuinfo, not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return native_bf16_flags(f.read())
    except OSError:
        return False


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """None / "auto" -> None (the device's default, plus the bf16 candidate); "float32" / "bfloat16" (or a
    torch dtype) -> that dtype; anything else -> InputError."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    named = {"auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16}
    if dtype not in named:
        raise InputError(f"unknown dtype {dtype!r}; choose {', '.join(DTYPES)}")
    return named[dtype]


def dtype_label(dtype: Any, device: torch.device) -> str:
    """" (bf16)" / " (fp32)" when `dtype` is not the device's default (float32 on a CPU, bfloat16 on a
    GPU, as KnotAnimator.from_pretrained loads), else ""."""
    default = torch.bfloat16 if device.type == "cuda" else torch.float32
    if not isinstance(dtype, torch.dtype) or dtype == default:
        return ""
    short = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype))
    return f" ({short})"


def device_label(device: torch.device) -> str:
    """What the rate depends on: the GPU's name, or the CPU and its torch thread count."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU {cpu_name()} x{os.cpu_count()}, {torch.get_num_threads()} threads"


def speed_cache_path() -> Path:
    from knotanim.engines.cache import default_cache_dir

    return default_cache_dir() / CACHE_FILE


def cache_key(profile: Profile, backend_name: str, device: torch.device, steps: int | None,
              dtype: torch.dtype | None = None) -> str:
    from knotanim.engines.cache import checkpoint_hash

    try:
        model = checkpoint_hash(profile.path)[:12]
    except (OSError, ValueError):
        model = "unknown"
    parts = [profile.name, model, backend_name] + ([str(dtype).removeprefix("torch.")] if dtype is not None else [])
    return "|".join(parts + [device_label(device), f"steps {steps or 'model'}", f"torch {torch.__version__}",
                             f"rates v{RATES_VERSION}"])


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
class BackendChoice:
    """The backend chosen for one animator: the fastest measured, built for every step count the live
    quality ladder may use."""

    backends: Any  # engines.select.StepBackends (a factory: steps -> ChunkBackend)
    backend: Any  # the ChunkBackend for the first rung (`steps`)
    fps: float
    cached: bool = False
    tried: list[tuple[str, float]] = field(default_factory=list)  # (backend name, fps), in the order measured
    notes: list[str] = field(default_factory=list)  # one line each: a backend skipped or that fell back to torch


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
    backends: Any = None  # engines.select.StepBackends for LiveOptions.backend (None: eager torch)
    notes: list[str] = field(default_factory=list)  # one line each (a backend skipped, a fallback to torch)
    dtype: Any = None  # the animator's torch dtype (backend_name ends in " (bf16)" when not the device's default)


def _quiet(_: str) -> None:
    pass


def _load(profile: Profile, device: Any, dtype: torch.dtype | None = None) -> Any:
    from knotanim.animator import KnotAnimator

    return KnotAnimator.from_pretrained(profile.path, device=device, dtype=dtype)


def _load_as(load: Callable[..., Any], profile: Profile, device: Any, dtype: torch.dtype | None) -> Any:
    """`load(profile, device)`, or with `dtype` when one is asked for (a two-argument `load` still works
    for the default dtype)."""
    return load(profile, device) if dtype is None else load(profile, device, dtype)


def _first_line(e: BaseException) -> str:
    from knotanim.errors import KnotAnimError

    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, KnotAnimError) and text else f"{type(e).__name__}: {text}".rstrip(": ")


def _builder(progress: Callable[[str], None], artifacts: str | Path | None = None) -> Callable[..., Any]:
    def build(name: str, animator: Any, model_path: Any, export: bool) -> Any:
        from knotanim.engines.select import StepBackends

        return StepBackends(name, animator, model_path=model_path, artifacts=artifacts, export=export, progress=progress)
    return build


def choose_backend(animator: Any, backend: str = "auto", steps: int | None = None, *, target_fps: float = 25.0,
                   budget_s: float = 2.0, profile: Profile | None = None, cache: dict | None = None,
                   cache_path: str | Path | None = None, measure: Callable[..., float] | None = None,
                   build: Callable[..., Any] | None = None, prepare: bool = True,
                   only: tuple[str, ...] | None = None, progress: Callable[[str], None] = _quiet) -> BackendChoice:
    """The fastest backend for `animator` among `backend` ("auto": `engines.select.live_candidates`;
    a name: that one, falling back to torch with a note when it cannot be built), each measured for
    about `budget_s / candidates` seconds of streaming at `steps` (or read from the cache when
    `profile` names a model folder). With `prepare`, the winner is then built for every step count
    of the live quality ladder (`knotanim.ladder.ladder_steps`), so nothing is built mid-stream; if that
    fails, torch with a note. `only`: with "auto", measure only these of the candidates.
    `measure(animator, chunk_backend, seconds)` and
    `build(name, animator, model_path, export) -> StepBackends` are injectable for tests."""
    from knotanim.engines.select import BACKENDS, live_candidates
    from knotanim.errors import BackendUnavailable

    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    measure, build = measure or measure_profile, build or _builder(progress)
    dev = animator.device
    names = live_candidates(dev) if backend == "auto" else [(backend, True)]
    if backend == "auto" and only is not None:
        names = [(n, e) for n, e in names if n in only]
    if backend != "auto" and backend != "torch":
        names.append(("torch", True))  # measured only if the requested one cannot be built
    model_path = profile.path if profile is not None else None
    cpath = Path(cache_path) if cache_path is not None else speed_cache_path()
    cache = {} if cache is None else cache
    notes: list[str] = []
    measured: list[tuple[float, bool, Any, Any]] = []  # (fps, cached, StepBackends, ChunkBackend)
    seconds = max(0.5, budget_s / max(1, sum(1 for n, _ in names if n != "torch" or backend in ("auto", "torch"))))
    for name, export in names:
        if name == "torch" and backend not in ("auto", "torch") and measured:
            break  # the requested backend was built: torch is only its fallback
        try:
            backends = build(name, animator, model_path, export)
            chunk_backend = backends(steps)
        except Exception as e:  # noqa: BLE001 - any build failure is one line, and torch remains
            if backend == "auto":
                notes.append(f"{name} skipped ({_first_line(e)})")
            else:
                notes.append(f"the {name} backend could not be built ({_first_line(e)}): running torch")
            continue
        key = (cache_key(profile, chunk_backend.name, dev, steps, getattr(animator, "dtype", None))
               if profile is not None else None)
        hit = cache.get(key) if key is not None else None
        if isinstance(hit, dict) and isinstance(hit.get("fps"), (int, float)):
            fps, cached = float(hit["fps"]), True
        else:
            where = f"profile {profile.name!r}" if profile is not None else "the model"
            label = dtype_label(getattr(animator, "dtype", None), dev)
            progress(f"measuring {where} with {chunk_backend.name}{label} on {device_label(dev)}…")
            fps, cached = float(measure(animator, chunk_backend, seconds)), False
            if key is not None:
                write_cache(cpath, key, fps)
        measured.append((fps, cached, backends, chunk_backend))
    if not measured:
        raise BackendUnavailable("no backend could be built: " + "; ".join(notes))
    order = {id(m): i for i, m in enumerate(measured)}
    fps, cached, backends, chunk_backend = max(measured, key=lambda m: (m[0], -order[id(m)]))
    tried = [(b.name, f) for f, _, _, b in measured]
    bc = BackendChoice(backends, chunk_backend, fps, cached, tried, notes)
    return _prepared(bc, animator, steps, model_path, build, lambda b: measure(animator, b, seconds)) if prepare else bc


def choose_profile(device: Any = "auto", requested: str = "auto", target_fps: float = 25.0,
                   budget_s: float | None = None, *,
                   backend: str = "auto", steps: int | None = None, profiles: list[Profile] | None = None,
                   remeasure: bool = False, cache_path: str | Path | None = None, dtype: str | torch.dtype | None = None,
                   measure: Callable[..., float] | None = None, load: Callable[..., Any] | None = None,
                   build: Callable[..., Any] | None = None, progress: Callable[[str], None] = _quiet,
                   quick: bool = False, matmul: Callable[[Any], float] | None = None) -> Choice:
    """Pick the installed profile and backend that hold `target_fps` on `device`.

    quick (knotanim live, the app): on a CPU with `backend` "auto", when the cache holds no rate for any
    candidate on this device, nothing is measured before the first frame (`estimated_choice`): the
    profile is chosen by its FLOPs per frame against this CPU's matmul rate (`matmul(device)`, default
    `engines.flops.matmul_rate`), and runs on eager torch (bf16 where it would be measured first);
    `remeasure=True` measures instead (and caches the rates, which later quick starts then use).

    requested "auto": profiles best quality first, each with its fastest backend (`choose_backend`:
    "auto" measures every candidate, about `budget_s` seconds per profile in all (None: 2 s on a GPU, 1 s on
    a CPU, where the first frame waits for it), or reads the cache);
    the first profile whose fastest backend reaches `target_fps` wins; if none does, the fastest
    (profile, backend), with a message naming the rate it will run at. On a CPU the profiles are
    measured cheapest first instead, and one whose extrapolated rate (`cannot_hold`) is out of reach
    is skipped with a note; the best-quality profile that holds still wins. A named profile is used as
    asked (still measured, so the message can warn); absent -> InputError. The chosen backend is
    built for every step count of the live quality ladder (Choice.backends).
    `dtype` None / "auto": each profile as KnotAnimator.from_pretrained loads it (float32 on a CPU), and
    on a CPU with native bf16 (`cpu_has_native_bf16`) the profiles in `CPU_BF16_PROFILES` in bfloat16
    first, with the torch backends (`BF16_BACKENDS`): if that holds `target_fps` float32 is not measured,
    else float32 too and the faster is kept; "float32" / "bfloat16": that dtype only. bf16 rates appear in
    Choice.tried and the message as "<backend> (bf16)".
    `measure(animator, backend, seconds)`, `load(profile, device[, dtype])` (dtype passed only when one
    is asked for) and
    `build(name, animator, model_path, export)` are injectable for tests.
    """
    from knotanim.animator import resolve_device

    load = load or _load
    want = parse_dtype(dtype)
    profiles = installed_profiles() if profiles is None else profiles
    candidates = [find_profile(requested, profiles)] if requested != "auto" else profiles
    if not candidates:
        find_profile("auto", profiles)  # raises the "nothing installed" error
    dev = resolve_device(device)
    budget_s = budget_s if budget_s is not None else (2.0 if dev.type == "cuda" else 1.0)
    cpath = Path(cache_path) if cache_path is not None else speed_cache_path()
    cache = {} if remeasure else read_cache(cpath)
    if (quick and not remeasure and dev.type != "cuda" and backend == "auto"
            and not (cache and any(has_rates(p, dev, steps, cache) for p in candidates))):
        return estimated_choice(candidates, profiles, dev, target_fps, steps=steps, dtype=want, load=load, build=build,
                                matmul=matmul, progress=progress, requested=requested)
    best: tuple[Profile, Any, BackendChoice] | None = None
    tried: list[tuple[str, str, float]] = []
    notes: list[str] = []
    # On a CPU, cheapest first: a cheap profile's rate tells whether a costlier one can hold target_fps at all.
    cheapest_first = requested == "auto" and dev.type != "cuda"
    flops = {p.name: profile_flops(p, steps) for p in candidates} if cheapest_first else {}
    if cheapest_first:
        candidates = sorted(candidates, key=lambda p: flops[p.name] or float("inf"))
    measured: list[tuple[Profile, float]] = []  # (profile, its fastest rate), for cannot_hold
    rank = {p.name: i for i, p in enumerate(profiles)}  # best quality first
    native_bf16 = dev.type != "cuda" and cpu_has_native_bf16()  # read once, not once per profile
    if want == torch.bfloat16 and dev.type != "cuda" and not native_bf16:
        notes.append("this CPU has no native bf16 (avx512_bf16 / amx_bf16): bfloat16 runs emulated, much slower "
                     "than float32")
    # bf16 changes the speed of the torch backends only (an ONNX / TensorRT / AOTI artifact has its own dtype)
    bf16_extra = want is None and native_bf16 and (backend == "auto" or backend in BF16_BACKENDS)
    for i, profile in enumerate(candidates):
        skip = cannot_hold(profile, measured, flops, target_fps) if cheapest_first else None
        if skip is not None:
            notes.append(skip)
            continue
        # On a native-bf16 CPU the bf16 candidates of a CPU_BF16_PROFILES profile are measured first (they are the
        # faster ones there: docs/lite.md); when one holds target_fps, float32 is not measured at all. Otherwise
        # float32 too, and the faster is kept.
        bf16_pair = None
        if bf16_extra and profile.name in CPU_BF16_PROFILES:
            try:
                bf16 = _load_as(load, profile, dev, torch.bfloat16)
                bc16 = choose_backend(bf16, backend, steps, target_fps=target_fps, budget_s=budget_s,
                                      profile=profile, cache=cache, cache_path=cpath, measure=measure, build=build,
                                      prepare=False, only=BF16_BACKENDS, progress=progress)
            except Exception as e:  # noqa: BLE001 - bf16 is an extra candidate; float32 remains
                notes.append(f"bf16 skipped ({_first_line(e)})")
            else:
                tried += [(profile.name, name + " (bf16)", fps) for name, fps in bc16.tried]
                notes += [f"bf16: {n}" for n in bc16.notes if f"bf16: {n}" not in notes]
                bf16_pair = (bf16, bc16)
        if bf16_pair is not None and bf16_pair[1].fps >= target_fps:
            animator, bc = bf16_pair
        else:
            animator = _load_as(load, profile, dev, want)
            bc = choose_backend(animator, backend, steps, target_fps=target_fps, budget_s=budget_s, profile=profile,
                                cache=cache, cache_path=cpath, measure=measure, build=build, prepare=False,
                                progress=progress)
            label = dtype_label(getattr(animator, "dtype", None), dev)
            tried += [(profile.name, name + label, fps) for name, fps in bc.tried]
            notes += [n for n in bc.notes if n not in notes]
            if bf16_pair is not None and bf16_pair[1].fps > bc.fps:
                animator, bc = bf16_pair  # the float32 animator is released
        measured.append((profile, bc.fps))
        if best is None or _better((profile, bc.fps), (best[0], best[2].fps), target_fps, rank):
            best = (profile, animator, bc)  # the other animator is released when `best` moves on
        if bc.fps >= target_fps and all(rank[p.name] > rank[profile.name] for p in candidates[i + 1:]):
            break  # it holds, and the profiles still to come are of lower quality
    assert best is not None
    profile, animator, bc = best
    # Built for every rung of the quality ladder now: exports happen at start, never mid-stream.
    seconds = max(0.5, budget_s / 2)
    bc = _prepared(bc, animator, steps, profile.path, build or _builder(progress),
                   lambda b: (measure or measure_profile)(animator, b, seconds))
    notes += [n for n in bc.notes if n not in notes]
    dt = getattr(animator, "dtype", None)
    choice = Choice(profile, animator, bc.backend, bc.fps, "", bc.fps >= target_fps, bc.cached,
                    bc.backend.name + dtype_label(dt, dev), tried, bc.backends, notes, dt)
    choice.message = choice_message(choice, profiles, dev, target_fps, requested)
    return choice


def has_rates(profile: Profile, device: torch.device, steps: int | None, cache: dict) -> bool:
    """Whether `cache` holds a rate of `profile` on `device` (any backend or dtype) for this torch and RATES_VERSION."""
    first = cache_key(profile, "torch", device, steps).split("|")
    head, tail = "|".join(first[:2]) + "|", "|" + "|".join(first[-4:])
    return any(k.startswith(head) and k.endswith(tail) for k in cache)


# A model on a CPU reaches at most about half the matmul rate (engines.flops.matmul_rate): the rest is attention,
# normalisation, the decoder and smaller matrices.
CPU_MATMUL_SHARE = 0.5


def estimated_choice(candidates: list[Profile], profiles: list[Profile], device: torch.device, target_fps: float, *,
                     steps: int | None = None, dtype: torch.dtype | None = None, load: Callable[..., Any] = _load,
                     build: Callable[..., Any] | None = None, matmul: Callable[[Any], float] | None = None,
                     progress: Callable[[str], None] = _quiet, requested: str = "auto") -> Choice:
    """The choice without measuring (a CPU with nothing cached): each candidate's rate is estimated as
    CPU_MATMUL_SHARE of this CPU's matmul FLOP/s over its FLOPs per frame; the best-quality one whose estimate
    holds `target_fps` is used, else the cheapest; it is loaded (in bf16 on a CPU with native bf16 for
    CPU_BF16_PROFILES, unless `dtype` is given) and runs on eager torch, built for the quality ladder.
    Choice.measured_fps is None."""
    from knotanim.engines.flops import matmul_rate
    from knotanim.ladder import ladder_steps

    rate = CPU_MATMUL_SHARE * (matmul or matmul_rate)(device)
    flops = {p.name: profile_flops(p, steps) for p in candidates}
    rank = {p.name: i for i, p in enumerate(profiles)}
    estimate = {name: rate / f if f else None for name, f in flops.items()}
    holding = [p for p in candidates if (estimate[p.name] or 0) >= target_fps]
    profile = (min(holding, key=lambda p: rank[p.name]) if holding
               else min(candidates, key=lambda p: flops[p.name] or float("inf")))
    notes = [f"profile {p.name!r} not tried: about {estimate[p.name]:.1f} frames/s at most here "
             f"({flops[p.name] / 1e9:.0f} GFLOP per frame; this CPU multiplies at {rate / CPU_MATMUL_SHARE / 1e9:.0f} "
             f"GFLOP/s)" for p in candidates if p is not profile and estimate[p.name] is not None
             and rank[p.name] < rank[profile.name]]
    native_bf16 = cpu_has_native_bf16()
    if dtype is None and profile.name in CPU_BF16_PROFILES and native_bf16:
        dtype = torch.bfloat16  # measured first, and kept when it holds, by the full choice
    elif dtype == torch.bfloat16 and not native_bf16:
        notes.append("this CPU has no native bf16 (avx512_bf16 / amx_bf16): bfloat16 runs emulated, much slower "
                     "than float32")
    animator = _load_as(load, profile, device, dtype)
    backends = (build or _builder(progress))("torch", animator, profile.path, True).prepare(ladder_steps(animator, steps))
    dt = getattr(animator, "dtype", None)
    name = "torch" + dtype_label(dt, device)
    size = f": {flops[profile.name] / 1e9:.1f} GFLOP per frame" if flops[profile.name] else ""
    how = "requested" if requested != "auto" else f"chosen by its size{size}"
    message = (f"profile {profile.name!r} ({how}) on this CPU with {name}, not measured; --remeasure measures the "
               "candidates once")
    return Choice(profile, animator, backends(steps), None, message, True, False, name, [], backends, notes, dt)


def _better(a: tuple[Profile, float], b: tuple[Profile, float], target_fps: float, rank: dict[str, int]) -> bool:
    """Whether (profile, fps) `a` beats `b`: holding target_fps beats not holding; among those that hold, the
    better quality; among those that do not, the faster (then the better quality)."""
    holds_a, holds_b = a[1] >= target_fps, b[1] >= target_fps
    if holds_a != holds_b:
        return holds_a
    if holds_a:
        return rank[a[0].name] < rank[b[0].name]
    return (a[1], -rank[a[0].name]) > (b[1], -rank[b[0].name])


def profile_flops(profile: Profile, steps: int | None = None) -> float | None:
    """The profile's DiT FLOPs per frame (`engines.flops.frame_flops`, from its config.json alone); None when
    its config cannot be read."""
    from knotanim.checkpoint import read_manifest
    from knotanim.engines.flops import frame_flops

    try:
        return frame_flops(read_manifest(profile.path)[0], steps)
    except Exception:  # noqa: BLE001 - a damaged folder fails later, with its own one-line error, if it is loaded
        return None


def cannot_hold(profile: Profile, measured: list[tuple[Profile, float]], flops: dict[str, float | None],
                target_fps: float, margin: float = CPU_CEILING_MARGIN) -> str | None:
    """A one-line note when `profile` cannot hold `target_fps` here: the best FLOP rate a measured, cheaper
    profile reached (its frames/s x its FLOPs per frame), spent on `profile`'s FLOPs per frame, times `margin`,
    stays below the target. None when it might hold (or nothing is known)."""
    need = flops.get(profile.name)
    known = [(p, fps, flops[p.name]) for p, fps in measured if flops.get(p.name) and flops[p.name] < (need or 0)]
    if not need or not known:
        return None
    ref, fps, ref_flops = max(known, key=lambda k: k[1] * k[2])
    expected = fps * ref_flops / need
    if expected * margin >= target_fps:
        return None
    return (f"profile {profile.name!r} not tried: about {expected:.1f} frames/s expected here ({need / 1e9:.0f} GFLOP "
            f"per frame, {need / ref_flops:.0f}x {ref.name!r}, which ran at {fps:.1f})")


def _prepared(bc: BackendChoice, animator: Any, steps: int | None, model_path: Any, build: Callable[..., Any],
              measure_torch: Callable[[Any], float]) -> BackendChoice:
    """`bc` with its backend built for every rung of the quality ladder; if that fails, eager torch
    (its rate measured now unless it was measured already) with a one-line note."""
    from knotanim.ladder import ladder_steps

    counts = ladder_steps(animator, steps)
    try:
        bc.backends.prepare(counts)
        return bc
    except Exception as e:  # noqa: BLE001 - one line, and torch takes over
        note = f"the {bc.backends.name} backend could not be built for the quality ladder ({_first_line(e)}): running torch"
    torch_backends = build("torch", animator, model_path, True).prepare(counts)
    chunk_backend = torch_backends(steps)
    fps = next((f for name, f in bc.tried if name == "torch"), None)
    cached, tried = bc.cached and fps is not None, bc.tried
    if fps is None:
        fps = float(measure_torch(chunk_backend))
        tried = tried + [("torch", fps)]
    return BackendChoice(torch_backends, chunk_backend, fps, cached, tried, bc.notes + [note])


def choice_message(choice: Choice, profiles: list[Profile], device: torch.device, target_fps: float,
                   requested: str = "auto") -> str:
    where = f"this GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "this CPU"
    src = " (cached; --remeasure to measure again)" if choice.cached else ""
    name = choice.profile.name
    others = ", ".join(f"{b} {f:.1f}" for p, b, f in choice.tried if p == name and b != choice.backend_name)
    src = f" ({others}){src}" if others else src  # the other backends measured for this profile
    rate = f"{choice.measured_fps:.1f} frames/s with {choice.backend_name}{src}"
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
        tail += ". The lite profile is missing: reinstall knotanim (docs/lite.md)"
    elif device.type != "cuda":
        tail += ". An NVIDIA GPU or fewer --steps helps"
    return head + tail


def backend_for_model(animator: Any, backend: str, *, model: str | None = None, tiny: bool = False,
                      steps: int | None = None, remeasure: bool = False,
                      progress: Callable[[str], None] = lambda message: None) -> "BackendChoice | None":
    """The backend for a model given by --model / --tiny (an installed profile's comes with its choice):
    `backend` measured at start (auto with --tiny: eager torch, not measured), the measurement cached
    for a --model folder unless `remeasure`. None for eager torch."""
    if backend == "torch" or (tiny and backend == "auto"):
        return None
    profile = Profile("model", Path(model), model) if model else None
    cache = {} if remeasure or profile is None else read_cache(speed_cache_path())
    return choose_backend(animator, backend, steps, profile=profile, cache=cache, progress=progress)
