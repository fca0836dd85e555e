"""`knotanim bench` with several backends: how each backend child's outcome becomes a JSON result and the exit
status (children replaced by canned outputs), and one real child run end to end on the tiny model."""
from __future__ import annotations

import json
import subprocess

import pytest

from knotanim.cli import bench as bb
from knotanim.cli.main import main


def test_children_that_time_out_crash_mid_print_or_are_unavailable(tmp_path, monkeypatch):
    outcomes = {  # backend -> what its child does
        "torch": subprocess.TimeoutExpired("child", 5),
        "compiled": subprocess.CompletedProcess("child", -11, stdout='progress\n{"backend": "compiled", "fp'),
        "tensorrt": subprocess.CompletedProcess("child", 0, stdout='{"backend": "tensorrt", "unavailable": "no GPU"}\n'),
    }

    def fake_run(cmd, **kwargs):
        assert "--child" in cmd
        outcome = outcomes[cmd[cmd.index("--backend") + 1]]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(bb.subprocess, "run", fake_run)
    path = tmp_path / "backends.json"
    rc = main(["bench", "--tiny", "--backend", "torch", "--backend", "compiled", "--backend", "tensorrt",
               "--timeout-s", "5", "--json", str(path)])
    assert rc == 1  # a timed-out or crashed backend fails the run; an unavailable one does not
    results = {r["backend"]: r for r in json.loads(path.read_text())["results"]}
    assert (results["torch"]["status"], results["torch"]["reason"]) == ("failed", "timed out after 5 s (--timeout-s)")
    assert (results["compiled"]["status"], results["compiled"]["reason"]) == ("failed", "no result, exit status -11")
    assert (results["tensorrt"]["status"], results["tensorrt"]["reason"]) == ("unavailable", "no GPU")
    outcomes.pop("torch"), outcomes.pop("compiled")
    assert main(["bench", "--tiny", "--backend", "tensorrt", "--timeout-s", "5"]) == 0


def test_seconds_for_gives_one_backend_its_own_stream_length(tmp_path, monkeypatch):
    """--seconds-for onnxruntime=1: the onnxruntime child times 1 s of audio, the others --seconds; each result
    says its seconds; a malformed value is refused by argparse."""
    seen = {}

    def fake_run(cmd, **kwargs):
        name = cmd[cmd.index("--backend") + 1]
        seen[name] = float(cmd[cmd.index("--seconds") + 1])
        return subprocess.CompletedProcess("child", 0, stdout=json.dumps({"backend": name, "unavailable": "test"}) + "\n")

    monkeypatch.setattr(bb.subprocess, "run", fake_run)
    path = tmp_path / "backends.json"
    assert main(["bench", "--tiny", "--backend", "torch", "--backend", "onnxruntime", "--seconds", "3",
                 "--seconds-for", "onnxruntime=1", "--json", str(path)]) == 0
    assert seen == {"torch": 3.0, "onnxruntime": 1.0}
    assert [r["seconds"] for r in json.loads(path.read_text())["results"]] == [3.0, 1.0]
    assert bb.parse_seconds_for("") == {}
    assert bb.parse_seconds_for(" torch=2, compiled=0.5 ") == {"torch": 2.0, "compiled": 0.5}
    for bad in ("onnxruntime", "onnxruntime=0", "=1", "onnxruntime=x", "nosuch=1"):
        with pytest.raises(SystemExit):
            main(["bench", "--seconds-for", bad])


def test_two_real_children_on_the_tiny_model(tmp_path, capsys):
    """Two backends, each measured in its own process; the JSON and the Markdown rows carry the command that
    reproduces the run."""
    path, md = tmp_path / "backends.json", tmp_path / "bench.md"
    assert main(["bench", "--tiny", "--seconds", "1", "--threads", "1", "--backend", "torch", "--backend", "torch",
                 "--json", str(path), "--append", str(md)]) == 0
    doc = json.loads(path.read_text())
    assert doc["command"] == ("knotanim bench --device auto --dtype auto --backend torch --backend torch --tiny --seconds 1.0 "
                              "--threads 1")
    for r in doc["results"]:
        assert r["status"] == "ok" and r["returncode"] == 0 and r["frames"] > 0 and r["fps"] > 0
        assert r["median_ms"] <= r["p95_ms"] and r["peak"].endswith("MiB RSS")
    rows = md.read_text().splitlines()
    assert len(rows) == 2 and all("`knotanim bench " in row and "frames/s" in row for row in rows)
