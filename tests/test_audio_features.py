"""Per-frame log-mel features: an independent reference (torch.stft), and streaming == whole clip."""
import numpy as np
import torch

from knotanim.config import KnotAnimConfig
from knotanim.frontends.audio_features import AudioFeatures, StreamingAudioFeatures, mel_filterbank


def _speechlike(seconds, rate, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    x = envelope * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size))
    return x.astype(np.float32)


def test_clip_features_match_a_torch_stft_log_mel():
    cfg = KnotAnimConfig()
    a = cfg.audio
    feats = AudioFeatures(cfg)
    x = _speechlike(2.0, a.sample_rate)
    got = feats.clip_features(x)
    assert got.shape == (x.size // cfg.samples_per_frame, a.n_mels, cfg.audio_window) and got.dtype == np.float32

    # The same definition through torch: zero-padded signal, Hann-windowed frames every hop, |STFT|^2,
    # the mel filters, log; frame i's window is mel frames [c_i - context, c_i + lookahead].
    pad_front = a.n_fft // 2 + a.context_frames * a.hop
    padded = torch.from_numpy(np.concatenate([np.zeros(pad_front, np.float32), x, np.zeros(a.n_fft * 4, np.float32)]))
    spec = torch.stft(padded, a.n_fft, a.hop, window=torch.hann_window(a.n_fft), center=False, return_complex=True)
    mel = torch.from_numpy(mel_filterbank(a.sample_rate, a.n_fft, a.n_mels)) @ spec.abs().pow(2)  # [n_mels, M]
    logmel = torch.log(mel + 1e-6).numpy()
    for i in (0, 1, 17, got.shape[0] - 1):
        first = feats.centre_mel_frame(i)  # STFT frame m starts at sample (m - context) * hop - n_fft / 2
        want = logmel[:, first : first + cfg.audio_window]
        np.testing.assert_allclose(got[i], want, atol=1e-4, rtol=1e-5)


def test_streaming_features_equal_the_whole_clip_for_any_block_sizes():
    cfg = KnotAnimConfig()
    x = _speechlike(3.0, cfg.audio.sample_rate, seed=1)
    whole = AudioFeatures(cfg).clip_features(x)
    stream, parts = StreamingAudioFeatures(cfg), []
    rng, i = np.random.default_rng(2), 0
    while i < x.size:
        n = int(rng.integers(1, 3000))
        stream.push(x[i : i + n])
        i += n
        if (k := stream.available()):
            parts.append(stream.pop(k))
    got = np.concatenate(parts)
    assert len(got) >= len(whole) - 2  # the last frames wait for their look-ahead
    assert np.array_equal(got, whole[: len(got)])
