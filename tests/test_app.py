"""The real desktop window, offscreen, with the tiny model and a fake microphone (pytest-qt)."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from needs import require  # noqa: E402

require("qt")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QSettings  # noqa: E402

from knotanim.app.gallery import gallery_images  # noqa: E402
from knotanim.app.settings import Settings  # noqa: E402
from knotanim.app.window import MainWindow  # noqa: E402
from knotanim.frontends.audio_io import load_audio  # noqa: E402
from knotanim.frontends.face import detect_faces  # noqa: E402
from knotanim.frontends.image import load_image  # noqa: E402
from knotanim.live.sources import ArraySource  # noqa: E402


@pytest.fixture()
def settings(tmp_path):
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture()
def window(qtbot, anim, settings, tmp_path):
    speech = load_audio("assets/examples/speech.wav", 16000)
    w = MainWindow(anim, settings=settings, monitor_level=False, model_name="tiny",
                   source_factory=lambda name: ArraySource(speech, loop=True, name="fake mic"))
    settings.set("record/folder", str(tmp_path))
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    yield w
    w.session.shutdown()


def test_gallery_has_small_detectable_examples():
    images = gallery_images()
    assert len(images) >= 6
    for path in images:
        assert path.stat().st_size < 60_000
        assert detect_faces(load_image(path)), path.name


def test_window_streams_records_swaps_and_stops(qtbot, window, tmp_path):
    w = window
    assert w.reference.load_path("assets/examples/avatar.png")
    assert w.reference.view.face is not None
    first_ref = w.reference.current_crop().copy()

    w.animation.start.setChecked(True)  # Start
    assert w.session.running
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= 10, timeout=10_000)

    w.recording.record.setChecked(True)  # Record
    assert w.session.recorder is not None
    qtbot.wait(1200)

    gallery = w.reference.gallery.item(0)  # swap the reference while streaming
    w.reference.gallery.itemClicked.emit(gallery)
    new_ref = w.reference.current_crop()
    assert not np.array_equal(new_ref, first_ref)
    qtbot.waitUntil(lambda: np.array_equal(w.session.pipeline.reference, new_ref), timeout=5000)
    painted = w.preview.view.frames_painted
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= painted + 10, timeout=5000)
    assert w.session.running  # never stopped
    assert "frames/s shown" in w.preview.figures.text() and "latency" in w.preview.figures.text()

    w.animation.start.setChecked(False)  # Stop (finalises the recording)
    assert not w.session.running
    path = w.last_recording
    assert path is not None and path.parent == tmp_path and path.exists()
    assert "Saved" in w.recording.status.text()
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        video_s, audio_s = float(v.duration * v.time_base), float(a.duration * a.time_base)
    assert video_s > 1.5 and audio_s == pytest.approx(video_s, abs=0.05)


def test_shortcuts_and_errors_in_the_window(qtbot, window):
    w = window
    w.animation.start.toggle()  # F5 without a portrait: error shown in the window, not started
    assert not w.session.running and "Choose a portrait" in w.statusBar().currentMessage()
    assert not w.reference.load_path("/nonexistent/face.png")
    assert "face.png" in w.statusBar().currentMessage()
    w.reference.load_path(str(gallery_images()[1]))
    w.animation.start.toggle()
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= 3, timeout=10_000)
    w.vcam.enable.setChecked(True)  # no device here (or an unknown backend): diagnostics in the panel
    if w.session.vcam is None:
        assert "To fix it" in w.vcam.diagnostics.toPlainText() or "Opening" in w.vcam.diagnostics.toPlainText()
        assert not w.vcam.enable.isChecked()
    w.animation.start.toggle()
    assert not w.session.running


def test_settings_persist(qtbot, anim, settings, tmp_path):
    w = MainWindow(anim, settings=settings, monitor_level=False)
    qtbot.addWidget(w)
    w.animation.motion.setValue(80)
    w.animation.quality.setCurrentIndex(w.animation.quality.findData("fast"))
    w.animation.mirror.setChecked(False)
    w.reference.load_path("assets/examples/avatar.png")
    w.close()
    again = MainWindow(anim, settings=Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)),
                       monitor_level=False)
    qtbot.addWidget(again)
    assert again.animation.motion.value() == 80
    assert again.animation.quality.currentData() == "fast" and again.live_options().steps == 1
    assert not again.animation.mirror.isChecked()
    assert again.reference.path.endswith("avatar.png") and again.reference.current_crop() is not None
    again.close()


def test_window_fits_1280x800(qtbot, window):
    assert window.minimumSizeHint().width() <= 1280 and window.minimumSizeHint().height() <= 800
