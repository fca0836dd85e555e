"""The real-photo judge (knotanim/eval/judge.py, real_photos.py, photo_set.py) on known inputs.

The judge's tests need the [eval] extra (dlib-bin, face-recognition-models; both in [test]) and
skip with that reason without it; the photo set and the mouth-envelope lag need neither.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from knotanim.errors import InputError
from knotanim.eval.judge import judge_available
from knotanim.eval.photo_set import REAL_PHOTOS, load_real_photo, select_photos
from knotanim.eval.real_photos import mouth_envelope_r

JUDGE_OK, JUDGE_MISSING = judge_available()
needs_judge = pytest.mark.skipif(not JUDGE_OK, reason=f"the [eval] extra is absent: {JUDGE_MISSING}")


@pytest.fixture(scope="module")
def judge():
    from knotanim.eval.judge import FaceJudge

    return FaceJudge()


@pytest.fixture(scope="module")
def hopper(judge):
    return judge.photo_face(load_real_photo("grace_hopper"), "grace_hopper")


def write_mp4(path: Path, frames, audio_16k: np.ndarray | None, fps: int = 25) -> Path:
    """An H.264 mp4 of uint8 RGB frames, with the 16-kHz audio (upsampled to AAC's 48 kHz) when given."""
    from knotanim.sinks.video import VideoFileSink

    h, w = frames[0].shape[:2]
    sink = VideoFileSink(path, w, h, fps, audio_rate=48000, audio_channels=1)
    sink.open()
    for f in frames:
        sink.write(f)
    if audio_16k is not None:
        sink.write_audio(np.repeat(audio_16k.astype(np.float32), 3))
    sink.close()
    return path


# --- the photo set ----------------------------------------------------------------------------------
def test_held_out_photos_never_reach_training():
    from knotanim.data.clips import make_clip

    held = {p.name for p in select_photos("held-out")}
    assert "astronaut" not in held and "grace_hopper" in held
    assert all(p.split == "held-out" for p in REAL_PHOTOS if p.shipped_as == "grace_hopper")
    # the generator's training split animates the astronaut, never a held-out photo
    assert make_clip(3, 2, size=64, source="photo", split="train").identity == "photo:astronaut"


def test_derived_photos_have_the_property_they_are_named_for():
    big = load_real_photo("grace_hopper_upscaled_2mp")
    assert big.shape[0] * big.shape[1] >= 2_000_000
    small = load_real_photo("grace_hopper_small_in_2mp")
    assert small.shape[:2] == (1080, 1920)
    tilted = load_real_photo("grace_hopper_tilted_15deg")
    assert tilted.shape[0] > 600 and tilted.shape[1] > 512  # the canvas grew to hold the rotated photo


def test_mouth_envelope_finds_the_lag():
    rng = np.random.default_rng(0)
    env = np.convolve(rng.random(200), np.ones(4) / 4, "same")
    mouth = np.concatenate([[np.nan, np.nan], env[:-2]])  # the mouth follows the audio by 2 frames
    r, lag = mouth_envelope_r(mouth, env)
    assert lag == 2 and r > 0.99
    r0, _ = mouth_envelope_r(rng.random(200), env)
    assert r0 < 0.3


# --- the judge on known inputs --------------------------------------------------------------------
@needs_judge
def test_copy_of_the_photo_scores_the_ceiling(judge, hopper):
    s = judge.score_frames(np.stack([hopper.image] * 3), hopper)
    assert s.found.all()
    assert np.all(s.identity < 0.1)
    assert np.all(np.abs(s.sharpness - 1.0) < 0.05)
    assert np.nanmax(s.jitter) < 1e-9  # a still copy does not move


@needs_judge
def test_blurred_copy_scores_lower_sharpness(judge, hopper):
    blurred = cv2.GaussianBlur(hopper.image, (0, 0), 1.5)
    s = judge.score_frames([blurred], hopper)
    assert s.found.all() and s.sharpness[0] < 0.3
    assert s.identity[0] < 0.6  # still the same person


@needs_judge
def test_another_person_scores_above_the_same_person_threshold(judge, hopper):
    astronaut = judge.photo_face(load_real_photo("astronaut"), "astronaut")
    s = judge.score_frames([hopper.image], astronaut)
    assert s.found.all() and s.identity[0] > 0.6


@needs_judge
def test_a_smaller_framing_is_compared_at_its_own_scale(judge, hopper):
    """A 256 x 256 crop (another geometry: the whole frame is searched) keeps identity and, against
    the photo resized to the crop's face size, most of its sharpness."""
    x0, y0, x1, y1 = (int(v) for v in hopper.face.box)
    pad = (x1 - x0) // 2
    crop = cv2.resize(hopper.image[y0 - pad:y1 + pad, x0 - pad:x1 + pad], (256, 256), interpolation=cv2.INTER_AREA)
    s = judge.score_frames([crop, crop], hopper)
    assert s.found.all() and s.identity[0] < 0.2
    assert 0.7 < s.sharpness[0] < 1.3


# --- bad input ----------------------------------------------------------------------------------------
@needs_judge
def test_photo_without_a_face_is_an_input_error(judge):
    sky = np.full((300, 300, 3), (90, 140, 220), np.uint8)
    with pytest.raises(InputError, match="finds no face"):
        judge.photo_face(sky, "sky.png")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "knotanim.cli.main", "eval", *args], capture_output=True, text=True,
                          timeout=300)


