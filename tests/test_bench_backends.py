"""scripts/bench_backends.py's parent: how each backend child's outcome becomes a JSON result and the exit
status (children replaced by canned outputs; the real children run in tests/test_device_scripts.py)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bench_backends", Path(__file__).resolve().parents[1] / "scripts" / "bench_backends.py")
bb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bb)


def test_children_that_time_out_crash_mid_print_or_are_unavailable(tmp_path, monkeypatch):
    outcomes = {  # backend -> what its child does
        "torch": subprocess.TimeoutExpired("child", 5),
        "compiled": subprocess.CompletedProcess("child", -11, stdout='progress\n{"backend": "compiled", "fp'),
        "tensorrt": subprocess.CompletedProcess("child", 0, stdout='{"backend": "tensorrt", "unavailable": "no GPU"}\n'),
    }

    def fake_run(cmd, **kwargs):
        outcome = outcomes[cmd[cmd.index("--only") + 1]]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(bb.subprocess, "run", fake_run)
    path = tmp_path / "backends.json"
    rc = bb.main(["--backends", "torch,compiled,tensorrt", "--timeout-s", "5", "--artifacts", str(tmp_path),
                  "--json", str(path)])
    assert rc == 1  # a timed-out or crashed backend fails the run; an unavailable one does not
    results = {r["backend"]: r for r in json.loads(path.read_text())["results"]}
    assert (results["torch"]["status"], results["torch"]["reason"]) == ("failed", "timed out after 5 s (--timeout-s)")
    assert (results["compiled"]["status"], results["compiled"]["reason"]) == ("failed", "no result, exit status -11")
    assert (results["tensorrt"]["status"], results["tensorrt"]["reason"]) == ("unavailable", "no GPU")
    outcomes.pop("torch"), outcomes.pop("compiled")
    assert bb.main(["--backends", "tensorrt", "--artifacts", str(tmp_path)]) == 0


def test_seconds_for_gives_one_backend_its_own_stream_length(tmp_path, monkeypatch):
    """--seconds-for onnxruntime=1: the onnxruntime child times 1 s of audio, the others --seconds; each result
    says its seconds; a malformed value is refused by argparse."""
    import pytest

    seen = {}

    def fake_run(cmd, **kwargs):
        name = cmd[cmd.index("--only") + 1]
        seen[name] = float(cmd[cmd.index("--seconds") + 1])
        return subprocess.CompletedProcess("child", 0, stdout=json.dumps({"backend": name, "unavailable": "test"}) + "\n")

    monkeypatch.setattr(bb.subprocess, "run", fake_run)
    path = tmp_path / "backends.json"
    assert bb.main(["--backends", "torch,onnxruntime", "--seconds", "3", "--seconds-for", "onnxruntime=1",
                    "--artifacts", str(tmp_path), "--json", str(path)]) == 0
    assert seen == {"torch": 3.0, "onnxruntime": 1.0}
    assert [r["seconds"] for r in json.loads(path.read_text())["results"]] == [3.0, 1.0]
    assert bb.parse_seconds_for("") == {} and bb.parse_seconds_for(" a=2, b=0.5 ") == {"a": 2.0, "b": 0.5}
    for bad in ("onnxruntime", "onnxruntime=0", "=1", "onnxruntime=x"):
        with pytest.raises(SystemExit):
            bb.parse_args(["--seconds-for", bad])
