"""A microphone that may vanish: keep the stream alive on silence and reopen the device with backoff.

`ResilientSource` wraps an AudioSource (a MicrophoneSource, or a fake in tests). While the wrapped
source delivers audio, its blocks go straight to the pipeline's writer. When it fails (its `error`
is set, e.g. PortAudio's finished callback after an unplug) or goes quiet for `stall_seconds`
(no callback at all), a supervisor thread:

* writes silence at the real-time rate, starting where the last real sample ended, so the ring's
  position keeps following the wall clock (the portrait idles, the pacer keeps sending frames and a
  recording keeps audio and video aligned, with silence where the microphone was gone);
* sets `status` to a one-line message the window / status line shows;
* tries to reopen the device (stop(), then start() again) after `backoff` seconds, doubling up to
  `max_backoff`, and clears `status` (noting the recovery once) when audio flows again.

Blocks from an instance of the wrapped source that was given up on are discarded (a generation
number), so a late PortAudio callback never writes into the ring at the same time as the silence.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

Writer = Callable[[np.ndarray], None]


class ResilientSource:
    """Wraps `source` (an AudioSource). sample_rate: Hz of its blocks (the ring's rate)."""

    def __init__(self, source: Any, sample_rate: int = 16000, stall_seconds: float = 1.0, backoff: float = 0.5,
                 max_backoff: float = 5.0, block_ms: float = 20.0, clock: Callable[[], float] = time.monotonic):
        self.source, self.sample_rate = source, int(sample_rate)
        self.stall_seconds, self.backoff, self.max_backoff = stall_seconds, backoff, max_backoff
        self.block = max(1, round(self.sample_rate * block_ms / 1000))
        self.clock = clock
        self.error: str | None = None  # never set: a lost device is a status, not a failure
        self.status = ""  # what happened, while the device is gone ("" when all is well)
        self.losses = 0  # times the device was lost
        self.reopened = 0  # times it came back
        self.silence_samples = 0  # samples of silence written in its place
        self._write: Writer | None = None
        self._generation = 0
        self._last_write = 0.0  # clock() of the newest real block
        self._down = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return getattr(self.source, "name", "microphone")

    @property
    def down(self) -> bool:
        """True while the device is gone and silence is written in its place."""
        return self._down

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self, write: Writer) -> None:
        """Open the device (errors raise here, as for the wrapped source), then supervise it."""
        self._write = write
        self._stop.clear()
        self._down = False
        self._open()
        self._thread = threading.Thread(target=self._supervise, name="knotanim-mic-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self._generation += 1
        self._stop_inner()

    # --- internals ------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._generation += 1
        generation = self._generation
        write = self._write

        def on_block(samples: np.ndarray) -> None:  # the device's thread: no locks, no allocations
            if generation == self._generation and not self._down:
                write(samples)
                self._last_write = self.clock()

        if hasattr(self.source, "error"):
            self.source.error = None
        self._last_write = self.clock()
        self.source.start(on_block)

    def _stop_inner(self) -> None:
        try:
            self.source.stop()
        except Exception:  # noqa: BLE001 - the device may be gone already
            pass

    def _lost(self, reason: str) -> None:
        """Give up on the current instance of the device and start writing silence."""
        self._down = True
        self._generation += 1
        self.losses += 1
        self._stop_inner()
        self.status = f"microphone {self.name!r} lost ({reason}); feeding silence, reconnecting…"

    def _supervise(self) -> None:
        tick = self.block / self.sample_rate
        delay = self.backoff
        silence = np.zeros(self.block, np.float32)
        fed_until = 0.0  # clock() up to which silence has been written
        retry_at = 0.0
        while not self._stop.wait(tick / 2):
            now = self.clock()
            if not self._down:
                err = getattr(self.source, "error", None)
                if err or now - self._last_write > self.stall_seconds:
                    self._lost(str(err).splitlines()[0] if err else f"no audio for {now - self._last_write:.1f} s")
                    fed_until, retry_at, delay = self._last_write, now + self.backoff, self.backoff
                continue
            while fed_until + tick <= now:  # silence since the last real sample, at the real-time rate
                self._write(silence)
                self.silence_samples += self.block
                fed_until += tick
            if now >= retry_at:
                try:
                    self._down = False  # let the reopened device's blocks through
                    self._open()
                except Exception as e:  # noqa: BLE001 - still gone: try again later
                    self._down = True
                    self._generation += 1
                    self._stop_inner()
                    delay = min(self.max_backoff, delay * 2)
                    retry_at = now + delay
                    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                    self.status = (f"microphone {self.name!r} lost and still unavailable ({reason}); "
                                   f"feeding silence, retrying in {delay:.1f} s")
                    continue
                self._last_write = max(self._last_write, fed_until)
                self.reopened += 1
                self.status = ""
