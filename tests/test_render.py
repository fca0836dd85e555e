"""render_to_file end to end on the tiny random-weights model (CPU): counts, sizes, sync, errors."""
import os
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from knotanim.errors import InputError, OutputError
from knotanim.frontends.audio_io import write_wav
from knotanim.render import FrameRetimer, RenderInterrupted, RenderOptions, output_format, render_to_file

FAST = dict(face_detect=False)


@pytest.fixture(scope="module")
def animator(anim):
    return anim


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 97x81 (odd-sized) portrait stand-in and 2 s of 22.05 kHz stereo 'speech'."""
    d = tmp_path_factory.mktemp("inputs")
    y, x = np.mgrid[0:81, 0:97]
    img = np.stack([x * 2, y * 3, 255 - x - y], axis=2).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(d / "face.png")
    t = np.arange(44100) / 22050
    voice = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    write_wav(d / "speech.wav", np.stack([voice, 0.5 * voice]).astype(np.float32), 22050)
    return d / "face.png", d / "speech.wav"


def _probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        has_audio = bool(c.streams.audio)
        size, rate = (v.width, v.height), v.guessed_rate
        frames = sum(1 for _ in c.decode(video=0))
    audio_s = 0.0
    if has_audio:
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            audio_s = sum(f.samples for f in c.decode(audio=0)) / a.rate
    return size, rate, frames, has_audio, audio_s


def _timing(path):
    """(every video frame's presentation time, the audio stream's start), in seconds, as Fractions."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        start = a.start_time * a.time_base
        return [f.pts * f.time_base for f in c.decode(video=0)], start


def test_mp4_full_frame(animator, inputs, tmp_path):
    out = tmp_path / "out.mp4"
    seen = []
    s = render_to_file(animator, *inputs, out, options=RenderOptions(progress=seen.append, **FAST))
    assert (s.frames, s.fps, s.format, s.interrupted) == (50, 25.0, "mp4", False)
    size, rate, frames, has_audio, audio_s = _probe(out)
    assert size == (96, 80) == (s.width, s.height)  # original 97x81 cropped to even
    assert rate == 25 and frames == 50 and has_audio
    assert abs(audio_s - frames / 25) <= 1 / 25  # within one frame
    times, audio_start = _timing(out)
    assert times == [Fraction(k, 25) for k in range(50)] and audio_start == 0
    assert [p.frames for p in seen] == list(range(1, 51)) and seen[-1].total_frames == 50
    assert "50 frames" in s.line() and str(out) in s.line()


def test_crop_only_webm_at_other_fps(animator, inputs, tmp_path):
    out = tmp_path / "crop.webm"
    s = render_to_file(animator, *inputs, out, options=RenderOptions(crop_only=True, fps=30, **FAST))
    size, rate, frames, has_audio, audio_s = _probe(out)
    assert size == (64, 64) and rate == 30 and frames == s.frames == 60 and has_audio
    assert abs(audio_s - 2.0) < 1 / 30
    times, audio_start = _timing(out)  # WebM counts milliseconds: k/30 s rounded
    assert [round(float(t) * 1000) for t in times] == [round(k * 1000 / 30) for k in range(60)] and audio_start == 0


def test_png_sequence_output(animator, inputs, tmp_path):
    out = tmp_path / "frames"
    s = render_to_file(animator, *inputs, str(out) + "/", options=RenderOptions(fps=10, **FAST))
    names = sorted(os.listdir(out))
    assert s.frames == 20 and len([n for n in names if n.endswith(".png")]) == 20 and "audio.wav" in names
    assert Image.open(out / "frame_000000.png").size == (97, 81)  # PNG keeps the exact size


def test_frame_count_follows_audio_duration(animator, tmp_path, inputs):
    write_wav(tmp_path / "short.wav", np.zeros(int(1.23 * 16000), np.float32), 16000)  # silent: idle portrait
    s = render_to_file(animator, inputs[0], tmp_path / "short.wav", tmp_path / "a.mp4", options=RenderOptions(**FAST))
    assert s.frames == 31 == _probe(tmp_path / "a.mp4")[2]  # round(1.23 * 25)
    s = render_to_file(animator, inputs[0], tmp_path / "short.wav", tmp_path / "b.mp4", options=RenderOptions(fps=12, **FAST))
    assert s.frames == 15  # round(1.23 * 12)


