"""A preallocated single-writer ring of audio samples with absolute positions and arrival times.

The audio callback (`write`) copies samples into a fixed float32 array and advances a counter: it
never blocks (no locks) and never allocates arrays. Readers ask for samples by *absolute position*
(samples since the ring was created) with `read_into` / `read`; positions that are not written yet
or already overwritten read as zeros, so a slow reader degrades to silence, not to an error.

Arrival times: every write also stores (position after the write, monotonic seconds) in a small
preallocated table, so `capture_time(position)` can say when a given sample was captured. That is
the "audio in" end of the end-to-end latency figure.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


class AudioRing:
    """capacity: samples kept (e.g. 10 s * 16,000 Hz). sample_rate: Hz, for time conversions."""

    def __init__(self, capacity: int, sample_rate: int, clock: Callable[[], float] = time.monotonic,
                 stamps: int = 1024):
        if capacity < 1:
            raise ValueError("capacity must be >= 1 sample")
        self.capacity, self.sample_rate, self.clock = int(capacity), int(sample_rate), clock
        self._data = np.zeros(self.capacity, np.float32)
        self._written = 0  # absolute position of the next sample to write
        self._stamp_pos = np.zeros(stamps, np.int64)  # position after write k
        self._stamp_time = np.zeros(stamps, np.float64)  # monotonic seconds of write k
        self._stamps = 0
        self.overruns = 0  # writes larger than the ring (only the newest samples were kept)

    @property
    def position(self) -> int:
        """Absolute position (samples) just after the newest written sample."""
        return self._written

    # --- writer side (audio callback) -------------------------------------------------------------
    def write(self, samples: np.ndarray, now: float | None = None) -> None:
        """Append float32 mono samples (1-D; a (n, 1) callback buffer is accepted). Never blocks."""
        x = samples.reshape(-1) if samples.ndim > 1 else samples
        n = x.shape[0]
        if n > self.capacity:
            x, self.overruns = x[n - self.capacity:], self.overruns + 1
            self._written += n - self.capacity
            n = self.capacity
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._data[start:start + first] = x[:first]
        if first < n:
            self._data[: n - first] = x[first:]
        self._written += n
        k = self._stamps % self._stamp_pos.shape[0]
        self._stamp_pos[k] = self._written
        self._stamp_time[k] = self.clock() if now is None else now
        self._stamps += 1

    # --- reader side ------------------------------------------------------------------------------
    def oldest(self) -> int:
        """Oldest absolute position still held."""
        return max(0, self._written - self.capacity)

    def read_into(self, out: np.ndarray, start: int) -> int:
        """Fill `out` (float32 1-D) with samples [start, start + len(out)); returns how many were real.

        Positions before oldest() or at/after position read as 0. No arrays are allocated, so an
        output-device callback can use it.
        """
        n = out.shape[0]
        written = self._written
        lo, hi = max(start, written - self.capacity, 0), min(start + n, written)
        out[:] = 0.0
        if hi <= lo:
            return 0
        a = lo % self.capacity
        count = hi - lo
        first = min(count, self.capacity - a)
        out[lo - start: lo - start + first] = self._data[a:a + first]
        if first < count:
            out[lo - start + first: hi - start] = self._data[: count - first]
        # The writer may have lapped us while copying: blank what it overwrote.
        lost = self._written - self.capacity - lo
        if lost > 0:
            out[lo - start: lo - start + min(lost, count)] = 0.0
            return max(0, count - lost)
        return count

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n) as a new float32 array (zeros where not held)."""
        out = np.empty(n, np.float32)
        self.read_into(out, start)
        return out

    def capture_time(self, position: int) -> float | None:
        """Monotonic seconds at which the sample at absolute `position` was captured (None: unknown).

        A block written at time t ending at position p holds samples captured at
        t - (p - position) / sample_rate (the newest sample of a block arrives when it is delivered).
        """
        count = min(self._stamps, self._stamp_pos.shape[0])
        if count == 0:
            return None
        size = self._stamp_pos.shape[0]
        newest = (self._stamps - 1) % size
        # Walk back from the newest write to the first one ending at or after `position`.
        best = newest
        for i in range(count):
            k = (newest - i) % size
            if self._stamp_pos[k] < position:
                break
            best = k
        return float(self._stamp_time[best] - (self._stamp_pos[best] - position) / self.sample_rate)
