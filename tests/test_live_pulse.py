"""The real microphone path: a private PulseAudio daemon with a null sink, speech played into it with
paplay, its monitor captured through sounddevice/PortAudio and the live pipeline."""
import os
import subprocess
import time

import av
import numpy as np
import pytest

from needs import require
from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.frontends.audio_io import load_audio, write_wav
from knotanim.live.outputs import DelayedAudioOutput, FrameSlot, RecorderOutput
from knotanim.live.pipeline import LiveOptions, LivePipeline
from knotanim.live.sources import MicrophoneSource, list_devices

SINK = "knotanim_vmic"


def _pactl(*args, env=None, check=True):
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture()
def pulse(tmp_path, monkeypatch):
    """A PulseAudio daemon of our own (killed by pid afterwards) whose default source is a null sink's monitor."""
    require("pulseaudio")
    require("portaudio")
    import sounddevice as sd
    runtime = tmp_path / "pulse"
    runtime.mkdir()
    monkeypatch.setenv("PULSE_RUNTIME_PATH", str(runtime))
    monkeypatch.setenv("PULSE_STATE_PATH", str(runtime))
    env = dict(os.environ)
    daemon = subprocess.Popen(["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--log-target=stderr",
                               "--load=module-native-protocol-unix", f"--load=module-null-sink sink_name={SINK}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if daemon.poll() is not None:
                pytest.skip(f"pulseaudio did not start: {daemon.stderr.read().decode()[-300:]}")
            if _pactl("info", env=env, check=False).returncode == 0:
                break
            time.sleep(0.05)
        else:
            pytest.skip("pulseaudio did not answer within 5 s")
        _pactl("set-default-sink", SINK, env=env)
        _pactl("set-default-source", f"{SINK}.monitor", env=env)
        sd._terminate()  # PortAudio lists devices when initialised: look again now that PulseAudio runs
        sd._initialize()
        if not any(d.name == "pulse" for d in list_devices("input")):
            pytest.skip("PortAudio has no 'pulse' device (apt-get install libasound2-plugins)")
        yield env
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
        sd._terminate()
        sd._initialize()


def test_microphone_through_pulseaudio_null_sink(pulse, tmp_path):
    anim = KnotAnimator.from_config(tiny_config(), seed=0)
    speech = load_audio("assets/examples/speech.wav", 16000)[: 16000 * 2]
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech, 16000)
    ref = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mic = MicrophoneSource("pulse", 16000)
    p = LivePipeline(anim, ref, mic, LiveOptions(degrade=False))
    slot = FrameSlot()
    p.add_output(slot)
    p.start()
    try:
        rec = RecorderOutput(tmp_path / "mic.mp4", p.ring, p.fps, p.spf)
        p.add_output(rec)
        delayed = DelayedAudioOutput(p.ring, "pulse", lambda: 0.2)
        p.add_output(delayed)
        start = p.ring.position
        subprocess.run(["paplay", f"--device={SINK}", str(wav)], env=pulse, timeout=20, check=True)
        time.sleep(0.5)
        captured = p.ring.read(start, p.ring.position - start)
        stats = p.stats()
        lag = p.ring.position - delayed.cursor
    finally:
        p.stop()
    assert mic.name == "pulse"
    assert captured.size >= 16000 * 1.8  # real time through the sound server
    rms = float(np.sqrt(np.mean(captured ** 2)))
    assert rms > 0.3 * float(np.sqrt(np.mean(speech ** 2)))  # the speech, not silence
    assert stats.error is None and slot.received >= 40 and 20 <= stats.fps_shown <= 30
    assert 0.1 * 16000 < lag < 0.4 * 16000  # the delayed copy trails the microphone by ~0.2 s
    with av.open(str(tmp_path / "mic.mp4")) as c:
        a = c.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(a)])
    assert np.sqrt(np.mean(samples ** 2)) > 0.01  # the recording carries the microphone
