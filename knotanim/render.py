"""Offline render: portrait + audio file -> video file (mp4 / webm) or PNG sequence, streamed.

`render_to_file` is the library entry used by `knotanim render` (single and batch). It streams:
audio is decoded in blocks and pushed to `KnotStream.push_audio` as it decodes, each frame is
pasted back and encoded as soon as it is produced, and the file's audio track is muxed alongside,
so memory stays flat however long the audio is.

Timing: the audio of D seconds gives n = round(D * fps) output frames (fps = options.fps or
config.fps). The model always runs at config.fps for m = round(D * config.fps) frames; output
frame j shows the model frame nearest in time, round(j * config.fps / fps), clamped to m - 1.

Pipelining (`RenderOptions.pipelined`; by default on when the model runs on a GPU): the encoder (and
the audio track's muxing and the progress callback) runs on one worker thread, in order, while the
calling thread computes and pastes the next frames; at most a few blocks of frames wait between the
two. On an H200 the serial render spent 19 % of its time in the stream, 28 % pasting and 49 %
encoding and muxing, and pipelining made it 1.68x faster (docs/benchmarks.md). On a
2-core CPU the stream is 74 % of the time and the encoder's thread takes cores from torch's:
pipelined was 6 % slower there, so a model on the CPU renders serially by default.

Interrupts: a KeyboardInterrupt (Ctrl-C; the CLI maps SIGTERM to it) or one raised by the progress
callback finalises the output (mp4 is fragmented, so the file stays playable) and is re-raised as
`RenderInterrupted`, which carries the summary of what was written.

GPU out of memory mid-render: `render_to_file` finalises and keeps what it wrote and raises
`RenderOutOfMemory`. `FallbackRenderer` (used by `knotanim render`) then says so in one line and
renders the same file again from the start on the first fallback that works, as the live pipeline
chooses them (`knotanim.loading.gpu_memory_fallbacks`: each installed profile smaller than the
one in use on the same GPU, then the model copied to the CPU), with eager torch. The new render goes
to a hidden file beside the output (`.NAME.retry.mp4`; a folder for PNG) and replaces the output only
once it is complete, so the output path always holds a playable file: the partial one, then the
complete one (video: one atomic rename; PNG folders: two renames).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from knotanim.errors import BackendUnavailable, InputError, KnotAnimError, OutputError
from knotanim.frontends.audio_io import iter_audio_blocks, probe_audio
from knotanim.frontends.face import Paster, crop_face
from knotanim.frontends.image import MAX_PIXELS, load_image
from knotanim.frontends.native_paste import NativePaster
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


class RenderOutOfMemory(BackendUnavailable):
    """The GPU ran out of memory mid-render. What was written is finalised and kept (`summary`);
    `reason` is torch's message (first line). FallbackRenderer renders again on a fallback."""

    def __init__(self, summary: RenderSummary, device: Any, reason: str):
        super().__init__(f"out of memory on {device} after {summary.frames} frames ({reason}); "
                         f"what was rendered is finalised in {summary.output}")
        self.summary, self.reason = summary, reason


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
    pipelined: bool | None = None  # encode on a worker thread while the next frames are computed; None: on a GPU
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


