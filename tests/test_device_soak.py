"""scripts/device_soak.sh, rehearsed on the CPU with the tiny model: `start` returns while the soak runs on in
its own session, `collect` stops a soak that outlasts its wait with SIGTERM and still packs a summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_soak.sh"


def _run(verb: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "OUT": str(tmp_path / "out"), "SOAK_DIR": str(tmp_path / "soak"), "PYTHON": sys.executable,
            "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), verb], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=full)


def test_a_started_soak_outlives_the_call_and_collect_stops_and_packs_it(tmp_path):
    assert _run("collect", tmp_path).returncode == 3  # nothing started here

    args = "--mode stream --tiny --stream-hours 1 --sample-seconds 1 --device cpu --backend torch --progress 1"
    try:
        _start_then_collect(tmp_path, args)
    finally:  # never leave an hour-long soak behind a failed assertion
        pid = tmp_path / "soak" / "soak.pid"
        if pid.exists():
            subprocess.run(["kill", "-KILL", pid.read_text().strip()], capture_output=True)


def _start_then_collect(tmp_path: Path, args: str) -> None:
    started = _run("start", tmp_path, WAIT_S="0", SOAK_ARGS=args)
    assert started.returncode == 0, started.stderr
    assert "still running" in started.stdout
    assert (tmp_path / "out" / "soak_partial.tar.gz").stat().st_size > 0

    csv_path = tmp_path / "soak" / "soak_stream.csv"  # the soak goes on after `start` returned
    deadline = time.time() + 120
    while time.time() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 3):
        time.sleep(0.5)
    assert len(csv_path.read_text().splitlines()) >= 3
    assert _run("status", tmp_path).stdout.startswith("running")
    assert _run("start", tmp_path, SOAK_ARGS=args).returncode == 2  # one soak at a time

    collected = _run("collect", tmp_path, WAIT_S="1")
    assert collected.returncode == 1  # stopped early: no pass, whatever its checks say
    assert "SIGTERM" in collected.stdout
    with tarfile.open(tmp_path / "out" / "soak.tar.gz") as tar:
        summary = json.load(tar.extractfile("soak/soak_stream.json"))
        assert "soak/soak.txt" in tar.getnames()
    assert not summary["complete"] and summary["stopped_by"] == "SIGTERM" and summary["frames"] > 0
    assert _run("status", tmp_path).stdout.startswith("not running")
