"""scripts/probe_drift.py: its ground-truth-history stream equals the training path (DistillLoss.sample)."""
import importlib.util
from pathlib import Path

import numpy as np
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.frontends.audio_features import AudioFeatures

_spec = importlib.util.spec_from_file_location("probe_drift", Path(__file__).parents[1] / "scripts" / "probe_drift.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_ground_truth_history_equals_training_path():
    anim = KnotAnimator.from_config(tiny_config(), seed=0)
    anim.model.randomize_zero_init(seed=1)
    cfg = anim.config
    rng = np.random.default_rng(0)
    n_chunks = 6  # past the history window
    frames = rng.integers(0, 255, (n_chunks * cfg.stream.chunk + 1, cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    gt = probe.encode(anim, frames)
    audio = rng.standard_normal(cfg.samples_per_frame * 40).astype(np.float32) * 0.3
    features = AudioFeatures(cfg).clip_features(audio, (n_chunks + 1) * cfg.stream.chunk + 1)
    lat, raw = probe.ground_truth_history(anim, frames[0], gt, features, 3, n_chunks * cfg.stream.chunk,
                                          motion=0.0, return_raw=True)
    ref = probe.training_path_sample(anim, frames[0], gt, features, 3, n_chunks)
    assert raw.abs().mean() > 1e-3
    torch.testing.assert_close(raw, ref, atol=2e-4, rtol=2e-4)
    # committed: the first frame of chunks after the first fused half-way with the ground-truth knot
    C = cfg.stream.chunk
    assert torch.allclose(lat[C], 0.5 * (raw[1, 0] + gt[C]), atol=1e-5)
    # a different history changes the samples (the history is really used)
    lat2 = probe.ground_truth_history(anim, frames[0], gt.flip(0), features, 3, n_chunks * C)
    assert (lat2[-C:] - lat[-C:]).abs().max() > 1e-3
