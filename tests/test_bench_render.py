"""scripts/bench_render.py on the CPU with the tiny model: the render it times is the product's, every
stage is counted, the patched methods are put back, and the JSON says what ran. No timing assertions."""
from __future__ import annotations

import json
import wave

import pytest

import bench_render as br  # scripts/ is on sys.path (conftest.py)


def test_render_is_timed_stage_by_stage_and_the_methods_are_put_back(tmp_path):
    from knotanim.frontends.face import Paster
    from knotanim.sinks.video import VideoFileSink
    from knotanim.stream.stream import KnotStream

    originals = [KnotStream.push_audio, KnotStream.finish, Paster.__call__, VideoFileSink.write,
                 VideoFileSink.write_audio]
    out = tmp_path / "render.json"
    result = br.main(["--tiny", "--seconds", "1", "--warmup-seconds", "0", "--serial", "--json", str(out)])
    assert [KnotStream.push_audio, KnotStream.finish, Paster.__call__, VideoFileSink.write,
            VideoFileSink.write_audio] == originals
    assert result["frames"] == 25 and result["backend"] == "torch" and result["device"] == "cpu"
    stages = result["stages"]
    assert list(stages) == ["stream", "paste", "encode", "audio", "rest"]
    for stage in ("stream", "paste", "encode", "audio"):  # each stage ran: its wrapped method was called
        assert stages[stage]["seconds"] > 0, stage
    assert sum(s["seconds"] for s in stages.values()) == pytest.approx(result["wall_s"], abs=0.01)
    assert sum(s["share"] for s in stages.values()) == pytest.approx(1.0, abs=0.01)
    assert json.loads(out.read_text())["stages"] == stages
    assert result["pipelined"] is False


def test_the_pipelined_render_counts_each_stage_once_with_the_overlap_left_out_of_rest():
    result = br.main(["--tiny", "--seconds", "1", "--warmup-seconds", "0", "--pipelined"])
    stages = result["stages"]
    assert result["pipelined"] is True and result["frames"] == 25
    assert all(stages[s]["seconds"] > 0 for s in ("stream", "paste", "encode", "audio"))
    assert stages["rest"]["seconds"] >= 0  # the stages overlap: their sum may pass the wall time
    assert sum(s["seconds"] for s in stages.values()) >= result["wall_s"] - 0.01


def test_crop_only_has_no_paste_stage(tmp_path):
    result = br.main(["--tiny", "--seconds", "0.5", "--warmup-seconds", "0", "--crop-only"])
    assert result["stages"]["paste"]["seconds"] == 0.0 and result["stages"]["stream"]["seconds"] > 0


def test_looped_speech_is_the_length_and_rate_asked_for(tmp_path):
    path = br.looped_speech(7.5, 16000, tmp_path / "s.wav")
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 120000)


def test_stage_clock_puts_a_method_back_when_the_block_raises():
    class Thing:
        def work(self):
            return 1

    original = Thing.work
    clock = br.StageClock()
    with pytest.raises(RuntimeError):
        with clock.wrap([("stream", Thing, "work")]):
            assert Thing().work() == 1
            raise RuntimeError
    assert Thing.work is original and clock.seconds["stream"] > 0