def test_retimer_picks_nearest_frames():
    class F:
        def __init__(self, i):
            self.index = i

    r = FrameRetimer(Fraction(25), Fraction(10))
    for i in range(25):
        r.add(F(i))
    assert [f.index for f in r.take(10, last_model=24)] == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23]
    r = FrameRetimer(Fraction(25), Fraction(50))
    r.add(F(0))
    r.add(F(1))
    assert [f.index for f in r.take(4)] == [0, 1, 1]  # output 3 needs model frame 2: wait for it


@pytest.mark.parametrize("pipelined", [None, True])  # the CPU's default (serial), and the GPU's encode worker
def test_interrupted_render_is_playable(animator, inputs, tmp_path, pipelined):
    out = tmp_path / "cut.mp4"

    def stop_after_20(p):
        if p.frames == 20:
            raise KeyboardInterrupt

    with pytest.raises(RenderInterrupted) as info:
        render_to_file(animator, *inputs, out, options=RenderOptions(progress=stop_after_20, pipelined=pipelined, **FAST))
    assert info.value.summary.interrupted and info.value.summary.frames == 20
    assert isinstance(info.value, KeyboardInterrupt)
    size, rate, frames, has_audio, audio_s = _probe(out)
    assert frames == 20 and has_audio and audio_s > 0


def test_nan_audio_renders(animator, inputs, tmp_path):
    import struct

    x = np.zeros(8000, "<f4")
    x[::7] = np.nan
    data = x.tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    (tmp_path / "nan.wav").write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16)
                                       + fmt + b"data" + struct.pack("<I", len(data)) + data)
    s = render_to_file(animator, inputs[0], tmp_path / "nan.wav", tmp_path / "n.mp4", options=RenderOptions(**FAST))
    assert s.frames == 13  # round half up: 0.5 s * 25 = 12.5


def _bad_files(d):
    from PIL import Image as I

    rng = np.random.default_rng(0)
    I.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(d / "ok.jpg")
    (d / "cut.jpg").write_bytes((d / "ok.jpg").read_bytes()[:1500])
    I.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "tiny.png")
    (d / "text.wav").write_text("not audio at all\n" * 10)
    write_wav(d / "empty.wav", np.zeros(0, np.float32), 16000)
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    (d / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
                                 + chunk(b"IEND", b""))
    (d / "file").write_text("x")


@pytest.mark.parametrize("image, audio, output, error, pattern", [
    ("cut.jpg", "good", "o.mp4", InputError, "truncated"),
    ("tiny.png", "good", "o.mp4", InputError, "too small"),
    ("huge.png", "good", "o.mp4", InputError, "large"),
    ("good", "text.wav", "o.mp4", InputError, "not an audio file"),
    ("good", "empty.wav", "o.mp4", InputError, "no samples"),
    ("good", "good", "missing/o.mp4", OutputError, "does not exist"),
    ("good", "good", "file/o.mp4", OutputError, "not a folder"),
    ("good", "good", "o.avi", InputError, "output format"),
])
def test_bad_inputs(animator, inputs, tmp_path, image, audio, output, error, pattern):
    _bad_files(tmp_path)
    image = inputs[0] if image == "good" else tmp_path / image
    audio = inputs[1] if audio == "good" else tmp_path / audio
    with pytest.raises(error, match=pattern):
        render_to_file(animator, image, audio, tmp_path / output, options=RenderOptions(**FAST))
    assert not (tmp_path / output).exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full(animator, inputs):
    with pytest.raises(OutputError, match="disk full"):
        render_to_file(animator, *inputs, "/dev/full", options=RenderOptions(format="mp4", **FAST))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_output_folder(animator, inputs, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(OutputError, match="permission denied"):
        render_to_file(animator, *inputs, tmp_path / "ro" / "o.mp4", options=RenderOptions(**FAST))


def test_output_format_rules(tmp_path):
    assert output_format("a.MP4") == "mp4" and output_format("a.webm") == "webm"
    assert output_format("frames/") == "png" and output_format(tmp_path) == "png"
    assert output_format("x.mp4", "png") == "png"


def test_real_photo_with_face_detection(animator, tmp_path):
    import shutil

    import cv2

    cbook = pytest.importorskip("matplotlib.cbook")
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("this OpenCV has no Haar cascades (OpenCV 5 removed them)")
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), tmp_path / "gh.jpg")
    write_wav(tmp_path / "s.wav", np.zeros(6400, np.float32), 16000)
    s = render_to_file(animator, tmp_path / "gh.jpg", tmp_path / "s.wav", tmp_path / "gh.mp4")
    assert (s.width, s.height, s.frames) == (512, 600, 10)
    assert _probe(tmp_path / "gh.mp4")[:3] == ((512, 600), 25, 10)


