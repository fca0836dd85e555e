"""Speech -> one log-mel feature window per video frame.

Mel frame m is centred on sample m * hop (Hann window of n_fft samples; samples before 0 are
zero). Video frame i covers samples [i * spf, (i + 1) * spf); its centre is mel frame
c_i = (i * spf + spf / 2) / hop, and its feature window is mel frames
[c_i - context_frames, c_i + lookahead_frames]. The look-ahead is explicit: frame i can be made
once `samples_needed(i)` samples have arrived.

`clip_features` serves training (a whole clip at once) and `StreamingAudioFeatures` the stream
(samples pushed as they arrive); both call `_mel_window` on the same sample spans, so they agree
exactly.

The arithmetic is numpy's, single-threaded: the stream computes a few frames' features per chunk,
and torch's intra-op pool (one thread per core) spin-waits after every small op it parallelises.
On a 32-core GPU host a compiled stream of the default model once burnt ~20 times its chunks' wall
time in process CPU (docs/reliability.md, the H200 soak); features done in numpy keep that pool idle.
The matrix product with the mel filters is an einsum, not a BLAS call, for the same reason (BLAS
threads spin too).
"""
from __future__ import annotations

import numpy as np

from knotanim.config import KnotAnimConfig


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 40.0, fmax: float | None = None) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters on the HTK mel scale, each normalised to unit area."""
    fmax = fmax or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, bins.size), dtype=np.float32)
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (bins - lo) / max(mid - lo, 1e-9)
        down = (hi - bins) / max(hi - mid, 1e-9)
        fb[i] = np.clip(np.minimum(up, down), 0, None)
        area = fb[i].sum()
        if area > 0:
            fb[i] /= area
    return fb


class AudioFeatures:
    """Per-video-frame log-mel windows. Output: float32 [T, n_mels, W], W = config.audio_window."""

    def __init__(self, config: KnotAnimConfig):
        a = config.audio
        self.audio, self.spf = a, config.samples_per_frame
        self.window = config.audio_window
        self.fbank = mel_filterbank(a.sample_rate, a.n_fft, a.n_mels)  # [n_mels, n_fft/2+1]
        self.hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(a.n_fft) / a.n_fft)).astype(np.float32)  # periodic

    def centre_mel_frame(self, i: int) -> int:
        return (i * self.spf + self.spf // 2) // self.audio.hop

    def first_sample(self, i: int) -> int:
        """First sample (may be negative: zeros) that frame i's window reads."""
        return (self.centre_mel_frame(i) - self.audio.context_frames) * self.audio.hop - self.audio.n_fft // 2

    def samples_needed(self, i: int) -> int:
        """Samples that must have arrived before frame i's features can be computed."""
        return (self.centre_mel_frame(i) + self.audio.lookahead_frames) * self.audio.hop + self.audio.n_fft // 2

    def _mel_window(self, spans: np.ndarray) -> np.ndarray:
        """spans: float32 [T, (W - 1) * hop + n_fft] samples -> float32 [T, n_mels, W] log-mel."""
        a = self.audio
        frames = np.lib.stride_tricks.sliding_window_view(spans, a.n_fft, axis=-1)[:, :: a.hop]  # [T, W, n_fft]
        spec = np.fft.rfft(frames * self.hann, axis=-1)  # [T, W, n_fft/2+1]
        power = (spec.real**2 + spec.imag**2).astype(np.float32)
        mel = np.einsum("twf,mf->tmw", power, self.fbank)  # [T, n_mels, W]
        return np.log(mel + np.float32(1e-6)).astype(np.float32)

    def span_length(self) -> int:
        return (self.window - 1) * self.audio.hop + self.audio.n_fft

    def clip_features(self, samples: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """samples: float32 [N] mono at the config's rate -> [T, n_mels, W], T = n_frames or N // spf.

        Samples past the end of `samples` read as zeros.
        """
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        T = samples.size // self.spf if n_frames is None else n_frames
        if T == 0:
            return np.zeros((0, self.audio.n_mels, self.window), np.float32)
        start = self.first_sample(0)
        length = self.span_length()
        end = self.first_sample(T - 1) + length
        padded = np.zeros(end - start, np.float32)
        src_lo, src_hi = max(0, start), min(samples.size, end)
        if src_hi > src_lo:
            padded[src_lo - start : src_hi - start] = samples[src_lo:src_hi]
        offsets = np.array([self.first_sample(i) - start for i in range(T)])
        return self._mel_window(padded[offsets[:, None] + np.arange(length)])


class StreamingAudioFeatures:
    """Incremental `AudioFeatures`: push samples, pop features for frames whose audio is complete.

    Keeps only the samples still needed (a few hundred ms), so memory is flat over any length.
    """

    def __init__(self, config: KnotAnimConfig):
        self.features = AudioFeatures(config)
        self.reset()

    def reset(self) -> None:
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # absolute index of _buffer[0]
        self._received = 0  # samples pushed so far (absolute)
        self.next_frame = 0  # next frame whose features have not been popped

    @property
    def samples_received(self) -> int:
        return self._received

    def push(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buffer = np.concatenate((self._buffer, samples))
        self._received += samples.size

    def available(self) -> int:
        """Frames from next_frame on whose audio (including look-ahead) has fully arrived."""
        f, n = self.features, 0
        while f.samples_needed(self.next_frame + n) <= self._received:
            n += 1
        return n

    def pop(self, count: int) -> np.ndarray:
        """Features [count, n_mels, W] for frames next_frame .. next_frame + count - 1.

        Frames whose look-ahead reaches past the samples received read zeros there (used at the end
        of a stream).
        """
        f = self.features
        length = f.span_length()
        spans = np.zeros((count, length), np.float32)
        for n in range(count):
            lo = f.first_sample(self.next_frame + n) - self._buffer_start
            src_lo, src_hi = max(0, lo), min(self._buffer.size, lo + length)
            if src_hi > src_lo:
                spans[n, src_lo - lo : src_hi - lo] = self._buffer[src_lo:src_hi]
        self.next_frame += count
        # Drop samples no future frame will read.
        keep_from = max(0, f.first_sample(self.next_frame)) - self._buffer_start
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._buffer_start += keep_from
        return f._mel_window(spans)
