"""Load-time audio augmentation that makes clean synthetic speech sound like a real microphone.

One call draws a random chain (room reverb, EQ tilt and peaks, band limit, noise, gain, soft
clipping) from the generator and applies it to float32 16 kHz mono samples, all in one FFT pass
plus a few pointwise ops. Phoneme timing is unchanged (the reverb is causal, no delay is added).
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def _reverb_ir(rng: np.random.Generator, rt60: float) -> np.ndarray:
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[: int(0.002 * SAMPLE_RATE)] = 0
    ir *= rng.uniform(0.1, 0.5) / (np.sqrt((ir ** 2).sum()) + 1e-9)
    ir[0] = 1.0  # direct path
    return ir


def augment_audio(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """float32 [N] -> float32 [N] in -1..1, a randomly 'recorded' version of x."""
    n = len(x)
    if n == 0:
        return x.astype(np.float32)
    ir = _reverb_ir(rng, rng.uniform(0.1, 0.7)) if rng.random() < 0.6 * strength else np.ones(1)
    m = 1 << int(np.ceil(np.log2(n + len(ir))))
    f = np.fft.rfftfreq(m, 1 / SAMPLE_RATE)
    spec = np.fft.rfft(x, m) * np.fft.rfft(ir, m)
    # EQ: spectral tilt + up to two peaks/notches (dB), then band limits (phone, laptop, headset)
    logf = np.log2(np.maximum(f, 20) / 1000)
    gain_db = rng.normal(0, 3 * strength) * logf
    for _ in range(int(rng.integers(0, 3))):
        c = rng.uniform(np.log2(0.2), np.log2(6))
        gain_db += rng.normal(0, 5 * strength) * np.exp(-((logf - c) / rng.uniform(0.3, 1.2)) ** 2)
    if rng.random() < 0.5 * strength:
        hp, lp = rng.uniform(50, 300), rng.uniform(3000, 7800)
        gain_db += -40 * (np.clip((hp - f) / hp, 0, 1) + np.clip((f - lp) / 1000, 0, 1))
    y = np.fft.irfft(spec * 10 ** (gain_db / 20), m)[:n]
    # noise: white, pink or brown at a random SNR
    if rng.random() < 0.8:
        kind = rng.integers(3)
        wn = np.fft.rfft(rng.standard_normal(m))
        wn = wn / np.maximum(f, 20) ** (0.5 * kind)
        noise = np.fft.irfft(wn, m)[:n]
        snr = rng.uniform(5, 45) / max(strength, 1e-3) if strength < 1 else rng.uniform(5, 45)
        p_sig = float((y ** 2).mean()) + 1e-9
        y = y + noise * np.sqrt(p_sig / (float((noise ** 2).mean()) + 1e-12) / 10 ** (snr / 10))
    y = y * 10 ** (rng.uniform(-14, 6) / 20)
    if rng.random() < 0.15 * strength:
        drive = rng.uniform(1.5, 4)
        y = np.tanh(y * drive) / np.tanh(drive)
    return np.clip(y, -1, 1).astype(np.float32)
