"""Speech corpus round trip, espeak-ng phoneme events and audio augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from knotanim.cli.main import main as cli_main
from knotanim.data import SpeechCorpus, make_clip
from knotanim.data.audio_augment import augment_audio
from knotanim.data.corpus import EVAL_LANGS, TRAIN_LANGS, build_corpus
from knotanim.data.speech import synthesize_speech

needs_espeak = pytest.mark.needs("espeak-ng")


@needs_espeak
def test_synthesize_speech_reports_phonemes():
    u = synthesize_speech("Hello world, papa.", "en-us")
    assert u.audio.dtype == np.float32 and 0.5 < u.duration < 4
    assert len(u.times) >= 8 and (np.diff(u.times) >= 0).all() and u.times[-1] <= u.duration + 0.05
    assert (u.phonemes > 1).sum() >= 6  # real phonemes, not only pauses/unknowns
    assert np.abs(u.audio).max() > 0.05


@needs_espeak
def test_corpus_round_trip_and_split(tmp_path):
    info = build_corpus(tmp_path / "tr.npz", 0.25, "train", seed=3)
    again = build_corpus(tmp_path / "tr2.npz", 0.25, "train", seed=3)
    assert info["utterances"] == again["utterances"] and 14 < info["seconds"] < 40
    assert info["bytes"] < 1.2e6 * 0.25 + 1e5  # ~0.8 MB per minute
    c = SpeechCorpus(tmp_path / "tr.npz")
    c2 = SpeechCorpus(tmp_path / "tr2.npz")
    assert len(c) == info["utterances"] and c.split == "train"
    assert c.meta["espeak_ng"][0].isdigit()  # the version that spoke it: another one speaks differently
    u, u2 = c[0], c2[0]
    # espeak-ng keeps internal oscillator state between calls, so waveforms may differ in detail
    # inside one process; text, voice, length and phoneme timing are deterministic per seed.
    assert u.text == u2.text and u.voice == u2.voice and len(u.audio) == len(u2.audio)
    assert np.array_equal(u.times, u2.times) and np.array_equal(u.phonemes, u2.phonemes)
    assert u.audio.dtype == np.float32 and len(u.times) == len(u.phonemes) > 3
    assert set(c.langs) <= set(TRAIN_LANGS)
    build_corpus(tmp_path / "ev.npz", 0.1, "eval", seed=3)
    e = SpeechCorpus(tmp_path / "ev.npz")
    assert set(e.langs) <= set(EVAL_LANGS) and not set(e.voices) & set(c.voices)
    clip = make_clip(1, 20, size=48, corpus=c)
    assert clip.audio.shape == (20 * 640,) and np.abs(clip.audio).max() > 0


@needs_espeak
def test_cli_build_speech(tmp_path, capsys):
    assert cli_main(["data", "build-speech", "--out", str(tmp_path / "s.npz"), "--minutes", "0.05", "--split", "eval"]) == 0
    assert len(SpeechCorpus(tmp_path / "s.npz")) >= 1
    assert cli_main(["data", "build-speech", "--out", str(tmp_path / "nope" / "s.npz"), "--minutes", "0.05"]) == 2


def test_corpus_rejects_garbage(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    from knotanim.errors import InputError

    with pytest.raises(InputError):
        SpeechCorpus(tmp_path / "x.npz")


def test_augment_audio_deterministic_and_bounded():
    x = (0.5 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    a = augment_audio(x, np.random.default_rng(4))
    b = augment_audio(x, np.random.default_rng(4))
    c = augment_audio(x, np.random.default_rng(5))
    assert a.shape == x.shape and a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 1 and np.isfinite(a).all()
