"""Lite-profile speed on this CPU: streaming frames/s per candidate size and backend (random weights).

    python scripts/lite_speed.py [--threads 2] [--frames 96]                  # the size sweep, eager torch
    python scripts/lite_speed.py --config configs/models/lite.yaml --backends torch,onnxruntime,onnxruntime-int8
    python scripts/lite_speed.py --model assets/lite --threads 4 --backends torch,compiled,onnxruntime
    python scripts/lite_speed.py --config configs/models/lite.yaml --backends onnxruntime-int8 --parity

Not a test. Every measurement streams the same random audio through `KnotAnimator.stream` with the
named backend, timed by `knotanim.profiles.measure_stream` (the code path the profile choice and
`knotanim bench` use): the whole stream path (DiT steps + cache pass + autoencoder decode), one
frame of audio per push, after a warm-up stream; frames/s = frames / compute time. Each row gives
the frames streamed and the load average (1 min) before and after, since the developer machine
is shared, and the fastest chunk as frames/s (chunk frames / its compute time): the least
disturbed chunk, a rough upper bound that other jobs on the machine move less than the mean. Exported graphs (ONNX,
int8) are made before the timing, in --artifacts (default: a
temporary folder), and the compiled backend (torch.compile of the chunk step and of the frame decoder;
Inductor's C++ code on a CPU) is compiled before it, on sample inputs; their export / compile time is
reported apart ("export s").

--parity streams --frames frames through each non-torch backend and eager torch with the same
noise and compares the committed latents: max abs error, relative to the largest latent and to
the largest change the model made to its noise, per chunk (first / last / worst), and the decoded
frames' pixel difference. Random weights (the zero-initialised layers set to N(0, 0.02)) are the
default; --model PATH measures a trained checkpoint instead.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from knotanim.animator import KnotAnimator
from knotanim.config import AutoencoderConfig, KnotAnimConfig, ModelConfig, SamplerConfig
from knotanim.profiles import cpu_name, load_average_1min

CANDIDATES = {
    "160px w256 d6 s2 ae16": dict(frame_size=160, ae=16, width=256, depth=6, heads=4, steps=2),
    "160px w256 d6 s1 ae16": dict(frame_size=160, ae=16, width=256, depth=6, heads=4, steps=1),
    "128px w256 d6 s2 ae16": dict(frame_size=128, ae=16, width=256, depth=6, heads=4, steps=2),
    "160px w192 d6 s2 ae12": dict(frame_size=160, ae=12, width=192, depth=6, heads=3, steps=2),
    "192px w256 d6 s2 ae16": dict(frame_size=192, ae=16, width=256, depth=6, heads=4, steps=2),
}
RANDOM_STD = 0.02  # std of the zero-initialised DiT layers in a random-weights model
INT8 = "onnxruntime-int8"  # not a knotanim backend name: the float32 ONNX graph with int8 dynamic quantization


def lite_config(frame_size, ae, width, depth, heads, steps) -> KnotAnimConfig:
    head = width // heads
    t = head // 4 // 2 * 2
    rest = head - t
    rope = (t, rest // 2 // 2 * 2, rest - rest // 2 // 2 * 2)
    return KnotAnimConfig(name="lite", frame_size=frame_size,
                          autoencoder=AutoencoderConfig(base_channels=ae, channel_mult=(1, 2, 4, 4)),
                          model=ModelConfig(width=width, depth=depth, heads=heads, rope_dims=rope),
                          sampler=SamplerConfig(steps=steps)).validate()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--config", help="one model config (e.g. configs/models/lite.yaml) with random weights, "
                      "instead of the candidate sweep")
    what.add_argument("--model", help="a checkpoint folder (trained weights) instead of the candidate sweep")
    what.add_argument("--candidates", help=f"comma-separated subset of the sweep ({'; '.join(CANDIDATES)})")
    p.add_argument("--backends", default="torch", help="comma-separated backend names (torch, onnxruntime, "
                   f"compiled, aoti) or {INT8} (the ONNX graph with int8 dynamic quantization); default torch")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and ONNX Runtime (default 2)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="the DiT's dtype (the autoencoder stays float32): bfloat16 runs on CPUs with AVX-512 BF16 / "
                   "AMX, outputs within bf16 rounding of float32, not float tolerance (default float32)")
    p.add_argument("--frames", type=int, default=96, help="frames streamed per measurement (default 96)")
    p.add_argument("--artifacts", help="folder for exported graphs (default: a fresh temporary folder)")
    p.add_argument("--ort-spinning", action="store_true", help="let ONNX Runtime's CPU threads spin between runs "
                   "(its own default; knotanim turns it off)")
    p.add_argument("--parity", action="store_true", help="compare each non-torch backend's latents with eager torch "
                   "over --frames frames instead of timing")
    return p.parse_args(argv)


def random_animator(cfg: KnotAnimConfig, dtype: torch.dtype) -> KnotAnimator:
    """`cfg` with random weights (the zero-initialised DiT layers too, so the speed is a trained model's)."""
    anim = KnotAnimator.from_config(cfg, dtype=dtype)
    anim.model.randomize_zero_init(std=RANDOM_STD)
    return anim


def load_animator(model: str | None, config: str | None, dtype: torch.dtype) -> KnotAnimator:
    """A checkpoint folder on the CPU, else a config file with random weights."""
    if model:
        return KnotAnimator.from_pretrained(model, device="cpu", dtype=dtype)
    return random_animator(KnotAnimConfig.load(config), dtype)


def models(args) -> list[tuple[str, KnotAnimator]]:
    """(label, animator) pairs to measure: the sweep, one config with random weights, or a checkpoint."""
    dtype = getattr(torch, args.dtype)
    if args.model or args.config:
        return [(args.model or args.config, load_animator(args.model, args.config, dtype))]
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"lite_speed: unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    return [(n, random_animator(lite_config(**CANDIDATES[n]), dtype)) for n in names]


def seconds_for(config: KnotAnimConfig, frames: int) -> float:
    """Seconds of audio that make a stream emit about `frames` frames (audio look-ahead and knot included)."""
    return (frames + config.stream.chunk + config.stream.knot + 2) / config.fps


def load_average() -> str:
    load = load_average_1min()
    return "n/a" if math.isnan(load) else f"{load:.2f}"


def versions() -> str:
    try:
        import onnxruntime

        ort = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = ", onnxruntime not installed"
    return f"torch {torch.__version__}{ort}"


def build(name: str, anim: KnotAnimator, artifacts: str, ort_spinning: bool = False):
    """The named backend (exported into `artifacts` first when needed, compiled first for "compiled") and
    the seconds that took. Besides knotanim's backend names, "onnxruntime-int8" (engines.export.ensure_onnx_int8)."""
    from knotanim.engines import chunk_step_descriptor
    from knotanim.engines.export import ensure_onnx_int8
    from knotanim.engines.onnxrt import OnnxRuntimeBackend
    from knotanim.engines.select import StepBackends

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr)

    t0 = time.perf_counter()
    if name == INT8:
        path = ensure_onnx_int8(anim, artifacts, progress=progress).path
        backend = OnnxRuntimeBackend(path, chunk_step_descriptor(anim.config), anim.device,
                                     threads=torch.get_num_threads(), precision="int8")
    else:  # "compiled" compiles here (its step on sample inputs, its decoder on a chunk), not in the timed stream
        backend = StepBackends(name, anim, artifacts=artifacts, progress=progress)()
    export_s = time.perf_counter() - t0
    if ort_spinning and isinstance(backend, OnnxRuntimeBackend):
        backend = OnnxRuntimeBackend(backend.path, backend.desc, backend.device, threads=torch.get_num_threads(),
                                     precision=backend.precision, spinning=True)
    return backend, export_s


