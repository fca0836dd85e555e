"""Audio decoding: formats, rates, channel mixing, NaN cleaning, blocks and bad-input messages."""
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from knotanim.errors import InputError
from knotanim.frontends.audio_io import clean_samples, iter_audio_blocks, load_audio, probe_audio, write_wav


def _tone(seconds, rate, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)]) if channels > 1 else x


def _encode(path, samples, rate, codec, container_format=None):
    """Encode float32 (channels, n) with PyAV (any codec/container it writes)."""
    x = np.atleast_2d(samples).astype(np.float32)
    layout = "mono" if x.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=container_format) as out:
        s = out.add_stream(codec, rate=rate, layout=layout)
        names = [f.name for f in s.codec_context.codec.audio_formats]
        fmt = next(f for f in ("fltp", "flt", "s16p", "s16") if f in names)
        planar = fmt.endswith("p")
        step = 4096
        for i in range(0, x.shape[1], step):
            block = x[:, i:i + step]
            data = block if planar else block.T.reshape(1, -1)
            if fmt.startswith("s16"):
                data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            out.mux(s.encode(frame))
        out.mux(s.encode(None))


def _float_wav(path, samples, rate):
    """A 32-bit IEEE-float mono WAV (NaN/Inf survive in it)."""
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def test_stereo_48k_wav_to_mono_16k(tmp_path):
    stereo = _tone(1.5, 48000, channels=2)  # right channel = 2x left
    write_wav(tmp_path / "s.wav", stereo, 48000)
    info = probe_audio(tmp_path / "s.wav")
    assert (info.sample_rate, info.channels) == (48000, 2) and abs(info.duration - 1.5) < 1e-3
    mono = load_audio(tmp_path / "s.wav", 16000)
    assert mono.dtype == np.float32 and mono.ndim == 1 and abs(len(mono) - 24000) <= 2
    # downmix is the mean: (0.25 + 0.5) amplitude -> 0.375
    assert abs(np.abs(mono[1000:-1000]).max() - 0.375) < 0.01


@pytest.mark.parametrize("name, codec, fmt", [("a.flac", "flac", None), ("a.mp3", "mp3", None),
                                              ("a.ogg", "libopus", "ogg"), ("a.m4a", "aac", "mp4")])
def test_compressed_formats(tmp_path, name, codec, fmt):
    rate = 48000 if codec in ("libopus",) else 44100
    _encode(tmp_path / name, _tone(1.0, rate, channels=2), rate, codec, fmt)
    x = load_audio(tmp_path / name, 16000)
    assert abs(len(x) / 16000 - 1.0) < 0.08  # codec padding / priming
    assert 0.2 < np.abs(x).max() < 0.6


def test_video_file_audio_track(tmp_path):
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=48000, layout="mono")
        tone = _tone(1.0, 48000)
        for i in range(25):
            f = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
            af = av.AudioFrame.from_ndarray(tone[None, i * 1920:(i + 1) * 1920], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, i * 1920, Fraction(1, 48000)
            out.mux(a.encode(af))
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    x = load_audio(path, 16000)
    assert abs(len(x) / 16000 - 1.0) < 0.08 and np.abs(x).max() > 0.3


def test_nan_inf_cleaned(tmp_path):
    x = _tone(0.5, 16000)
    x[100], x[200], x[300], x[400] = np.nan, np.inf, -np.inf, 7.0
    _float_wav(tmp_path / "nan.wav", x, 16000)
    y = load_audio(tmp_path / "nan.wav", 16000)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert y[100] == 0.0 and y[200] == 1.0 and y[300] == -1.0
    assert np.array_equal(clean_samples(np.array([np.nan, 2.0, -np.inf])), np.array([0.0, 1.0, -1.0], np.float32))


def test_blocks_are_exact_and_stream(tmp_path):
    write_wav(tmp_path / "t.wav", _tone(2.3, 22050), 22050)
    blocks = list(iter_audio_blocks(tmp_path / "t.wav", 16000, block_seconds=0.5))
    assert all(len(b) == 8000 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 8000
    assert abs(sum(len(b) for b in blocks) - 36800) <= 2
    stereo = next(iter_audio_blocks(tmp_path / "t.wav", 48000, block_seconds=0.1, channels=2))
    assert stereo.shape == (2, 4800) and np.allclose(stereo[0], stereo[1])


def test_silent_audio_is_fine(tmp_path):
    write_wav(tmp_path / "quiet.wav", np.zeros(8000, np.float32), 16000)
    assert np.abs(load_audio(tmp_path / "quiet.wav", 16000)).max() == 0.0


def test_bad_audio(tmp_path):
    (tmp_path / "text.wav").write_text("definitely not audio\n" * 20)
    with pytest.raises(InputError, match="not an audio file"):
        probe_audio(tmp_path / "text.wav")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError, match="no samples"):
        load_audio(tmp_path / "empty.wav", 16000)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(tmp_path / "zero.wav", 16000)
    with pytest.raises(InputError, match="does not exist"):
        probe_audio(tmp_path / "missing.wav")
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "pic.png")
    with pytest.raises(InputError, match="no audio track|not an audio file"):
        probe_audio(tmp_path / "pic.png")


def test_truncated_wav_keeps_what_decodes(tmp_path):
    write_wav(tmp_path / "full.wav", _tone(1.0, 16000), 16000)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2 + 1])
    x = load_audio(tmp_path / "cut.wav", 16000)
    assert 0.4 < len(x) / 16000 < 0.6
