"""Property-based fuzzing of everything that reads untrusted bytes: configs, checkpoints, images, audio.

The property: any input either loads into a valid value or raises a KnotAnimError subclass (a
one-line user message). Nothing else escapes, nothing hangs. The example counts are recorded in
docs/reliability.md; raise them locally with KNOTANIM_FUZZ_EXAMPLES=2000.
"""
import io
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knotanim import KnotAnimConfig, tiny_config
from knotanim.errors import KnotAnimError

EXAMPLES = int(os.environ.get("KNOTANIM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
config_keys = st.sampled_from(sorted(tiny_config().to_dict()))


@FUZZ
@given(st.dictionaries(config_keys, json_values, max_size=4))
def test_config_from_any_dict(data):
    try:
        cfg = KnotAnimConfig.from_dict(data)
    except KnotAnimError:
        return
    assert cfg.validate() is cfg


@FUZZ
@given(st.binary(max_size=2000))
def test_config_json_bytes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_bytes(blob)
    with pytest.raises(KnotAnimError):
        from knotanim.checkpoint import load_checkpoint

        load_checkpoint(path.parent)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from knotanim.animator import KnotAnimator

    folder = tmp_path_factory.mktemp("model") / "m"
    KnotAnimator.from_config(tiny_config()).save_pretrained(folder)
    return folder


@FUZZ
@given(st.integers(0, 10**9), st.binary(min_size=1, max_size=64), st.booleans())
def test_checkpoint_with_altered_shard(saved_model, tmp_path_factory, where, patch, truncate):
    import shutil

    from knotanim.checkpoint import load_checkpoint

    folder = tmp_path_factory.mktemp("alt") / "m"
    shutil.copytree(saved_model, folder)
    shard = next(folder.glob("*.safetensors"))
    data = bytearray(shard.read_bytes())
    pos = where % len(data)
    if truncate:
        data = data[:pos]
    else:
        data[pos : pos + len(patch)] = patch
    shard.write_bytes(bytes(data))
    if bytes(data) == saved_model.joinpath(shard.name).read_bytes():
        load_checkpoint(folder)  # unchanged: must load
        return
    with pytest.raises(KnotAnimError):
        load_checkpoint(folder)


def _png(width: int, height: int, body: bytes) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@FUZZ
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.binary(max_size=300),
       st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".txt", ""]))
def test_images_with_hostile_headers(tmp_path_factory, w, h, body, ext):
    from knotanim.frontends.image import load_image

    path = tmp_path_factory.mktemp("img") / f"x{ext}"
    path.write_bytes(_png(w, h, body))
    try:
        img = load_image(path)
    except KnotAnimError:
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@FUZZ
@given(st.binary(max_size=4000), st.sampled_from([".wav", ".mp3", ".flac", ".ogg", ".m4a", ".bin"]))
def test_audio_from_random_bytes(tmp_path_factory, blob, ext):
    from knotanim.frontends.audio_io import load_audio

    path = tmp_path_factory.mktemp("aud") / f"x{ext}"
    path.write_bytes(blob)
    try:
        x = load_audio(path, 16000)
    except KnotAnimError:
        return
    assert x.dtype == np.float32 and x.ndim == 1 and np.isfinite(x).all()


def _wav(samples: np.ndarray, rate: int, channels: int) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


@FUZZ
@given(st.integers(1, 8), st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]),
       st.lists(st.integers(-32768, 32767), max_size=3000))
def test_valid_wavs_of_any_layout_decode_clean(tmp_path_factory, channels, rate, values):
    from knotanim.frontends.audio_io import load_audio

    n = len(values) // channels * channels
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    path.write_bytes(_wav(np.array(values[:n], np.int16), rate, channels))
    try:
        x = load_audio(path, 16000)
    except KnotAnimError:
        return
    assert x.dtype == np.float32 and np.isfinite(x).all() and np.abs(x).max(initial=0) <= 1.0


@FUZZ
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=2000))
def test_stream_accepts_any_float_samples(samples):
    from knotanim.stream.stream import clean_audio

    x = clean_audio(np.array(samples, np.float32))
    assert x.dtype == np.float32 and np.isfinite(x).all() and np.abs(x).max(initial=0) <= 1.0


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
def test_multichannel_wavs_decode_to_mono(tmp_path, channels):
    """Regression: 8-channel audio crashed PyAV's planar conversion (segfault), found by the fuzzer."""
    from knotanim.frontends.audio_io import load_audio

    t = np.arange(3000) / 44100
    amps = np.linspace(2000, 9000, channels)
    x = (np.sin(2 * np.pi * 440 * t)[:, None] * amps).astype(np.int16)  # one tone, a different level per channel
    path = tmp_path / "multi.wav"
    path.write_bytes(_wav(x.reshape(-1), 44100, channels))
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.shape == (1089,) and np.isfinite(y).all()
    expected_rms = amps.mean() / 32768 / np.sqrt(2)  # the mean of the channels, not one of them
    assert abs(float(np.sqrt(np.mean(y[100:-100] ** 2))) - expected_rms) < 0.1 * expected_rms
