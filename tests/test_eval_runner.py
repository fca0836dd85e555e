"""KnotBench end to end: scoring rows, the runner with the tiny random model, reports, the CLI.

The runner tests use the real data generator (held-out speech synthesised with espeak-ng)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from knotanim.eval.report import COLUMNS, summary_table
from knotanim.eval.scoring import ClipScorer, ClipTruth
from knotanim.eval.spec import BenchSpec, ClipSpec, full_spec, quick_spec, tiny_spec


def fake_clip(seed, n_frames, *, size=64, fps=25, head_motion=0.0, split="eval", source="synthetic", **_):
    """A stand-in for knotanim.data.make_clip with the same fields: a flat face whose mouth (a dark
    bar) opens with a known signal that also drives the audio loudness."""
    rng = np.random.default_rng(seed)
    spf = 16000 // fps
    t = np.arange(n_frames)
    open_ = np.clip(0.5 + 0.5 * np.sin(t / 3.0 + seed), 0, 1)
    ref = np.zeros((size, size, 3), dtype=np.uint8)
    ref[:] = (40, 60, 90)
    yy, xx = np.mgrid[:size, :size]
    face = (yy - size * 0.5) ** 2 + (xx - size * 0.5) ** 2 < (size * 0.35) ** 2
    ref[face] = rng.integers(150, 220, 3)
    box = np.array([size * 0.35, size * 0.6, size * 0.65, size * 0.75])
    frames = np.repeat(ref[None], n_frames, axis=0)
    cy = int((box[1] + box[3]) / 2)
    for i, o in enumerate(open_):
        half = int(round(o * (box[3] - box[1]) / 2))
        if half:
            frames[i, cy - half : cy + half, int(box[0]) + 1 : int(box[2]) - 1] = (25, 5, 5)
    carrier = np.sin(np.arange(n_frames * spf) * 2 * np.pi * 220 / 16000)
    audio = (carrier * np.repeat(0.05 + 0.3 * open_, spf)).astype(np.float32)
    params = {"mouth_open": open_, "mouth_box": np.tile(box, (n_frames, 1))}
    return SimpleNamespace(frames=frames, audio=audio, reference=ref, params=params, fps=fps,
                           identity=f"fake-{seed}")


def truth_for(spec_clip: ClipSpec, chunk=2) -> ClipTruth:
    return ClipTruth.from_clip(spec_clip, fake_clip(spec_clip.seed, spec_clip.n_frames), chunk, 0.25, 60.0)


def score(truth: ClipTruth, video: np.ndarray, is_truth=False, block=7):
    s = ClipScorer(truth, is_truth=is_truth, strip_frames=3)
    for a in range(0, len(video), block):
        s.update(video[a : a + block])
    return s.result()


# --- scoring rows -----------------------------------------------------------------------------------
def test_rows_on_a_known_clip():
    truth = truth_for(ClipSpec("c", seed=3, n_frames=40))
    gt = score(truth, truth.frames, is_truth=True)
    copy = score(truth, np.broadcast_to(truth.reference, truth.frames.shape))
    perfect = score(truth, truth.frames)  # a model that reproduces the ground truth exactly
    assert gt.scalars["lipsync"] > 0.95  # the ceiling of the measurement
    assert "psnr" not in gt.scalars  # the truth is not compared with itself
    assert copy.scalars["lipsync"] == 0.0  # frozen mouth
    assert copy.scalars["jump_ratio"] == 1.0 and copy.scalars["flicker"] == 0.0
    assert copy.scalars["appearance_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert perfect.scalars["psnr"] == 100.0 and perfect.scalars["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert perfect.scalars["lipsync"] == pytest.approx(gt.scalars["lipsync"])
    assert copy.scalars["psnr"] < perfect.scalars["psnr"] and copy.scalars["psnr_mouth"] < copy.scalars["psnr"]
    assert len(gt.samples) == 3 and set(gt.series) >= {"openness", "true_open", "appearance_ssim"}


def test_block_size_does_not_change_scores():
    truth = truth_for(ClipSpec("c", seed=4, n_frames=30))
    rng = np.random.default_rng(0)
    video = np.clip(truth.frames + rng.normal(0, 8, truth.frames.shape), 0, 255).astype(np.uint8)
    a, b = score(truth, video, block=1), score(truth, video, block=30)
    for k, v in a.scalars.items():
        assert v == pytest.approx(b.scalars[k], rel=1e-4, abs=1e-6), k  # float32 sums


def test_seams_show_in_jump_ratio():
    truth = truth_for(ClipSpec("c", seed=5, n_frames=30), chunk=3)
    video = truth.frames.astype(np.int32) + ((np.arange(30) // 3) % 2 * 40)[:, None, None, None]
    seamed = score(truth, np.clip(video, 0, 255).astype(np.uint8))
    assert seamed.scalars["jump_ratio"] > 5


def test_photo_clip_has_no_ground_truth_metrics():
    truth = truth_for(ClipSpec("p", seed=6, n_frames=30, source="photo"))
    s = score(truth, truth.frames)
    assert "lipsync" not in s.scalars and "psnr" not in s.scalars
    assert s.scalars["envelope_corr"] > 0.9  # the fake audio's loudness follows the mouth
    assert "appearance_drift_pct" in s.scalars


@pytest.mark.needs("espeak-ng")  # held-out speech, synthesised live
def test_real_clips_score_a_high_ceiling_and_zero_for_copy():
    from knotanim.data import make_clip
    from knotanim.eval.speech import EvalSpeech

    speech = EvalSpeech()
    for cs in (ClipSpec("s", seed=3, n_frames=75), ClipSpec("p", seed=3, n_frames=75, source="photo")):
        clip = make_clip(cs.seed, cs.n_frames, size=128, head_motion=0.0, speech=speech.for_clip(cs.seed, 3.0),
                         split="eval", source=cs.source)
        truth = ClipTruth.from_clip(cs, clip, 2, 0.0, 60.0)
        gt = score(truth, truth.frames, is_truth=True)
        copy = score(truth, np.broadcast_to(truth.reference, truth.frames.shape))
        assert gt.scalars["envelope_corr"] > 0.3 and copy.scalars["envelope_corr"] == 0.0
        if cs.has_ground_truth:
            assert gt.scalars["lipsync"] > 0.8 and copy.scalars["lipsync"] == 0.0


# --- specs ---------------------------------------------------------------------------------------------
def test_spec_round_trip_and_sizes(tmp_path):
    spec = full_spec(long_minutes=10.0)
    assert sum(c.long for c in spec.clips) == 1 and [c for c in spec.clips if c.long][0].n_frames == 15000
    assert any(c.source == "photo" and c.split == "eval" for c in spec.clips)
    assert all(c.split == "eval" for c in spec.clips)
    assert not any(c.long for c in quick_spec().clips)
    spec.save(tmp_path / "s.json")
    assert BenchSpec.load(tmp_path / "s.json") == spec
    assert not any(c.long for c in spec.with_long(0).clips)


def test_every_shipped_spec_loads_with_held_out_clips():
    """configs/eval/*.json, the specs docs/knotbench.md runs: each loads, and every clip is held out (eval split)."""
    specs = sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.json"))
    assert len(specs) >= 4
    for path in specs:
        spec = BenchSpec.load(path)
        assert spec.clips and all(c.split == "eval" and c.n_frames > 0 for c in spec.clips), path.name
    photo = BenchSpec.load(specs[0].with_name("knotbench_photo10s.json"))
    assert [(c.source, c.long, c.n_frames) for c in photo.clips] == [("photo", True, 250)]


def test_bad_spec_is_a_config_error(tmp_path):
    from knotanim.errors import ConfigError

    with pytest.raises(ConfigError):
        BenchSpec("x", clips=(ClipSpec("a", 1, 10, source="video"),))
    (tmp_path / "bad.json").write_text('{"clips": [{"name": "a", "seed": 1, "frames": 3}]}')
    with pytest.raises(ConfigError):
        BenchSpec.load(tmp_path / "bad.json")


# --- the runner with the tiny random model ------------------------------------------------------------
def check_report(report, out_dir, models=("tiny",), variants=("default",)):
    kinds = {r["kind"] for r in report["rows"]}
    assert {"ground-truth", "copy-reference", "audio-zeroed", "model"} <= kinds
    names = [r["name"] for r in report["rows"]]
    for m in models:
        assert f"{m}:audio-zeroed" in names
        for v in variants:
            assert f"{m}:{v}" in names
    for r in report["rows"]:
        assert set(r["overall"]) == {c for c, _, _, _ in COLUMNS}
    model_row = next(r for r in report["rows"] if r["kind"] == "model")
    assert model_row["overall"]["fps"] > 0
    for key in ("lipsync", "psnr", "ssim", "jump_ratio", "flicker", "photo_appearance_ssim"):
        assert math.isfinite(model_row["overall"][key]), key
    data = json.loads((out_dir / "report.json").read_text())  # strict JSON (no NaN)
    assert data["rows"][0]["name"] == "ground-truth"
    md = (out_dir / "report.md").read_text()
    assert "copy-reference" in md and "audio-zeroed" in md
    assert list(out_dir.glob("strip_*.png")) and list(out_dir.glob("series_*.png"))


@pytest.mark.needs("espeak-ng")  # held-out speech, synthesised live
def test_run_knotbench_tiny(tmp_path, anim):
    from knotanim.eval import run_knotbench

    lines = []
    report = run_knotbench(anim, tiny_spec(n_frames=16), tmp_path, variants="default,no-knot",
                           progress=lines.append)
    check_report(report, tmp_path, variants=("default", "no-knot"))
    assert sum("[" in ln and "/2]" in ln for ln in lines) == 2  # a line per clip
    speech = report["info"]["speech"]  # live espeak-ng, whose version changes the clips
    assert speech["source"] == "espeak-ng" and speech["espeak_ng"][0].isdigit()
    table = summary_table(report)
    assert "copy-reference" in table and "tiny:no-knot" in table


@pytest.mark.needs("espeak-ng")  # held-out speech, synthesised live
def test_long_stream_reports_drift(tmp_path, anim):
    from knotanim.eval import run_knotbench

    spec = BenchSpec("t", clips=(ClipSpec("s", 1, 8),)).with_long(minutes=24 / 25 / 60)  # 24 frames
    spec = BenchSpec(spec.name, spec.clips, drift_window_s=0.24, strip_frames=2)
    report = run_knotbench([("a", anim)], spec, tmp_path)
    assert report["drift"]["a:default"]["psnr"]["ratio"] > 0
    assert len(report["over_time"]["long"]["a:default"]["psnr"]) == 4  # 24 frames / 6-frame windows
    assert (tmp_path / "over_time_long.png").exists()


@pytest.mark.needs("espeak-ng")  # held-out speech, synthesised live
def test_cli_prints_a_table(tmp_path, anim, capsys):
    from knotanim.cli.main import main

    model = tmp_path / "tiny-model"
    anim.save_pretrained(model)
    tiny_spec(n_frames=8).save(tmp_path / "spec.json")
    out = tmp_path / "out"
    rc = main(["eval", "--model", str(model), "--spec", str(tmp_path / "spec.json"), "--out", str(out),
               "--device", "cpu", "--no-plots"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "copy-reference" in text and "tiny-model:audio-zeroed" in text and "lip-sync r" in text
    assert (out / "report.json").exists() and not list(out.glob("*.png"))
    assert main(["eval", "--model", str(model), "--variants", "bogus", "--out", str(out)]) == 2


@pytest.mark.needs("espeak-ng")  # held-out speech, synthesised live
def test_reference_rows_split_a_run_without_changing_scores(tmp_path, anim):
    """A long run split over processes: each scores some rows, and every row scores as in a whole run."""
    from knotanim.eval import run_knotbench
    from knotanim.errors import ConfigError
    from knotanim.eval.runner import parse_reference_rows

    spec = BenchSpec("t", clips=(ClipSpec("s", 1, 8),)).with_long(minutes=24 / 25 / 60)
    spec = BenchSpec(spec.name, spec.clips, drift_window_s=0.24, strip_frames=2)
    whole = run_knotbench([("a", anim)], spec, tmp_path / "whole", variants="default,no-knot")
    part1 = run_knotbench([("a", anim)], spec, tmp_path / "p1", variants="default", reference_rows="audio-zeroed")
    part2 = run_knotbench([("a", anim)], spec, tmp_path / "p2", variants="no-knot", reference_rows="none")
    assert [r["name"] for r in part1["rows"]] == ["a:default", "a:audio-zeroed"]
    assert [r["name"] for r in part2["rows"]] == ["a:no-knot"]
    assert part2["info"]["reference_rows"] == []
    for part in (part1, part2):
        for name, scores in part["clips"]["long"]["rows"].items():
            ref = whole["clips"]["long"]["rows"][name]
            assert scores.keys() == ref.keys()
            for k, v in scores.items():
                if k != "fps":
                    assert v == pytest.approx(ref[k], rel=1e-6, abs=1e-9), (name, k)
        assert set(part["drift"]) == {r["name"] for r in part["rows"]}
    assert (tmp_path / "p2" / "report.md").exists()
    assert parse_reference_rows("audio-zeroed,ground-truth") == ("ground-truth", "audio-zeroed")
    with pytest.raises(ConfigError, match="unknown reference row"):
        parse_reference_rows("copy")
