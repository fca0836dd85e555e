"""benchmarks/device_benchmarks.sh rehearsed on the CPU before it costs a GPU lease, from a plain source
checkout that was never installed (PYTHONPATH=<repository>), as on the accelerator machine: every part at
tiny sizes, once as it should run and once with a part that hangs and one that fails."""
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _uninstalled_python(tmp_path: Path) -> Path:
    """An interpreter that sees the package only through the script's PYTHONPATH: `python -S` (no site
    module, so no .pth file and no editable-install finder) with this interpreter's site-packages
    appended as plain paths for torch and numpy."""
    site_dirs = [p for p in sys.path if p.rstrip(os.sep).endswith(("site-packages", "dist-packages"))]
    wrapper = tmp_path / "python-uninstalled"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{os.pathsep.join(site_dirs)}" '
                       f'exec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper



BENCH = REPO / "benchmarks" / "device_benchmarks.sh"
# The benchmarks at the smallest sizes each offers: the tiny model (one backend, 1 s of audio), a
# 4-point tiny scaling sweep with a 3-chunk long stream, the lite profile on one thread for 6 frames, a
# one-layer Wan-like shape timed once.
TINY_BENCH = dict(
    DEVICE="cpu", BACKENDS="torch", BACKENDS_ARGS="--tiny --seconds 1",
    SCALING_ARGS="--tiny --quick --warmup 1 --chunks 2 --long-chunks 3 --windows 0,3 --chunk-lengths 2 "
                 "--frame-sizes 64 --no-count",
    WAN_ARGS="--layers 1 --width 64 --heads 2 --ffn 128 --text-tokens 8 --tokens-per-frame 16 --window 6 --steps 2",
    LITE_THREADS="1", LITE_BACKENDS="torch", LITE_FRAMES="6",
    WAN_ITERS="1", WAN_WARMUP="0", WAN_VARIANTS="eager,graphs")


