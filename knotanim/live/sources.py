"""Audio sources for the live pipeline: a microphone (sounddevice/PortAudio) or a fake one (an array).

A source calls `write(samples)` with float32 mono blocks at the pipeline's sample rate (16 kHz)
from its own thread (PortAudio's callback thread, or a playback thread for the fake). The write
target is `AudioRing.write`, which never blocks or allocates. A microphone that cannot be opened at
16 kHz is opened at its native rate and resampled inside the callback with precomputed indices and
preallocated buffers (block sizes are chosen so every block maps to a whole number of samples).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from knotanim.errors import BackendUnavailable, InputError

Writer = Callable[[np.ndarray], None]


class AudioSource(Protocol):
    """start(write) begins delivering float32 mono blocks to `write`; stop() ends it (idempotent)."""

    name: str
    error: str | None  # set when the source stopped by itself (device lost, ...)

    def start(self, write: Writer) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class AudioDevice:
    index: int  # PortAudio device index
    name: str
    hostapi: str
    channels: int  # input or output channels, depending on the listing
    default_rate: float  # Hz

    def label(self) -> str:
        return f"{self.index}: {self.name} ({self.hostapi}, {self.default_rate:g} Hz)"


def _sounddevice():
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:  # OSError: PortAudio library missing
        raise BackendUnavailable(
            f"audio devices (microphones, --list-devices, --delayed-output) need sounddevice and PortAudio ({e}); "
            "install them with `pip install sounddevice` and `sudo apt-get install libportaudio2`") from None
    return sd


def list_devices(kind: str = "input") -> list[AudioDevice]:
    """Audio devices with input (kind="input") or output (kind="output") channels."""
    sd = _sounddevice()
    apis = [a["name"] for a in sd.query_hostapis()]
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    return [AudioDevice(i, d["name"], apis[d["hostapi"]], int(d[key]), float(d["default_samplerate"]))
            for i, d in enumerate(sd.query_devices()) if d[key] > 0]


def resolve_device(device: str | int | None, kind: str = "input") -> int | None:
    """A device index from an index, an exact name or a name fragment (None: the system default)."""
    if device in (None, "", "default"):
        return None
    devices = list_devices(kind)
    if isinstance(device, int) or str(device).isdigit():
        index = int(device)
        if any(d.index == index for d in devices):
            return index
        raise InputError(f"no {kind} audio device with index {index}; run `knotanim live --list-devices`")
    text = str(device).lower()
    exact = [d for d in devices if d.name.lower() == text]
    partial = [d for d in devices if text in d.name.lower()]
    if exact or partial:
        return (exact or partial)[0].index
    names = ", ".join(d.name for d in devices) or "none"
    raise InputError(f"no {kind} audio device matches {device!r} (available: {names})")


class BlockResampler:
    """Linear resampling of fixed blocks, in_block samples at in_rate -> out_block at out_rate.

    Everything is precomputed; `__call__` writes into a preallocated buffer and returns it.
    """

    def __init__(self, in_rate: int, out_rate: int, block_ms: float = 20.0):
        g = math.gcd(int(in_rate), int(out_rate))
        unit_in, unit_out = int(in_rate) // g, int(out_rate) // g
        m = max(1, round(block_ms / 1000 * in_rate / unit_in))
        self.in_block, self.out_block = unit_in * m, unit_out * m
        pos = np.arange(self.out_block) * (self.in_block / self.out_block)
        self.i0 = np.minimum(pos.astype(np.int64), self.in_block - 1)
        self.i1 = np.minimum(self.i0 + 1, self.in_block - 1)
        self.w = (pos - self.i0).astype(np.float32)
        self._a = np.empty(self.out_block, np.float32)
        self._b = np.empty(self.out_block, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        np.take(x, self.i0, out=self._a)
        np.take(x, self.i1, out=self._b)
        np.subtract(self._b, self._a, out=self._b)
        np.multiply(self._b, self.w, out=self._b)
        np.add(self._a, self._b, out=self._a)
        return self._a


class MicrophoneSource:
    """A PortAudio input device. device: index, name fragment or None (default). rate: Hz wanted."""

    def __init__(self, device: str | int | None = None, sample_rate: int = 16000, block_ms: float = 20.0):
        self.device, self.sample_rate, self.block_ms = device, int(sample_rate), block_ms
        self.name = "default microphone" if device in (None, "") else str(device)
        self.error: str | None = None
        self.status_flags = 0  # PortAudio overflows seen (input dropped by the OS)
        self._stream = None

    def start(self, write: Writer) -> None:
        sd = _sounddevice()
        index = resolve_device(self.device, "input")
        info = sd.query_devices(index, "input") if index is not None else sd.query_devices(kind="input")
        self.name = info["name"]
        try:
            self._stream = self._open(sd, index, self.sample_rate, None, write)
        except Exception:  # noqa: BLE001 - rate unsupported: open at the device's own rate
            native = int(info["default_samplerate"])
            try:
                self._stream = self._open(sd, index, native, BlockResampler(native, self.sample_rate, self.block_ms), write)
            except Exception as e:  # noqa: BLE001
                raise InputError(f"cannot open microphone {self.name!r}: {str(e).splitlines()[0]}") from None
        self._stream.start()

    def _open(self, sd, index, rate: int, resampler: BlockResampler | None, write: Writer):
        block = resampler.in_block if resampler else max(1, round(rate * self.block_ms / 1000))

        def callback(indata, frames, time_info, status):  # PortAudio thread: no locks, no allocations
            if status:
                self.status_flags += 1
            x = indata[:, 0]
            write(resampler(x) if resampler is not None else x)

        def finished():
            if self._stream is not None and not getattr(self, "_stopping", False):
                self.error = f"microphone {self.name!r} stopped (device unplugged or busy?)"

        return sd.InputStream(device=index, channels=1, samplerate=rate, blocksize=block, dtype="float32",
                              callback=callback, finished_callback=finished)

    def stop(self) -> None:
        self._stopping = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # noqa: BLE001 - the device may already be gone
                pass


class ArraySource:
    """A fake microphone: plays `samples` (float32 mono at sample_rate) in real time.

    speed: playback rate multiplier (1.0 = real time). loop: start over at the end instead of
    stopping (after the end, silence is delivered so the pipeline keeps running).
    """

    def __init__(self, samples: np.ndarray, sample_rate: int = 16000, block_ms: float = 20.0, speed: float = 1.0,
                 loop: bool = False, name: str = "audio file"):
        self.samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        self.sample_rate, self.speed, self.loop, self.name = int(sample_rate), float(speed), loop, name
        self.block = max(1, round(sample_rate * block_ms / 1000))
        self.error: str | None = None
        self.delivered = 0  # samples delivered so far
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, write: Writer) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._play, args=(write,), name="knotanim-fake-mic", daemon=True)
        self._thread.start()

    def _play(self, write: Writer) -> None:
        silence = np.zeros(self.block, np.float32)
        t0 = time.monotonic()
        n = self.samples.shape[0]
        while not self._stop.is_set():
            due = t0 + (self.delivered + self.block) / self.sample_rate / self.speed
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            pos = self.delivered % n if (self.loop and n) else self.delivered
            block = self.samples[pos:pos + self.block] if pos < n else silence
            if block.shape[0] < self.block:
                block = np.concatenate((block, silence[: self.block - block.shape[0]]))
            write(block)
            self.delivered += self.block

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None
