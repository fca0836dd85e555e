"""Fault injectors shared by tests/test_faults_*.py: a microphone that can be unplugged, a file that
fills up like a full disk, a GPU whose memory fills up, SIGTERM to a running command, and recording
checks."""
from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import threading
import time
from typing import Callable

import av
import numpy as np
import torch

from knotanim.errors import InputError
from knotanim.sinks.video import VideoFileSink


def tone(seconds: float, sr: int = 16000) -> np.ndarray:
    """A continuous 220 Hz tone (never silent, so silence in a recording marks the microphone gap)."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def wait_until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


class UnpluggableMic:
    """A fake microphone playing a tone in real time that the test can unplug and plug back.

    unplug(mode): "error" sets `.error` like PortAudio's finished callback; "stall" just stops
    calling back. While unplugged, start() raises InputError like a missing device does.
    """

    name = "fake usb mic"

    def __init__(self, sr: int = 16000, block: int = 320):
        self.sr, self.block = sr, block
        self.error: str | None = None
        self.present = threading.Event()
        self.present.set()
        self.starts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, write) -> None:
        if not self.present.is_set():
            raise InputError(f"no input audio device matches {self.name!r}")
        self.starts += 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(write,), daemon=True)
        self._thread.start()

    def _run(self, write) -> None:
        t0, sent = time.monotonic(), 0
        x = tone(1.0, self.sr)
        while not self._stop.is_set() and self.present.is_set():
            due = t0 + (sent + self.block) / self.sr
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            if not self.present.is_set():
                return
            pos = sent % (x.shape[0] - self.block)
            write(x[pos:pos + self.block])
            sent += self.block

    def unplug(self, mode: str = "error") -> None:
        self.present.clear()
        if mode == "error":
            self.error = f"microphone {self.name!r} stopped (device unplugged or busy?)"

    def plug(self) -> None:
        self.present.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None


class FillingFile(io.RawIOBase):
    """A binary file that raises ENOSPC once `limit` bytes were written (a disk filling up)."""

    def __init__(self, path, limit: int):
        self.f, self.limit, self.written = open(path, "wb"), int(limit), 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.written + len(b) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += len(b)
        return self.f.write(b)

    def seek(self, *a) -> int:
        return self.f.seek(*a)

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()
        super().close()


def full_disk_sink(limit: int):
    """A VideoFileSink factory whose file fills up after `limit` bytes."""
    class FullDiskSink(VideoFileSink):
        def _target(self):
            self.file = FillingFile(self.path, limit)
            return self.file

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.file.close()
    return FullDiskSink


def probe_recording(path) -> dict:
    """Decode a recording: frames, video/audio seconds, and the audio (mono float) to check gaps."""
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return {"frames": frames, "video_s": frames / 25, "audio_s": audio.shape[0] / rate, "audio": audio, "rate": rate}


def longest_silence(audio: np.ndarray, rate: int, threshold: float = 0.01) -> float:
    """Seconds of the longest run of 10 ms windows quieter than `threshold` RMS."""
    win = rate // 100
    n = audio.shape[0] // win
    rms = np.sqrt((audio[: n * win].reshape(n, win) ** 2).mean(axis=1))
    best = run = 0
    for quiet in rms < threshold:
        run = run + 1 if quiet else 0
        best = max(best, run)
    return best / 100


def sigterm_when_ready(cmd: list[str], ready: Callable[[list[str]], bool], settle_s: float,
                       timeout: float = 60.0) -> tuple[int, str]:
    """Run `cmd` (one OpenMP thread), read its stderr line by line until `ready(lines read so far)`,
    let it run `settle_s` seconds more, send SIGTERM and wait up to `timeout` s for it to exit.
    Returns (exit code, all of stderr). Fails, showing what was read, if stderr ends before `ready`."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        lines: list[str] = []
        while not ready(lines):
            line = proc.stderr.readline()
            assert line, "the command ended before it was ready:\n" + "".join(lines)
            lines.append(line)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, "".join(lines) + rest


class FillingGpu:
    """Stands in for a KnotAnimator on a CUDA GPU whose memory fills up: it runs the real (tiny, CPU)
    model, but once `chunks_before_full` chunks were generated, push_audio raises
    torch.OutOfMemoryError (like a CUDA allocation failing) and so does making a new stream."""

    def __init__(self, real, chunks_before_full: int):
        self.real, self.chunks_before_full = real, chunks_before_full
        self.config, self.model, self.autoencoder = real.config, real.model, real.autoencoder
        self.device = torch.device("cuda", 0)
        self.chunks = 0  # chunks generated
        self.failures = 0  # OutOfMemoryErrors raised
        self.failed_at: float | None = None  # time.monotonic() of the first one

    def _out_of_memory(self):
        self.failures += 1
        if self.failed_at is None:
            self.failed_at = time.monotonic()
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity "
                                     "of 4.00 GiB of which 3.50 MiB is free.\nIncluding non-PyTorch memory ...")

    def stream(self, reference, **kw):
        if self.chunks >= self.chunks_before_full:
            self._out_of_memory()  # the reference cache no longer fits either
        stream = self.real.stream(reference, **kw)
        push = stream.push_audio

        def push_audio(samples):
            if self.chunks >= self.chunks_before_full:
                self._out_of_memory()
            frames = push(samples)
            self.chunks += len(frames) // self.config.stream.chunk
            return frames

        stream.push_audio = push_audio
        return stream
