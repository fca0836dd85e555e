"""The dependency rule (.importlinter, docs/architecture.md) holds, and the check can fail.

import-linter reads the package from the file system, where engines/ and app/ lie beside knotanim/
rather than inside it (pyproject.toml installs them as knotanim.engines and knotanim.app): the test
lays out a copy as installed and runs the linter there, in a subprocess so that this copy is the
`knotanim` it finds.
"""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="needs import-linter (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def _installed_layout(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "knotanim", tmp_path / "knotanim", ignore=IGNORE)
    shutil.copytree(ROOT / "engines", tmp_path / "knotanim" / "engines", ignore=IGNORE)
    shutil.copytree(ROOT / "app", tmp_path / "knotanim" / "app", ignore=IGNORE)
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code, str(ROOT / ".importlinter"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_imports_go_down_the_layers(tmp_path):
    result = _lint(_installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_rule(tmp_path):
    root = _installed_layout(tmp_path)
    (root / "knotanim" / "model" / "upward.py").write_text("from knotanim.stream import stream  # noqa: F401\n")
    result = _lint(root)
    assert result.returncode != 0 and "BROKEN" in result.stdout
    assert "knotanim.model.upward -> knotanim.stream" in result.stdout


def test_nothing_in_the_package_reaches_into_scripts():
    """scripts/ and benchmarks/ are tools around the package, never part of it."""
    offenders = []
    for folder in ("knotanim", "engines", "app"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                              if n.split(".")[0] in ("scripts", "benchmarks")]
    assert not offenders