def time_backend(anim: KnotAnimator, backend, frames: int) -> dict:
    from knotanim.profiles import measure_stream

    before = load_average()
    speed = measure_stream(anim, seconds_for(anim.config, frames), backend=backend)
    best = anim.config.stream.chunk / min(speed.chunk_times) if speed.chunk_times else float("nan")
    return {"fps": speed.fps, "best_fps": best, "frames": speed.frames, "compute_s": speed.compute_s,
            "load": f"{before} → {load_average()}"}


# --- parity ---------------------------------------------------------------------------------------------
class RecordingBackend:
    """Wraps a backend; keeps each chunk's committed latents and initial noise."""

    def __init__(self, inner):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.committed: list[torch.Tensor] = []
        self.noise: list[torch.Tensor] = []

    def run(self, *inputs):
        out = self.inner.run(*inputs)
        self.committed.append(out[0].detach().float().cpu().clone())
        self.noise.append(inputs[10].detach().float().cpu().clone())
        return out


@dataclass
class Parity:
    frames: int
    max_abs: float
    latent_scale: float  # max |reference latent|
    change_scale: float  # max |reference latent - its initial noise| over frames not fused with a knot
    first_chunk: float  # max abs error in the first / last chunk, and the worst chunk
    last_chunk: float
    worst_chunk: float
    pixel_max: int  # decoded uint8 frames
    pixel_mean: float

    def row(self) -> str:
        return (f"{self.frames} | {self.max_abs:.2e} | {self.max_abs / self.latent_scale:.1e} | "
                f"{self.max_abs / self.change_scale:.1e} | {self.first_chunk:.1e} / {self.last_chunk:.1e} / "
                f"{self.worst_chunk:.1e} | {self.pixel_max} / {self.pixel_mean:.2f}")


