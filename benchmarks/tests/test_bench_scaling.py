"""benchmarks/bench_scaling.py on the CPU with tiny sizes: the JSON it writes, the FLOP formula against
FlopCounterMode, how FLOPs grow with L, C and resolution, and skipped points. No timing assertions."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from knotanim import tiny_config

import bench_scaling as bs  # benchmarks/ is on sys.path (conftest.py)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    argv = ["--tiny", "--quick", "--device", "cpu", "--out", str(out), "--warmup", "1", "--chunks", "2",
            "--long-chunks", "5", "--frame-sizes", "32,48,60,64"]  # 60 px: not a multiple of the autoencoder's 8
    assert bs.main(argv) == 0
    data = json.loads((out / "scaling.json").read_text())
    data["_out"] = out
    return data


def by_sweep(result, sweep):
    return [p for p in result["points"] if p["sweep"] == sweep and p["status"] == "ok"]


def total(point):
    return point["flops"]["counted"]["total"]


def test_json_structure(result):
    assert result["machine"]["device"] == "cpu" and result["machine"]["dtype"] == "float32"
    assert result["machine"]["torch"] == torch.__version__
    assert result["settings"]["sweeps"] == {"windows": [0, 3, 6], "chunks": [1, 2, 3], "frame_sizes": [32, 48, 60, 64]}
    assert result["base"]["frame_size"] == 64 and result["base"]["window"] == 3 and result["base"]["chunk"] == 2
    assert [(p["sweep"], p["value"]) for p in result["points"]] == [
        ("window", 0), ("window", 3), ("window", 6), ("chunk", 1), ("chunk", 2), ("chunk", 3),
        ("frame", 32), ("frame", 48), ("frame", 60), ("frame", 64)]
    for p in result["points"] + [result["long"]]:
        if p["sweep"] == "frame" and p["value"] == 60:
            continue
        assert p["status"] == "ok", p
        assert p["backend"] == "torch"
        for key in ("step_ms", "chunk_ms"):
            s = p[key]
            assert s["n"] == len([v for v in p["raw"][key] if v is not None]) and s["n"] >= 1
            assert 0 < s["min"] <= s["median"] <= s["p95"] <= s["max"]
        assert p["warmup"] == 1 and len(p["raw"]["step_ms"]) == p["chunks_run"] - 1
        assert p["config"]["frames_per_chunk"] == p["config"]["chunk"] + 1
        assert p["flops"]["formula"]["total"] > 0 and p["flops"]["counted"]["total"] > 0
        assert p["memory"] and p["step_tflops_per_s"] > 0
    # the base point appears in every sweep but is measured once
    shared = [p for p in result["points"] if "same_measurement_as" in p]
    assert {(p["sweep"], p["value"]) for p in shared} == {("chunk", 2), ("frame", 64)}


def test_long_stream_record(result):
    long = result["long"]
    assert long["sweep"] == "long" and long["chunks_run"] == 6 and len(long["raw"]["step_ms"]) == 5
    for what in ("step", "chunk"):
        f = long["flat"][what]
        assert f["chunks"] == 5 and f["index_range"] == [1, 5]
        assert f["relative_change_per_1000_chunks"] == pytest.approx(f["slope_ms_per_1000_chunks"] / f["median_ms"])


def test_invalid_point_is_skipped_with_reason(result):
    (bad,) = [p for p in result["points"] if p["sweep"] == "frame" and p["value"] == 60]
    assert bad["status"] == "skipped" and "not divisible by autoencoder.factor" in bad["reason"]


def test_figure_or_reason(result):
    if result.get("figure"):
        assert (result["_out"] / "scaling.png").stat().st_size > 10_000
    else:
        assert "matplotlib" in result["figure_missing"]


def test_flops_grow_as_the_formula_says(result):
    cfg = tiny_config()
    m, S = cfg.model, cfg.sampler.steps
    d, depth = m.width, m.depth
    for p in result["points"] + [result["long"]]:
        if p["status"] == "ok":  # the formula counts exactly what FlopCounterMode counts
            assert p["flops"]["formula"]["total"] == p["flops"]["counted"]["total"], p["sweep"]
            assert p["flops"]["formula"]["attention"] == p["flops"]["counted"]["attention"], p["sweep"]

    # Window: only attention grows, by depth * 4 d P * P (S F + C) per frame of history.
    win = by_sweep(result, "window")
    P, C = cfg.tokens_per_frame, cfg.stream.chunk
    F = C + 1
    per_frame = depth * 4 * d * P * P * (S * F + C)
    L = [p["config"]["window"] for p in win]
    assert len({p["flops"]["counted"]["linear"] for p in win}) == 1
    for a, b, la, lb in zip(win, win[1:], L, L[1:]):
        assert total(b) - total(a) == per_frame * (lb - la)

    # Chunk: strictly growing, linear FLOPs affine in C (query tokens), attention faster than linear.
    ch = by_sweep(result, "chunk")
    assert [total(p) for p in ch] == sorted({total(p) for p in ch})
    lin = [p["flops"]["counted"]["linear"] for p in ch]
    assert lin[2] - lin[1] == lin[1] - lin[0]
    att = [p["flops"]["counted"]["attention"] for p in ch]
    assert att[2] - att[1] > att[1] - att[0] > 0

    # Resolution: linear = a P + b (per-token work + per-frame conditioning), attention = a P^2 + b P
    # (self-attention over P-token frames + per-token cross-attention to the audio tokens).
    fr = by_sweep(result, "frame")
    tokens = np.array([p["config"]["tokens_per_frame"] for p in fr], dtype=np.float64)
    assert list(tokens) == [4, 9, 16]
    lin = np.array([p["flops"]["counted"]["linear"] for p in fr], dtype=np.float64)
    att = np.array([p["flops"]["counted"]["attention"] for p in fr], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(np.stack([tokens, np.ones_like(tokens)], 1), lin, rcond=None)
    assert np.allclose(coef[0] * tokens + coef[1], lin, rtol=1e-12) and coef[0] > 0
    coef, *_ = np.linalg.lstsq(np.stack([tokens**2, tokens], 1), att, rcond=None)
    assert np.allclose(coef[0] * tokens**2 + coef[1] * tokens, att, rtol=1e-12) and coef[0] > 0
    assert [total(p) for p in fr] == sorted(total(p) for p in fr)


@pytest.mark.parametrize("overrides", [{"stream": {"window": 0}}, {"stream": {"chunk": 4, "window": 5}},
                                       {"frame_size": 80, "sampler": {"steps": 3}}])
def test_formula_matches_flop_counter_without_knot(overrides):
    cfg = tiny_config(**overrides)
    counted = bs.counted_chunk_flops(cfg, knot=False)
    formula = bs.chunk_flops_formula(cfg, knot=False)
    assert formula["total"] == counted["total"] and formula["attention"] == counted["attention"]
    assert counted["decode"] > 0


def test_out_of_memory_and_errors_are_recorded_not_raised(monkeypatch):
    timing = bs.Timing(warmup=0, chunks=1, long_chunks=0, long_budget_s=1.0)
    base, cpu = tiny_config(), torch.device("cpu")

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(bs, "time_stream", oom)
    p = bs.measure_point(base, "window", 3, {"stream": {"window": 3}}, cpu, torch.float32, "torch", timing,
                         count_flops=False)
    assert p["status"] == "skipped" and p["reason"].startswith("out of memory")
    assert p["flops"]["formula"]["total"] > 0  # the FLOPs of a point that did not fit are still known

    def broken(*args, **kwargs):
        raise ValueError("something else")

    monkeypatch.setattr(bs, "time_stream", broken)
    p = bs.measure_point(base, "window", 3, {"stream": {"window": 3}}, cpu, torch.float32, "torch", timing,
                         count_flops=False)
    assert p["status"] == "failed" and p["reason"] == "ValueError: something else"
    p = bs.measure_point(base, "chunk", 0, {"stream": {"chunk": 0}}, cpu, torch.float32, "torch", timing)
    assert p["status"] == "skipped" and "stream.chunk must be >= 1" in p["reason"]


def test_graphs_backend_falls_back_on_the_cpu_says_why_and_still_measures(tmp_path, capsys):
    """--backend graphs on the CPU: no CUDA graph; one line on stderr says why, every point records the reason
    with backend "graphs->torch", and is measured eagerly (step and whole-chunk times, no GPU replay time)."""
    out = tmp_path / "graphs"
    argv = ["--tiny", "--quick", "--device", "cpu", "--backend", "graphs", "--out", str(out), "--warmup", "1",
            "--chunks", "2", "--long-chunks", "0", "--windows", "0,3", "--chunk-lengths", "2", "--frame-sizes", "64",
            "--no-count", "--no-figure"]
    assert bs.main(argv) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "graphs backend" in line]
    assert lines == ["bench_scaling: graphs backend: CUDA graphs need a CUDA device (device cpu); running the step "
                     "eagerly"], err  # once, not once per point
    data = json.loads((out / "scaling.json").read_text())
    assert data["settings"]["backend"] == "graphs"
    points = [p for p in data["points"] if "same_measurement_as" not in p]
    assert len(points) == 2
    for p in points:
        assert p["status"] == "ok" and p["backend"] == "graphs->torch", p
        assert "CUDA graphs need a CUDA device" in p["backend_fallback"]
        assert p["step_ms"]["n"] == 2 and p["step_ms"]["median"] > 0 and p["chunk_ms"]["median"] > 0
        assert p["gpu_step_ms"] is None and p["host_step_ms"] is None and p["capture_check"] is None
    md = bs.markdown_table(data["points"])
    assert "GPU step (graph replay) median ms" in md
    assert "graphs->torch: CUDA graphs need a CUDA device" in bs.summary_line(points[0])


def test_graphs_backend_capture_failure_falls_back_to_eager(monkeypatch):
    """A capture that raises (here: the CPU has no CUDA graph to capture into) leaves the backend eager with the
    reason, and the step's outputs are the eager step's."""
    from knotanim.animator import KnotAnimator
    from knotanim.engines.descriptors import chunk_step_descriptor

    anim = KnotAnimator.from_config(tiny_config(), device="cpu", dtype=torch.float32, seed=0)
    backend = bs.CudaGraphBackend(anim.chunk_step(), "cpu")
    backend.fallback_reason, backend.name = None, "graphs"  # as on a GPU, until the capture fails

    def boom(inputs):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(backend, "_capture", boom)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    inputs = chunk_step_descriptor(anim.config).sample_inputs(0, torch.device("cpu"))
    with torch.no_grad():
        out, ref = backend.run(*inputs), anim.chunk_step()(*inputs)
    assert backend.name == "graphs->torch" and backend.fallback_reason == (
        "capture failed (RuntimeError: operation not permitted when stream is capturing)")
    assert all(torch.equal(a, b) for a, b in zip(out, ref)) and backend.take_replay_ms() == []
