"""Timing pieces of the live pipeline: a drop-oldest frame queue, a fixed-rate pacer, a latency meter.

All three take their clock as an argument so tests can drive them with a fake one.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace
from typing import Callable, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded FIFO whose put() never blocks: when full, the oldest item is dropped and counted.

    maxsize: items held (>= 1). dropped: items discarded so far. Thread-safe.
    """

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = int(maxsize)
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Append `item`; returns False when an older item had to be dropped to make room."""
        with self._lock:
            dropped = len(self._items) >= self.maxsize
            if dropped:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._ready.notify()
            return not dropped

    def get(self, timeout: float | None = 0.0) -> T | None:
        """The oldest item, or None if none arrives within `timeout` seconds (0: don't wait)."""
        with self._lock:
            if not self._items and timeout:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Pacer:
    """Ticks at a steady `fps` (frames per second) on an absolute schedule.

    wait() sleeps until the next tick and returns how many ticks were missed (0 when on time).
    A caller that falls behind by more than one period skips the missed ticks instead of
    bursting to catch up, so output stays at `fps` and never runs ahead.
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep):
        self.period = 1.0 / float(fps)
        self.clock, self.sleep = clock, sleep
        self.next_tick: float | None = None
        self.ticks = 0
        self.missed = 0  # ticks skipped because the caller was late

    def wait(self) -> int:
        now = self.clock()
        if self.next_tick is None:
            self.next_tick = now
        delay = self.next_tick - now
        missed = 0
        if delay > 0:
            self.sleep(delay)
        elif -delay >= self.period:  # late by whole periods: skip them
            missed = int(-delay // self.period)
            self.next_tick += missed * self.period
        self.missed += missed
        self.ticks += 1
        self.next_tick += self.period
        return missed


class RateMeter:
    """Events per second over the last `window` seconds (e.g. frames shown)."""

    def __init__(self, window: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self._times: deque[float] = deque()
        self._first: float | None = None

    def add(self, count: int = 1, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if self._first is None:
            self._first = now
        self._times.extend([now] * count)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        """Events per second: events in the window / the window (or the time since the first event)."""
        now = self.clock() if now is None else now
        self._trim(now)
        span = min(self.window, now - self._first) if self._first is not None else 0.0
        return len(self._times) / span if span >= 0.2 else 0.0


class LatencyMeter:
    """Median of the last `size` latency samples (seconds); robust to the odd late frame."""

    def __init__(self, size: int = 50):
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        if np.isfinite(seconds) and seconds >= 0:
            self._values.append(float(seconds))

    @property
    def value(self) -> float | None:
        return float(np.median(self._values)) if self._values else None


class PacedFrames:
    """Which frame the pacer shows at each tick: the next one generated, else the last one again.

    `next()` takes the oldest waiting frame from `queue` (a DropOldestQueue of LiveFrames); with none
    waiting it repeats the last frame (a copy marked repeated; None before the first). A frame left
    waiting at every tick for `drain_ticks` ticks is backlog that generation and pacing, both at fps,
    would carry for ever (latency up one frame per hiccup): then one frame is dropped. `repeated` and
    `drained` count both."""

    def __init__(self, queue, drain_ticks: float):
        self.queue, self.drain_ticks = queue, drain_ticks
        self.last = None
        self.repeated = self.drained = 0
        self._spare_ticks = 0  # consecutive ticks after which a frame was still waiting

    def next(self):
        item = self.queue.get(0)
        if item is None:
            self._spare_ticks = 0
            if self.last is None:
                return None
            self.repeated += 1
            self.last = replace(self.last, repeated=True)
            return self.last
        self._spare_ticks = self._spare_ticks + 1 if len(self.queue) else 0
        if self._spare_ticks >= self.drain_ticks:
            newer = self.queue.get(0)
            if newer is not None:
                item = newer
                self.drained += 1
            self._spare_ticks = 0
        self.last = item
        return item


class PushLog:
    """Where each stream sample came from in the audio ring.

    The stream's audio is the ring's with gaps: when generation falls behind, the pipeline skips ahead
    to the newest audio, and the stream carries on as if nothing was skipped. `pushed(ring_position, n)`
    records each push; `ring_position(stream_sample)` maps back (the capture time of a frame's audio,
    hence its latency); `forget_before(stream_sample)` drops records no frame can need any more."""

    def __init__(self) -> None:
        self._starts: deque[tuple[int, int]] = deque()  # (stream sample, ring position) where pushes began
        self.stream_samples = 0

    def __len__(self) -> int:
        return len(self._starts)

    def clear(self) -> None:
        self._starts.clear()
        self.stream_samples = 0

    def pushed(self, ring_position: int, n: int) -> None:
        self._starts.append((self.stream_samples, ring_position))
        self.stream_samples += n

    def ring_position(self, stream_sample: int) -> int:
        start, ring_start = self._starts[0]
        for s, r in self._starts:
            if s > stream_sample:
                break
            start, ring_start = s, r
        return ring_start + (stream_sample - start)

    def forget_before(self, stream_sample: int) -> None:
        while len(self._starts) > 1 and self._starts[1][0] <= stream_sample:
            self._starts.popleft()

