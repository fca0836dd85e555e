"""Faults in the desktop app (offscreen, tiny model): a damaged model is shown in one line, the
microphone vanishing is reported and survived, the disk filling up stops only the recording, the
virtual camera going away stops only that output, the GPU running out of memory mid-stream switches to
the CPU (said in the status bar), closing the window mid-recording finalises the file."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from needs import require  # noqa: E402

require("qt")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QSettings  # noqa: E402

from faults_helpers import FillingGpu, UnpluggableMic, full_disk_sink, probe_recording  # noqa: E402
from knotanim import tiny_config  # noqa: E402
from knotanim.animator import KnotAnimator  # noqa: E402
from knotanim.app import main as app_main  # noqa: E402
from knotanim.app.settings import Settings  # noqa: E402
from knotanim.app.window import MainWindow  # noqa: E402


@pytest.fixture()
def mic():
    return UnpluggableMic()


def open_streaming_window(qtbot, animator, mic, tmp_path) -> MainWindow:
    """The window on `animator`, streaming from `mic` (5 frames painted)."""
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w = MainWindow(animator, settings=settings, monitor_level=False, model_name="tiny", source_factory=lambda name: mic)
    settings.set("record/folder", str(tmp_path))
    qtbot.addWidget(w)
    w.show()
    assert w.reference.load_path("assets/examples/avatar.png")
    w.animation.start.setChecked(True)
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= 5, timeout=10_000)
    return w


@pytest.fixture()
def window(qtbot, anim, mic, tmp_path):
    w = open_streaming_window(qtbot, anim, mic, tmp_path)
    yield w
    w.session.shutdown()


def test_damaged_model_is_shown_in_one_line(qtbot, tmp_path, monkeypatch):
    folder = tmp_path / "tiny"
    KnotAnimator.from_config(tiny_config(), seed=0).save_pretrained(folder)
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated
    shown = []
    monkeypatch.setattr(app_main, "show_load_error", shown.append)
    assert app_main.create_window(["--model", str(folder), "--device", "cpu"]) == 2
    assert len(shown) == 1 and "\n" not in shown[0]
    assert shown[0].startswith("Cannot load the model:") and shard.name in shown[0] and "truncated" in shown[0]


def test_app_says_when_it_falls_back_to_the_cpu(qtbot, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    w = app_main.create_window(["--tiny", "--device", "cuda"])
    qtbot.addWidget(w)
    assert "no CUDA GPU available: running on the CPU" in w.statusBar().currentMessage()
    w.close()


def test_gpu_out_of_memory_mid_stream_is_shown_and_the_stream_goes_on(qtbot, anim, mic, tmp_path):
    gpu = FillingGpu(anim, chunks_before_full=15)
    w = open_streaming_window(qtbot, gpu, mic, tmp_path)
    try:
        qtbot.waitUntil(lambda: gpu.failures > 0, timeout=15_000)
        qtbot.waitUntil(lambda: "GPU out of memory" in w.statusBar().currentMessage(), timeout=5000)
        assert w.statusBar().currentMessage() == ("GPU out of memory with tiny on cuda:0: "
                                                  "switched to tiny on the CPU (slower)")
        painted = w.preview.view.frames_painted
        qtbot.waitUntil(lambda: w.preview.view.frames_painted >= painted + 15, timeout=5000)  # the stream goes on
        assert w.session.running and "on cpu" in w.preview.figures.text()
    finally:
        w.session.shutdown()


def test_unknown_device_is_shown_in_one_line(qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(app_main, "show_load_error", shown.append)
    assert app_main.create_window(["--tiny", "--device", "gpu0"]) == 2
    assert shown == ["Unknown device 'gpu0': use auto, cpu or cuda"]  # the device is wrong, not the model


def test_mic_lost_is_reported_and_the_stream_resumes(qtbot, window, mic):
    w = window
    w.session.pipeline.source.backoff = 0.3
    mic.unplug("error")
    qtbot.waitUntil(lambda: "lost" in w.preview.note.text(), timeout=5000)
    assert "fake usb mic" in w.statusBar().currentMessage()
    painted = w.preview.view.frames_painted
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= painted + 15, timeout=5000)  # the portrait idles
    mic.plug()
    qtbot.waitUntil(lambda: w.session.pipeline.source.reopened >= 1 and w.preview.note.text() == "", timeout=5000)
    assert w.session.running


def test_disk_full_stops_the_recording_not_the_stream(qtbot, window, monkeypatch):
    import knotanim.app.session as session_module

    real = session_module.RecorderOutput
    monkeypatch.setattr(session_module, "RecorderOutput",
                        lambda *a, **kw: real(*a, sink_factory=full_disk_sink(150_000), **kw))
    w = window
    w.recording.record.setChecked(True)
    qtbot.waitUntil(lambda: "Recording stopped" in w.recording.status.text(), timeout=15_000)
    assert "disk full while writing" in w.recording.status.text()
    assert not w.recording.record.isChecked() and w.session.recorder is None
    painted = w.preview.view.frames_painted
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= painted + 10, timeout=5000)
    assert w.session.running
    info = probe_recording(w.last_recording)
    assert info["frames"] >= 5 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.1)


def test_virtual_camera_lost_stops_only_the_camera(qtbot, window):
    pyvirtualcam = pytest.importorskip("pyvirtualcam")

    class Vanishing:
        def __init__(self, *, width, height, fps, fourcc, device, **kw):
            self.sent = 0

        def send(self, frame):
            if self.sent >= 5:
                raise RuntimeError("No such device")
            self.sent += 1

        def close(self):
            pass

        def device(self):
            return "/dev/video9"

        def native_fourcc(self):
            return None

    pyvirtualcam.register_backend("knotanim-app-vanishing", Vanishing)
    w = window
    w.session.vcam_backend = "knotanim-app-vanishing"
    w.recording.record.setChecked(True)
    w.vcam.enable.setChecked(True)
    assert w.session.vcam is not None
    qtbot.waitUntil(lambda: not w.vcam.enable.isChecked(), timeout=5000)
    assert "Virtual camera stopped: No such device" in w.vcam.diagnostics.toPlainText()
    assert w.session.vcam is None and w.session.recorder is not None and w.session.running
    painted = w.preview.view.frames_painted
    qtbot.waitUntil(lambda: w.preview.view.frames_painted >= painted + 10, timeout=5000)
    w.recording.record.setChecked(False)
    assert probe_recording(w.last_recording)["frames"] >= 10


def test_closing_the_window_while_recording_finalises_the_file(qtbot, window, tmp_path):
    w = window
    w.recording.record.setChecked(True)
    qtbot.wait(1200)
    recorder = w.session.recorder
    w.close()
    assert not w.session.running
    info = probe_recording(recorder.path)
    assert info["frames"] >= 15 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.08)