def _nproc() -> int:
    """What `nproc` says: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _bench(tmp_path: Path, **knobs) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """benchmarks/device_benchmarks.sh from an uninstalled checkout on the CPU; its result, $OUT and the
    summary's part table ({part: (exit status, outcome, outputs, load1_at_start, gpu_procs_at_start)}, in the
    order the parts ran; outputs ends with the CONTENDED note where there is one)."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=str(_uninstalled_python(tmp_path)), OUT=str(out), OMP_NUM_THREADS="1", **{**TINY_BENCH, **knobs})
    r = subprocess.run(["bash", str(BENCH)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    summary = (out / "summary.txt").read_text()
    header, table = summary.split("outputs\n", 1)
    assert header.splitlines()[-1].split()[-2:] == ["load1_at_start", "gpu_procs_at_start"], summary
    parts = {}
    for line in table.split("\n\n", 1)[0].splitlines():
        name, rc, outcome, _wall, _limit, load, gprocs, *outputs = line.split()
        parts[name] = (int(rc), outcome, " ".join(outputs), load, gprocs)
    return r, out, parts


def test_device_benchmarks_script_runs_every_part(tmp_path):
    r, out, parts = _bench(tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert list(parts) == ["backends", "scaling", "lite", "wan"], parts
    assert all(rc == 0 and outcome == "ok" and "missing" not in files for rc, outcome, files, *_ in parts.values()), parts
    cores = _nproc()
    for _rc, _outcome, files, load, gprocs in parts.values():  # /proc/loadavg's; no nvidia-smi here, or a count
        assert float(load) >= 0 and (gprocs == "n/a" or gprocs.isdigit()), parts
        assert ("CONTENDED: load" in files) == (float(load) > cores / 2), (parts, cores)
    assert sorted(p.name for p in out.iterdir()) == ["backends.json", "bench_logs.tar.gz", "scaling.json", "scaling.png",
                                                     "summary.txt", "wan.json"]  # + the caller's bench.txt: 7 <= 8
    backends = json.loads((out / "backends.json").read_text())["results"]
    assert [(b["name"], b["status"]) for b in backends] == [("torch", "ok")] and backends[0]["fps"] > 0
    scaling = json.loads((out / "scaling.json").read_text())
    assert [p["status"] for p in scaling["points"]] == ["ok"] * 4 and scaling["long"]["status"] == "ok"
    assert scaling["settings"]["timing"]["long_budget_s"] == 35  # SCALING_LONG_BUDGET_S's default, passed on
    assert (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    wan = json.loads((out / "wan.json").read_text())
    assert [(w["variant"], w["workload"]) for w in wan["runs"]] == [("eager", "clip"), ("eager", "steady")]
    assert [s["variant"] for s in wan["skipped"]] == ["graphs"] and wan["shape"]["layers"] == 1
    summary = (out / "summary.txt").read_text()
    assert "backends: torch: " in summary and "scaling: 4 sweep points: 4 ok" in summary
    assert "scaling: backend torch" in summary and scaling["settings"]["backend"] == "torch"  # SCALING_BACKEND on cpu
    assert backends[0]["seconds"] == 1  # BACKENDS_SECONDS_FOR names onnxruntime only: torch keeps --seconds (here 1)
    assert "wan: eager/clip: " in summary and "wan: graphs/all: skipped" in summary
    lite = summary.split("lite (scripts/lite_speed.py, CPU):\n", 1)[1]
    assert "--threads 1" in lite and "configs/models/lite.yaml | torch | " in lite  # lite_speed's own table
    with tarfile.open(out / "bench_logs.tar.gz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
        assert {"env.txt", "parts.tsv", "backends.log", "scaling.log", "lite.log", "wan.log"} <= names
        assert "bench_scaling: " in tar.extractfile("./scaling.log").read().decode()
    for part in parts:  # every part's output went to the console (bench.txt) as well
        assert f"== {part}: exit 0 (ok)" in r.stdout


def test_device_benchmarks_script_reports_failed_parts_and_goes_on(tmp_path):
    """A part that hangs past its budget (wan: endless iterations, 2 s) and one that fails at once (scaling:
    an unknown option) are reported; the part after them (backends) still runs; the script exits 1."""
    r, out, parts = _bench(tmp_path, PARTS="wan scaling backends", WAN_S="2", WAN_ITERS="100000",
                           SCALING_ARGS="--no-such-option")
    assert r.returncode == 1, (r.stdout[-3000:], r.stderr[-3000:])
    assert list(parts) == ["wan", "scaling", "backends"], parts
    assert parts["wan"][:2] == (124, "timed-out") and "wan.json (missing)" in parts["wan"][2]
    assert parts["scaling"][:2] == (2, "failed")
    assert parts["backends"][:2] == (0, "ok")
    assert json.loads((out / "backends.json").read_text())["results"][0]["status"] == "ok"
    assert "no-such-option" in r.stdout  # argparse's complaint, in the console output


def test_device_benchmarks_script_marks_a_contended_part(tmp_path):
    """A load average above half the cores at a part's start (a fake LOADAVG_FILE) puts CONTENDED on the part's
    line, a warning under the table, and on the wan runs' digest lines; the cuDNN wan variants are skipped on
    the CPU with their reason, and the part still succeeds."""
    fake = tmp_path / "loadavg"
    fake.write_text("999.50 500.00 100.00 40/900 4242\n")
    r, out, parts = _bench(tmp_path, PARTS="lite wan", LOADAVG_FILE=str(fake), WAN_VARIANTS="eager,cudnn,fp8-cudnn")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert list(parts) == ["lite", "wan"], parts
    cores = _nproc()
    for rc, outcome, files, load, _gprocs in parts.values():
        assert (rc, outcome, load) == (0, "ok", "999.50") and files.endswith(f"CONTENDED: load 999.50 on {cores} cores at start")
    summary = (out / "summary.txt").read_text()
    assert "WARNING: 2 part(s) started on a contended machine" in summary
    wan = json.loads((out / "wan.json").read_text())
    assert [s["variant"] for s in wan["skipped"]] == ["cudnn", "fp8-cudnn"] and all(s["reason"] for s in wan["skipped"])
    assert all(w["load1_at_start"] == 999.5 for w in wan["runs"]) and wan["runs"]
    assert "wan: eager/clip: " in summary and "load1 999.50 at start  CONTENDED: load 999.50 on" in summary
    assert "wan: cudnn/all: skipped: " in summary and "wan: fp8-cudnn/all: skipped: " in summary
    assert "== wan: load1 999.50 on" in r.stdout and ": CONTENDED" in r.stdout


def test_device_benchmarks_script_defaults():
    """The default budgets fit the call (at most 560 s) and the cuDNN wan variants run last."""
    text = BENCH.read_text()
    budgets = {k: int(v) for k, v in re.findall(r"(BACKENDS_S|SCALING_S|LITE_S|WAN_S)=\$\{\1:-(\d+)\}", text)}
    assert budgets == {"BACKENDS_S": 200, "SCALING_S": 110, "LITE_S": 40, "WAN_S": 170} and sum(budgets.values()) <= 560
    assert "WAN_VARIANTS=${WAN_VARIANTS:-eager,compile,graphs,fp8,cudnn,fp8-cudnn}" in text
    # the GPU sweep measures compute (CUDA graphs), the CPU rehearsal stays eager; ONNX Runtime gets 1 s of audio
    assert 'if [ "$DEVICE" = cuda ]; then SCALING_BACKEND=${SCALING_BACKEND:-graphs}; else ' \
           'SCALING_BACKEND=${SCALING_BACKEND:-torch}; fi' in text
    assert "BACKENDS_SECONDS_FOR=${BACKENDS_SECONDS_FOR-onnxruntime=1}" in text
    assert '--backend "$SCALING_BACKEND"' in text and '--seconds-for "$BACKENDS_SECONDS_FOR"' in text


def test_device_benchmarks_script_refuses_an_unknown_part(tmp_path):
    r = subprocess.run(["bash", str(BENCH)], cwd=tmp_path, env={**os.environ, "PARTS": "backends bogus"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown part bogus" in r.stdout and not (tmp_path / "out").exists()
