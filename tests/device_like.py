"""Run a command as the accelerator machine does, shared by the script tests: `python -S` (no site module,
so no editable-install finder) seeing knotanim only through PYTHONPATH=<repository>, this interpreter's
site-packages appended as plain paths for torch and numpy, and an `av` module that cannot be imported
(the machine has no PyAV). One torch thread: the tiny models gain nothing from more on a busy machine."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def device_like(tmp_path: Path, *command: str) -> tuple[list[str], dict]:
    """(the interpreter's command line running `command`, e.g. "-m", "knotanim.cli.main", "soak"; environment)
    as on the accelerator machine."""
    noav = tmp_path / "noav"
    noav.mkdir(exist_ok=True)
    (noav / "av.py").write_text('raise ImportError("no PyAV (as on the accelerator machine)")\n')
    site = [p for p in sys.path if p.rstrip(os.sep).endswith(("site-packages", "dist-packages"))]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=os.pathsep.join([str(noav), str(ROOT), *site]), OMP_NUM_THREADS="1")
    return [sys.executable, "-S", *command], env
