"""Faults in the live pipeline, injected through the capture, sink and output interfaces: the
microphone vanishes, the disk fills up while recording, the virtual camera goes away."""
import time

import numpy as np
import pytest

from faults_helpers import UnpluggableMic, full_disk_sink, longest_silence, probe_recording, wait_until
from knotanim.live import LiveOptions, LivePipeline
from knotanim.live.outputs import FrameSlot, RecorderOutput
from knotanim.live.resilient import ResilientSource


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
