"""Offline render: portrait + audio file -> video file (mp4 / webm) or PNG sequence, streamed.

`render_to_file` is the library entry used by `knotanim render` (single and batch). It streams:
audio is decoded in blocks and pushed to `KnotStream.push_audio` as it decodes, each frame is
pasted back and encoded as soon as it is produced, and the file's audio track is muxed alongside,
so memory stays flat however long the audio is.

Timing: the audio of D seconds gives n = round(D * fps) output frames (fps = options.fps or
config.fps). The model always runs at config.fps for m = round(D * config.fps) frames; output
frame j shows the model frame nearest in time, round(j * config.fps / fps), clamped to m - 1.

Interrupts: a KeyboardInterrupt (Ctrl-C; the CLI maps SIGTERM to it) or one raised by the progress
callback finalises the output (mp4 is fragmented, so the file stays playable) and is re-raised as
`RenderInterrupted`, which carries the summary of what was written.
"""
from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from knotanim.errors import InputError, KnotAnimError
from knotanim.frontends.audio_io import iter_audio_blocks, probe_audio
from knotanim.frontends.face import Paster, crop_face
from knotanim.frontends.image import MAX_PIXELS, load_image
from knotanim.sinks.base import check_output_file, check_output_folder
from knotanim.sinks.png import PngSequenceSink
from knotanim.sinks.video import VideoFileSink, as_fps, output_audio_rate

if TYPE_CHECKING:
    from knotanim.animator import KnotAnimator

FORMATS = ("mp4", "webm", "png")
VIDEO_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mp4", ".webm": "webm"}
MAX_FPS = 240.0


