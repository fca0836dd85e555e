"""KnotBench on a machine without espeak-ng (an eval corpus instead), the memory of the long stream,
and the still-head rows streaming with head_motion 0 (tiny random model, CPU)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import knotanim.eval.runner as runner
from knotanim.errors import InputError
from knotanim.eval.spec import BenchSpec, ClipSpec, tiny_spec


@pytest.fixture
def no_espeak(monkeypatch):
    """Make espeak-ng look absent, as on the accelerator machine."""
    from knotanim.data.speech import Espeak

    def missing():
        raise InputError("espeak-ng is not installed (libespeak-ng.so.1 not found): apt-get install espeak-ng")

    monkeypatch.setattr(Espeak, "_load", staticmethod(missing))


def test_without_espeak_the_corpus_is_used_and_its_absence_is_explained(tmp_path, anim, eval_corpus, no_espeak):
    from knotanim.cli.main import main

    with pytest.raises(InputError, match="--corpus"):
        runner.run_knotbench(anim, tiny_spec(n_frames=8), None)
    model = tmp_path / "tiny-model"
    anim.save_pretrained(model)
    tiny_spec(n_frames=8).save(tmp_path / "spec.json")
    args = ["eval", "--model", str(model), "--spec", str(tmp_path / "spec.json"), "--device", "cpu", "--no-plots",
            "--out", str(tmp_path / "out")]
    assert main(args) != 0  # neither corpus nor espeak-ng: a clear one-line error, no traceback
    assert main(args + ["--corpus", str(eval_corpus)]) == 0
    assert (tmp_path / "out" / "report.json").exists()
    from knotanim.data.corpus import SpeechCorpus

    c = SpeechCorpus(eval_corpus)
    assert c.split == "eval" and len(c) > 0
    # the report says which speech its clips came from: the same seed picks other utterances from another corpus
    speech = json.loads((tmp_path / "out" / "report.json").read_text())["info"]["speech"]
    assert speech["source"] == "corpus" and speech["utterances"] == len(c) and speech["path"] == str(eval_corpus)
    assert speech["split"] == "eval" and re.fullmatch(r"\d+\.\d+.*", speech["espeak_ng"])


def test_full_spec_clips_get_speech_from_the_corpus(eval_corpus, no_espeak):
    from knotanim.eval.spec import full_spec
    from knotanim.eval.speech import EvalSpeech

    speech = EvalSpeech(str(eval_corpus))
    for cs in full_spec(long_minutes=0.2, clip_seconds=1.0).clips:
        u = speech.for_clip(cs.seed, cs.n_frames / 25)
        assert len(u.audio) >= cs.n_frames * 640 and np.abs(u.audio).max() > 0.1


def test_long_stream_is_scored_in_blocks_with_its_truth_on_disk(tmp_path, anim, eval_corpus, monkeypatch):
    """A short "long" stream: its ground truth goes to a memmap file and every row is scored in blocks
    of at most BLOCK_FRAMES, so no row's video is ever held whole."""
    n_long = 40
    spec = BenchSpec("t", clips=(ClipSpec("s", 1, 10),)).with_long(minutes=n_long / 25 / 60)
    spec = BenchSpec(spec.name, spec.clips, drift_window_s=0.4, strip_frames=2)
    seen: dict[str, bool] = {}
    blocks: list[int] = []
    real_buffer, real_update = runner.frames_buffer, runner.ClipScorer.update

    def buffer(n_frames, size, on_disk, folder, name):
        seen[name] = on_disk
        return real_buffer(n_frames, size, on_disk, folder, name)

    def update(self, block):
        blocks.append(len(block))
        if self.truth.spec.long:
            assert isinstance(self.truth.frames.base, np.memmap) or isinstance(self.truth.frames, np.memmap)
        return real_update(self, block)

    monkeypatch.setattr(runner, "frames_buffer", buffer)
    monkeypatch.setattr(runner.ClipScorer, "update", update)
    report = runner.run_knotbench([("a", anim)], spec, tmp_path, corpus=eval_corpus, plots=False)
    assert seen == {"clip1": False, "clip2": True}  # the short clip in memory, the long one on disk
    assert max(blocks) <= runner.BLOCK_FRAMES and sum(blocks) == 4 * (10 + n_long)  # 4 rows per clip
    assert len(report["over_time"]["long"]["a:default"]["psnr"]) == 4  # 40 frames / 10-frame windows
    assert not list(tmp_path.glob("*.npy"))


def test_still_head_clips_stream_with_head_motion_zero(anim, eval_corpus, monkeypatch):
    calls: list[tuple[float, float]] = []  # (clip spec head_motion, stream head_motion)
    real_stream = runner._stream_video

    def spy(anim, truth, *args, **kwargs):
        orig = anim.stream

        def stream(reference, **kw):
            calls.append((truth.spec.head_motion, kw["head_motion"]))
            return orig(reference, **kw)

        anim.stream = stream
        try:
            return real_stream(anim, truth, *args, **kwargs)
        finally:
            del anim.stream

    monkeypatch.setattr(runner, "_stream_video", spy)
    spec = BenchSpec("t", clips=(ClipSpec("still", 1, 6, head_motion=0.0), ClipSpec("moving", 2, 6, head_motion=0.5),
                                 ClipSpec("photo", 3, 6, source="photo")))
    runner.run_knotbench(anim, spec, None, corpus=eval_corpus)
    assert sorted(set(calls)) == [(0.0, 0.0), (0.5, 0.5)] and len(calls) == 6  # 3 clips x (default, audio-zeroed)
    assert all(isinstance(h, float) for _, h in calls)
