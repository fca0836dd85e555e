"""Tests of the synthetic data generator (knotanim.data): determinism, ranges, alignment, stillness, framing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from knotanim.config import CropConfig
from knotanim.data import Clip, Utterance, make_clip
from knotanim.data.corpus import EVAL_LANGS, EVAL_VARIANTS, TRAIN_LANGS, TRAIN_VARIANTS
from knotanim.data.visemes import PHONEMES, phoneme_id
from knotanim.errors import InputError

SPF = 640


def burst_utterance(start: float = 1.0, length: float = 0.2, total: float = 2.0) -> Utterance:
    """Silence with one loud vowel burst; its phoneme events cover exactly the burst."""
    n = int(total * 16000)
    audio = np.zeros(n, np.float32)
    a, b = int(start * 16000), int((start + length) * 16000)
    audio[a:b] = 0.8 * np.sin(2 * np.pi * 220 * np.arange(b - a) / 16000)
    times = np.array([start, start + length], np.float32)
    ids = np.array([PHONEMES.index("a"), 0], np.int16)
    return Utterance(audio, times, ids, start + length, "test", "xx", "a")


def test_clip_shapes_and_ranges():
    clip = make_clip(3, 12, size=96, head_motion=1.0, speech=burst_utterance(0.1, 0.3, 0.6))
    assert isinstance(clip, Clip) and clip.fps == 25
    assert clip.frames.shape == (12, 96, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (12 * SPF,) and clip.audio.dtype == np.float32
    assert clip.reference.shape == (96, 96, 3) and clip.reference.dtype == np.uint8
    p = clip.params
    for k in ("mouth_open", "mouth_width", "yaw", "pitch", "roll", "tx", "ty", "blink", "phoneme"):
        assert p[k].shape == (12,), k
        assert np.isfinite(p[k]).all(), k
    assert p["mouth_box"].shape == (12, 4)
    assert (p["mouth_open"] >= 0).all() and (p["mouth_open"] <= 1).all() and p["mouth_open"].max() > 0.3
    assert (np.abs(p["mouth_width"]) <= 1).all()
    assert (p["blink"] >= 0).all() and (p["blink"] <= 1).all()
    assert (np.abs(p["yaw"]) < 30).all() and (np.abs(p["tx"]) < 96 * 0.2).all()
    assert np.abs(p["yaw"]).max() > 0  # head moves when head_motion > 0
    assert ((p["phoneme"] >= 0) & (p["phoneme"] < len(PHONEMES))).all()
    box = p["mouth_box"]
    assert (box[:, 0] < box[:, 2]).all() and (box[:, 1] < box[:, 3]).all()
    assert (box >= 0).all() and (box <= 96).all()
    # the mouth sits in the lower half of the face, horizontally central
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    assert (np.abs(cx - 48) < 15).all() and (cy > 48).all()


@pytest.mark.parametrize("n", [1, 2, 4])
def test_very_short_clips(n):
    clip = make_clip(1, n, size=48, head_motion=1.0, speech=burst_utterance(0.0, 0.05, 0.1))
    assert clip.frames.shape[0] == n and all(v.shape[0] == n for v in clip.params.values())


def test_deterministic_per_seed():
    a = make_clip(11, 6, size=64, speech=burst_utterance(0.0, 0.2, 0.3))
    b = make_clip(11, 6, size=64, speech=burst_utterance(0.0, 0.2, 0.3))
    c = make_clip(12, 6, size=64, speech=burst_utterance(0.0, 0.2, 0.3))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert a.identity == b.identity != c.identity
    assert not np.array_equal(a.reference, c.reference)


def test_audio_video_alignment_burst():
    # burst from 1.00 s to 1.20 s -> frames 25..29 cover it
    clip = make_clip(0, 50, size=64, head_motion=0.0, speech=burst_utterance(1.0, 0.2, 2.0), augment_audio=False)
    energy = (clip.audio.reshape(50, SPF) ** 2).sum(1)
    loud = np.nonzero(energy > 1.0)[0]
    assert loud.min() == 25 and loud.max() == 29  # the padded audio was not shifted
    peak = int(np.argmax(clip.params["mouth_open"]))
    assert 25 <= peak <= 29
    assert clip.params["mouth_open"][:20].max() < 0.02 and clip.params["mouth_open"][36:].max() < 0.02
    assert set(clip.params["phoneme"][25:30]) == {PHONEMES.index("a")}
    assert (clip.params["phoneme"][:25] == 0).all()


def test_long_utterance_is_windowed_consistently():
    u = burst_utterance(3.0, 0.2, 4.0)
    for seed in range(6):
        clip = make_clip(seed, 25, size=48, head_motion=0.0, speech=u, augment_audio=False)
        energy = (clip.audio.reshape(25, SPF) ** 2).sum(1)
        has_burst = energy.max() > 1.0
        assert (clip.params["mouth_open"].max() > 0.3) == has_burst
        if has_burst:
            assert abs(int(np.argmax(energy)) - int(np.argmax(clip.params["mouth_open"]))) <= 2


def test_still_head_silent_is_static_and_equals_reference():
    clip = make_clip(5, 8, size=96, head_motion=0.0)
    assert (clip.audio == 0).all()
    for f in clip.frames:
        assert np.array_equal(f, clip.reference)
    assert (clip.params["blink"] == 0).all() and (clip.params["yaw"] == 0).all()


@pytest.mark.parametrize("source", ["synthetic", "photo"])
def test_still_head_speech_changes_only_mouth_box(source):
    clip = make_clip(9, 40, size=96, head_motion=0.0, speech=burst_utterance(0.4, 0.5, 1.6), source=source)
    changed = 0
    for f, box in zip(clip.frames, clip.params["mouth_box"]):
        x0, y0, x1, y1 = box.astype(int)
        diff = np.abs(f.astype(int) - clip.reference.astype(int)).max(-1)
        changed += diff.any()
        diff[y0:y1, x0:x1] = 0
        assert diff.max() == 0
    assert changed >= 5  # the mouth did move
    assert np.allclose(clip.params["mouth_box"], clip.params["mouth_box"][0])


def test_train_eval_identities_disjoint():
    train = {make_clip(s, 1, size=32, head_motion=0.0, split="train").identity for s in range(20)}
    evals = {make_clip(s, 1, size=32, head_motion=0.0, split="eval").identity for s in range(20)}
    assert len(train) == 20 and len(evals) == 20 and not train & evals
    assert make_clip(0, 1, size=64, source="photo", split="train").identity == "photo:astronaut"
    assert make_clip(0, 1, size=64, source="photo", split="eval").identity == "photo:grace_hopper"
    assert not set(TRAIN_LANGS) & set(EVAL_LANGS)
    assert not set(TRAIN_VARIANTS) & set(EVAL_VARIANTS)


def test_photo_source_animates_mouth_and_blinks():
    clip = make_clip(2, 30, size=128, head_motion=1.0, source="photo", speech=burst_utterance(0.2, 0.6, 1.2))
    i = int(np.argmax(clip.params["mouth_open"]))
    x0, y0, x1, y1 = clip.params["mouth_box"][i].astype(int)
    open_mouth = clip.frames[i, y0:y1, x0:x1].astype(float).mean()
    ref_mouth = clip.reference[y0:y1, x0:x1].astype(float).mean()
    assert open_mouth < ref_mouth - 3  # dark interior shows
    assert clip.frames.std(0).mean() > 1  # the head moves


def test_mixed_source_and_bad_args():
    ids = {make_clip(s, 1, size=48, source="mixed").identity.split(":")[0] for s in range(16)}
    assert ids == {"synthetic", "photo"}
    with pytest.raises(InputError):
        make_clip(0, 2, split="test")
    with pytest.raises(InputError):
        make_clip(0, 2, source="cartoon")


def test_phoneme_folding():
    assert phoneme_id("_:") == 0 and PHONEMES[phoneme_id("oU")] == "oU" and PHONEMES[phoneme_id("3:")] == "3"
    assert PHONEMES[phoneme_id("a#")] == "a" and PHONEMES[phoneme_id("t#")] == "t" and PHONEMES[phoneme_id("d;")] == "d"


def test_haar_framing_convention():
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        pytest.skip("this OpenCV build has no CascadeClassifier (OpenCV 5 dropped Haar cascades)")
    xml = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    det = cv2.CascadeClassifier(xml)
    if det.empty():
        pytest.skip(f"Haar cascade not bundled: {xml}")
    crop, size = CropConfig(), 256
    found = []
    for seed in range(16):
        for source in ("synthetic",) if seed < 14 else ("photo",):
            split = "train" if seed != 15 else "eval"
            ref = make_clip(seed, 1, size=size, head_motion=0.0, source=source, split=split).reference
            faces = det.detectMultiScale(cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY), 1.1, 4, minSize=(40, 40))
            if len(faces):
                x, y, w, h = max(faces, key=lambda r: r[2])
                found.append(((x + w / 2) / size, (y + h / 2) / size, size / w))
    assert len(found) >= 6, "the Haar cascade should find most generated faces"
    f = np.array(found)
    assert abs(np.median(f[:, 0]) - 0.5) < 0.05
    assert abs(np.median(f[:, 1]) - crop.face_center_y) < 0.06
    assert abs(np.median(f[:, 2]) - crop.face_scale) < 0.45
