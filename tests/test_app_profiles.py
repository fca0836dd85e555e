"""The app's Profile box: measured on a worker thread, the choice reaches the window (pytest-qt)."""
import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from needs import require  # noqa: E402

require("qt")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QSettings  # noqa: E402

from knotanim import tiny_config  # noqa: E402
from knotanim.animator import KnotAnimator  # noqa: E402
from knotanim.app.profiles import ProfileGroup  # noqa: E402
from knotanim.app.settings import Settings  # noqa: E402
from knotanim.app.window import MainWindow  # noqa: E402
from knotanim.profiles import Choice, Profile  # noqa: E402


def test_profile_box_measures_off_the_ui_thread_and_switches_the_model(qtbot, tmp_path):
    first, second = (KnotAnimator.from_config(tiny_config(), seed=s) for s in (0, 1))
    threads, requests = [], []

    def chooser(requested):
        threads.append(threading.current_thread())
        requests.append(requested)
        if requested == "lite":
            raise ValueError("profile 'lite' is not installed; see docs/lite.md")
        return Choice(Profile("default", tmp_path, "d"), second, None, 0.9, "no installed profile holds 25 fps", holds=False)

    group = ProfileGroup(chooser, ["default"], "auto")
    w = MainWindow(first, settings=Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)),
                   monitor_level=False, model_name="tiny", profiles=group)
    qtbot.addWidget(w)
    lite = group.combo.findData("lite")
    assert not group.combo.model().item(lite).isEnabled() and "docs/lite.md" in group.combo.itemText(lite)
    with qtbot.waitSignal(group.chosen, timeout=5000):
        group.request("auto")
    assert threads[0] is not threading.main_thread() and requests == ["auto"]
    assert w.animator is second and w.session.animator is second and w.model_name == "default"
    assert "0.9 frames/s" in group.rate.text() and "holds 25 fps" in group.rate.text()
    group.request("lite")
    qtbot.waitUntil(lambda: not group.busy, timeout=5000)
    assert group.rate.text().startswith("Cannot use profile 'lite'") and w.animator is second
    w.session.shutdown()


def test_live_options_carry_the_profile_the_window_uses(qtbot, tmp_path, anim):
    """The pipeline tries the smaller installed profiles first when the GPU runs out of memory, so the
    window passes the profile its model was loaded from, and the one the Profile box switched to."""
    prepared = object()  # stands in for the StepBackends the choice built for the quality ladder

    def chooser(requested):
        return Choice(Profile("lite", tmp_path, "l"), anim, None, 30.0, "lite holds 25 fps", holds=True,
                      backend_name="onnxruntime[CPU]", backends=prepared,
                      notes=["compiled skipped (no compiler)"])

    group = ProfileGroup(chooser, ["default", "lite"], "default")
    w = MainWindow(anim, settings=Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)),
                   monitor_level=False, model_name="default profile", profiles=group, profile="default")
    qtbot.addWidget(w)
    assert w.live_options().profile == "default" and w.live_options().model_name == "default profile"
    assert w.live_options().backend is None  # eager torch until a choice brings a backend
    with qtbot.waitSignal(group.chosen, timeout=5000):
        group.request("lite")
    assert w.live_options().profile == "lite" and w.live_options().model_name == "lite"
    assert w.live_options().backend is prepared
    assert group.rate.text().startswith("lite with onnxruntime[CPU]: 30.0 frames/s")
    assert group.rate.text().endswith("\ncompiled skipped (no compiler)")
    w.session.shutdown()


