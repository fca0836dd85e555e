"""LiveSession: the Qt side of the live pipeline. It owns the LivePipeline and its outputs, polls
them with timers on the UI thread (Qt widgets are never touched from other threads) and reports
through signals: frame(np.ndarray), stats(LiveStats), level(dBFS), error(str), stopped(),
recording_failed(str) and vcam_failed(str) (that output stopped; the stream and the other outputs
go on). Faults the stream survives (a lost microphone, ...) are reported once each through error()."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from knotanim.errors import KnotAnimError
from knotanim.live.outputs import DelayedAudioOutput, FrameSlot, RecorderOutput, VirtualCameraOutput
from knotanim.live.pipeline import LiveOptions, LivePipeline
from knotanim.live.ring import AudioRing
from knotanim.live.sources import ArraySource, MicrophoneSource

from .controls import EXAMPLE_SPEECH

SourceFactory = Callable[[str], Any]


def example_speech_path() -> Path:
    from importlib.resources import files

    return Path(str(files("knotanim.assets"))) / "examples" / "speech.wav"


def default_source_factory(sample_rate: int) -> SourceFactory:
    """Microphone by name ("" = default); EXAMPLE_SPEECH plays the bundled speech in a loop."""
    def make(name: str):
        if name == EXAMPLE_SPEECH:
            from knotanim.frontends.audio_io import load_audio

            return ArraySource(load_audio(example_speech_path(), sample_rate), sample_rate, loop=True, name="example speech")
        return MicrophoneSource(name or None, sample_rate)
    return make


def describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if isinstance(e, KnotAnimError) else f"{type(e).__name__}: {text.splitlines()[0]}"


class LiveSession(QObject):
    frame = pyqtSignal(object)  # np.ndarray uint8 RGB, the frame to paint
    stats = pyqtSignal(object)  # LiveStats
    level = pyqtSignal(float)  # microphone level, dBFS
    error = pyqtSignal(str)
    stopped = pyqtSignal()
    recording_failed = pyqtSignal(str)  # the recording stopped by itself (disk full, ...): why
    vcam_failed = pyqtSignal(str)  # the virtual camera went away: why

    def __init__(self, animator: Any, source_factory: SourceFactory | None = None, vcam_backend: str | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.animator = animator
        sr = animator.config.audio.sample_rate
        self.source_factory = source_factory or default_source_factory(sr)
        self.vcam_backend = vcam_backend
        self.pipeline: LivePipeline | None = None
        self.slot = FrameSlot()
        self.recorder: RecorderOutput | None = None
        self.vcam: VirtualCameraOutput | None = None
        self.delayed: DelayedAudioOutput | None = None
        self.finished_recorder: RecorderOutput | None = None
        self.monitor: tuple[Any, AudioRing] | None = None  # (source, ring) metering while idle
        self.paint_timer = QTimer(self, interval=10, timeout=self._paint)
        self.stats_timer = QTimer(self, interval=250, timeout=self._report)
        self._last_error = ""
        self._warned: set[str] = set()

    @property
    def running(self) -> bool:
        return self.pipeline is not None

    # --- start / stop ---------------------------------------------------------------------------------
    def start(self, reference: np.ndarray, mic: str, options: LiveOptions) -> bool:
        """Start streaming; False (after an error signal) when it cannot start."""
        self.stop_monitor()
        try:
            source = self.source_factory(mic)
            self.pipeline = LivePipeline(self.animator, reference, source, options)
            self.slot = FrameSlot()
            self.pipeline.add_output(self.slot)
            self.pipeline.start()
        except Exception as e:  # noqa: BLE001 - shown in the window
            self.pipeline = None
            self.error.emit(f"Cannot start: {describe(e)}")
            return False
        self._last_error = ""
        self._warned = set()
        self.paint_timer.start()
        self.stats_timer.start()
        return True

    def stop(self) -> None:
        pipeline, self.pipeline = self.pipeline, None
        self.paint_timer.stop()
        if pipeline is not None:
            pipeline.stop()  # closes every output, finalising a recording
        self.finished_recorder = self.recorder  # the window reports where it was saved
        self.recorder = self.vcam = self.delayed = None
        self.stats.emit(None)
        self.stopped.emit()

    # --- outputs ----------------------------------------------------------------------------------------
    def start_recording(self, path: Path) -> bool:
        if self.pipeline is None:
            return False
        try:
            p = self.pipeline
            self.recorder = RecorderOutput(path, p.ring, p.fps, p.spf)
        except Exception as e:  # noqa: BLE001
            self.error.emit(f"Cannot record to {path}: {describe(e)}")
            return False
        self.pipeline.add_output(self.recorder)
        return True

    def stop_recording(self) -> RecorderOutput | None:
        rec, self.recorder = self.recorder, None
        if rec is not None and self.pipeline is not None:
            self.pipeline.remove_output(rec)  # closes (finalises) the file
        return rec

    def start_virtual_camera(self, width: int, height: int) -> str | None:
        """Open the virtual camera; returns None on success, else the diagnosis text."""
        if self.pipeline is None:
            return "Start the animation first."
        try:
            self.vcam = VirtualCameraOutput(width, height, self.pipeline.fps, backend=self.vcam_backend)
        except Exception as e:  # noqa: BLE001 - BackendUnavailable carries the diagnosis
            self.vcam = None
            return describe(e)
        self.pipeline.add_output(self.vcam)
        return None

    def stop_virtual_camera(self) -> None:
        cam, self.vcam = self.vcam, None
        if cam is not None and self.pipeline is not None:
            self.pipeline.remove_output(cam)

    def set_delayed_output(self, device: str) -> None:
        """Send the delayed microphone copy to `device` ("" turns it off)."""
        if self.delayed is not None and self.pipeline is not None:
            self.pipeline.remove_output(self.delayed)
        self.delayed = None
        if not device or self.pipeline is None:
            return
        p = self.pipeline
        try:
            self.delayed = DelayedAudioOutput(p.ring, device, lambda: p.latency)
        except Exception as e:  # noqa: BLE001
            self.error.emit(f"Cannot play the delayed audio on {device!r}: {describe(e)}")
            return
        p.add_output(self.delayed)

    # --- level meter while idle ------------------------------------------------------------------------------
    def start_monitor(self, mic: str) -> None:
        """Meter `mic` while not streaming (errors are reported once, not raised)."""
        self.stop_monitor()
        if self.pipeline is not None:
            return
        sr = self.animator.config.audio.sample_rate
        ring = AudioRing(sr, sr)
        try:
            source = self.source_factory(mic)
            source.start(ring.write)
        except Exception as e:  # noqa: BLE001
            self.error.emit(f"Microphone: {describe(e)}")
            return
        self.monitor = (source, ring)
        self.stats_timer.start()

    def stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor[0].stop()
            self.monitor = None

    def shutdown(self) -> None:
        self.stats_timer.stop()
        self.stop_monitor()
        self.stop()

    def _check_outputs(self, p: LivePipeline) -> None:
        """Forget outputs the pipeline detached after a failure, and say so."""
        for output, message in p.failed_outputs:
            message = message.split(" stopped: ", 1)[-1]  # the window says which output stopped
            if output is self.recorder and output is not None:
                self.recorder, self.finished_recorder = None, output
                self.recording_failed.emit(message)
            elif output is self.vcam and output is not None:
                self.vcam = None
                self.vcam_failed.emit(message)

    # --- timers (UI thread) ----------------------------------------------------------------------------------
    def _paint(self) -> None:
        p = self.pipeline
        item = self.slot.take()
        if p is None or item is None:
            return
        self.frame.emit(item.image)
        p.report_shown(item, time.monotonic())

    def _report(self) -> None:
        p = self.pipeline
        if p is None:
            if self.monitor is not None:
                ring = self.monitor[1]
                x = ring.read(ring.position - 800, 800)
                rms = float(np.sqrt(np.mean(x * x)))
                self.level.emit(20 * np.log10(rms) if rms > 1e-5 else -100.0)
            return
        self.level.emit(p.level())
        s = p.stats()
        self.stats.emit(s)
        self._check_outputs(p)
        for w in s.warnings:
            if w not in self._warned:
                self._warned.add(w)
                self.error.emit(w)
        problem = s.error or (f"recording: {self.recorder.error}" if self.recorder and self.recorder.error else "")
        if problem and problem != self._last_error:
            self._last_error = problem
            self.error.emit(problem)
            if s.error and not s.running:
                self.stop()
