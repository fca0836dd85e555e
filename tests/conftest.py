"""Shared fixtures. Every model in the suite is tiny and random, so the suite runs on any CPU.

The Debian packages some tests use (espeak-ng, PortAudio, PulseAudio, the libraries Qt draws with;
video files go through PyAV, which brings its own ffmpeg) are optional: a test that needs one skips,
naming the package to apt-get install, through `missing(name)` / `require(name)` /
`@pytest.mark.needs(name)` (names: DEBIAN_PACKAGES).
`.ci/run` installs them all. pytest-qt is loaded here, and only where Qt can draw (pyproject's
addopts keep it from loading itself: without Qt's libraries it fails the whole session).
"""
import functools
import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator

# scripts/ is no package and is not installed: its tests import its tools by module name (bench_render,
# lite_speed, ...) with the folder on sys.path, as `python scripts/<tool>.py` has it.
SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the README's command on a machine without a display


def _imports(*modules: str) -> bool:
    try:
        for m in modules:
            importlib.import_module(m)
    except (ImportError, OSError):  # OSError: sounddevice without PortAudio
        return False
    return True


def _espeak() -> bool:
    from knotanim.data.speech import espeak_available

    return espeak_available()


# name -> (the Debian packages that provide it, a probe that is True when it is there, the Python module
# that wraps it: when that is absent, the test extra is not installed and apt-get would not help)
DEBIAN_PACKAGES = {
    "espeak-ng": ("espeak-ng libespeak-ng1", _espeak, None),
    "portaudio": ("libportaudio2", lambda: _imports("sounddevice"), "sounddevice"),
    "pulseaudio": ("pulseaudio pulseaudio-utils libasound2-plugins",
                   lambda: all(shutil.which(t) for t in ("pulseaudio", "pactl", "paplay")), None),
    "qt": ("libegl1 libgl1 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3",
           lambda: _imports("PyQt6.QtGui", "PyQt6.QtWidgets", "PyQt6.QtTest"), "PyQt6"),
}


@functools.cache
def missing(name: str) -> str | None:
    """None when `name` (a DEBIAN_PACKAGES key) is usable here, else the skip reason naming its packages."""
    packages, present, module = DEBIAN_PACKAGES[name]
    if present():
        return None
    if module is not None and importlib.util.find_spec(module) is None:
        return f"needs {name}: pip install -e '.[test]' (the {module} package is not installed)"
    return f"needs {name}: apt-get install {packages}"


def require(name: str) -> None:
    """Skip the calling test, fixture or (at module level) module when `name` is missing."""
    reason = missing(name)
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)


if missing("qt") is None:
    pytest_plugins = ["pytestqt.plugin"]


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(name, ...): skip unless these Debian packages are installed "
                                       "(names: tests/conftest.py DEBIAN_PACKAGES)")


def pytest_collection_modifyitems(config, items):
    """@pytest.mark.needs(name): skipped at collection, so the report names the test, not this file."""
    for item in items:
        for name in (n for mark in item.iter_markers("needs") for n in mark.args):
            if missing(name) is not None:
                item.add_marker(pytest.mark.skip(reason=missing(name)))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and threads crawl on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def anim():
    """The tiny random-weights animator (64x64 frames, 2 blocks), shared read-only by the suite."""
    return KnotAnimator.from_config(tiny_config(), device="cpu", seed=0)


@pytest.fixture(scope="session")
def ref():
    """A random 64x64 'portrait' for the tiny animator."""
    return np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def eval_corpus(tmp_path_factory):
    """A small held-out speech corpus, built (with espeak-ng) the way `knotanim data build-speech --split
    eval` does; KnotBench tests read their speech from it (reproducible, unlike espeak-ng within a process)."""
    from knotanim.data.corpus import build_corpus

    require("espeak-ng")
    path = tmp_path_factory.mktemp("corpus") / "speech_eval.npz"
    build_corpus(path, minutes=0.15, split="eval", seed=0)
    return path


@pytest.fixture(autouse=True)
def no_native_bf16(monkeypatch):
    """The start-up choice measures the lite profile in bf16 too on a CPU with native bf16
    (knotanim.profiles.cpu_has_native_bf16); the suite behaves the same on every CPU unless a test
    says this one has it."""
    from knotanim import profiles

    monkeypatch.setattr(profiles, "cpu_has_native_bf16", lambda: False)
