"""The real-time pipeline, GUI-free: microphone -> ring -> inference thread -> queue -> paced outputs.

    audio source thread --write--> AudioRing (preallocated; never blocks)
    inference thread: reads new samples, stream.push_audio, composes frames
                      --put--> DropOldestQueue (bounded; the oldest frame is dropped, never stalls)
    pacer thread: one frame per tick at the model's fps (25), repeating the last frame when none
                  is ready --send--> outputs (preview slot, recorder, virtual camera, ...)

Backends: `LiveOptions.backend` (an `engines.select.StepBackends`, e.g. `profiles.Choice.backends`)
runs the animator's streams on ONNX Runtime, torch.compile, TensorRT, ...; the pipeline builds it for
every step count of the quality ladder when it is made (on the caller's thread, at start), and the
inference thread only picks the prepared one (`KnotStream.set_steps` swaps it in, the caches carry
on). A backend that cannot be built means eager torch, with a warning in stats(). The ladder's
fallback model and the GPU-out-of-memory fallbacks run eager torch.

Keeping live when the machine is too slow: the DegradeController steps down the quality ladder
(fewer steps, then a fallback model); and whenever more than `max_backlog` seconds of audio wait
unprocessed, the inference thread skips ahead to the newest audio (the stream carries on, so the
head motion stays continuous) instead of falling further behind.

GPU out of memory mid-stream: the inference thread frees what the failed stream held, then rebuilds
the stream (same reference, seed, head motion and requested steps) on the first fallback that works:
a smaller installed profile on the same GPU, else the model on the CPU (`LiveOptions.memory_fallbacks`,
default `knotanim.loading.gpu_memory_fallbacks`). The outputs stay attached (the pacer repeats
the last frame meanwhile) and stats() says what happened; with nothing left to fall back to, the
stream stops with a one-line error.

Latency = the moment a frame is shown minus the moment the last audio sample it depends on was
captured (the ring records when each block arrived).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from knotanim.live.compose import Composer
from knotanim.live.output_set import OutputSet
from knotanim.ladder import Rung, build_ladder
from knotanim.live.degrade import DegradeController
from knotanim.live.memory import switch_after_out_of_memory
from knotanim.loading import MemoryFallback, first_line, free_gpu_memory, gpu_memory_fallbacks, is_out_of_memory
from knotanim.live.ring import AudioRing
from knotanim.live.timing import DropOldestQueue, LatencyMeter, PacedFrames, Pacer, PushLog, RateMeter


@dataclass(frozen=True)
class LiveOptions:
    seed: int = 0
    head_motion: float = 0.5  # 0..1
    steps: int | None = None  # sampler steps of the first rung; None: the model's
    output_size: int | None = None  # output frame side in pixels; None: the model's frame_size
    background: tuple[int, int, int] | None = None  # None keeps the generated background
    ring_seconds: float = 20.0  # microphone audio kept, seconds (recorder and delayed output read it)
    queue_frames: int = 8  # frames buffered between inference and the pacer
    max_backlog: float = 0.75  # seconds of unprocessed audio before skipping ahead
    push_frames: int | None = None  # frames of audio per push_audio call; None: one chunk (backlog is checked between)
    degrade: bool = True  # step down the quality ladder when too slow
    fallback: Any = None  # a smaller KnotAnimator for the last rung of the ladder
    model_name: str = "model"  # how the model is named in messages
    reconnect: bool = True  # a lost microphone is replaced by silence and reopened (ResilientSource)
    drain_seconds: float = 2.0  # a queued frame left over at every tick this long is dropped (latency stays flat)
    profile: str | None = None  # the installed profile the animator was loaded from (None: --model / --tiny)
    # engines.select.StepBackends for the animator (None: eager torch); built for the ladder at start
    backend: Any = None
    # GPU out of memory mid-stream: (animator, model_name, profile) -> what to switch to, in order
    # (None: gpu_memory_fallbacks: smaller installed profiles on the same GPU, then the CPU)
    memory_fallbacks: Callable[[Any, str, str | None], Sequence[MemoryFallback]] | None = None


@dataclass
class LiveFrame:
    """A frame as the outputs receive it."""

    image: np.ndarray  # uint8 (size, size, 3) RGB, composed
    source_index: int  # frame number in the generating stream
    audio_pos: int  # absolute ring position (samples) of the start of the frame's audio
    captured_at: float  # monotonic seconds when the frame's last audio sample was captured
    tick: int = -1  # output frame number (set by the pacer)
    repeated: bool = False  # True when the pacer re-sent the previous frame


@dataclass(frozen=True)
class LiveStats:
    running: bool
    fps_shown: float  # frames/s leaving the pacer (should be the model's fps)
    fps_generated: float  # distinct frames/s the model produced
    latency: float | None  # seconds, audio in -> frame shown (median of recent frames)
    dropped: int  # frames dropped by the queue plus frames skipped with their audio
    repeated: int  # ticks that re-sent the previous frame
    profile: str  # current rung of the quality ladder
    device: str  # torch device
    message: str  # what degradation is doing ("" when all is well)
    error: str | None = None
    rtf: float | None = None  # compute seconds per video second (<1 keeps up)
    extra: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # faults the stream survived: microphone lost, an output detached, GPU out of memory
    backend: str = "torch"  # what the current stream runs on ("onnxruntime[CPU]", ...)


def _swap_steps(stream: Any, steps: int) -> bool:
    """Change a running KnotStream's sampler steps in place; False when its backend cannot (then a
    new stream is made)."""
    from knotanim.errors import BackendUnavailable

    try:
        stream.set_steps(steps)
    except BackendUnavailable:
        return False  # a backend without a factory, or one not prepared for `steps`
    return True


class LivePipeline:
    """animator: KnotAnimator. reference: uint8 face crop. source: an AudioSource (not started)."""

    def __init__(self, animator: Any, reference: np.ndarray, source: Any, options: LiveOptions | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep):
        self.options = opts = options or LiveOptions()
        self.animator, self.clock, self.sleep = animator, clock, sleep  # animator: the one streaming now
        self.model_name, self.profile = opts.model_name, opts.profile  # change with a GPU memory fallback
        self._requested_steps = opts.steps  # the quality ladder's first rung (set_steps changes it)
        self._ladder_fallback = opts.fallback  # the ladder's last rung; dropped by a GPU memory fallback
        cfg = animator.config
        self.fps, self.sample_rate, self.spf = cfg.fps, cfg.audio.sample_rate, cfg.samples_per_frame
        if opts.reconnect and not hasattr(source, "silence_samples"):
            from knotanim.live.resilient import ResilientSource

            source = ResilientSource(source, self.sample_rate)
        self.source = source
        self.ring = AudioRing(int(opts.ring_seconds * self.sample_rate), self.sample_rate, clock=clock)
        self.queue: DropOldestQueue[LiveFrame] = DropOldestQueue(opts.queue_frames)
        self.composer = Composer(opts.output_size or cfg.frame_size, opts.background)
        self.controller = self._new_controller()
        self.reference = np.ascontiguousarray(reference)
        self.outputs = OutputSet()
        self._pending: dict[str, Any] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.shown_latency, self.sent_latency = LatencyMeter(), LatencyMeter()
        self._last_display_report = -1e9
        self.shown_rate, self.generated_rate = RateMeter(clock=clock), RateMeter(window=6.0, clock=clock)
        self.skipped = 0
        self.repeated = 0
        self.drained = 0  # frames dropped by the pacer to drain a standing backlog
        self.first_frame_at: float | None = None  # clock() when the pacer sent the first frame
        self.error: str | None = None  # fatal: the stream stopped
        self.memory_fallbacks: list[str] = []  # one message per switch after the GPU ran out of memory
        self.running = False
        self.pushes = PushLog()  # which ring audio each stream sample came from
        self.stream: Any = None
        self.backend_notes: list[str] = []  # a backend that could not be built or prepared: torch instead
        self.backends = self._prepare_backends(opts.backend)
        try:
            self.stream = self._new_stream(animator, self.controller.profile.steps, opts.head_motion)
            out_of_memory = None
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; the rest propagates
            if not is_out_of_memory(e):
                raise
            out_of_memory = first_line(e)
        if out_of_memory is not None:  # outside the except: its traceback no longer holds GPU tensors
            self._fall_back(out_of_memory)

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference and pacer threads, then the audio source (errors raise here)."""
        if self.running:
            return
        self._stop.clear()
        self.running = True
        self._threads = [threading.Thread(target=self._guard(self._inference_loop), name="knotanim-inference", daemon=True),
                         threading.Thread(target=self._guard(self._pacer_loop), name="knotanim-pacer", daemon=True)]
        for t in self._threads:
            t.start()
        try:
            self.source.start(self.ring.write)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the source and threads, then close every output (finalising recordings)."""
        self.source.stop()
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=60)  # a chunk in progress cannot be interrupted (seconds on a slow CPU)
        self._threads = []
        self.running = False
        self.outputs.close_all()

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - reported to the user through stats().error
                from knotanim.errors import KnotAnimError

                self.error = first_line(e) if isinstance(e, KnotAnimError) else f"{type(e).__name__}: {first_line(e)}"
                self._stop.set()
        return run

    # --- outputs (knotanim.live.outputs.OutputSet) ---------------------------------------------------------
    def add_output(self, output: Any) -> None:
        """Attach an output (has send(LiveFrame) and close()); it receives every paced frame."""
        self.outputs.add(output)

    def remove_output(self, output: Any, close: bool = True) -> None:
        self.outputs.remove(output, close)

    @property
    def failed_outputs(self) -> list[tuple[Any, str]]:
        """(output, message) for each output detached after a failure; the stream went on."""
        return self.outputs.failed

    def wait_closed(self, timeout: float = 60.0) -> None:
        """Wait until every output detached after a failure is closed (its recording finalised)."""
        self.outputs.wait_closed(timeout)

    # --- controls (applied by the inference thread between chunks) --------------------------------------
    def set_reference(self, reference: np.ndarray) -> None:
        """Swap the portrait while streaming; the motion carries on."""
        self._pending["reference"] = np.ascontiguousarray(reference)

    def set_head_motion(self, value: float) -> None:
        self._pending["head_motion"] = float(np.clip(value, 0.0, 1.0))

    def set_steps(self, steps: int | None) -> None:
        """Restart the quality ladder from `steps` sampler steps (None: the model's)."""
        self._pending["steps"] = steps

    def set_background(self, colour: tuple[int, int, int] | None) -> None:
        self._pending["background"] = colour

    def report_shown(self, frame: LiveFrame, when: float | None = None) -> None:
        """A display calls this when it actually paints `frame` (latency then includes painting)."""
        now = self.clock() if when is None else when
        self._last_display_report = now
        if not frame.repeated:
            self.shown_latency.add(now - frame.captured_at)

    # --- figures --------------------------------------------------------------------------------------
    @property
    def latency(self) -> float | None:
        """Seconds, audio in -> frame shown (the display's report when one is painting)."""
        if self.clock() - self._last_display_report < 2.0 and self.shown_latency.value is not None:
            return self.shown_latency.value
        return self.sent_latency.value

    def level(self, seconds: float = 0.05) -> float:
        """Microphone level: RMS of the newest `seconds` of audio, in dBFS (-100 for silence)."""
        n = max(1, int(seconds * self.sample_rate))
        x = self.ring.read(self.ring.position - n, n)
        rms = float(np.sqrt(np.mean(x * x)))
        return 20 * np.log10(rms) if rms > 1e-5 else -100.0

    def stats(self) -> LiveStats:
        c = self.controller
        err = self.error or getattr(self.source, "error", None)
        warnings = [m for _, m in self.failed_outputs] + self.memory_fallbacks + self.backend_notes
        status = getattr(self.source, "status", "")
        if status:
            warnings.append(status)
        message = "; ".join(m for m in (status, c.message) if m)
        return LiveStats(self.running and not self._stop.is_set(), self.shown_rate.rate(), self.generated_rate.rate(),
                         self.latency, self.queue.dropped + self.skipped + self.drained, self.repeated, c.profile.name,
                         str(getattr(self.animator, "device", "cpu")), message, err, c.rtf, warnings=tuple(warnings),
                         backend=self.backend_name)

    # --- backends ---------------------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        """The backend the current stream runs on ("torch", "onnxruntime[CPU]", ...)."""
        return getattr(getattr(self.stream, "backend", None), "name", "torch")

    def _prepare_backends(self, backends: Any) -> Any:
        """`backends` built for every step count of the ladder (and the model's own ladder, which the app's
        quality menu starts from); None (eager torch, with a note) when that fails."""
        from knotanim.ladder import ladder_steps

        if backends is None or getattr(backends, "name", "torch") == "torch":
            return None
        if backends.animator is not self.animator:
            self.backend_notes.append(f"the {backends.name} backend was built for another model: running torch")
            return None
        try:
            backends.prepare(ladder_steps(self.animator, self._requested_steps))
        except Exception as e:  # noqa: BLE001 - one line, and eager torch takes over
            from knotanim.errors import KnotAnimError

            why = first_line(e) if isinstance(e, KnotAnimError) else f"{type(e).__name__}: {first_line(e)}"
            self.backend_notes.append(f"the {backends.name} backend could not be built ({why}): running torch")
            return None
        return backends

    def _new_stream(self, animator: Any, steps: int | None, head_motion: float) -> Any:
        """A stream of `animator` at `steps`: on the prepared backend when it is the animator's and has
        that step count (never built here: this runs on the inference thread), else eager torch."""
        from functools import partial

        from knotanim.errors import BackendUnavailable

        kwargs = dict(seed=self.options.seed, head_motion=head_motion, steps=steps)
        if self.backends is not None and animator is self.backends.animator:
            factory = partial(self.backends, build=False)
            try:
                return animator.stream(self.reference, backend=factory(steps), backend_factory=factory, **kwargs)
            except BackendUnavailable as e:
                note = f"{first_line(e)}: running torch"
                if note not in self.backend_notes:
                    self.backend_notes.append(note)
        return animator.stream(self.reference, **kwargs)

    # --- GPU out of memory ------------------------------------------------------------------------------
    def _new_controller(self) -> DegradeController:
        ladder = build_ladder(self.animator, self._requested_steps, self._ladder_fallback, self.model_name)
        return DegradeController(ladder, self.fps, enabled=self.options.degrade)

    def _fall_back(self, reason: str) -> None:
        """The GPU ran out of memory (`reason`: torch's message): drop the failed stream, free the GPU's
        cached memory, and carry on with the first fallback that works (knotanim.live.memory)."""
        failed = f"{self.model_name} on {getattr(self.animator, 'device', 'cpu')}"
        head_motion = self.stream.head_motion if self.stream is not None else self.options.head_motion
        self.stream = None  # the failed stream's caches are released before anything new is allocated
        free_gpu_memory()
        choose = self.options.memory_fallbacks or gpu_memory_fallbacks
        switched = switch_after_out_of_memory(
            choose(self.animator, self.model_name, self.profile), lambda a: self._new_stream(a, self._requested_steps,
                                                                                             head_motion),
            (self.fps, self.sample_rate, self.spf), failed, reason)
        self.animator, self.stream = switched.animator, switched.stream
        self.model_name, self.profile = switched.model_name, switched.profile
        self._ladder_fallback = None  # it was chosen for the old device and model
        self.pushes.clear()
        self.controller = self._new_controller()
        self.memory_fallbacks.append(switched.note)  # a warning: the CLI prints it once, the app's status bar shows it

    # --- threads --------------------------------------------------------------------------------------
    def _apply_pending(self) -> None:
        while self._pending:
            key, value = self._pending.popitem()
            if key == "reference":
                self.reference = value
                self.stream.set_reference(value)
            elif key == "head_motion":
                self.stream.head_motion = value
            elif key == "background":
                self.composer.set_background(value)
            elif key == "steps":
                self._requested_steps = value
                self.controller = self._new_controller()
                self._use_profile(self.controller.profile)

    def _use_profile(self, profile: Rung) -> None:
        if profile.animator is self.stream.animator and _swap_steps(self.stream, profile.steps):
            pass  # same model: only the sampler changed, the stream (and its motion) carries on
        else:
            self.stream = self._new_stream(profile.animator, profile.steps, self.stream.head_motion)
            self.pushes.clear()

    def _inference_loop(self) -> None:
        cursor = self.ring.position
        self.pushes.clear()
        while not self._stop.is_set():
            try:
                cursor = self._infer_next(cursor)
                continue
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; the rest stops the stream
                if not is_out_of_memory(e):
                    raise
                out_of_memory = first_line(e)
            # Outside the except: its traceback (holding the failed chunk's GPU tensors) is gone. The
            # audio of the failed push is not consumed: the fallback's stream starts from it.
            self._fall_back(out_of_memory)

    def _infer_next(self, cursor: int) -> int:
        """Apply pending controls, push the audio after ring position `cursor` (at most one push) and
        queue the frames it makes; returns the new cursor."""
        sr, spf = self.sample_rate, self.spf
        cfg = self.animator.config
        max_push = (self.options.push_frames or cfg.stream.chunk) * spf
        keep = (cfg.stream.chunk + cfg.stream.knot + 2) * spf  # audio the next chunk needs after a skip
        self._apply_pending()
        available = self.ring.position - cursor
        if available < spf:
            self._stop.wait(0.005)
            return cursor
        if available > self.options.max_backlog * sr:  # too far behind: skip to the newest audio
            jump = (available - keep) // spf * spf
            cursor += jump
            self.skipped += jump // spf
            available -= jump
        n = min(available, max_push)
        block = self.ring.read(cursor, n)
        self.pushes.pushed(cursor, n)
        t0 = time.perf_counter()
        frames = self.stream.push_audio(block)
        compute = time.perf_counter() - t0
        cursor += n
        if not frames:
            return cursor
        if self.controller.observe(len(frames), compute):
            self._use_profile(self.controller.profile)
        self.generated_rate.add(len(frames))
        for f in frames:
            pos = self.pushes.ring_position(f.index * spf)
            captured = self.ring.capture_time(pos + spf)
            self.queue.put(LiveFrame(self.composer(f.image), f.index, pos,
                                     captured if captured is not None else self.clock()))
        self.pushes.forget_before(self.stream.frames_emitted * spf)  # the stream emits no frames for those
        return cursor

    def _pacer_loop(self) -> None:
        pacer = Pacer(self.fps, clock=self.clock, sleep=self.sleep)
        frames = PacedFrames(self.queue, drain_ticks=self.options.drain_seconds * self.fps)
        tick = 0
        while not self._stop.is_set():
            pacer.wait()
            item = frames.next()
            self.repeated, self.drained = frames.repeated, frames.drained
            if item is None:
                continue
            item.tick = tick
            tick += 1
            now = self.clock()
            if self.first_frame_at is None:
                self.first_frame_at = now
            if not item.repeated:
                self.sent_latency.add(now - item.captured_at)
            self.shown_rate.add(1, now)
            self.outputs.send(item)
