"""Virtual camera (through a pyvirtualcam backend of our own), its diagnostics, and `knotanim live`."""
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from knotanim.cli.main import main as cli_main
from knotanim.errors import BackendUnavailable
from knotanim.live.vcam import MODPROBE, diagnose

pyvirtualcam = pytest.importorskip("pyvirtualcam")


class RecordingCamera:
    """A pyvirtualcam backend that keeps what it is sent (instances are listed on the class)."""

    instances: list["RecordingCamera"] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.frames: list[np.ndarray] = []
        self.closed = False
        self.lock = threading.Lock()
        RecordingCamera.instances.append(self)

    def send(self, frame):
        with self.lock:
            self.frames.append(frame.copy())

    def close(self):
        self.closed = True

    def device(self):
        return "knotanim-test-camera"

    def native_fourcc(self):
        return None


@pytest.fixture()
def test_backend():
    RecordingCamera.instances.clear()
    pyvirtualcam.register_backend("knotanim-test", RecordingCamera)
    yield "knotanim-test"
    RecordingCamera.instances.clear()


def test_virtual_camera_output_letterboxes_frames(test_backend):
    from knotanim.live.outputs import VirtualCameraOutput
    from knotanim.live.pipeline import LiveFrame

    out = VirtualCameraOutput(320, 180, 25, backend=test_backend)
    assert out.device == "knotanim-test-camera"
    for i in range(5):
        out.send(LiveFrame(np.full((64, 64, 3), 100 + i, np.uint8), i, 0, 0.0))
    out.close()
    cam = RecordingCamera.instances[-1]
    assert cam.closed and len(cam.frames) >= 1
    f = cam.frames[-1].reshape(180, 320, 3)
    assert (f[:, :60] == 0).all() and f[90, 160, 0] >= 100


def test_no_device_raises_with_the_fix(monkeypatch):
    from knotanim.live.vcam import open_camera

    def missing(**kw):
        raise RuntimeError("No v4l2 loopback device found at /dev/video[0-99]")

    pyvirtualcam.register_backend("knotanim-missing", type("Missing", (), {"__init__": lambda self, **kw: missing()}))
    with pytest.raises(BackendUnavailable) as e:
        open_camera(640, 480, 25, backend="knotanim-missing")
    assert "No v4l2 loopback device" in str(e.value) and "To fix it" in str(e.value)


def test_diagnostics_when_the_module_is_not_loaded(tmp_path):
    d = diagnose("no device", system="Linux", sys_root=str(tmp_path))
    assert not d.ok
    assert "v4l2loopback kernel module is not loaded" in d.text
    assert MODPROBE in d.text and "exclusive_caps=1" in d.text and "v4l2loopback-dkms" in d.text


def test_diagnostics_exclusive_caps_and_devices(tmp_path):
    params = tmp_path / "module/v4l2loopback/parameters"
    params.mkdir(parents=True)
    (params / "exclusive_caps").write_text("N\n")
    d = diagnose(None, system="Linux", sys_root=str(tmp_path))
    assert not d.ok and "exclusive_caps=N" in d.text and "sudo modprobe -r v4l2loopback" in d.text
    (params / "exclusive_caps").write_text("Y\n")
    dev = tmp_path / "class/video4linux/video7"
    dev.mkdir(parents=True)
    (dev / "name").write_text("knotanim\n")
    d = diagnose(None, system="Linux", sys_root=str(tmp_path))
    assert "/dev/video7 (knotanim)" in d.text


def test_diagnostics_windows_mentions_obs():
    d = diagnose("OBS Virtual Camera is not installed", system="Windows")
    assert not d.ok and "OBS Virtual Camera" in d.text and "Start Virtual Camera" in d.text


def test_live_cli_sends_to_camera_and_records(test_backend, tmp_path, capsys):
    out = tmp_path / "live.mp4"
    rc = cli_main(["live", "--tiny", "--image", "assets/examples/avatar.png", "--audio-file",
                   "assets/examples/speech.wav", "--virtual-camera", "--camera-backend", test_backend,
                   "--camera-size", "640x360", "--record", str(out), "--seconds", "2.5", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "fps shown" in captured.err and "latency" in captured.err
    cam = RecordingCamera.instances[-1]
    assert (cam.width, cam.height) == (640, 360) and len(cam.frames) >= 25 and cam.closed
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert abs(float(v.duration * v.time_base) - float(a.duration * a.time_base)) < 0.05
        assert v.codec_context.width == 64 and a.start_time == 0 and v.average_rate == 25
        times = [f.pts * f.time_base for f in c.decode(video=0)]
    assert times == [Fraction(k, 25) for k in range(len(times))]  # frame k shown at k/25 s


def test_live_cli_errors_are_one_line(capsys, tmp_path):
    assert cli_main(["live", "--tiny", "--image", "assets/examples/avatar.png"]) == 2
    assert "nothing to output" in capsys.readouterr().err
    assert cli_main(["live", "--tiny", "--image", str(tmp_path / "missing.png"), "--seconds", "1"]) == 2


@pytest.mark.needs("portaudio")
def test_live_lists_devices(capsys):
    assert cli_main(["live", "--list-devices"]) == 0
    assert "Input devices" in capsys.readouterr().out


def test_live_lists_devices_without_portaudio_in_one_line(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # what `import sounddevice` does without PortAudio: fail
    assert cli_main(["live", "--list-devices"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "apt-get install libportaudio2" in err and "Traceback" not in err


def test_output_set_detaches_a_failing_output_and_finalises_it():
    import threading

    from knotanim.live.output_set import OutputSet

    class Out:
        def __init__(self, name, fail_at=None):
            self.name, self.fail_at, self.sent, self.closed = name, fail_at, [], threading.Event()

        def send(self, frame):
            if frame == self.fail_at:
                raise OSError("disk full\nmore detail")
            self.sent.append(frame)

        def close(self):
            self.closed.set()

    good, bad = Out("preview"), Out("recorder", fail_at=2)
    outputs = OutputSet()
    outputs.add(good)
    outputs.add(bad)
    for frame in range(4):
        outputs.send(frame)
    outputs.wait_closed()
    assert good.sent == [0, 1, 2, 3] and bad.sent == [0, 1]
    assert bad.closed.is_set() and not good.closed.is_set()
    assert outputs.failed == [(bad, "recorder stopped: disk full")] and len(outputs) == 1
    outputs.close_all()
    assert good.closed.is_set() and len(outputs) == 0
