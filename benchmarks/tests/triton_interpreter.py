"""Run a script in Triton's CPU interpreter (TRITON_INTERPRET=1, read when Triton starts: hence a fresh process),
shared by the tests of our Triton kernels. Skipped where Triton is not installed (CI's CPU torch)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="Triton is not installed (CI's CPU torch)")


def run_interpreted(script: str, timeout: float = 300):
    """Run `script` (dedented) with benchmarks/ importable; it must exit 0 having printed only "ok"."""
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
