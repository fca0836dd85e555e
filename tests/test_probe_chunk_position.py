"""scripts/probe_chunk_position.py: per-position means, the per-position offset removal, and its flicker
equal to KnotBench's on a tiny model's stream."""
import importlib.util
from pathlib import Path

import numpy as np

from knotanim.data import make_clip
from knotanim.eval import metrics as M
from knotanim.eval.runner import _stream_video
from knotanim.eval.scoring import ClipScorer, ClipTruth
from knotanim.eval.spec import ClipSpec

_spec = importlib.util.spec_from_file_location(
    "probe_chunk_position", Path(__file__).parents[1] / "scripts" / "probe_chunk_position.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_by_position_and_offset_removal():
    s = np.array([1.0, 2, 3, 1, 2, 3, 1, np.nan])
    np.testing.assert_allclose(probe.by_position(s, 3), [1, 2, 3])
    np.testing.assert_allclose(probe.by_position(s[1:], 3, first_index=1), [1, 2, 3])
    # detrended: a drift (linear) vanishes, a saw-tooth keeps its deviation from its mean
    x = 0.9 - 0.001 * np.arange(30) + np.array([0.004, 0, 0])[np.arange(30) % 3]
    np.testing.assert_allclose(probe.by_position(probe.detrended(x), 3), [0.004 * 2 / 3, -0.004 / 3, -0.004 / 3])
    rng = np.random.default_rng(0)
    T, C = 30, 3
    base = rng.uniform(50, 200, (1, 8, 8))
    offset = np.array([0.0, 3.0, -1.0])[np.arange(T) % C, None, None]
    lum = base + offset  # a pure per-position saw-tooth on a still image
    np.testing.assert_allclose(probe.position_offset_removed(lum, C), np.broadcast_to(base + offset.mean(), lum.shape))
    frames = np.repeat(np.clip(lum, 0, 255)[..., None], 3, axis=-1).astype(np.uint8)
    mask = np.ones((8, 8), bool)
    f = probe.flicker_split(frames, mask, C)
    assert abs(f["flicker"] - M.flicker(frames, mask)) < 1e-5
    assert f["flicker"] > 1 and f["flicker_removed"] < 1e-9 and abs(f["share"] - 1) < 1e-9
    assert f["share_control"] < 0.5  # a period that is not the chunk's does not remove it


def test_position_table_on_a_tiny_stream(anim):
    cfg = anim.config
    C = cfg.stream.chunk
    n = 4 * C
    spec = ClipSpec("still-t", seed=3, n_frames=n, head_motion=0.0)
    clip = make_clip(3, n, size=cfg.frame_size, fps=cfg.fps, head_motion=0.0, split="eval")
    truth = ClipTruth.from_clip(spec, clip, C, 0.25, 60.0)
    rec = probe.Recorder(ClipScorer(truth, strip_frames=0))
    _stream_video(anim, truth, clip.audio, rec, 0, knot=True, run_ahead=True, steps=None)
    frames = rec.frames(n)
    assert frames.shape == truth.frames.shape
    t = probe.position_table(rec.scorer.result(), frames, truth.static, C)
    # the recorded frames are the scored frames: the probe's flicker is KnotBench's
    assert abs(t["flicker"]["flicker"] - t["scorer_flicker"]) < 1e-5 * t["scorer_flicker"]
    # diff_into[p]: transitions into frames at position p (p = 0 crosses a chunk boundary)
    e = M.frame_diff_energy(frames)
    into = np.arange(1, n) % C
    np.testing.assert_allclose(t["pos"]["diff_into"], [e[into == p].mean() for p in range(C)])
    b = e[into == 0].mean() / e[into != 0].mean()
    assert abs(b - t["jump_ratio"]) < 1e-9
    for k in ("appearance_ssim", "psnr", "psnr_mouth"):
        assert t["pos"][k].shape == (C,) and np.isfinite(t["pos"][k]).all()