class _OrderedWorker:
    """Runs submitted calls one at a time, in order: on a worker thread when `threaded`, else at once in the caller.
    At most `depth` calls wait; submitting more waits for the oldest. A call's exception (an encoder error, a
    KeyboardInterrupt from the progress callback) is raised in the caller by a later submit() or by drain()."""

    def __init__(self, threaded: bool, depth: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knotanim-encode") if threaded else None
        self._pending: deque[Future] = deque()
        self._depth = depth
        self._failed = False  # set by the worker: the calls after a failed one do not run

    def _guarded(self, fn: Callable[[], None]) -> None:
        if self._failed:
            return
        try:
            fn()
        except BaseException:
            self._failed = True
            raise

    def submit(self, fn: Callable[[], None]) -> None:
        if self._pool is None:
            fn()
            return
        self._pending.append(self._pool.submit(self._guarded, fn))
        while self._pending and (len(self._pending) > self._depth or self._pending[0].done()):
            self._pending.popleft().result()

    def drain(self) -> None:
        """Wait for every submitted call; raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def stop(self) -> None:
        """Let the submitted calls finish (after a failed one the rest are skipped) without raising, and end
        the thread: after an interrupt or an error in the caller, the frames already handed over are written."""
        if self._pool is not None:
            for future in self._pending:
                future.exception()  # waits; a failure was or will be raised by drain() or is moot now
            self._pending.clear()
            self._pool.shutdown(wait=True)


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

    pasters: dict[str, Any] = {}

    def paste(f) -> np.ndarray:
        """A frame with a warp codec's motion: the photo's own pixels moved at its own resolution;
        otherwise the model's crop pasted back."""
        if f.motion is not None:
            if "native" not in pasters:
                pasters["native"] = NativePaster(image, face, mask=opts.mask, feather=opts.feather)
            return pasters["native"](f.image, f.motion)
        if "crop" not in pasters:
            pasters["crop"] = Paster(image, face, reference_crop=crop, mask=opts.mask, feather=opts.feather,
                                     colour_match=opts.colour_match)
        return pasters["crop"](f.image)
    height, width = crop.shape[:2] if opts.crop_only else image.shape[:2]
    sink = _make_sink(fmt, output, width, height, out_fps, opts.crf, mux_rate, channels)
    if fmt != "png":
        width, height = sink.width, sink.height

    retimer = FrameRetimer(model_fps, out_fps)
    composed: dict[str, Any] = {"index": None, "image": None}
    samples = 0
    created = not output.exists()
    finished = False
    out_of_memory: str | None = None  # torch's message when the GPU ran out of memory

    def summary(interrupted: bool) -> RenderSummary:
        return RenderSummary(output, fmt, sink.frames_written, float(out_fps), width, height,
                             samples / sr, time.monotonic() - start, interrupted)

    pipelined = opts.pipelined if opts.pipelined is not None else getattr(animator.device, "type", "cpu") != "cpu"
    writer = _OrderedWorker(pipelined)  # the sink is written only through it

    def write(images: list[np.ndarray], audio_to_end: bool) -> None:
        for image in images:
            sink.write(image)
            if opts.progress is not None:
                opts.progress(RenderProgress(sink.frames_written, expected, time.monotonic() - start, float(out_fps)))
        track.write_until(None if audio_to_end else sink.frames_written / float(out_fps))

    def emit(model_frames: list[Any], audio_to_end: bool = False) -> None:
        """Paste here; encode, mux the audio up to the frames and report progress on the writer."""
        images = []
        for f in model_frames:
            if composed["index"] != f.index:
                composed["index"], composed["image"] = f.index, (f.image if opts.crop_only else paste(f))
            images.append(composed["image"])
        writer.submit(lambda: write(images, audio_to_end))

    try:
        stream = animator.stream(crop, seed=opts.seed, head_motion=opts.head_motion, knot=opts.knot,
                                 run_ahead=opts.run_ahead, steps=opts.steps, backend=opts.backend)
        sink.open()
        track = _AudioTrack(iter_audio_blocks(audio_path, mux_rate, opts.block_seconds, channels), sink, mux_rate)
        try:
            for block in iter_audio_blocks(audio_path, sr, opts.block_seconds):
                samples += block.shape[0]
                for f in stream.push_audio(block):
                    retimer.add(f)
                # only output frames that end within the audio received so far (n is not known yet)
                emit(retimer.take(math.floor(Fraction(samples) * out_fps / sr)))
            n = max(1, math.floor(Fraction(samples) * out_fps / sr + Fraction(1, 2)))
            m = max(1, math.floor(Fraction(samples) * model_fps / sr + Fraction(1, 2)))
            for f in stream.finish(total_frames=m):
                retimer.add(f)
            emit(retimer.take(n, last_model=m - 1), audio_to_end=True)
            writer.drain()
            finished = True
        finally:
            try:
                writer.stop()  # after an error or an interrupt too: the frames handed over are written first
            finally:
                sink.close()  # even if a second Ctrl-C cuts that short
    except KeyboardInterrupt:
        raise RenderInterrupted(summary(True)) from None
    except BaseException as e:
        from knotanim.loading import first_line, is_out_of_memory

        if not is_out_of_memory(e):
            if created and not finished:
                _remove_partial(output, fmt)
            raise
        out_of_memory = first_line(e)  # the sink was closed: what was written is finalised, and kept
    if out_of_memory is not None:  # outside the except: its traceback no longer holds the failed chunk's tensors
        stream = None  # nor does this frame, which the new exception's traceback keeps
        raise RenderOutOfMemory(summary(True), animator.device, out_of_memory)
    return summary(False)


def _remove_partial(output: Path, fmt: str) -> None:
    """Delete a half-written video file after an error (PNG frames are left for inspection)."""
    if fmt != "png":
        try:
            output.unlink(missing_ok=True)
        except OSError:
            pass


def _retry_path(output: Path) -> Path:
    """A hidden name beside `output` that nothing uses yet, for rendering it again."""
    for n in range(1000):
        candidate = output.with_name(f".{output.stem}.retry{n or ''}{output.suffix}")
        if not candidate.exists():
            return candidate
    raise OutputError(f"cannot find a free name beside {output} to render it again")


def _discard(path: Path) -> None:
    """Remove a render of ours (a file, or a PNG folder) that is not kept."""
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _move_into_place(new: Path, output: Path) -> None:
    """Replace `output` by the complete render `new`: one atomic rename for a file; for a PNG folder,
    the old folder is renamed aside, the new one into place, then the old one removed."""
    try:
        if not new.is_dir() or not output.exists():
            os.replace(new, output)
            return
        old = _retry_path(output.with_name(output.name + "-old"))
        os.replace(output, old)
        os.replace(new, output)
    except OSError as e:
        raise OutputError(f"cannot move the new render {new} to {output}: {e.strerror or e}") from None
    _discard(old)


class FallbackRenderer:
    """render_to_file on `animator`; when its GPU runs out of memory mid-render, says so in one line
    (`say`) and renders the same file again from the start on the first fallback that works, which it
    then keeps using (a batch goes on with it).

    model_name: how messages name the model; profile: the installed profile `animator` was loaded
    from (None: --model), so smaller installed profiles are tried first. memory_fallbacks:
    (animator, model_name, profile) -> [MemoryFallback], default gpu_memory_fallbacks."""

    def __init__(self, animator: Any, model_name: str = "model", profile: str | None = None,
                 say: Callable[[str], None] | None = None, memory_fallbacks: Callable[..., Any] | None = None):
        self.animator, self.model_name, self.profile = animator, model_name, profile
        self.say = say or (lambda message: None)
        self.memory_fallbacks = memory_fallbacks

    def render(self, image_path: str | os.PathLike, audio_path: str | os.PathLike, output_path: str | os.PathLike,
               options: RenderOptions | None = None) -> RenderSummary:
        from knotanim.loading import first_line, free_gpu_memory, gpu_memory_fallbacks, is_out_of_memory

        opts = options or RenderOptions()
        start = time.monotonic()
        try:
            return render_to_file(self.animator, image_path, audio_path, output_path, options=opts)
        except RenderOutOfMemory as e:
            kept, reason = e.summary, e.reason  # the partial output, finalised at output_path
        # Outside the except: the failed render's stream (GPU caches) is gone before anything new is loaded.
        output = kept.output
        failed = f"{self.model_name} on {self.animator.device}"
        choose = self.memory_fallbacks or gpu_memory_fallbacks
        problems: list[str] = []
        for fallback in list(choose(self.animator, self.model_name, self.profile)):
            free_gpu_memory()
            try:
                animator = fallback.load()
            except KnotAnimError as e:  # e.g. a damaged smaller profile: the next fallback may still work
                problems.append(f"{fallback.model_name} cannot be loaded ({first_line(e)})")
                continue
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; the rest propagates
                if not is_out_of_memory(e):
                    raise
                problems.append(f"{fallback.model_name} ran out of memory too")
                continue
            where = "the CPU (slower)" if str(animator.device) == "cpu" else str(animator.device)
            tried = "".join(f"; {p}" for p in problems)
            self.say(f"GPU out of memory with {failed} after {kept.frames} frames{tried}: rendering again from "
                      f"the start with {fallback.model_name} on {where}; {output} keeps what was rendered until "
                      f"the new render is complete")
            problems = []
            retry = _retry_path(output)
            try:
                summary = render_to_file(animator, image_path, audio_path, retry,
                                         options=replace(opts, format=kept.format, backend=None))
            except RenderOutOfMemory as e:
                retry_frames = e.summary.frames
            except RenderInterrupted as e:
                raise RenderInterrupted(self._keep_longer(kept, e.summary)) from None
            except BaseException:
                _discard(retry)  # the partial output stays
                raise
            else:
                _move_into_place(retry, output)
                self.animator, self.model_name, self.profile = animator, fallback.model_name, fallback.profile
                return replace(summary, output=output, elapsed=time.monotonic() - start)
            _discard(retry)
            problems.append(f"{fallback.model_name} on {animator.device} ran out of memory too after {retry_frames} frames")
            del animator
        tried = "".join(f"; {p}" for p in problems)
        raise BackendUnavailable(f"GPU out of memory with {failed}{tried}; nothing left to fall back to ({reason}); "
                                 f"the {kept.frames} frames rendered are kept in {output}")

    @staticmethod
    def _keep_longer(kept: RenderSummary, retried: RenderSummary) -> RenderSummary:
        """The render again was interrupted: keep whichever of the two partial outputs is longer, at the
        output path; returns its summary."""
        if retried.frames > kept.frames:
            _move_into_place(retried.output, kept.output)
            return replace(retried, output=kept.output)
        _discard(retried.output)
        return kept


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
                 on_result: Callable[[BatchResult], None] | None = None,
                 renderer: FallbackRenderer | None = None) -> list[BatchResult]:
    """Render every job; a failing job (any KnotAnimError or decode error) is recorded and skipped.
    renderer: renders the jobs instead of `animator` (GPU out of memory: falls back, then keeps the fallback).

    A KeyboardInterrupt stops the batch (after finalising the current output) and propagates.
    """
    results = []
    for job in jobs:
        try:
            if renderer is not None:
                s = renderer.render(job.image, job.audio, job.output, options)
            else:
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
    "BatchJob", "BatchResult", "FallbackRenderer", "FrameRetimer", "RenderInterrupted", "RenderOptions",
    "RenderOutOfMemory", "RenderProgress", "RenderSummary", "output_format", "render_batch", "render_to_file",
]