@dataclass(frozen=True)
class RenderProgress:
    """Passed to the progress callback after every output frame."""

    frames: int  # output frames written so far
    total_frames: int | None  # expected output frames (from the container's duration), None if unknown
    elapsed: float  # seconds since the render started
    fps: float  # output frame rate

    @property
    def speed(self) -> float:
        """Frames rendered per wall-clock second."""
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left (estimate), None when unknown."""
        if not self.total_frames or self.speed <= 0:
            return None
        return max(0.0, (self.total_frames - self.frames) / self.speed)


@dataclass(frozen=True)
class RenderSummary:
    output: Path  # the file (mp4/webm) or folder (png) written
    format: str  # "mp4", "webm" or "png"
    frames: int  # output frames written
    fps: float  # output frame rate
    width: int  # output frame size in pixels (after even-size cropping for video)
    height: int
    audio_seconds: float  # duration of the decoded input audio (the whole file, or up to the interrupt)
    elapsed: float  # wall-clock seconds
    interrupted: bool = False

    @property
    def video_seconds(self) -> float:
        return self.frames / self.fps

    @property
    def speed(self) -> float:
        """Rendered seconds of video per wall-clock second (1.0 = real time)."""
        return self.video_seconds / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        what = "interrupted after" if self.interrupted else "rendered"
        return (f"{what} {self.video_seconds:.2f} s: {self.frames} frames at {self.fps:g} fps, "
                f"{self.width}x{self.height}, in {self.elapsed:.1f} s ({self.speed:.2f}x real time) -> {self.output}")


class RenderInterrupted(KeyboardInterrupt):
    """The render was interrupted; `summary` describes the finalised partial output."""

    def __init__(self, summary: RenderSummary):
        super().__init__(summary.line())
        self.summary = summary


@dataclass(frozen=True)
class RenderOptions:
    fps: float | None = None  # output frame rate; None: the model's config.fps
    format: str | None = None  # "mp4", "webm" or "png"; None: from the output path
    crf: int | None = None  # video quality; None: 18 for H.264, 32 for VP9
    crop_only: bool = False  # write the animated face crop instead of the full image
    face_index: int = 0  # which face, by size (0 = largest)
    face_detect: bool = True  # False: animate the largest centred square of the whole image
    align: bool = True  # level the eyes (in-plane rotation) when both are found
    seed: int = 0
    head_motion: float = 0.5  # 0..1
    knot: bool = True  # ablation: False disables the knot
    run_ahead: bool = True  # ablation: False disables the running-ahead reference
    steps: int | None = None  # sampler steps; None: config.sampler.steps
    backend: Any = field(default=None, compare=False)  # None: eager torch; a ChunkBackend or a name (knotanim.engines)
    max_pixels: int = MAX_PIXELS  # refuse larger images (checked from the header)
    block_seconds: float = 0.5  # audio decode / push block, seconds
    mask: str = "rect"  # paste-back blend mask: "rect" or "ellipse"
    feather: float = 0.12  # blend ramp, fraction of the crop side
    colour_match: bool = True
    progress: Callable[[RenderProgress], None] | None = field(default=None, compare=False)


def output_format(output_path: str | os.PathLike, requested: str | None = None) -> str:
    """"mp4" / "webm" / "png" for an output path: --format wins; a folder or 'dir/' means png."""
    if requested:
        if requested not in FORMATS:
            raise InputError(f"unknown output format {requested!r}; choose from {', '.join(FORMATS)}")
        return requested
    text = os.fspath(output_path)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return "png"
    fmt = VIDEO_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the output format from {text!r}: use .mp4, .webm, a folder/ or --format")
    return fmt


class FrameRetimer:
    """Nearest-in-time resampling of model frames (at model_fps) to output frames (at out_fps).

    add() model frames in order; take(limit, last_model) returns the model frames for output
    frames next..limit-1 (repeats when out_fps > model_fps, skips when lower), holding only the
    few model frames still needed.
    """

    def __init__(self, model_fps: Fraction, out_fps: Fraction):
        self.ratio = Fraction(model_fps) / Fraction(out_fps)
        self.next_out = 0
        self.frames: deque[Any] = deque()

    def model_index(self, j: int, last_model: int | None = None) -> int:
        i = math.floor(j * self.ratio + Fraction(1, 2))
        return i if last_model is None else min(i, last_model)

    def add(self, frame: Any) -> None:
        self.frames.append(frame)

    def take(self, limit: int, last_model: int | None = None) -> list[Any]:
        out = []
        while self.next_out < limit and self.frames:
            want = self.model_index(self.next_out, last_model)
            while len(self.frames) > 1 and self.frames[0].index < want:
                self.frames.popleft()
            if self.frames[0].index < want and last_model is None:
                break  # the wanted model frame is not produced yet (at the end: repeat the last one)
            out.append(self.frames[0])
            self.next_out += 1
        return out


class _AudioTrack:
    """Pulls decoded output-audio blocks and writes them to a sink up to a given time."""

    def __init__(self, blocks: Iterator[np.ndarray], sink: Any, rate: int):
        self.blocks, self.sink, self.rate = blocks, sink, rate
        self.carry: np.ndarray | None = None
        self.written = 0

    def write_until(self, seconds: float | None) -> None:
        """Write audio up to `seconds` (None: everything left)."""
        target = None if seconds is None else int(round(seconds * self.rate))
        while target is None or self.written < target:
            block = self.carry if self.carry is not None else next(self.blocks, None)
            self.carry = None
            if block is None:
                return
            take = block.shape[-1] if target is None else min(block.shape[-1], target - self.written)
            self.sink.write_audio(block[..., :take])
            self.written += take
            if take < block.shape[-1]:
                self.carry = block[..., take:]


def _make_sink(fmt: str, output: Path, width: int, height: int, fps: Fraction, crf: int | None,
               audio_rate: int, channels: int):
    if fmt == "png":
        return PngSequenceSink(output, audio_rate=audio_rate, audio_channels=channels)
    return VideoFileSink(output, width, height, fps, container_format=fmt, crf=crf,
                         audio_rate=audio_rate, audio_channels=channels)


def render_to_file(animator: "KnotAnimator", image_path: str | os.PathLike, audio_path: str | os.PathLike,
                   output_path: str | os.PathLike, *, options: RenderOptions | None = None) -> RenderSummary:
    """Animate the portrait in `image_path` to the speech in `audio_path`, writing `output_path`.

    Returns a RenderSummary. Raises InputError / OutputError (one-line messages) for bad inputs or
    outputs, RenderInterrupted (a KeyboardInterrupt) after finalising a partial output.
    """
    opts = options or RenderOptions()
    cfg = animator.config
    start = time.monotonic()
    fmt = output_format(output_path, opts.format)
    output = Path(output_path)
    (check_output_folder if fmt == "png" else check_output_file)(output)
    model_fps = Fraction(cfg.fps)
    out_fps = as_fps(opts.fps if opts.fps is not None else cfg.fps)
    if not 0 < out_fps <= MAX_FPS:
        raise InputError(f"--fps must be between 0 and {MAX_FPS:g}, got {float(out_fps):g}")
    if not 0.0 <= opts.head_motion <= 1.0:
        raise InputError(f"head motion must be between 0 and 1, got {opts.head_motion}")

    image = load_image(image_path, max_pixels=opts.max_pixels)
    crop, face = crop_face(image, cfg.crop, cfg.frame_size, opts.face_index, detect=opts.face_detect, align=opts.align)
    info = probe_audio(audio_path)
    sr = cfg.audio.sample_rate
    channels = max(1, min(info.channels or 1, 2))
    mux_rate = info.sample_rate if fmt == "png" and info.sample_rate > 0 else output_audio_rate(fmt, info.sample_rate)
    expected = math.floor(info.duration * float(out_fps) + 0.5) if info.duration else None  # half up, like n below

    paster = None if opts.crop_only else Paster(image, face, reference_crop=crop, mask=opts.mask,
                                                   feather=opts.feather, colour_match=opts.colour_match)
    height, width = crop.shape[:2] if opts.crop_only else image.shape[:2]
    sink = _make_sink(fmt, output, width, height, out_fps, opts.crf, mux_rate, channels)
    if fmt != "png":
        width, height = sink.width, sink.height

    stream = animator.stream(crop, seed=opts.seed, head_motion=opts.head_motion, knot=opts.knot,
                             run_ahead=opts.run_ahead, steps=opts.steps, backend=opts.backend)
    retimer = FrameRetimer(model_fps, out_fps)
    composed: dict[str, Any] = {"index": None, "image": None}
    samples = 0
    created = not output.exists()
    finished = False

    def summary(interrupted: bool) -> RenderSummary:
        return RenderSummary(output, fmt, sink.frames_written, float(out_fps), width, height,
                             samples / sr, time.monotonic() - start, interrupted)

    def emit(model_frames: list[Any]) -> None:
        for f in model_frames:
            if composed["index"] != f.index:
                composed["index"], composed["image"] = f.index, (f.image if paster is None else paster(f.image))
            sink.write(composed["image"])
            if opts.progress is not None:
                opts.progress(RenderProgress(sink.frames_written, expected, time.monotonic() - start, float(out_fps)))

    try:
        sink.open()
        track = _AudioTrack(iter_audio_blocks(audio_path, mux_rate, opts.block_seconds, channels), sink, mux_rate)
        try:
            for block in iter_audio_blocks(audio_path, sr, opts.block_seconds):
                samples += block.shape[0]
                for f in stream.push_audio(block):
                    retimer.add(f)
                # only output frames that end within the audio received so far (n is not known yet)
                emit(retimer.take(math.floor(Fraction(samples) * out_fps / sr)))
                track.write_until(sink.frames_written / float(out_fps))
            n = max(1, math.floor(Fraction(samples) * out_fps / sr + Fraction(1, 2)))
            m = max(1, math.floor(Fraction(samples) * model_fps / sr + Fraction(1, 2)))
            for f in stream.finish(total_frames=m):
                retimer.add(f)
            emit(retimer.take(n, last_model=m - 1))
            track.write_until(None)
            finished = True
        finally:
            sink.close()
    except KeyboardInterrupt:
        raise RenderInterrupted(summary(True)) from None
    except BaseException:
        if created and not finished:
            _remove_partial(output, fmt)
        raise
    return summary(False)


def _remove_partial(output: Path, fmt: str) -> None:
    """Delete a half-written video file after an error (PNG frames are left for inspection)."""
    if fmt != "png":
        try:
            output.unlink(missing_ok=True)
        except OSError:
            pass


@dataclass(frozen=True)
class BatchJob:
    image: Path
    audio: Path
    output: Path


@dataclass(frozen=True)
class BatchResult:
    job: BatchJob
    summary: RenderSummary | None  # None when it failed
    error: str | None  # one-line reason


def render_batch(animator: "KnotAnimator", jobs: list[BatchJob], options: RenderOptions | None = None,
                 on_result: Callable[[BatchResult], None] | None = None) -> list[BatchResult]:
    """Render every job; a failing job (any KnotAnimError or decode error) is recorded and skipped.

    A KeyboardInterrupt stops the batch (after finalising the current output) and propagates.
    """
    results = []
    for job in jobs:
        try:
            s = render_to_file(animator, job.image, job.audio, job.output, options=options)
            result = BatchResult(job, s, None)
        except KnotAnimError as e:
            result = BatchResult(job, None, str(e))
        except (OSError, ValueError, RuntimeError) as e:  # unexpected but per-row: keep going
            result = BatchResult(job, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


__all__ = [
    "BatchJob", "BatchResult", "FrameRetimer", "RenderInterrupted", "RenderOptions", "RenderProgress",
    "RenderSummary", "output_format", "render_batch", "render_to_file",
]