def test_the_app_starts_with_the_profile_it_loaded(qtbot, anim, monkeypatch):
    from knotanim.app import main as app_main
    from knotanim.profiles import installed_profiles

    installed = installed_profiles()
    if not installed:
        pytest.skip("no model profile is installed")
    monkeypatch.setattr(app_main, "load_animator_with_notes", lambda args: (anim, "default profile", []))
    monkeypatch.setattr(app_main, "profile_group", lambda args, animator: None)  # no measuring here
    w = app_main.create_window(["--profile", "auto", "--device", "cpu"])
    qtbot.addWidget(w)
    assert w.live_options().profile == installed[0].name  # auto loads the best-quality installed profile
    w.close()
    args = app_main.parse_args
    assert app_main.profile_name(args(["--tiny"])) is None and app_main.profile_name(args(["--model", "x"])) is None


def test_the_chooser_measures_the_requested_backend(monkeypatch, anim, tmp_path):
    import knotanim.profiles as P
    from knotanim.app.main import parse_args
    from knotanim.app.profiles import make_chooser

    asked = []
    monkeypatch.setattr(P, "choose_profile", lambda device, requested, **kw: asked.append((requested, kw["backend"])))
    make_chooser(anim, None, backend="onnxruntime")("auto")
    make_chooser(anim, None)("lite")
    assert asked == [("auto", "onnxruntime"), ("lite", "auto")]
    assert parse_args([]).backend == "auto" and parse_args(["--backend", "compiled"]).backend == "compiled"


def test_app_tiny_with_a_named_backend_builds_it_before_the_window(anim, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from knotanim.app.main import model_backends, parse_args

    monkeypatch.setenv("KNOTANIM_CACHE", str(tmp_path))
    assert model_backends(parse_args(["--tiny"]), anim) == (None, [])  # --tiny auto: eager torch, not measured
    backends, notes = model_backends(parse_args(["--tiny", "--backend", "onnxruntime"]), anim)
    assert backends.name == "onnxruntime" and backends.prepared == (2, 1) and backends.animator is anim
    assert len(notes) == 1 and notes[0].startswith("backend onnxruntime[CPU]: ")


@pytest.mark.parametrize("fails", [False, True])
def test_start_pressed_while_choosing_streams_the_chosen_profile(qtbot, tmp_path, fails):
    """The model loaded at start (auto: the best-quality profile, ~1 frame/s on a CPU) is not streamed when the
    choice is still running: Start waits for it, then streams the chosen animator (or, if the choice fails, the
    loaded one)."""
    from knotanim.frontends.audio_io import load_audio
    from knotanim.live.sources import ArraySource

    loaded, chosen = (KnotAnimator.from_config(tiny_config(), seed=s) for s in (0, 1))
    release = threading.Event()

    def chooser(requested):
        release.wait(10)
        if fails:
            raise ValueError("damaged model folder")
        return Choice(Profile("lite", tmp_path, "l"), chosen, None, 30.0, "lite holds 25 fps", holds=True)

    speech = load_audio("assets/examples/speech.wav", 16000)
    group = ProfileGroup(chooser, ["default", "lite"], "auto")
    w = MainWindow(loaded, settings=Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)),
                   monitor_level=False, model_name="default profile", profiles=group, profile="default",
                   source_factory=lambda name: ArraySource(speech, loop=True, name="fake mic"))
    qtbot.addWidget(w)
    assert w.reference.load_path("assets/examples/avatar.png")
    group.request("auto")
    w.animation.start.setChecked(True)
    assert group.busy and not w.session.running  # waiting for the choice
    release.set()
    qtbot.waitUntil(lambda: w.session.running, timeout=10_000)
    assert w.session.pipeline.animator is (loaded if fails else chosen)
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= 1, timeout=10_000)
    w.session.shutdown()


def test_the_window_outlives_create_window_without_a_qapplication_before_it():
    """knotanim-gui's main() calls create_window with no QApplication yet: the one made there must live on
    (collected on return, it deleted the window, and main() failed on its first use)."""
    import subprocess
    import sys

    code = ("import gc; from knotanim.app.main import create_window; w = create_window(['--tiny', '--device', 'cpu']); "
            "gc.collect(); print('visible', w.isVisible()); w.close()")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "visible True" in r.stdout, r.stderr[-2000:]