@torch.no_grad()
def stream_latents(anim: KnotAnimator, backend, frames: int, seed: int = 0):
    """Stream random audio through `backend`; (its RecordingBackend, the emitted frames)."""
    cfg = anim.config
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    audio = (rng.standard_normal(int(seconds_for(cfg, frames) * cfg.audio.sample_rate)) * 0.1).astype(np.float32)
    recording = RecordingBackend(backend)
    emitted = anim.stream(ref, seed=seed, backend=recording).push_audio(audio)
    return recording, emitted


def compare(anim: KnotAnimator, reference_backend, backend, frames: int) -> Parity:
    """Latent and pixel error of `backend` against `reference_backend` over one stream."""
    ref_rec, ref_frames = stream_latents(anim, reference_backend, frames)
    rec, got_frames = stream_latents(anim, backend, frames)
    chunk = anim.config.stream.chunk
    errors = [(a - b).abs().max().item() for a, b in zip(ref_rec.committed, rec.committed)]
    latents = torch.cat(ref_rec.committed, 1)
    change = max(((c[:, 1:] - n[:, 1:chunk]).abs().max().item() for c, n in zip(ref_rec.committed, ref_rec.noise)
                  if chunk > 1), default=float("nan"))
    pixels = [np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)) for a, b in zip(ref_frames, got_frames)]
    return Parity(len(got_frames), max(errors), latents.abs().max().item(), change, errors[0], errors[-1], max(errors),
                  int(max(p.max() for p in pixels)), float(np.mean([p.mean() for p in pixels])))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # ONNX Runtime CPU sessions follow torch's thread count
    backends = args.backends.split(",")
    artifacts = args.artifacts or tempfile.mkdtemp(prefix="knotanim-lite-")
    command = "python scripts/lite_speed.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"{time.strftime('%Y-%m-%d %H:%M')} `{command}`; {cpu_name()}, {os.cpu_count()} logical cores, "
          f"{args.threads} threads, {versions()}, DiT {args.dtype}; load average (1 min) {load_average()}")
    if args.parity:
        print("| model | backend vs torch | frames | max abs error | / max latent | / max model change | chunk first / last / "
              "worst | pixels max / mean |")
        print("|---|---|---|---|---|---|---|---|")
    else:
        print("| model | backend | frames/s | best chunk as frames/s | frames | load avg (1 min) before → after | export s | "
              "DiT params | AE params |")
        print("|---|---|---|---|---|---|---|---|---|")
    from knotanim.engines import TorchBackend
    from knotanim.errors import KnotAnimError

    for label, anim in models(args):
        params = anim.parameter_count()
        for name in backends:
            try:
                backend, export_s = build(name, anim, artifacts, args.ort_spinning)
            except KnotAnimError as e:
                print(f"| {label} | {name} | unavailable: {e} | | | | | | |", flush=True)
                continue
            if args.parity:
                if name == "torch":
                    continue
                parity = compare(anim, TorchBackend(anim.chunk_step(), anim.device), backend, args.frames)
                print(f"| {label} | {backend.name} | {parity.row()} |", flush=True)
            else:
                r = time_backend(anim, backend, args.frames)
                spin = " (spinning)" if getattr(backend, "spinning", False) else ""
                print(f"| {label} | {backend.name}{spin} | {r['fps']:.1f} | {r['best_fps']:.1f} | {r['frames']} | {r['load']} | {export_s:.1f} | "
                      f"{params['dit'] / 1e6:.1f}M | {params['autoencoder'] / 1e6:.2f}M |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
