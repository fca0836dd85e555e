"""`knotanim soak`: a few seconds of stream (and live) time with the tiny model; outputs and checks.
The --backend runs rehearse the accelerator machine: an uninstalled checkout (python -S, PYTHONPATH=<repository>),
no PyAV, a working directory outside the repository."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from device_like import device_like

from knotanim.soak import live as soak_live
from knotanim.soak import report as rep
from knotanim.soak.common import load_animator

ROOT = Path(__file__).resolve().parents[1]
SOAK = ["-m", "knotanim.cli.main", "soak"]
PNGS = ("memory", "chunk_time", "drift", "buffers")


def test_soak_stream_mode_writes_csv_json_pngs_and_checks(tmp_path):
    out = tmp_path / "soak"
    r = subprocess.run([sys.executable, *SOAK, "--mode", "stream", "--tiny",
                        "--stream-hours", str(12 / 3600), "--sample-seconds", "1", "--device", "cpu", "--backend", "torch",
                        "--progress", "0", "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode in (0, 1), r.stderr[-2000:]  # 1: a check failed (noisy timings on a busy machine)
    rows = list(csv.DictReader(open(out / "soak_stream.csv")))
    assert len(rows) >= 10
    assert float(rows[-1]["stream_s"]) >= 12 and float(rows[-1]["rss_mb"]) > 0
    assert all(float(row["chunk_ms_median"]) > 0 for row in rows)
    assert {int(row["ring_valid_slots"]) for row in rows[2:]} == {3}  # tiny window: 3 frames, full after warm-up
    assert {"cuda_reserved_mb", "gpu_used_mb"} <= set(rows[0])  # zeros on the CPU
    summary = json.loads((out / "soak_stream.json").read_text())
    assert summary["complete"] and summary["frames"] >= 300 and summary["torch"]
    assert (summary["backend"], summary["backend_used"], summary["backend_fallback"]) == ("torch", "torch", None)
    assert 0 <= summary["soak_overhead_pct"] < 50 and summary["time_in_push_audio_s"] > 0
    names = [c["check"] for c in summary["checks"]]
    for want in ("process RSS growth", "per-chunk time", "feature_frames bounded", "ring_valid_slots bounded",
                 "output vs reference", "frame-to-frame"):
        assert any(n.startswith(want) for n in names), (want, names)
    assert all(isinstance(c["pass"], bool) for c in summary["checks"])
    assert summary["all_pass"] == all(c["pass"] for c in summary["checks"])
    # Buffers are deterministic: these must pass even on a busy machine.
    assert all(c["pass"] for c in summary["checks"] if c["check"].split()[0] in
               ("feature_frames", "audio_buffer_samples", "ring_valid_slots", "ring_mb", "ref_pos"))
    drift = next(c for c in summary["checks"] if c["check"].startswith("output vs reference"))
    assert 0 < drift["mean_last_10pct"] < 255
    for name in PNGS:
        png = out / f"soak_stream_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_soak_stream_through_another_backend_from_an_uninstalled_checkout_without_pyav(tmp_path):
    """--backend onnxruntime: exported into --engine-dir before the stream, used by the stream (its name, as the
    stream's backend reports it, is in the summary) and recorded; every output written."""
    python, env = device_like(tmp_path, *SOAK)
    out, engines = tmp_path / "soak", tmp_path / "engines"
    r = subprocess.run([*python, "--mode", "stream", "--tiny", "--stream-hours", str(3 / 3600), "--sample-seconds", "0.5",
                        "--device", "cpu", "--backend", "onnxruntime", "--engine-dir", str(engines), "--max-wall-s", "300",
                        "--progress", "0", "--out", str(out)], capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    assert "onnxruntime" in r.stderr and "backend on cpu" in r.stderr
    assert list(engines.glob("*.onnx")), list(engines.iterdir())  # exported where --engine-dir said
    summary = json.loads((out / "soak_stream.json").read_text())
    assert summary["backend"] == "onnxruntime" and summary["backend_used"].startswith("onnxruntime"), summary
    assert summary["complete"] and summary["frames"] >= 75 and summary["samples"] >= 5
    assert summary["setup_s"] > 0 and summary["stopped_by"] is None
    rows = list(csv.DictReader(open(out / "soak_stream.csv")))
    assert len(rows) == summary["samples"] and all(float(row["chunk_ms_median"]) > 0 for row in rows)
    assert all(c["pass"] for c in summary["checks"] if c["check"].split()[0] in ("feature_frames", "ring_valid_slots"))
    for name in PNGS:
        assert (out / f"soak_stream_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_soak_stream_stopped_by_the_wall_clock_before_any_sample_still_writes_its_summary(tmp_path):
    """--max-wall-s counts from the script's start: a limit that the imports and model load already used up stops
    the stream before its first sample; the JSON still comes back, saying so, and the exit status is 1."""
    python, env = device_like(tmp_path, *SOAK)
    out = tmp_path / "soak"
    r = subprocess.run([*python, "--mode", "stream", "--tiny", "--device", "cpu", "--backend", "torch",
                        "--max-wall-s", "0.01", "--progress", "0", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 1, r.stderr[-3000:]
    summary = json.loads((out / "soak_stream.json").read_text())
    assert not summary["complete"] and summary["stopped_by"] == "--max-wall-s 0.01" and summary["frames"] == 0
    assert summary["backend_used"] == "torch" and not summary["all_pass"]
    assert [c["check"] for c in summary["checks"]] == ["enough samples for the checks (>= 5)"]
    assert not list(out.glob("*.png"))


def test_speech_feed_reads_the_bundled_wav_without_pyav_as_pyav_decodes_it():
    pytest.importorskip("av")
    from knotanim.frontends.audio_io import load_audio

    speech = rep.example_speech()
    ours, theirs = rep.read_speech(speech, 16000), load_audio(speech, 16000)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_live_mode_counts_frames_across_a_gpu_memory_fallback():
    """A GPU out-of-memory fallback sets pipe.stream to None for a moment, then a new stream counts
    from 0: the soak's frames_generated must neither crash nor go backwards."""
    first, second = SimpleNamespace(frames_emitted=0), SimpleNamespace(frames_emitted=0)
    pipe = SimpleNamespace(stream=first)
    generated = soak_live.GeneratedFrames()
    readings = []
    for stream, emitted in ((first, 10), (first, 30), (None, None), (second, 4), (None, None), (second, 12)):
        pipe.stream = stream
        if stream is not None:
            stream.frames_emitted = emitted
        readings.append(generated.read(pipe))
    assert readings == [10, 30, 30, 34, 34, 42]


def test_dtype_and_live_backend_options(tmp_path, monkeypatch):
    """--dtype loads the checkpoint in that dtype; live mode's --backend goes through `knotanim live --model`'s
    choice: torch, and auto with --tiny, eager (None) without measuring; a name to choose_backend."""
    import torch

    import knotanim.profiles
    from knotanim import KnotAnimator, tiny_config

    folder = tmp_path / "tiny"
    KnotAnimator.from_config(tiny_config(), device="cpu", seed=0).save_pretrained(folder)
    base = dict(device="cpu", tiny=False, model=str(folder))
    assert load_animator(SimpleNamespace(**base, dtype="auto")).dtype == torch.float32
    anim = load_animator(SimpleNamespace(**base, dtype="bfloat16"))
    assert anim.dtype == torch.bfloat16
    asked = []

    def choose(animator, backend, steps, **kw):
        asked.append((animator, backend, steps))
        return SimpleNamespace(backends="the StepBackends", notes=[], tried=[(backend, 30.0)], cached=False, fps=30.0,
                               backend=SimpleNamespace(name=backend))

    monkeypatch.setattr(knotanim.profiles, "choose_backend", choose)
    assert soak_live.live_backends(SimpleNamespace(backend="torch", tiny=False, model=str(folder)), anim) is None
    assert soak_live.live_backends(SimpleNamespace(backend="auto", tiny=True, model=None), anim) is None
    assert asked == []
    assert soak_live.live_backends(SimpleNamespace(backend="compiled", tiny=False, model=str(folder)), anim) == "the StepBackends"
    assert asked == [(anim, "compiled", None)]


def test_soak_live_mode_writes_its_summary_with_backend_and_ladder_rungs(tmp_path):
    """--mode live for 6 s with the tiny model: the summary names the backend used, counts the samples per
    quality-ladder rung, and the recording decodes (the checks that depend on timing may fail on a busy CPU)."""
    out = tmp_path / "live"
    r = subprocess.run([sys.executable, *SOAK, "--mode", "live", "--tiny", "--minutes", "0.1",
                        "--device", "cpu", "--progress", "0", "--out", str(out)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode in (0, 1), r.stderr[-2000:]
    summary = json.loads((out / "soak_live.json").read_text())
    assert (summary["backend"], summary["backend_used"]) == ("auto", "torch")  # auto with --tiny: eager
    assert sum(summary["samples_per_rung"].values()) == summary["samples"] >= 4
    assert all(rung.startswith("model, ") for rung in summary["samples_per_rung"])
    rungs_seen = len(summary["samples_per_rung"])  # a rung the samples saw was reached by a change
    assert summary["ladder_steps_down"] >= rungs_seen - 1 and summary["ladder_steps_up"] >= 0
    recording = next(c for c in summary["checks"] if c["check"].startswith("recording decodes"))
    assert recording["pass"] and recording["video_frames"] > 0, recording
    for name in ("memory", "queues", "latency"):
        assert (out / f"soak_live_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path):
    for bad, says in ((["--stream-hours", "0"], "--stream-hours: '0' is not > 0"),
                      (["--backend", "nosuch"], "invalid choice: 'nosuch'"),
                      (["--model", str(tmp_path / "missing")], "not found")):
        r = subprocess.run([sys.executable, *SOAK, "--out", str(tmp_path / "o"), "--device", "cpu", *bad],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert says in r.stderr.strip().splitlines()[-1], r.stderr
