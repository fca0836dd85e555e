"""File sinks: mp4/webm with audio, PNG sequences, even-size cropping and output errors."""
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from knotanim.errors import OutputError
from knotanim.sinks import FrameSink, PngSequenceSink, VideoFileSink


def _frames(n, h, w):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _count(path, kind):
    with av.open(str(path)) as c:
        if kind == "video":
            return sum(1 for _ in c.decode(video=0))
        return sum(f.samples for f in c.decode(audio=0))


@pytest.mark.parametrize("fmt, codec_v, codec_a", [("mp4", "h264", "aac"), ("webm", "vp9", "opus")])
def test_video_with_audio(tmp_path, fmt, codec_v, codec_a):
    path = tmp_path / f"out.{fmt}"
    sink = VideoFileSink(path, 67, 45, 25, container_format=fmt, audio_rate=48000, audio_channels=2)
    assert isinstance(sink, FrameSink)
    with sink:
        for img in _frames(30, 45, 67):
            sink.write(img)
            sink.write_audio(np.zeros((2, 1920), np.float32))
    assert (sink.width, sink.height) == (66, 44)  # odd sizes cropped by one pixel
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == (codec_v, codec_a)
        assert (v.width, v.height, v.guessed_rate) == (66, 44, 25) and a.channels == 2
    assert _count(path, "video") == 30
    assert abs(_count(path, "audio") / 48000 - 1.2) < 0.05


def test_fragmented_mp4_survives_a_hard_kill(tmp_path):
    """Completed fragments are on disk and playable even if the process dies without closing."""
    path = tmp_path / "frag.mp4"
    code = (
        "import os, sys, numpy as np\n"
        "from knotanim.sinks import VideoFileSink\n"
        "s = VideoFileSink(sys.argv[1], 64, 64, 25, gop_seconds=0.4, preset='ultrafast', audio_rate=48000)\n"
        "s.open()\n"
        "rng = np.random.default_rng(0)\n"
        "for i in range(40):\n"
        "    s.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))\n"
        "    s.write_audio(np.zeros(1920, np.float32))\n"
        "os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", code, str(path)], timeout=120).returncode == 9
    assert _count(path, "video") >= 20


def test_audio_and_video_stay_in_sync(tmp_path):
    """A white frame at 1.0 s and a click at 1.0 s play back within one frame of each other."""
    path = tmp_path / "sync.mp4"
    audio = np.zeros(96000, np.float32)
    audio[48000:48100] = 0.9
    with VideoFileSink(path, 64, 64, 25, audio_rate=48000) as sink:
        for i in range(50):
            sink.write(np.full((64, 64, 3), 255 if i == 25 else 0, np.uint8))
            sink.write_audio(audio[i * 1920:(i + 1) * 1920])
    with av.open(str(path)) as c:
        white = [float(f.time) for f in c.decode(video=0) if f.to_ndarray(format="rgb24").mean() > 128]
    with av.open(str(path)) as c:
        click = next(float(f.time) + np.argmax(np.abs(f.to_ndarray()[0]) > 0.3) / 48000
                     for f in c.decode(audio=0) if np.abs(f.to_ndarray()).max() > 0.3)
    assert len(white) == 1 and abs(white[0] - click) < 0.02


def test_png_sequence(tmp_path):
    folder = tmp_path / "frames"
    with PngSequenceSink(folder, audio_rate=16000) as sink:
        for img in _frames(3, 33, 21):
            sink.write(img)
        sink.write_audio(np.zeros(1600, np.float32))
    names = sorted(os.listdir(folder))
    assert names == ["audio.wav", "frame_000000.png", "frame_000001.png", "frame_000002.png"]
    from PIL import Image

    assert Image.open(folder / "frame_000001.png").size == (21, 33)  # exact size kept


def test_output_errors(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        VideoFileSink(tmp_path / "missing" / "a.mp4", 64, 64, 25).open()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        VideoFileSink(tmp_path / "file" / "a.mp4", 64, 64, 25).open()
    with pytest.raises(OutputError, match="is a folder"):
        VideoFileSink(tmp_path, 64, 64, 25).open()
    with pytest.raises(OutputError, match="is a file"):
        PngSequenceSink(tmp_path / "file").open()
    with pytest.raises(OutputError, match="does not exist"):
        PngSequenceSink(tmp_path / "missing" / "frames").open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            VideoFileSink(ro / "a.mp4", 64, 64, 25).open()
    finally:
        ro.chmod(0o700)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_is_an_output_error():
    with pytest.raises(OutputError, match="disk full"):
        with VideoFileSink("/dev/full", 64, 64, 25, audio_rate=16000, preset="ultrafast") as sink:
            for img in _frames(60, 64, 64):
                sink.write(img)
                sink.write_audio(np.zeros(640, np.float32))


@pytest.mark.parametrize("fmt, audio_rate", [("mp4", 48000), ("mp4", 44100), ("webm", 48000)])
def test_frame_k_is_presented_at_k_over_fps_and_audio_starts_with_it(tmp_path, fmt, audio_rate):
    """Every frame's timestamp is exactly k/25 s (several fragments), the audio stream starts at 0 and a
    tone that starts with frame 10's audio is heard at 0.4 s."""
    from fractions import Fraction

    path = tmp_path / f"t.{fmt}"
    spf = audio_rate // 25
    with VideoFileSink(path, 64, 64, 25, container_format=fmt, audio_rate=audio_rate, gop_seconds=1.0) as sink:
        for k in range(80):
            sink.write(np.full((64, 64, 3), 3 * k, np.uint8))
            tone = np.sin(np.arange(spf) * 2 * np.pi * 1000 / audio_rate).astype(np.float32) * 0.5
            sink.write_audio(tone if k >= 10 else np.zeros(spf, np.float32))
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.average_rate, v.guessed_rate) == (25, 25)  # ffprobe's avg_frame_rate and r_frame_rate
        assert a.start_time * a.time_base == 0 and v.start_time * v.time_base == 0
        times = [f.pts * f.time_base for f in c.decode(video=0)]
    assert times == [Fraction(k, 25) for k in range(80)]
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
    assert frames[0].pts * frames[0].time_base == 0
    x = np.concatenate([f.to_ndarray()[0] for f in frames])
    onset = np.argmax(np.abs(x) > 0.1) / frames[0].sample_rate
    assert abs(onset - 0.4) < 0.002
