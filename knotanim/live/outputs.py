"""Outputs of the live pipeline: each receives paced LiveFrames through send() and never stalls it.

* FrameSlot: keeps the newest frame for a display to poll (the GUI's paint timer).
* RecorderOutput: mp4 with the captured microphone audio (fragmented, so a crash leaves a
  playable file), written by its own thread through the shared VideoFileSink.
* VirtualCameraOutput: pyvirtualcam, letterboxed to the camera's size, on its own thread.
* DelayedAudioOutput: the microphone audio played on an output device, delayed by the measured
  video latency, so a call that takes the picture from the virtual camera stays lip-synced.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from knotanim.live.compose import letterbox
from knotanim.live.pipeline import LiveFrame
from knotanim.live.ring import AudioRing
from knotanim.live.sources import BlockResampler, _sounddevice, resolve_device
from knotanim.live.timing import DropOldestQueue


class FrameSlot:
    """Holds the newest frame; take() returns it once (None when nothing new arrived)."""

    name = "preview"

    def __init__(self) -> None:
        self._frame: LiveFrame | None = None
        self.received = 0

    def send(self, frame: LiveFrame) -> None:
        self._frame = frame
        self.received += 1

    def take(self) -> LiveFrame | None:
        frame, self._frame = self._frame, None
        return frame

    def close(self) -> None:
        self._frame = None


class CallbackOutput:
    """Calls fn(frame) on the pacer thread (keep it quick)."""

    name = "callback"

    def __init__(self, fn: Callable[[LiveFrame], None]):
        self.fn = fn

    def send(self, frame: LiveFrame) -> None:
        self.fn(frame)

    def close(self) -> None:
        pass


class ThreadedOutput:
    """Base: send() enqueues (drop-oldest), a worker thread consumes. Subclasses define _consume()."""

    name = "output"

    def __init__(self, queue_items: int = 50):
        self.queue: DropOldestQueue[Any] = DropOldestQueue(queue_items)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"knotanim-{self.name}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self.queue.get(timeout=0.05)
            if item is None:
                if self._stop.is_set():
                    return
                continue
            if self.error is None:
                try:
                    self._consume(item)
                except Exception as e:  # noqa: BLE001 - surfaced through .error and send()
                    self.error = str(e) or type(e).__name__

    def _consume(self, item: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(self.error)

    def _finish(self) -> None:
        """Drain the queue and stop the worker (subclasses then release their resources)."""
        self._stop.set()
        self._thread.join(timeout=30)


class RecorderOutput(ThreadedOutput):
    """Records shown frames and the microphone audio to an mp4 (H.264 + AAC, fragmented).

    path: .mp4 file. ring: the pipeline's AudioRing. fps: frames per second. spf: audio samples
    per frame at the ring's rate. Each frame is written with the next spf samples of audio, so
    video and audio durations are equal; the audio starts at the first frame's own audio and
    re-aligns (a cut) only when the pipeline skipped ahead by more than `resync` seconds.
    sink_factory: makes the FrameSink (default VideoFileSink(path, width, height, fps, **kw); tests
    pass one that fails like a full disk). A failing sink stops the recording (error, then send()
    raises so the pipeline detaches it); close() still finalises what was written.
    """

    name = "recorder"

    def __init__(self, path: str | Path, ring: AudioRing, fps: int, spf: int, resync: float = 0.2,
                 audio_rate: int = 48000, crf: int = 20, gop_seconds: float = 1.0,
                 sink_factory: Callable[..., Any] | None = None):
        self.path, self.ring, self.fps, self.spf = Path(path), ring, fps, spf
        self.resync = int(resync * ring.sample_rate)
        self.audio_rate, self.crf, self.gop_seconds = audio_rate, crf, gop_seconds
        self.resampler = BlockResampler(ring.sample_rate, audio_rate, block_ms=1000 * spf / ring.sample_rate)
        if self.resampler.in_block != spf:
            raise ValueError(f"cannot resample {spf}-sample blocks from {ring.sample_rate} Hz to {audio_rate} Hz")
        self.sink = None
        self.sink_factory = sink_factory
        self.cursor: int | None = None
        self.frames = 0
        from knotanim.sinks.base import check_output_file

        check_output_file(self.path)
        super().__init__(queue_items=4 * fps)

    def send(self, frame: LiveFrame) -> None:
        self._check()
        if self.cursor is None or (not frame.repeated and abs(frame.audio_pos - self.cursor) > self.resync):
            self.cursor = frame.audio_pos
        audio = self.ring.read(self.cursor, self.spf)
        self.cursor += self.spf
        self.queue.put((frame.image, audio))

    def _consume(self, item: tuple[np.ndarray, np.ndarray]) -> None:
        from knotanim.sinks.video import VideoFileSink

        image, audio = item
        if self.sink is None:
            h, w = image.shape[:2]
            self.sink = (self.sink_factory or VideoFileSink)(self.path, w, h, self.fps, crf=self.crf,
                                                            audio_rate=self.audio_rate, preset="veryfast",
                                                            gop_seconds=self.gop_seconds)
            self.sink.open()
        self.sink.write(image)
        self.sink.write_audio(self.resampler(audio).copy())
        self.frames += 1

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def close(self) -> None:
        self._finish()
        if self.sink is not None:
            self.sink.close()


class VirtualCameraOutput(ThreadedOutput):
    """Sends frames to a virtual camera (pyvirtualcam), letterboxed to width x height pixels.

    backend / device: passed to pyvirtualcam.Camera (None: try every backend / first device).
    Opening happens here, so a missing device raises at once (see vcam.diagnose for the fix).
    """

    name = "virtual camera"

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 25, backend: str | None = None,
                 device: str | None = None):
        from knotanim.live.vcam import open_camera

        self.width, self.height = int(width), int(height)
        self.camera = open_camera(self.width, self.height, fps, backend=backend, device=device)
        self.device = self.camera.device
        self.frames = 0
        super().__init__(queue_items=2)

    def send(self, frame: LiveFrame) -> None:
        self._check()
        self.queue.put(frame.image)

    def _consume(self, image: np.ndarray) -> None:
        self.camera.send(letterbox(image, self.width, self.height))
        self.frames += 1

    def close(self) -> None:
        self._finish()
        self.camera.close()


class DelayedAudioOutput:
    """Plays the ring's audio on an output device, `delay()` seconds behind the microphone.

    delay: a callable returning the wanted delay in seconds (the pipeline's measured latency);
    the playback position follows it, jumping only when it is off by more than `tolerance` seconds.
    """

    name = "delayed audio"

    def __init__(self, ring: AudioRing, device: str | int | None, delay: Callable[[], float | None],
                 tolerance: float = 0.04, block_ms: float = 20.0):
        sd = _sounddevice()
        self.ring, self.delay, self.error = ring, delay, None
        self.tolerance = int(tolerance * ring.sample_rate)
        self.cursor: int | None = None
        index = resolve_device(device, "output")

        def callback(outdata, frames, time_info, status):  # PortAudio thread: no locks, no allocations
            d = self.delay() or 0.0
            target = self.ring.position - frames - int(d * self.ring.sample_rate)
            if self.cursor is None or abs(self.cursor - target) > self.tolerance:
                self.cursor = target
            self.ring.read_into(outdata[:, 0], self.cursor)
            self.cursor += frames

        self.stream = sd.OutputStream(device=index, channels=1, samplerate=ring.sample_rate, dtype="float32",
                                      blocksize=int(ring.sample_rate * block_ms / 1000), callback=callback)
        self.stream.start()

    def send(self, frame: LiveFrame) -> None:
        pass  # audio flows through the device callback

    def close(self) -> None:
        try:
            self.stream.stop()
            self.stream.close()
        except Exception:  # noqa: BLE001 - the device may be gone
            pass
