"""Faults in the live pipeline, injected through the capture, sink, output and model interfaces: the
microphone vanishes, the disk fills up while recording, the virtual camera goes away, the GPU runs
out of memory mid-stream."""
import time

import numpy as np
import pytest
import torch

from faults_helpers import (FillingGpu, UnpluggableMic, full_disk_sink, longest_silence, probe_recording,
                           wait_until)
from knotanim.errors import CheckpointError
from knotanim.live import LiveOptions, LivePipeline
from knotanim.loading import MemoryFallback, animator_on_cpu, gpu_memory_fallbacks, is_out_of_memory
from knotanim.live.outputs import FrameSlot, RecorderOutput
from knotanim.live.resilient import ResilientSource
from knotanim.profiles import Profile


class Collect:
    """An output keeping (time, frame) of everything the pacer sends."""

    name = "collect"

    def __init__(self):
        self.items = []

    def send(self, frame):
        self.items.append((time.monotonic(), frame))

    def close(self):
        pass

    def between(self, t0, t1):
        return [f for t, f in self.items if t0 <= t < t1]


def test_mic_lost_mid_stream_idles_reconnects_and_recording_stays_aligned(anim, ref, tmp_path):
    mic = UnpluggableMic()
    p = LivePipeline(anim, ref, mic, LiveOptions(degrade=False))
    p.source.backoff = 0.3
    seen = Collect()
    p.add_output(seen)
    p.start()
    try:
        assert wait_until(lambda: len(seen.items) >= 10, 10), p.stats()
        rec = RecorderOutput(tmp_path / "rec.mp4", p.ring, p.fps, p.spf)
        p.add_output(rec)
        time.sleep(0.8)
        mic.unplug("error")
        t_gone = time.monotonic()
        assert wait_until(lambda: p.source.down, 2)
        time.sleep(1.5)
        during = p.stats()
        gap = seen.between(t_gone + 0.3, t_gone + 1.3)
        mic.plug()
        assert wait_until(lambda: p.source.reopened >= 1 and not p.source.down, 5), p.stats()
        time.sleep(0.8)
        after = p.stats()
    finally:
        p.stop()
    # While gone: frames keep coming at the pacing rate, newly generated from silence (idle portrait).
    assert 20 <= len(gap) <= 30 and sum(not f.repeated for f in gap) >= 10
    assert during.running and during.error is None
    assert "lost" in during.message and mic.name in during.message and any("lost" in w for w in during.warnings)
    assert after.message == "" and after.running and mic.starts >= 2
    info = probe_recording(tmp_path / "rec.mp4")
    assert info["frames"] >= 60 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.08)
    assert longest_silence(info["audio"], info["rate"]) >= 1.0  # silence where the microphone was gone
    assert np.sqrt(np.mean(info["audio"][-info["rate"] // 4:] ** 2)) > 0.05  # the tone is back at the end


def test_stalled_mic_is_replaced_by_realtime_silence_and_reopened_with_backoff():
    mic = UnpluggableMic()
    written = []
    src = ResilientSource(mic, 16000, stall_seconds=0.3, backoff=0.2, max_backoff=0.4)
    src.start(lambda x: written.append((time.monotonic(), np.array(x))))
    try:
        time.sleep(0.4)
        mic.unplug("stall")  # no error, the callbacks just stop
        t0 = time.monotonic()
        assert wait_until(lambda: src.down, 2)
        time.sleep(1.2)
        assert "retrying" in src.status and mic.name in src.status  # reopen attempts failed, with backoff
        t1 = time.monotonic()
        silent = sum(len(x) for t, x in written if t0 <= t < t1 and not x.any())
        mic.plug()
        assert wait_until(lambda: not src.down and src.status == "", 3)
    finally:
        src.stop()
    assert silent / 16000 == pytest.approx(t1 - t0, abs=0.4)  # the ring keeps following the wall clock
    assert src.losses == 1 and src.reopened == 1
    total = sum(len(x) for _, x in written) / 16000
    assert total == pytest.approx(written[-1][0] - written[0][0], abs=0.4)  # no gap, no double writes


def test_disk_full_while_recording_stops_the_recording_keeps_the_stream_and_the_file(anim, ref, tmp_path):
    p = LivePipeline(anim, ref, UnpluggableMic(), LiveOptions(degrade=False))
    slot = FrameSlot()
    p.add_output(slot)
    p.start()
    try:
        assert wait_until(lambda: slot.received >= 5, 10)
        rec = RecorderOutput(tmp_path / "full.mp4", p.ring, p.fps, p.spf, sink_factory=full_disk_sink(60_000))
        p.add_output(rec)
        assert wait_until(lambda: p.failed_outputs, 15), p.stats()
        p.wait_closed()
        received = slot.received
        time.sleep(0.6)
        stats = p.stats()
    finally:
        p.stop()
    assert p.failed_outputs[0][0] is rec
    assert stats.running and stats.error is None and slot.received >= received + 10  # the stream goes on
    assert any("recorder stopped: disk full while writing" in w and "full.mp4" in w for w in stats.warnings)
    info = probe_recording(tmp_path / "full.mp4")
    assert info["frames"] >= 10 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.1)


# --- GPU out of memory mid-stream ------------------------------------------------------------------------
def test_out_of_memory_errors_are_recognised_by_either_name():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"))
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_gpu_memory_fallbacks_are_the_smaller_profiles_on_the_gpu_then_the_cpu(anim, tmp_path):
    profiles = [Profile("default", tmp_path / "default", ""), Profile("lite", tmp_path / "lite", "")]
    loaded = []
    gpu = FillingGpu(anim, 0)
    chain = gpu_memory_fallbacks(gpu, "default", "default", profiles=profiles,
                                 load_profile=lambda path, device: loaded.append((path, device)) or anim)
    assert [(f.model_name, f.profile) for f in chain] == [("lite", "lite"), ("default", "default")]
    assert chain[0].load() is anim and loaded == [(tmp_path / "lite", torch.device("cuda", 0))]
    on_cpu = chain[1].load()
    assert on_cpu.device.type == "cpu" and on_cpu is not anim and loaded == [(tmp_path / "lite", gpu.device)]
    # the smallest profile, or a model that is not a profile: only the CPU is left
    assert [f.model_name for f in gpu_memory_fallbacks(gpu, "lite", "lite", profiles=profiles)] == ["lite"]
    assert [f.model_name for f in gpu_memory_fallbacks(gpu, "my model", None, profiles=profiles)] == ["my model"]
    assert gpu_memory_fallbacks(anim, "tiny", None, profiles=profiles) == []  # already on the CPU: nothing


def test_animator_on_cpu_is_a_separate_copy_that_animates_the_same(anim, ref):
    copy = animator_on_cpu(anim)
    assert copy.model is not anim.model and copy.device.type == "cpu" and copy.dtype == torch.float32
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(copy.model.parameters(), anim.model.parameters()))
    audio = np.random.default_rng(1).standard_normal(4 * anim.config.samples_per_frame).astype(np.float32) * 0.1
    ours, theirs = (a.stream(ref, seed=3).push_audio(audio) for a in (anim, copy))
    assert len(ours) >= 2 and all(np.array_equal(x.image, y.image) for x, y in zip(ours, theirs))


def test_gpu_oom_mid_stream_falls_back_to_the_cpu_and_keeps_every_output(anim, ref, tmp_path):
    gpu = FillingGpu(anim, chunks_before_full=25)  # about 2 s of stream (2-frame chunks at 25 fps)
    p = LivePipeline(gpu, ref, UnpluggableMic(), LiveOptions(degrade=False, model_name="tiny", head_motion=0.3))
    seen = Collect()
    slot = FrameSlot()
    p.add_output(seen)
    p.add_output(slot)
    p.start()
    try:
        assert wait_until(lambda: len(seen.items) >= 10, 10), p.stats()
        rec = RecorderOutput(tmp_path / "oom.mp4", p.ring, p.fps, p.spf)
        p.add_output(rec)
        assert wait_until(lambda: p.memory_fallbacks, 15), p.stats()
        t_fault, previewed = time.monotonic(), slot.received
        # shown before the OOM: the old stream's frames only (by t_fault the new stream may have shown some)
        before = [f for t, f in seen.items if t < gpu.failed_at and not f.repeated]
        time.sleep(1.5)
        stats = p.stats()
        previewed = slot.received - previewed
    finally:
        p.stop()
    assert gpu.failures == 1 and gpu.chunks == 25  # one OOM; the GPU stream was not pushed again
    after = seen.between(t_fault, t_fault + 1.5)
    fresh = [f for f in after if not f.repeated]
    # the stream goes on at the pacing rate, with new frames from a new stream (indices start over)
    assert len(after) >= 30 and len(fresh) >= 20, (len(after), len(fresh))
    assert fresh[0].source_index < before[-1].source_index
    assert stats.running and stats.error is None and previewed >= 30 and not p.failed_outputs  # all attached
    assert p.animator is not gpu and p.animator.device.type == "cpu" and stats.device == "cpu"
    assert p.stream.head_motion == 0.3  # same motion settings on the fallback
    note = "GPU out of memory with tiny on cuda:0: switched to tiny on the CPU (slower)"
    assert stats.warnings == (note,) and stats.profile == "tiny, 2 steps"
    info = probe_recording(tmp_path / "oom.mp4")
    assert info["frames"] >= 50 and info["audio_s"] == pytest.approx(info["video_s"], abs=0.1)


def test_gpu_oom_tries_each_fallback_in_turn(anim, ref):
    smaller = FillingGpu(anim, chunks_before_full=0)  # the smaller profile does not fit either
    calls = []

    def fallbacks(animator, model_name, profile):
        calls.append((animator, model_name, profile))
        return [MemoryFallback("lite", "lite", lambda: smaller), MemoryFallback("broken", None, load_damaged),
                MemoryFallback("default", "default", lambda: anim)]

    def load_damaged():
        raise CheckpointError("model-00001.safetensors is truncated")

    gpu = FillingGpu(anim, chunks_before_full=6)
    p = LivePipeline(gpu, ref, UnpluggableMic(),
                     LiveOptions(degrade=False, model_name="default", profile="default", memory_fallbacks=fallbacks))
    p.start()
    try:
        assert wait_until(lambda: p.memory_fallbacks, 15), p.stats()
        generated = p.generated_rate
        time.sleep(0.8)
        stats = p.stats()
    finally:
        p.stop()
    assert calls == [(gpu, "default", "default")] and smaller.failures == 1
    assert p.animator is anim and (p.model_name, p.profile) == ("default", "default")
    assert stats.warnings == ("GPU out of memory with default on cuda:0; lite ran out of memory too; broken cannot be "
                              "loaded (model-00001.safetensors is truncated): switched to default on the CPU (slower)",)
    assert stats.running and stats.error is None and generated.rate() > 10


def test_gpu_oom_with_nothing_left_stops_with_one_line(anim, ref):
    gpu = FillingGpu(anim, chunks_before_full=3)
    p = LivePipeline(gpu, ref, UnpluggableMic(), LiveOptions(degrade=False, model_name="tiny",
                                                             memory_fallbacks=lambda *_: []))
    p.start()
    try:
        assert wait_until(lambda: p.error is not None, 15), p.stats()
        stats = p.stats()
    finally:
        p.stop()
    assert not stats.running and "\n" not in stats.error
    assert stats.error.startswith("GPU out of memory with tiny on cuda:0; nothing left to fall back to (CUDA out of")


def test_gpu_oom_at_the_start_of_the_stream_falls_back_before_streaming(anim, ref):
    gpu = FillingGpu(anim, chunks_before_full=0)  # even the reference cache does not fit
    p = LivePipeline(gpu, ref, UnpluggableMic(), LiveOptions(degrade=False, model_name="tiny"))
    assert p.animator.device.type == "cpu" and p.stream is not None and gpu.failures == 1
    assert "GPU out of memory with tiny on cuda:0: switched to tiny on the CPU" in p.stats().warnings[0]
