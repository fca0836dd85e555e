"""Where an offline render's time goes: `knotanim render`'s own code path (`render_to_file`), timed by stage.

    python scripts/bench_render.py --model assets/lite --device cpu --dtype bfloat16 --backend compiled --seconds 30
    PYTHONPATH=. python3 scripts/bench_render.py --device cuda --backend compiled --seconds 60 --json $OUT/render.json

Not a test. It renders the bundled portrait (`assets/examples/avatar.png`, or --image) to --seconds of the
bundled speech (`assets/examples/speech.wav` looped, written to a temporary WAV), into a temporary mp4, once
briefly to warm up (a compiled backend compiles then) and once timed. Each stage is timed by wrapping the
method render_to_file calls for it, so the render itself is the product's, unchanged:

  stream   KnotStream.push_audio and .finish: audio features, the DiT chunk, the decode, the frames' copy to
           the host (on a GPU the one wait for the GPU per chunk is here)
  paste    Paster.__call__: the animated crop blended back into the full portrait (none with --crop-only)
  encode   VideoFileSink.write: the video frame's conversion and encoding (PyAV, libx264)
  audio    VideoFileSink.write_audio: the audio track's encoding
  rest     the whole render's wall time minus those: decoding the input audio, retiming, the progress,
           opening and closing the file

The render runs as the product runs it: pipelined on a GPU (encode and audio on the render's worker
thread, overlapping stream and paste), serial on the CPU; `--pipelined` / `--serial` choose. Pipelined,
the stages overlap, their seconds can add up to more than the wall time, and "rest" is what is left of
the wall time after them (at least 0). Serial, every stage runs on one thread
(RenderOptions.pipelined=False), and the shares say what overlapping could save: a render whose stream
share is 60 % could at best run 1 / 0.6 = 1.7x faster with the rest moved off its thread. The JSON has
the command, machine, torch, backend, frames, wall time, frames/s and each stage's seconds, share and
per-frame milliseconds.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("stream", "paste", "encode", "audio")


class StageClock:
    """Seconds spent inside wrapped methods, per stage; wrap() patches a class's method for the `with` block."""

    def __init__(self):
        self.seconds = {s: 0.0 for s in STAGES}

    @contextlib.contextmanager
    def wrap(self, stages: list[tuple[str, type, str]]):
        saved = []
        try:
            for stage, cls, name in stages:
                original = getattr(cls, name)
                saved.append((cls, name, original))
                setattr(cls, name, self._timed(stage, original))
            yield self
        finally:
            for cls, name, original in reversed(saved):
                setattr(cls, name, original)

    def _timed(self, stage: str, fn):
        seconds = self.seconds

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - t0
        return timed


def looped_speech(seconds: float, rate: int, path: Path) -> Path:
    """`seconds` of the bundled speech at `rate`, looped, written to `path` as a mono WAV."""
    from knotanim.frontends.audio_io import load_audio, write_wav

    speech = load_audio(ROOT / "assets" / "examples" / "speech.wav", rate)
    write_wav(path, np.resize(speech, int(round(seconds * rate))), rate)
    return path


def stage_table(seconds: dict[str, float], wall: float, frames: int) -> dict[str, dict[str, float]]:
    """Each stage's seconds, share of the wall time and ms per output frame; "rest" is what the stages leave."""
    table = {}
    rows = dict(seconds, rest=max(0.0, wall - sum(seconds.values())))
    for stage, s in rows.items():
        table[stage] = {"seconds": round(s, 4), "share": round(s / wall, 4) if wall > 0 else 0.0,
                        "ms_per_frame": round(1000 * s / frames, 3) if frames else 0.0}
    return table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.add_argument("--backend", default="torch", help="a knotanim backend name (torch, compiled, onnxruntime, ...)")
    p.add_argument("--image", default=str(ROOT / "assets" / "examples" / "avatar.png"))
    p.add_argument("--seconds", type=float, default=30.0, help="audio length of the timed render")
    p.add_argument("--warmup-seconds", type=float, default=2.0, help="audio length of the warm-up render (0: none)")
    p.add_argument("--crop-only", action="store_true", help="write the face crop (no paste into the portrait)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--serial", action="store_true", help="every stage on one thread (no encode worker)")
    mode.add_argument("--pipelined", action="store_true", help="encode on the render's worker thread")
    p.add_argument("--no-face-detect", action="store_true",
                   help="animate the centred square (as `knotanim render --no-face-detect`; for an OpenCV without Haar cascades)")
    p.add_argument("--tiny", action="store_true", help="a tiny random model (tests)")
    p.add_argument("--json", default=None, help="write the result here")
    return p.parse_args(argv)


