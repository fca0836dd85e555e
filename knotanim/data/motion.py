"""Non-audio motion: head pose, blinks, gaze and brows, scaled by `head_motion` in 0..1.

Driven by the clip's random generator (idle sway, saccades, blinks) plus a weak, randomly
weighted coupling to speech loudness, so it correlates with speech without being a function
of it. head_motion == 0 gives all-zero tracks (still head, open eyes, fixed gaze and brows).
"""
from __future__ import annotations

import numpy as np


def _smooth_noise(rng: np.random.Generator, n: int, fps: int, corr_s: float) -> np.ndarray:
    """float64 [n] unit-std noise low-passed with time constant corr_s seconds (forward-backward AR(1))."""
    a = np.exp(-1.0 / (corr_s * fps))
    k = int(8 * corr_s * fps) + 1  # margin on each side, long enough to estimate the std
    x = rng.standard_normal(n + 2 * k)
    y = np.empty_like(x)
    acc = 0.0
    for i, v in enumerate(x):
        acc = a * acc + (1 - a) * v
        y[i] = acc
    acc = 0.0
    for i in range(len(y) - 1, -1, -1):
        acc = a * acc + (1 - a) * y[i]
        y[i] = acc
    # normalise by the std of the whole (long) sequence, not of the window: short clips keep
    # the same amplitude statistics as long ones
    return y[k:k + n] / (y[k // 2:len(y) - k // 2].std() + 1e-9)


def motion_tracks(rng: np.random.Generator, n: int, fps: int, head_motion: float, size: int,
                  loudness: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-frame float32 tracks [n]: yaw, pitch, roll (degrees), tx, ty (pixels), blink (0..1),
    gaze_x, gaze_y (-1..1), brow (-1..1)."""
    a = float(np.clip(head_motion, 0, 1))
    keys = ("yaw", "pitch", "roll", "tx", "ty", "blink", "gaze_x", "gaze_y", "brow")
    if a == 0 or n == 0:
        return {k: np.zeros(n, np.float32) for k in keys}
    t = np.arange(n) / fps
    loud = np.zeros(n) if loudness is None else np.asarray(loudness, np.float64)
    loud_s = np.convolve(np.pad(loud, 2, mode="edge"), np.ones(5) / 5, mode="valid")  # [n]
    couple = rng.uniform(0, 1)
    out = {}
    for k, amp, corr in (("yaw", 7.0, 1.2), ("pitch", 4.5, 0.9), ("roll", 3.0, 1.5)):
        sway = np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
        track = amp * (0.7 * _smooth_noise(rng, n, fps, corr) + 0.3 * sway + rng.normal(0, 0.3))
        out[k] = a * np.clip(track, -3 * amp, 3 * amp)
    out["pitch"] = out["pitch"] + a * couple * 3.0 * (loud_s - loud_s.mean())  # nodding with emphasis
    out["tx"] = a * size * 0.025 * (_smooth_noise(rng, n, fps, 1.5) + rng.normal(0, 0.4))
    out["ty"] = a * size * 0.015 * (_smooth_noise(rng, n, fps, 1.5) + rng.normal(0, 0.4))
    # blinks: Poisson onsets, ~0.1-0.35 per second, each a fast close and slower open (~0.25 s)
    blink = np.zeros(n)
    rate = rng.uniform(0.1, 0.35) * (0.5 + 0.5 * a)
    tt = rng.exponential(1 / rate) * rng.uniform(0, 1)
    while tt < n / fps:
        dur = rng.uniform(0.18, 0.32)
        ph = (t - tt) / dur
        shape = np.where(ph < 0.35, ph / 0.35, 1 - (ph - 0.35) / 0.65)
        blink = np.maximum(blink, np.where((ph >= 0) & (ph <= 1), shape, 0))
        tt += dur + rng.exponential(1 / rate)
    out["blink"] = np.clip(blink, 0, 1)
    # gaze: saccades to random targets, held, then a quick smooth move
    gx, gy = np.zeros(n), np.zeros(n)
    cur = np.array([rng.normal(0, 0.25), rng.normal(0, 0.15)])
    i = 0
    while i < n:
        hold = int(rng.uniform(0.3, 2.0) * fps)
        nxt = np.array([rng.normal(0, 0.35), rng.normal(0, 0.2)]) * a
        ramp = np.clip(np.arange(hold) / 2.0, 0, 1)
        seg = cur[None] * (1 - ramp[:, None]) + nxt[None] * ramp[:, None]
        gx[i:i + hold], gy[i:i + hold] = seg[: n - i, 0], seg[: n - i, 1]
        cur, i = nxt, i + hold
    out["gaze_x"], out["gaze_y"] = np.clip(gx, -1, 1), np.clip(gy, -1, 1)
    out["brow"] = np.clip(a * (0.35 * _smooth_noise(rng, n, fps, 0.8) + couple * 0.8 * loud_s), -1, 1)
    return {k: np.asarray(out[k], np.float32) for k in keys}
