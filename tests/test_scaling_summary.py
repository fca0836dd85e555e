"""scripts/scaling_summary.py (the summary of scripts/device_ddp_scaling.sh) on small synthetic logs: the
steady rate leaves the first compile and later recompile intervals out, a median of too few intervals is
marked, the scaling efficiency, and the loss comparison's means, standard errors and difference."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

import scaling_summary as ss  # scripts/ is on sys.path (conftest.py)


def _rows(rates: list[float], losses: list[float] | None = None, log_every: int = 10, t0: float = 80.0) -> list[dict]:
    """A trainer log: step 1 (no rate), then one row per interval of log_every steps at the given rates."""
    losses = losses or [0.3] * (len(rates) + 1)
    rows, t = [{"step": "1", "elapsed_s": str(t0), "loss": str(losses[0]), "steps_per_s": "0"}], t0
    for k, (rate, loss) in enumerate(zip(rates, losses[1:]), 1):
        t += log_every / rate
        rows.append({"step": str(k * log_every), "elapsed_s": f"{t:.4f}", "loss": str(loss), "steps_per_s": str(rate)})
    return rows


def _write(runs: Path, arm: str, rows: list[dict], nproc: int, steps: int, rc: int = 0) -> None:
    (runs / arm).mkdir(parents=True, exist_ok=True)
    with open(runs / arm / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (runs / f"scaling_{arm}.json").write_text(json.dumps(
        {"arm": arm, "nproc": nproc, "parallel": "ddp", "global_batch": 24, "steps": steps, "compile": 1,
         "rc": rc, "wall_s": 100}))


# 20 intervals of 10 steps: the first compile (3 slow ones), then 3.6 steps/s with 4 recompile intervals
ONE_GPU = [0.2, 0.5, 0.45] + [3.6, 3.65, 3.62, 3.58, 0.9, 3.6, 3.61, 3.63, 0.54, 3.6, 3.62, 3.7, 0.88, 1.1, 3.66,
                              3.56, 3.7]


def test_recompile_intervals_are_left_out_of_the_steady_rate():
    r = ss.measure(_rows(ONE_GPU), planned_steps=200)
    assert ss.first_compile_end(ss.intervals(_rows(ONE_GPU))) == 30  # the first fast interval starts at step 30
    assert r.warm == 40  # 20% of 200 steps is later than the first compile
    window = ONE_GPU[4:]  # the intervals starting at step 40 or later
    fast = [v for v in window if v > 2]
    assert r.steady == pytest.approx(statistics.median(fast))
    assert r.used == len(fast) == 12 and [i.end for i in r.recompiles] == [80, 120, 160, 170]
    assert [i.seconds for i in r.recompiles] == pytest.approx([10 / v for v in (0.9, 0.54, 0.88, 1.1)], abs=1e-3)
    assert r.mean == pytest.approx(160 / sum(10 / v for v in window), rel=1e-4)  # recompiles included
    assert r.steady_text() == f"{r.steady:.3f}"  # 12 intervals: not marked


def test_the_first_compile_sets_the_warm_up_when_it_is_later_than_20_percent():
    rates = [0.1, 0.5, 0.5, 0.5, 0.5, 5.5, 5.6, 5.5, 5.4, 5.5]  # compile until step 50 of 100
    r = ss.measure(_rows(rates), planned_steps=100)
    assert r.warm == 50 and r.used == 5 and not r.recompiles and r.steady == pytest.approx(5.5)


def test_too_few_intervals_are_marked():
    # the old summary's artifact: after WARM_STEPS=100 only 5.48 and a recompile's 0.63 were left (median 3.06)
    rows = _rows([0.12, 0.55, 0.56, 0.6, 5.48, 5.69, 4.11, 1.01, 5.63, 5.49, 5.48, 0.63])
    r = ss.measure(rows, planned_steps=200, warm=100)
    assert r.steady == pytest.approx(5.48) and r.used == 1 and len(r.recompiles) == 1
    assert r.steady_text() == "5.480 (n=1)"
    auto = ss.measure(rows, planned_steps=200)  # warm-up 40: six steady intervals, two recompiles
    assert (auto.warm, auto.used, len(auto.recompiles)) == (40, 6, 2) and "(n=" not in auto.steady_text()
    assert ss.measure(rows[:1], planned_steps=200).steady is None  # no interval at all


def test_a_run_stopped_inside_its_warm_up_is_measured_after_the_first_compile():
    r = ss.measure(_rows([0.2, 0.5, 3.6, 3.7]), planned_steps=300)  # 20% would be step 60; the log ends at 40
    assert r.warm == 20 and r.used == 2 and r.steady_text() == f"{statistics.median([3.6, 3.7]):.3f} (n=2)"


def test_loss_comparison_numbers():
    ref = _rows([1.0] * 6, losses=[9.0, 9.0, 0.30, 0.32, 0.34, 0.36, 0.38])
    other = _rows([1.0] * 4, losses=[9.0, 9.0, 0.31, 0.30, 0.35, 0.33])  # stopped at step 40
    c = ss.compare_loss(ref, other, warm=10)
    assert (c.first, c.last, c.n) == (20, 40, 3)  # the shared steps after the warm-up
    assert c.ref_mean == pytest.approx(0.32) and c.ref_se == pytest.approx(0.02 / math.sqrt(3))
    assert c.mean == pytest.approx(0.32) and c.se == pytest.approx(statistics.stdev([0.31, 0.30, 0.35]) / math.sqrt(3))
    assert c.diff == pytest.approx(0.0, abs=1e-12) and c.diff_se == pytest.approx(math.hypot(c.ref_se, c.se))
    assert ss.compare_loss(ref, other, warm=40) is None


def test_summary_table_efficiency_loss_table_and_plot(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _write(runs, "ddp1", _rows(ONE_GPU), nproc=1, steps=200, rc=124)
    two = [0.12, 0.55, 0.56, 0.6, 5.48, 5.69, 4.11, 1.01, 5.63, 5.49, 5.48, 0.63]
    _write(runs, "ddp2", _rows(two, losses=[0.3 + 0.01 * (k % 3) for k in range(13)]), nproc=2, steps=200, rc=124)
    (runs / "scaling_ddp2.gpumem.csv").write_text("0, 1024\n1, 2048\n0, 3072\nbad line\n")
    assert ss.main(["--runs", str(runs), "--out", str(out), "--init", "assets/default"]) == 0
    text = (out / "ddp_summary.md").read_text()
    rates, losses = text.split("Loss against 1 GPU")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in rates.splitlines() if line.startswith("| ") and "GPU" in line.split("|")[1]}
    one, ddp = rows["1 GPU (exit 124 after 200 steps)"], rows["2 GPUs, DDP (exit 124 after 120 steps)"]
    s1, s2 = float(one[2]), float(ddp[2])
    assert ddp[1] == "12" and ddp[4:7] == ["40", "6", "2 (9.9, 15.9)"]
    assert float(ddp[9]) == pytest.approx(s2 * 24 / (2 * s1 * 24), abs=1e-3) and one[9] == "1.000"
    assert float(ddp[8]) == pytest.approx(s2 * 24 / 2, abs=0.06) and ddp[10] == "3.0 / 2.0"
    loss_row = next(line for line in losses.splitlines() if line.startswith("| 2 GPUs, DDP"))
    cells = [c.strip() for c in loss_row.split("|")[2:-1]]
    se = statistics.stdev([0.3 + 0.01 * (k % 3) for k in range(5, 13)]) / math.sqrt(8)
    assert cells == ["50-120", "8", "0.3000 ± 0.0000", f"0.3100 ± {se:.4f}", f"+0.0100 ± {se:.4f}",
                     f"{0.01 / se:+.2f}"]
    assert (out / "ddp_loss.png").read_bytes()[:4] == b"\x89PNG"


def test_a_runs_folder_without_any_arm_is_an_error_not_an_empty_table(tmp_path, capsys):
    assert ss.main(["--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    assert "no scaling_<arm>.json" in capsys.readouterr().err and not (tmp_path / "out").exists()
