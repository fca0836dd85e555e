"""The live pipeline without hardware: ring, queue, pacing, degradation, and a fake microphone end to end."""
import time

import av
import numpy as np
import pytest

from knotanim.live import (ArraySource, AudioRing, Composer, DegradeController, DropOldestQueue, LiveFrame,
                           LiveOptions, LivePipeline, Pacer, build_ladder, letterbox, parse_colour)
from knotanim.live.outputs import FrameSlot, RecorderOutput
from knotanim.live.sources import BlockResampler


def speech_like(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


# --- ring ------------------------------------------------------------------------------------------
def test_ring_wraps_and_blanks_what_it_no_longer_holds():
    ring = AudioRing(100, 16000, clock=lambda: 5.0)
    data = np.arange(250, dtype=np.float32)
    for i in range(0, 250, 30):
        ring.write(data[i:i + 30])
    assert ring.position == 250 and ring.oldest() == 150
    np.testing.assert_array_equal(ring.read(200, 50), data[200:250])
    np.testing.assert_array_equal(ring.read(140, 20), np.r_[np.zeros(10), data[150:160]])  # 140..149 overwritten
    np.testing.assert_array_equal(ring.read(240, 20), np.r_[data[240:250], np.zeros(10)])  # not written yet


def test_ring_capture_time_interpolates_within_a_block():
    now = [10.0]
    ring = AudioRing(16000, 16000, clock=lambda: now[0])
    ring.write(np.zeros(320, np.float32))  # samples 0..319 arrive at t = 10.0
    now[0] = 10.02
    ring.write(np.zeros(320, np.float32))  # samples 320..639 arrive at t = 10.02
    assert ring.capture_time(640) == pytest.approx(10.02)
    assert ring.capture_time(480) == pytest.approx(10.02 - 160 / 16000)
    assert ring.capture_time(320) == pytest.approx(10.0)


def test_ring_write_never_allocates_a_new_buffer():
    ring = AudioRing(1000, 16000)
    buf = ring._data
    for _ in range(20):
        ring.write(np.ones((160, 1), np.float32))  # PortAudio-shaped block
    assert ring._data is buf and ring.position == 3200


# --- queue and pacing --------------------------------------------------------------------------------
def test_queue_drops_the_oldest_and_never_blocks():
    q = DropOldestQueue(3)
    t0 = time.monotonic()
    results = [q.put(i) for i in range(10)]
    assert time.monotonic() - t0 < 0.1
    assert results == [True] * 3 + [False] * 7 and q.dropped == 7
    assert [q.get(), q.get(), q.get(), q.get()] == [7, 8, 9, None]


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_pacer_ticks_at_a_steady_rate():
    clock = FakeClock()
    pacer = Pacer(25, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(50):
        pacer.wait()
        times.append(clock.t)
        clock.t += 0.013  # work shorter than a period
    assert np.allclose(np.diff(times), 0.04)


def test_pacer_skips_missed_ticks_instead_of_bursting():
    clock = FakeClock()
    pacer = Pacer(25, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.t += 0.25  # a stall of 6.25 periods
    missed = pacer.wait()
    assert missed == 5
    t = clock.t
    pacer.wait()
    assert clock.t - t == pytest.approx(0.04 - 0.01, abs=1e-9)  # back on the original grid, no burst


# --- degradation ------------------------------------------------------------------------------------------
class GenerateOnePerTick:
    """An output standing in for the inference thread at exactly the pacing rate: each frame the
    pacer sends, it queues one new frame (captured now), except at the ticks in `miss`. It stops
    the pipeline after `ticks` frames were sent."""

    name = "generator"

    def __init__(self, pipeline, clock, ticks, miss=()):
        self.p, self.clock, self.ticks, self.miss = pipeline, clock, ticks, set(miss)
        self.made = 0
        self.shown = []  # (source_index, latency in periods) of every frame sent

    def make(self):
        self.p.queue.put(LiveFrame(np.zeros((2, 2, 3), np.uint8), self.made, 0, self.clock()))
        self.made += 1

    def send(self, frame):
        self.shown.append((frame.source_index, round((self.clock() - frame.captured_at) * self.p.fps, 6)))
        if len(self.shown) >= self.ticks:
            self.p._stop.set()
        elif len(self.shown) not in self.miss:
            self.make()

    def close(self):
        pass


@pytest.mark.parametrize("backlog, miss, drained_at", [
    (0, (), []),  # no backlog: never drained
    (1, (), [10]),  # one frame left over at every tick: dropped after drain_seconds (10 ticks)
    (3, (), [10, 20, 30]),  # a deeper backlog drains one frame at a time, back to the floor
    (1, (6,), []),  # the backlog was consumed (generation missed a tick): nothing to drain
])
def test_pacer_drains_a_standing_queue_backlog_one_frame_at_a_time(anim, ref, backlog, miss, drained_at):
    clock = FakeClock()
    p = LivePipeline(anim, ref, ArraySource(np.zeros(16000, np.float32)), LiveOptions(drain_seconds=0.4, reconnect=False),
                     clock=clock, sleep=clock.sleep)
    gen = GenerateOnePerTick(p, clock, ticks=80, miss=miss)
    for _ in range(1 + backlog):  # the frame due now plus `backlog` late ones, all ready at the first tick
        gen.make()
    p.add_output(gen)
    p._pacer_loop()  # on this thread, against the fake clock: fully deterministic
    indices = [i for i, _ in gen.shown]
    skipped_at = [tick for tick, (a, b) in enumerate(zip(indices, indices[1:]), 1) if b != a + 1]
    assert skipped_at == [t - 1 for t in drained_at]  # the frame after tick t-1's was dropped at tick t
    assert p.drained == len(drained_at) and p.stats().dropped == len(drained_at) and p.repeated == 0
    # Latency in frame periods, once the frames made together at the start are out: 1 + the frames
    # standing in the queue; each drain takes one period off, for good (no repeat, no second drop).
    latency = [periods for _, periods in gen.shown]
    expected = [1 + backlog - sum(t <= tick for t in drained_at) - sum(m + 2 <= tick for m in miss)
                for tick in range(backlog + 2, 81)]
    assert latency[backlog + 1:] == expected and expected[-1] == 1


def test_degrade_steps_down_the_ladder_then_repeats(anim):
    ladder = build_ladder(anim, steps=4, fallback=anim, name="tiny")
    assert [p.steps for p in ladder] == [4, 2, 1, 2] and "fallback" in ladder[-1].name
    c = DegradeController(ladder, fps=25, patience=2)
    assert not any(c.observe(3, 0.05) for _ in range(10)) and c.level == 0  # 0.42x real time: fine
    changed = [c.observe(3, 0.3) for _ in range(6)]  # 2.5x real time
    assert sum(changed) == 3 and c.level == 3 and "switched to fallback tiny" in c.message
    assert not c.repeating
    c.observe(3, 0.3)
    c.observe(3, 0.3)
    assert c.repeating and "repeating frames" in c.message


def test_degrade_tries_the_rung_above_again_after_keeping_up(anim):
    """A slow spell steps down; once the lower rung has kept up for recover_after_s seconds of video the
    controller tries the rung above; a rung that holds for probe_s resets the wait."""
    c = DegradeController(build_ladder(anim, steps=4, name="tiny"), fps=25, patience=2, recover_after_s=6.0, probe_s=2.0)
    for _ in range(2):
        c.observe(3, 0.3)  # 2.5x real time, twice: 4 -> 2 steps
    assert c.level == 1
    steps_up = [c.observe(3, 0.05) for _ in range(50)]  # 3 frames = 0.12 s of video each: 6 s after 50 chunks
    assert steps_up == [False] * 49 + [True] and c.level == 0
    assert c.message == "keeping up with tiny, 2 steps: trying tiny, 4 steps again"
    for _ in range(17):  # 2 s of video at the top rung: it holds, so the wait is back to 6 s
        assert not c.observe(3, 0.05)
    assert c.probe_left_s is None and c.recover_wait_s == 6.0


def test_degrade_waits_twice_as_long_after_a_rung_that_did_not_hold(anim):
    c = DegradeController(build_ladder(anim, steps=2, name="tiny"), fps=25, patience=1, recover_after_s=1.2,
                          recover_max_s=3.0, probe_s=5.0)
    waits = []
    c.observe(3, 0.3)  # 2 -> 1 step
    for _ in range(4):
        chunks = 0
        while not c.observe(3, 0.05):  # keeps up on 1 step until it tries 2 steps again
            chunks += 1
        waits.append(round((chunks + 1) * 0.12, 2))
        assert c.level == 0 and c.observe(3, 0.3) and c.level == 1  # 2 steps fall behind at once
    assert waits == [1.2, 2.4, 3.0, 3.0]  # doubled after each failed try, up to recover_max_s
    assert (c.steps_down, c.steps_up) == (5, 4)
    assert "too slow with tiny, 2 steps" in c.message


def test_degrade_disabled_keeps_the_first_rung(anim):
    c = DegradeController(build_ladder(anim, 4), fps=25, patience=1, enabled=False)
    for _ in range(5):
        c.observe(3, 1.0)
    assert c.level == 0 and c.repeating


# --- composition ---------------------------------------------------------------------------------------------
def test_composer_background_and_letterbox():
    crop = np.full((64, 64, 3), 200, np.uint8)
    keep = Composer(128)(crop)
    assert keep.shape == (128, 128, 3) and (keep == 200).all()
    flat = Composer(128, parse_colour("#00ff00"))(crop)
    assert tuple(flat[0, 0]) == (0, 255, 0) and tuple(flat[70, 64]) == (200, 200, 200)
    box = letterbox(keep, 1280, 720)
    assert box.shape == (720, 1280, 3) and (box[:, :200] == 0).all() and (box[360, 640] == 200).all()
    assert parse_colour("keep") is None and parse_colour("10,20,30") == (10, 20, 30)


def test_block_resampler_maps_whole_blocks():
    r = BlockResampler(44100, 16000, block_ms=20)
    assert (r.in_block, r.out_block) == (882, 320)
    x = np.sin(np.arange(r.in_block) / 20).astype(np.float32)
    y = r(x)
    assert y.shape == (320,) and np.abs(y - np.sin(np.arange(320) * 2.75625 / 20)).max() < 1e-2


# --- end to end with a fake microphone ---------------------------------------------------------------------
def wait_until(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


def test_pipeline_streams_paced_frames_records_and_swaps_reference(anim, ref, tmp_path):
    p = LivePipeline(anim, ref, ArraySource(speech_like(4.0)), LiveOptions(output_size=96, degrade=False))
    slot = FrameSlot()
    shown = []
    p.add_output(slot)
    p.add_output(type("Collect", (), {"send": lambda self, f: shown.append(f), "close": lambda self: None})())
    p.start()
    try:
        assert wait_until(lambda: len(shown) >= 10, 10), p.stats()
        rec = RecorderOutput(tmp_path / "live.mp4", p.ring, p.fps, p.spf)
        p.add_output(rec)
        time.sleep(1.0)
        p.set_reference(255 - ref)
        time.sleep(1.0)
        stats = p.stats()
    finally:
        p.stop()
    assert stats.error is None and stats.running
    assert 20 <= stats.fps_shown <= 30
    assert stats.latency is not None and 0 < stats.latency < 1.0
    assert all(f.image.shape == (96, 96, 3) for f in shown)
    ticks = [f.tick for f in shown]
    assert ticks == list(range(len(ticks)))
    fresh = [f.source_index for f in shown if not f.repeated]
    assert fresh == sorted(fresh)
    assert np.array_equal(p.reference, 255 - ref)
    with av.open(str(tmp_path / "live.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        video_s, audio_s = float(v.duration * v.time_base), float(a.duration * a.time_base)
    assert rec.frames >= 40 and video_s == pytest.approx(rec.frames / 25, abs=0.05)
    assert audio_s == pytest.approx(video_s, abs=0.05)


def test_pipeline_degrades_and_stays_live_when_too_slow(anim, ref):
    p = LivePipeline(anim, ref, ArraySource(speech_like(6.0)), LiveOptions(steps=4, max_backlog=0.5))
    p.controller.patience = 1
    push = p.stream.push_audio

    def slow_push(samples):  # 2.5x slower than real time: 100 ms per 40 ms frame
        frames = push(samples)
        time.sleep(0.1 * len(frames))
        return frames

    p.stream.push_audio = slow_push
    p.start()
    try:
        time.sleep(3.0)
        stats = p.stats()
    finally:
        p.stop()
    assert p.controller.level == len(p.controller.ladder) - 1  # 4 -> 2 -> 1 steps
    assert p.stream.step is anim.chunk_step(1) and p.stream.push_audio is slow_push  # same stream, 1 step
    assert p.controller.repeating and "repeating frames" in stats.message
    assert stats.repeated > 0 and p.skipped > 0  # frames repeated, audio skipped ...
    assert stats.latency < 1.5 and 20 <= stats.fps_shown <= 30  # ... so it stays live at 25 fps


def test_pipeline_returns_to_the_top_rung_after_a_slow_spell(anim, ref):
    """A stall at the start (another program busy, say) steps the stream down; once it keeps up again the
    pipeline goes back to the requested steps instead of staying on the lower rung for good."""
    p = LivePipeline(anim, ref, ArraySource(speech_like(8.0)), LiveOptions(steps=2, max_backlog=0.5))
    p.controller.patience = 1
    p.controller.recover_after_s = p.controller.recover_wait_s = 1.0
    push, pushes = p.stream.push_audio, []

    def push_with_a_stall(samples):
        frames = push(samples)
        if frames:
            pushes.append(len(frames))
        if frames and len(pushes) <= 2:
            time.sleep(0.3 * len(frames))  # far slower than real time, for the first chunks only
        return frames

    p.stream.push_audio = push_with_a_stall
    levels = []
    p.start()
    try:
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline and not (1 in levels and levels[-1] == 0):
            levels.append(p.controller.level)
            time.sleep(0.02)
    finally:
        p.stop()
    assert 1 in levels and levels[-1] == 0  # down to 1 step during the stall, then back to 2
    assert p.stream.step is anim.chunk_step(2) and p.stream.push_audio is push_with_a_stall  # same stream


# --- backends: the quality ladder on ONNX Runtime ------------------------------------------------------------
def test_pipeline_runs_on_onnxruntime_and_the_ladder_swaps_prepared_graphs(anim, ref, tmp_path):
    """LiveOptions.backend: built for every rung when the pipeline is made, then the ladder's set_steps
    swaps in the graph for the new step count on the same stream; nothing is built on the inference thread."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from knotanim.engines.select import StepBackends

    backends = StepBackends("onnxruntime", anim, artifacts=tmp_path)
    assert backends.prepared == ()
    p = LivePipeline(anim, ref, ArraySource(speech_like(6.0)),
                     LiveOptions(steps=2, max_backlog=0.5, backend=backends, reconnect=False))
    assert backends.prepared == (2, 1) and p.backends is backends  # built at start, for the whole ladder
    first = p.stream
    assert first.backend is backends(2) and p.stats().backend == "onnxruntime[CPU]"
    p.controller.patience = 1
    push, built_while_streaming = first.push_audio, []
    real_prepare = backends.prepare
    backends.prepare = lambda counts: built_while_streaming.append(counts) or real_prepare(counts)

    def slow_push(samples):  # 2.5x slower than real time: the ladder steps down to 1 step
        frames = push(samples)
        time.sleep(0.1 * len(frames))
        return frames

    first.push_audio = slow_push
    p.start()
    try:
        assert wait_until(lambda: p.controller.level == len(p.controller.ladder) - 1, 10), p.stats()
        assert wait_until(lambda: p.stream.chunk_index >= 3, 5)
        stats = p.stats()
    finally:
        p.stop()
    assert stats.error is None and p.stream is first  # the same stream: set_steps worked on ONNX Runtime
    assert p.stream.backend is backends(1) and p.stream.step is anim.chunk_step(1)
    assert stats.backend == "onnxruntime[CPU]" and built_while_streaming == [] and p.backend_notes == []


def test_pipeline_backend_that_cannot_be_built_is_torch_with_a_note(anim, ref):
    class Broken:
        name, animator = "onnxruntime", anim

        def prepare(self, counts):
            raise RuntimeError("no graph\nsecond line")

    p = LivePipeline(anim, ref, ArraySource(np.zeros(16000, np.float32)), LiveOptions(backend=Broken(), reconnect=False))
    assert p.backends is None and p.stats().backend == "torch"
    assert p.stats().warnings == ("the onnxruntime backend could not be built (RuntimeError: no graph): running torch",)


def test_live_cli_tiny_on_onnxruntime_builds_at_start_and_streams(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from PIL import Image

    from knotanim.cli.main import main
    from knotanim.frontends.audio_io import write_wav

    monkeypatch.setenv("KNOTANIM_CACHE", str(tmp_path / "cache"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(tmp_path / "face.png")
    write_wav(tmp_path / "s.wav", speech_like(2.0), 16000)
    out = tmp_path / "live.mp4"
    rc = main(["live", "--tiny", "--backend", "onnxruntime", "--image", str(tmp_path / "face.png"), "--audio-file",
               str(tmp_path / "s.wav"), "--seconds", "1.5", "--device", "cpu", "--no-face-detect", "--record", str(out)])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 0, err
    assert "Traceback" not in err and "note:" not in err and "warning:" not in err
    lines = err.splitlines()
    backend_line = next(i for i, line in enumerate(lines) if line.startswith("backend: onnxruntime[CPU] at "))
    live_line = next(i for i, line in enumerate(lines) if line.startswith("live: "))
    assert "-> tiny on cpu with onnxruntime[CPU]" in lines[live_line] and backend_line < live_line
    assert "frames/s" in lines[backend_line] and "torch" not in lines[backend_line]  # a named backend: not compared
    # every rung's graph exported at start (before streaming), cached for the next start
    assert sorted(p.name.split("-")[2] for p in (tmp_path / "cache").glob("*.onnx")) == ["steps1", "steps2"]
    assert max(i for i, line in enumerate(lines) if line.startswith("export: ")) < live_line
    assert f"-> {out}" in captured.out
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.duration is not None and float(v.duration * v.time_base) > 0.2


def test_switch_after_out_of_memory_skips_what_cannot_take_over():
    """Alone, without a pipeline: each candidate that runs out of memory too, has other timing or cannot be
    loaded is skipped with its reason; the note names them all; nothing left is one line."""
    from types import SimpleNamespace

    from knotanim.errors import BackendUnavailable, CheckpointError
    from knotanim.live.memory import switch_after_out_of_memory
    from knotanim.loading import MemoryFallback

    def model(fps, device="cpu"):
        return SimpleNamespace(config=SimpleNamespace(fps=fps, audio=SimpleNamespace(sample_rate=16000),
                                                      samples_per_frame=16000 // fps), device=device)

    def oom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    def damaged():
        raise CheckpointError("model.safetensors is damaged")

    candidates = [MemoryFallback("lite", "lite", oom), MemoryFallback("odd", None, lambda: model(30)),
                  MemoryFallback("broken", None, damaged), MemoryFallback("default", "default", lambda: model(25))]
    switched = switch_after_out_of_memory(candidates, lambda a: ("stream of", a), (25, 16000, 640), "default on cuda:0",
                                          "CUDA out of memory")
    assert switched.model_name == "default" and switched.stream == ("stream of", switched.animator)
    assert switched.note == ("GPU out of memory with default on cuda:0; lite ran out of memory too; odd cannot take "
                             "over (30 fps, 16000 Hz audio); broken cannot be loaded (model.safetensors is damaged): "
                             "switched to default on the CPU (slower)")
    with pytest.raises(BackendUnavailable, match="nothing left to fall back to"):
        switch_after_out_of_memory(candidates[:1], lambda a: None, (25, 16000, 640), "lite on cuda:0", "oom")


def test_paced_frames_repeat_the_last_and_drain_a_standing_backlog():
    from knotanim.live.pipeline import LiveFrame
    from knotanim.live.timing import DropOldestQueue, PacedFrames

    queue = DropOldestQueue(8)
    frames = PacedFrames(queue, drain_ticks=3)
    assert frames.next() is None  # nothing generated yet: nothing to show
    queue.put(LiveFrame(np.zeros((2, 2, 3), np.uint8), 0, 0, 0.0))
    first = frames.next()
    again = frames.next()
    assert first.source_index == 0 and not first.repeated and again.source_index == 0 and again.repeated
    assert frames.repeated == 1
    for i in range(1, 9):  # generation one frame ahead of the pacer, for good
        queue.put(LiveFrame(np.zeros((2, 2, 3), np.uint8), i, 0, 0.0))
    shown = [frames.next().source_index for _ in range(4)]
    assert frames.drained == 1 and shown == [1, 2, 4, 5]  # after 3 ticks with a frame waiting, one is dropped


def test_push_log_maps_stream_samples_back_to_the_ring_across_a_skip():
    from knotanim.live.timing import PushLog

    log = PushLog()
    log.pushed(1000, 640)  # stream samples 0..639 came from ring 1000..1639
    log.pushed(9000, 640)  # the pipeline skipped ahead: stream 640.. came from ring 9000..
    assert log.ring_position(0) == 1000 and log.ring_position(639) == 1639 and log.ring_position(700) == 9060
    log.forget_before(640)
    assert log.ring_position(700) == 9060 and log.stream_samples == 1280
