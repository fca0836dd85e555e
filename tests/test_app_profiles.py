"""The app's Profile box: measured on a worker thread, the choice reaches the window (pytest-qt)."""
import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("PyQt6")
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
