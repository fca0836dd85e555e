"""Shared fixtures. Every model in the suite is tiny and random, so the suite runs on any CPU.

The Debian packages some tests use (espeak-ng, PortAudio, PulseAudio, the libraries Qt draws with;
video files go through PyAV, which brings its own ffmpeg) are optional: a test that needs one skips,
naming the package to apt-get install, through `missing(name)` / `require(name)` /
`@pytest.mark.needs(name)` (names: DEBIAN_PACKAGES).
`.ci/run` installs them all. pytest-qt is loaded here, and only where Qt can draw (pyproject's
addopts keep it from loading itself: without Qt's libraries it fails the whole session).
"""
import os
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


from needs import DEBIAN_PACKAGES, missing, require  # noqa: E402,F401 (the fixtures' and markers' helpers)


if missing("qt") is None:
    pytest_plugins = ["pytestqt.plugin"]


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(name, ...): skip unless these Debian packages are installed "
                                       "(names: tests/needs.py DEBIAN_PACKAGES)")


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
