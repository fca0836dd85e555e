"""Faults through the command line: a damaged model (one line naming the file, never a torch crash),
GPU out of memory / no GPU (CPU fallback, said), the virtual camera going away during `knotanim live`,
and SIGTERM during `knotanim live --record` (the file is finalised)."""
import json
import sys

import av
import numpy as np
import pytest
import torch

from faults_helpers import FillingGpu, probe_recording, sigterm_when_ready
from knotanim import KnotAnimator, tiny_config
from knotanim.cli.main import main
from knotanim.loading import load_for_live

AVATAR, SPEECH = "assets/examples/avatar.png", "assets/examples/speech.wav"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    KnotAnimator.from_config(tiny_config(), device="cpu", seed=0).save_pretrained(folder)
    return folder


def _damage(model_dir, tmp_path, how):
    """A copy of the model with one file missing, truncated or altered; returns (folder, name to expect)."""
    import shutil

    bad = tmp_path / f"model-{how}"
    shutil.copytree(model_dir, bad)
    shard = sorted(bad.glob("model-*.safetensors"))[0]
    if how == "missing":
        shard.unlink()
    elif how == "truncated":
        shard.write_bytes(shard.read_bytes()[:1000])
    elif how == "altered":
        data = bytearray(shard.read_bytes())
        data[-10] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif how == "config":
        (bad / "config.json").write_text(json.dumps({"format": "knotanim-checkpoint-1", "config": {"fps": "x"}}))
        return bad, "config"
    return bad, shard.name