@needs_judge
def test_cli_one_line_errors_for_a_faceless_photo_and_a_short_video(tmp_path):
    sky = tmp_path / "sky.png"
    cv2.imwrite(str(sky), np.full((300, 300, 3), (220, 140, 90), np.uint8))
    videos = tmp_path / "videos"
    videos.mkdir()
    write_mp4(videos / "sky.mp4", [np.zeros((64, 64, 3), np.uint8)] * 30, None)
    done = _cli("--real-photos", "--photo-file", str(sky), "--judge-videos", str(videos), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "finds no face" in done.stderr and len(done.stderr.strip().splitlines()) == 1

    hopper = tmp_path / "hopper.png"
    cv2.imwrite(str(hopper), cv2.cvtColor(load_real_photo("grace_hopper"), cv2.COLOR_RGB2BGR))
    write_mp4(videos / "hopper.mp4", [load_real_photo("grace_hopper")] * 10, np.zeros(6400, np.float32))
    done = _cli("--real-photos", "--photo-file", str(hopper), "--judge-videos", str(videos), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "shorter than a second" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@needs_judge
@pytest.mark.slow
def test_judging_rendered_videos_writes_the_table(tmp_path):
    """Videos "rendered elsewhere": the photo copied into an mp4 with the speech, and a blurred copy as its
    audio-zeroed stream; the report carries both reference rows, the mouth scores and the plots."""
    import json

    from knotanim.eval.photo_set import held_out_speech, real_photo
    from knotanim.eval.real_photos import run_real_photos

    photo = load_real_photo("grace_hopper")
    speech = held_out_speech(1.2).audio
    videos = tmp_path / "gpu"
    videos.mkdir()
    write_mp4(videos / "grace_hopper.mp4", [photo] * 30, speech)
    write_mp4(videos / "grace_hopper.audio-zeroed.mp4", [cv2.GaussianBlur(photo, (0, 0), 2)] * 30, np.zeros_like(speech))
    report = run_real_photos((real_photo("grace_hopper"),), tmp_path / "out", video_dirs=[("gpu", videos)],
                             seconds=1.2, say=lambda line: None)
    rows = {(s["model"], s["row"]): s for s in report["streams"]}
    assert set(rows) == {("", "photo copy"), ("", "generator"), ("gpu", "speech"), ("gpu", "audio zeroed")}
    assert rows[("", "photo copy")]["identity_median"] == 0 and rows[("", "photo copy")]["sharpness"] == 1
    assert rows[("gpu", "speech")]["identity_median"] < 0.15  # H.264 at CRF 18 costs a little
    assert rows[("gpu", "audio zeroed")]["sharpness"] < 0.5 * rows[("gpu", "speech")]["sharpness"]
    assert rows[("", "generator")]["mouth_r"] is not None and rows[("gpu", "speech")]["mouth_r"] is not None
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| grace_hopper (held-out) | photo copy | 0.00 |" in table and "| gpu |" in table
    assert json.loads((tmp_path / "out" / "report.json").read_text())["info"]["video_dirs"] == [str(videos)]
    assert (tmp_path / "out" / "over_time_grace_hopper.png").exists() and (tmp_path / "out" / "strip_grace_hopper.png").exists()


@needs_judge
@pytest.mark.slow
def test_rendering_here_then_judging_catches_a_model_that_loses_the_face(tmp_path, anim, eval_corpus):
    """`knotanim eval --real-photos --model ...`'s path: render with the speech and with silence
    (`knotanim.render`), then judge. The tiny random model paints noise over the face."""
    from knotanim.eval.photo_set import real_photo
    from knotanim.eval.real_photos import run_real_photos

    report = run_real_photos((real_photo("grace_hopper"),), tmp_path, models=[("tiny", anim)], seconds=1.2,
                             corpus=eval_corpus, plots=False, say=lambda line: None)
    assert (tmp_path / "videos" / "tiny" / "grace_hopper.mp4").exists()
    assert (tmp_path / "videos" / "tiny" / "grace_hopper.audio-zeroed.mp4").exists()
    assert (tmp_path / "inputs" / "speech_1.2s.wav").exists()
    rows = {(s["model"], s["row"]): s for s in report["streams"]}
    assert rows[("tiny", "speech")]["frames"] == 30 and rows[("tiny", "audio zeroed")]["frames"] == 30
    assert rows[("tiny", "speech")]["found"] < 0.5 < rows[("", "photo copy")]["found"]