def load_animator(args):
    import torch

    from knotanim.animator import KnotAnimator

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    if args.tiny:
        from knotanim.config import tiny_config

        return KnotAnimator.from_config(tiny_config(), device="cpu", dtype=dtype or torch.float32)
    return KnotAnimator.from_pretrained(args.model, device=args.device, dtype=dtype)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from knotanim.profiles import cpu_name
    from knotanim.render import RenderOptions, render_to_file
    from knotanim.frontends.face import Paster
    from knotanim.sinks.video import VideoFileSink
    from knotanim.stream.stream import KnotStream

    anim = load_animator(args)
    backend = None
    if args.backend != "torch":
        from knotanim.engines import build_backend

        backend = build_backend(args.backend, anim, model_path=args.model,
                                progress=lambda m: print(f"backend: {m}", file=sys.stderr, flush=True))
    rate = anim.config.audio.sample_rate
    pipelined = args.pipelined or (not args.serial and anim.device.type != "cpu")  # the render's own default
    clock = StageClock()
    stages = [("stream", KnotStream, "push_audio"), ("stream", KnotStream, "finish"), ("paste", Paster, "__call__"),
              ("encode", VideoFileSink, "write"), ("audio", VideoFileSink, "write_audio")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        opts = RenderOptions(crop_only=args.crop_only, backend=backend, face_detect=not args.no_face_detect,
                             pipelined=pipelined)
        if args.warmup_seconds > 0:
            render_to_file(anim, args.image, looped_speech(args.warmup_seconds, rate, tmp / "warm.wav"),
                           tmp / "warm.mp4", options=opts)
        audio = looped_speech(args.seconds, rate, tmp / "speech.wav")
        with clock.wrap(stages):
            t0 = time.perf_counter()
            summary = render_to_file(anim, args.image, audio, tmp / "out.mp4", options=opts)
            wall = time.perf_counter() - t0
    frames = summary.frames
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{cpu_name()} x{os.cpu_count()}",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "device": str(anim.device), "dtype": str(anim.dtype).replace("torch.", ""),
        "backend": getattr(backend, "name", "torch"), "crop_only": args.crop_only, "pipelined": pipelined,
        "output": f"{summary.width}x{summary.height} at {summary.fps:g} fps",
        "audio_seconds": args.seconds, "frames": frames, "wall_s": round(wall, 3),
        "frames_per_s": round(frames / wall, 2) if wall > 0 else 0.0,
        "realtime_x": round(args.seconds / wall, 3) if wall > 0 else 0.0,
        "stages": stage_table(clock.seconds, wall, frames),
    }
    print(f"render: {frames} frames ({result['output']}) of {args.seconds:g} s audio in {wall:.2f} s: "
          f"{result['frames_per_s']} frames/s, {result['realtime_x']}x real time; {result['device']}, "
          f"{result['dtype']}, backend {result['backend']}, {'pipelined' if pipelined else 'serial'}")
    print("| stage | seconds | share | ms per frame |\n|---|---|---|---|")
    for stage, row in result["stages"].items():
        print(f"| {stage} | {row['seconds']:.2f} | {100 * row['share']:.1f} % | {row['ms_per_frame']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