@pytest.mark.parametrize("how", ["missing", "truncated", "altered", "config"])
@pytest.mark.parametrize("command", ["render", "live", "eval"])
def test_damaged_model_is_one_line_naming_the_file(model_dir, tmp_path, capsys, how, command):
    bad, name = _damage(model_dir, tmp_path, how)
    argv = {"render": ["render", "-i", AVATAR, "-a", SPEECH, "-o", str(tmp_path / "o.mp4")],
            "live": ["live", "--image", AVATAR, "--audio-file", SPEECH, "--seconds", "1"],
            "eval": ["eval", "--quick", "--out", str(tmp_path / "bench")]}[command]
    rc = main(argv + ["--model", str(bad), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"knotanim {command}: error:") and name in lines[0], err


# --- GPU out of memory / no GPU ---------------------------------------------------------------------------
def _oom(*_):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_gpu_oom_at_load_falls_back_to_the_cpu_and_says_so():
    tried = []

    def load(device):
        tried.append(device)
        if device == "cuda":
            _oom()
        return KnotAnimator.from_config(tiny_config(), device=device)

    anim, notes = load_for_live(load, "auto", cuda_available=lambda: True)
    assert tried == ["cuda", "cpu"] and anim.device.type == "cpu"
    assert "GPU out of memory while loading the model" in notes[0] and "CPU" in notes[-1]


def test_gpu_oom_at_the_first_chunk_tries_the_smaller_model_then_the_cpu():
    tried = []

    def load(label):
        def make(device):
            tried.append((label, device))
            return KnotAnimator.from_config(tiny_config(), device="cpu")  # no GPU here: the probe fakes it
        return make

    def probe(anim):
        raise RuntimeError("CUDA error: out of memory")  # the first chunk runs out of memory on the GPU

    anim, notes = load_for_live(load("full"), "cuda", smaller=load("lite"), probe=probe, cuda_available=lambda: True)
    assert tried == [("full", "cuda"), ("lite", "cuda"), ("full", "cpu")]
    assert notes[:2] == ["GPU out of memory while running the first chunk of the model",
                         "GPU out of memory while running the first chunk of the smaller model"]

    anim, notes = load_for_live(load("full"), "cuda", smaller=load("lite"),
                                probe=lambda a: None if tried[-1][0] == "lite" else probe(a), cuda_available=lambda: True)
    assert tried[-1] == ("lite", "cuda") and notes[-1] == "using the smaller model on the GPU"


def test_no_gpu_and_other_errors(tmp_path):
    anim, notes = load_for_live(lambda d: KnotAnimator.from_config(tiny_config(), device=d), "cuda",
                                cuda_available=lambda: False)
    assert anim.device.type == "cpu" and "no CUDA GPU" in notes[0]
    from knotanim.errors import CheckpointError

    with pytest.raises(CheckpointError):  # not a memory problem: propagates (one line in the CLI)
        load_for_live(lambda d: KnotAnimator.from_pretrained(tmp_path / "none", device=d), "auto",
                      cuda_available=lambda: True)


def test_live_cli_says_when_it_falls_back_to_the_cpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["live", "--tiny", "--image", AVATAR, "--audio-file", SPEECH, "--seconds", "0.6", "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 0 and "note: no CUDA GPU available: running on the CPU" in err


def test_unknown_device_is_one_line_and_render_without_a_gpu_falls_back_to_the_cpu(model_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["live", "--tiny", "--image", AVATAR, "--audio-file", SPEECH, "--seconds", "0.5", "--device", "gpu0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines() == ["knotanim live: error: unknown device 'gpu0': use auto, cpu or cuda"], err
    out = tmp_path / "o.mp4"
    rc = main(["render", "--model", str(model_dir), "-i", AVATAR, "-a", SPEECH, "-o", str(out), "--device", "cuda", "-q"])
    err = capsys.readouterr().err
    assert rc == 0 and err.strip().splitlines() == ["note: no CUDA GPU available: running on the CPU instead (slower)"], err
    assert probe_recording(out)["video_s"] > 1.0


def test_live_cli_gpu_oom_mid_stream_falls_back_to_the_cpu_and_says_so(tmp_path, capsys, monkeypatch):
    import knotanim.loading as loading

    gpu = FillingGpu(KnotAnimator.from_config(tiny_config(), device="cpu", seed=0), chunks_before_full=15)
    monkeypatch.setattr(loading, "load_for_live", lambda load, device: (gpu, []))  # "loaded on the GPU"
    out = tmp_path / "live.mp4"
    rc = main(["live", "--tiny", "--image", AVATAR, "--audio-file", SPEECH, "--record", str(out), "--seconds", "3",
               "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "GPU out of memory" in line]
    assert lines == ["warning: GPU out of memory with tiny on cuda:0: switched to tiny on the CPU (slower)"], err
    assert gpu.failures == 1
    info = probe_recording(out)
    assert info["video_s"] >= 2.0 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.1)


def test_render_gpu_oom_mid_render_renders_again_on_the_cpu_and_says_so(model_dir, tmp_path, capsys, monkeypatch):
    import knotanim.cli.render as render_cli

    gpu = FillingGpu(KnotAnimator.from_config(tiny_config(), device="cpu", seed=0), chunks_before_full=5)
    monkeypatch.setattr(render_cli, "_load_animator", lambda args: gpu)  # "loaded on the GPU"
    out = tmp_path / "o.mp4"
    rc = main(["render", "--model", str(model_dir), "--backend", "torch", "--no-face-detect", "-i", AVATAR,
               "-a", SPEECH, "-o", str(out), "--progress"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "out of memory" in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: GPU out of memory with {model_dir} on cuda:0 after "), err
    assert "rendering again from the start with" in lines[0] and "on the CPU (slower)" in lines[0]
    assert gpu.failures == 1 and err.strip().splitlines()[-1].startswith("rendered ")
    info = probe_recording(out)
    with av.open(SPEECH) as c:
        speech_s = float(c.duration / 1e6)
    assert info["video_s"] == pytest.approx(speech_s, abs=0.05) and info["audio_s"] == pytest.approx(speech_s, abs=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


def test_render_batch_goes_on_on_the_cpu_after_a_gpu_oom(model_dir, tmp_path, capsys, monkeypatch):
    import shutil

    import knotanim.cli.render as render_cli

    gpu = FillingGpu(KnotAnimator.from_config(tiny_config(), device="cpu", seed=0), chunks_before_full=5)
    monkeypatch.setattr(render_cli, "_load_animator", lambda args: gpu)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for stem in ("a", "b"):
        shutil.copy(AVATAR, jobs / f"{stem}.png")
        shutil.copy(SPEECH, jobs / f"{stem}.wav")
    rc = main(["render", "--model", str(model_dir), "--backend", "torch", "--no-face-detect", "--batch", str(jobs),
               "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 0 and "batch: 2 of 2 rendered, 0 failed" in err, err
    assert len([line for line in err.splitlines() if "out of memory" in line]) == 1  # b renders on the CPU at once
    assert gpu.failures == 1
    for stem in ("a", "b"):
        assert probe_recording(tmp_path / "out" / f"{stem}.mp4")["frames"] >= 50


# --- virtual camera goes away ------------------------------------------------------------------------------
def test_virtual_camera_lost_during_live_keeps_recording(tmp_path, capsys):
    pyvirtualcam = pytest.importorskip("pyvirtualcam")

    class VanishingCamera:
        """Accepts 10 frames, then the device is gone (send raises like a removed v4l2 device)."""

        def __init__(self, *, width, height, fps, fourcc, device, **kw):
            self.width, self.height, self.sent = width, height, 0

        def send(self, frame):
            if self.sent >= 10:
                raise RuntimeError("writing to /dev/video7 failed: No such device")
            self.sent += 1

        def close(self):
            if self.sent >= 0:  # closing the removed device fails too (once; pyvirtualcam retries in __del__)
                self.sent = -1
                raise OSError("No such device")

        def device(self):
            return "/dev/video7"

        def native_fourcc(self):
            return None

    pyvirtualcam.register_backend("knotanim-vanishing", VanishingCamera)
    out = tmp_path / "live.mp4"
    rc = main(["live", "--tiny", "--image", AVATAR, "--audio-file", SPEECH, "--virtual-camera", "--camera-backend",
               "knotanim-vanishing", "--camera-size", "320x180", "--record", str(out), "--seconds", "2.5",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning: virtual camera stopped: writing to /dev/video7 failed: No such device" in err
    info = probe_recording(out)
    assert info["video_s"] >= 1.8 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.08)


# --- SIGTERM -------------------------------------------------------------------------------------------------
def test_sigterm_during_live_record_finalises_the_file(tmp_path):
    out = tmp_path / "live.mp4"
    cmd = [sys.executable, "-m", "knotanim.cli.main", "live", "--tiny", "--image", AVATAR, "--audio-file", SPEECH,
           "--record", str(out), "--device", "cpu"]
    # "live: ..." then status lines every 0.5 s: once 4 lines are out, recording is under way
    returncode, err = sigterm_when_ready(cmd, lambda lines: len(lines) >= 4, settle_s=0.3)
    assert returncode == 130, err
    assert "recording finalised" in err and "interrupted" in err
    info = probe_recording(out)
    assert info["frames"] >= 10 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.08)
    with av.open(str(out)) as c:  # finalised: the last fragment is complete, the durations are known
        assert c.duration is not None and c.duration > 0
    assert np.isfinite(info["audio"]).all()