# --- GPU out of memory mid-render ------------------------------------------------------------------------
def _decoded(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_gpu_out_of_memory_mid_render_renders_again_from_the_start_on_the_cpu(animator, inputs, tmp_path, fmt):
    from faults_helpers import FillingGpu
    from knotanim.render import FallbackRenderer

    gpu = FillingGpu(animator, chunks_before_full=5)  # "cuda:0"; out of memory after 5 chunks (10 frames)
    out = tmp_path / ("out.mp4" if fmt == "mp4" else "frames")
    said, during_retry = [], []

    def progress(p):  # while the render runs again, the output path still holds the first attempt's frames
        if said and p.frames in (1, 40):
            during_retry.append(_probe(out)[2] if fmt == "mp4" else len(list(out.glob("frame_*.png"))))

    renderer = FallbackRenderer(gpu, model_name="tiny", say=said.append)
    s = renderer.render(*inputs, out, RenderOptions(progress=progress, format=fmt, **FAST))
    assert gpu.failures == 1 and len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith("GPU out of memory with tiny on cuda:0 after 10 frames: rendering again from the start "
                              "with tiny on the CPU (slower)"), said[0]
    assert during_retry == [10, 10]
    assert (s.output, s.frames, s.interrupted) == (out, 50, False)
    assert renderer.animator.device.type == "cpu" and renderer.animator is not gpu  # kept for a batch's next jobs
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no retry file left beside it
    reference = tmp_path / "direct"
    reference.mkdir()
    render_to_file(animator, *inputs, reference / out.name, options=RenderOptions(format=fmt, **FAST))
    if fmt == "mp4":  # complete and playable, and the same video as a render on the CPU from the start
        size, rate, frames, has_audio, audio_s = _probe(out)
        assert frames == 50 and has_audio and abs(audio_s - 2.0) <= 1 / 25
        assert np.array_equal(_decoded(out), _decoded(reference / out.name))
    else:
        names = sorted(p.name for p in out.iterdir())
        assert names == sorted(p.name for p in (reference / out.name).iterdir()) and len(names) == 51
        for name in names:
            assert (out / name).read_bytes() == (reference / out.name / name).read_bytes(), name


def test_render_again_interrupted_keeps_the_longer_output(animator, inputs, tmp_path):
    from faults_helpers import FillingGpu
    from knotanim.render import FallbackRenderer

    out = tmp_path / "out.mp4"
    said = []

    def stop_early(p):
        if said and p.frames == 4:  # the render again is cut after 4 frames: the first attempt had 10
            raise KeyboardInterrupt

    renderer = FallbackRenderer(FillingGpu(animator, chunks_before_full=5), model_name="tiny", say=said.append)
    with pytest.raises(RenderInterrupted) as info:
        renderer.render(*inputs, out, RenderOptions(progress=stop_early, **FAST))
    assert (info.value.summary.output, info.value.summary.frames) == (out, 10)
    assert _probe(out)[2] == 10 and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_gpu_out_of_memory_with_nothing_to_fall_back_to_keeps_what_was_rendered(animator, inputs, tmp_path):
    from faults_helpers import FillingGpu
    from knotanim.errors import BackendUnavailable
    from knotanim.render import FallbackRenderer, RenderOutOfMemory

    out = tmp_path / "out.mp4"
    with pytest.raises(RenderOutOfMemory) as plain:  # render_to_file alone: finalises and keeps the frames
        render_to_file(FillingGpu(animator, chunks_before_full=5), *inputs, out, options=RenderOptions(**FAST))
    assert plain.value.summary.frames == 10 and _probe(out)[2] == 10
    out = tmp_path / "again.mp4"
    renderer = FallbackRenderer(FillingGpu(animator, chunks_before_full=5), model_name="tiny",
                                memory_fallbacks=lambda animator, name, profile: [])
    with pytest.raises(BackendUnavailable) as info:
        renderer.render(*inputs, out, RenderOptions(**FAST))
    message = str(info.value)
    assert "\n" not in message and message.startswith("GPU out of memory with tiny on cuda:0; nothing left to fall back to")
    assert message.endswith(f"the 10 frames rendered are kept in {out}") and _probe(out)[2] == 10


def test_gpu_out_of_memory_tries_each_fallback_in_turn(animator, inputs, tmp_path):
    from faults_helpers import FillingGpu
    from knotanim.errors import CheckpointError
    from knotanim.loading import MemoryFallback
    from knotanim.render import FallbackRenderer

    def damaged():
        raise CheckpointError("model-00001.safetensors is truncated")

    fallbacks = [MemoryFallback("broken", "broken", damaged),
                 MemoryFallback("small", "small", lambda: FillingGpu(animator, chunks_before_full=5)),
                 MemoryFallback("tiny", None, lambda: animator)]
    said = []
    renderer = FallbackRenderer(FillingGpu(animator, chunks_before_full=10), model_name="big", profile="big",
                                say=said.append, memory_fallbacks=lambda anim, name, profile: fallbacks)
    out = tmp_path / "out.mp4"
    s = renderer.render(*inputs, out, RenderOptions(**FAST))
    assert said == [
        "GPU out of memory with big on cuda:0 after 22 frames; broken cannot be loaded (model-00001.safetensors is "
        f"truncated): rendering again from the start with small on cuda:0; {out} keeps what was rendered until the new "
        "render is complete",
        "GPU out of memory with big on cuda:0 after 22 frames; small on cuda:0 ran out of memory too after 10 frames: "
        f"rendering again from the start with tiny on the CPU (slower); {out} keeps what was rendered until the new "
        "render is complete"]
    assert s.frames == 50 and _probe(out)[2] == 50 and (renderer.model_name, renderer.profile) == ("tiny", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_pipelined_render_writes_what_the_serial_one_does_from_the_encoder_thread(animator, inputs, tmp_path):
    import threading

    threads = {}
    for pipelined in (False, True):
        def note(p, pipelined=pipelined):
            threads.setdefault(pipelined, set()).add(threading.current_thread().name)

        render_to_file(animator, *inputs, tmp_path / f"p{pipelined}", options=RenderOptions(
            format="png", pipelined=pipelined, progress=note, **FAST))
    serial, piped = (sorted((tmp_path / f"p{p}").iterdir()) for p in (False, True))
    assert [f.name for f in serial] == [f.name for f in piped] and len(serial) == 51  # 50 frames + audio.wav
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(serial, piped))  # PNG is lossless: same frames
    default = {}
    render_to_file(animator, *inputs, tmp_path / "d", options=RenderOptions(
        format="png", progress=lambda p: default.setdefault("thread", threading.current_thread().name), **FAST))
    assert default["thread"] == threading.current_thread().name  # a model on the CPU renders serially
    assert threads[False] == {threading.current_thread().name}
    assert len(threads[True]) == 1 and next(iter(threads[True])).startswith("knotanim-encode")


def test_an_encoder_error_on_the_worker_reaches_the_caller_and_the_partial_file_goes(animator, inputs, tmp_path,
                                                                                        monkeypatch):
    from knotanim.sinks.video import VideoFileSink

    original = VideoFileSink.write

    def failing(self, frame):
        if self.frames_written == 7:
            raise OutputError("disk full (test)")
        original(self, frame)

    monkeypatch.setattr(VideoFileSink, "write", failing)
    out = tmp_path / "broken.mp4"
    with pytest.raises(OutputError, match="disk full"):
        render_to_file(animator, *inputs, out, options=RenderOptions(**FAST))
    assert not out.exists()  # a render that failed (not interrupted) leaves no half file


def test_ctrl_c_in_the_stream_while_the_worker_encodes_keeps_a_playable_file(animator, inputs, tmp_path, monkeypatch):
    from knotanim.stream.stream import KnotStream

    original, calls = KnotStream.push_audio, []

    def push(self, block):
        calls.append(1)
        if len(calls) == 3:  # the signal lands in the caller's thread, in the stream's work
            raise KeyboardInterrupt
        return original(self, block)

    monkeypatch.setattr(KnotStream, "push_audio", push)
    out = tmp_path / "ctrl_c.mp4"
    with pytest.raises(RenderInterrupted) as info:
        render_to_file(animator, *inputs, out, options=RenderOptions(pipelined=True, **FAST))
    summary = info.value.summary
    size, rate, frames, has_audio, audio_s = _probe(out)
    assert 0 < frames == summary.frames and has_audio  # what the worker had written, finalised
