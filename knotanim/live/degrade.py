"""Graceful degradation: when generation is slower than real time, step down the quality ladder.

The ladder is a list of `Rung`s (knotanim.ladder), best first: the chosen model at its steps, then fewer sampler
steps, then (optionally) a smaller fallback model. `DegradeController.observe` is told how long
each chunk took; when the real-time factor (compute seconds per second of video) stays above 1
for `patience` chunks (or any one chunk is 3x too slow), it moves one rung down. Below the last rung nothing else can be switched:
the pipeline then repeats frames and skips audio to stay live, and the message says so.

A step down is not for good: a slow spell (another program busy for a moment, a one-off stall) would
otherwise cost the rest of the session. After `recover_after_s` seconds of video in which every chunk
kept up, the controller tries the rung above again. If that rung falls behind within `probe_s` seconds
of video, it steps down as before (a few late chunks: the pacer repeats a frame or two) and waits twice
as long before the next try, up to `recover_max_s`; a rung that holds for `probe_s` resets the wait.
"""
from __future__ import annotations

from knotanim.ladder import Rung


class DegradeController:
    """Watches the real-time factor and picks the rung of `ladder` to use.

    fps: video frames per second needed. threshold: real-time factor above which we are too slow
    (1.0 = exactly real time; a little headroom is kept by default). patience: consecutive slow
    chunks before stepping down. enabled: False keeps the first rung forever. recover_after_s, probe_s,
    recover_max_s: seconds of video before trying the rung above, before a rung tried again counts as
    holding, and the longest wait the doubling reaches (module docstring).
    """

    def __init__(self, ladder: list[Rung], fps: float, threshold: float = 0.95, patience: int = 3,
                 enabled: bool = True, recover_after_s: float = 30.0, recover_max_s: float = 600.0,
                 probe_s: float = 10.0):
        if not ladder:
            raise ValueError("the ladder needs at least one profile")
        self.ladder, self.fps, self.threshold, self.patience, self.enabled = ladder, fps, threshold, patience, enabled
        self.recover_after_s, self.recover_max_s, self.probe_s = recover_after_s, recover_max_s, probe_s
        self.level = 0
        self.slow_chunks = 0
        self.recover_wait_s = recover_after_s  # video seconds that must keep up before trying the rung above
        self.keeping_up_s = 0.0  # video seconds of consecutive chunks that kept up, on this rung
        self.probe_left_s: float | None = None  # after a step up: video seconds until that rung counts as holding
        self.steps_down = self.steps_up = 0  # rung changes so far
        self.rtf: float | None = None  # smoothed compute seconds per video second
        self.message = ""
        self.repeating = False  # on the last rung and still too slow

    @property
    def profile(self) -> Rung:
        return self.ladder[self.level]

    def observe(self, frames: int, seconds: float) -> bool:
        """A chunk of `frames` frames took `seconds` of compute; True when the profile changed."""
        if frames <= 0:
            return False
        rtf = seconds * self.fps / frames
        self.rtf = rtf if self.rtf is None else 0.7 * self.rtf + 0.3 * rtf
        video_s = frames / self.fps
        if self.probe_left_s is not None:
            self.probe_left_s -= video_s
        if rtf <= self.threshold:
            self.slow_chunks = 0
            if self.repeating and self.rtf <= self.threshold:
                self.repeating, self.message = False, f"keeping up with {self.profile.name}"
            if self.probe_left_s is not None and self.probe_left_s <= 0:  # the rung tried again holds
                self.probe_left_s, self.recover_wait_s = None, self.recover_after_s
            return self._maybe_step_up(video_s)
        self.keeping_up_s = 0.0
        self.slow_chunks += 1
        if self.slow_chunks < self.patience and rtf < 3 * self.threshold:  # far too slow: act at once
            return False
        self.slow_chunks = 0
        generated_fps = self.fps / self.rtf
        if self.enabled and self.level + 1 < len(self.ladder):
            old = self.profile.name
            self.level += 1
            self.steps_down += 1
            self.rtf = None  # measure the new profile afresh
            if self.probe_left_s is not None:  # the rung tried again did not hold: wait longer next time
                self.recover_wait_s = min(2 * self.recover_wait_s, self.recover_max_s)
            self.probe_left_s = None
            self.message = (f"too slow with {old} ({generated_fps:.1f} of {self.fps:g} frames/s): "
                            f"switched to {self.profile.name}")
            return True
        self.repeating = True
        self.message = (f"this machine renders {generated_fps:.1f} of {self.fps:g} frames/s with {self.profile.name}: "
                        "repeating frames and skipping audio to stay live (a GPU or a smaller model helps)")
        return False

    def _maybe_step_up(self, video_s: float) -> bool:
        """After recover_wait_s seconds of video that kept up below the top rung: try the rung above."""
        if not self.enabled or self.level == 0:
            return False
        self.keeping_up_s += video_s
        if self.keeping_up_s < self.recover_wait_s:
            return False
        old = self.profile.name
        self.level -= 1
        self.steps_up += 1
        self.rtf, self.keeping_up_s, self.slow_chunks = None, 0.0, 0
        self.probe_left_s = self.probe_s
        self.message = f"keeping up with {old}: trying {self.profile.name} again"
        return True
