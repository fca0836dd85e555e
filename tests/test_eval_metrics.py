"""KnotBench metrics on constructed videos whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from knotanim.eval import metrics as M


def ramp_video(t=12, h=32, w=32, step=4.0) -> np.ndarray:
    """A smooth video: brightness grows by `step` levels per frame over a fixed gradient."""
    base = np.linspace(20, 120, w, dtype=np.float32)[None, None, :, None]
    frames = base + step * np.arange(t, dtype=np.float32)[:, None, None, None]
    return np.broadcast_to(frames, (t, h, w, 3)).round().astype(np.uint8)


def textured(h=48, w=48, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def mouth_video(signal: np.ndarray, size=48, box=(16, 28, 32, 40)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face-toned frames whose mouth box darkens with `signal` in [0, 1]: the dark area grows."""
    t = len(signal)
    ref = np.full((size, size, 3), (200, 160, 140), dtype=np.uint8)
    frames = np.repeat(ref[None], t, axis=0)
    x0, y0, x1, y1 = box
    cy = (y0 + y1) // 2
    for i, s in enumerate(signal):
        half = int(round(s * (y1 - y0) / 2))
        if half:
            frames[i, cy - half : cy + half, x0 + 2 : x1 - 2] = (30, 10, 10)
    return frames, np.tile(np.array(box, dtype=float), (t, 1)), ref


# --- PSNR / SSIM ---------------------------------------------------------------------------------
def test_identical_videos_psnr_capped_and_ssim_one():
    v = np.stack([textured(seed=i) for i in range(3)])
    assert M.psnr(v, v) == M.PSNR_CAP_DB
    assert np.all(M.psnr_frames(v, v) == M.PSNR_CAP_DB)
    assert M.ssim(v, v) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(M.ssim_frames(v, v), 1.0, atol=1e-6)


def test_psnr_known_value():
    a = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    b = a + 10  # every value off by 10: MSE 100
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert np.allclose(M.psnr_frames(a, b), 10 * math.log10(255**2 / 100))


def test_ssim_decreases_with_noise_and_is_symmetric():
    x = textured(64, 64).astype(np.float32)
    rng = np.random.default_rng(1)
    scores = [M.ssim(x, np.clip(x + rng.normal(0, s, x.shape), 0, 255)) for s in (2, 10, 30, 80)]
    assert all(a > b for a, b in zip(scores, scores[1:]))
    assert scores[0] < 1.0 and scores[-1] > -1.0
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    assert M.ssim(x, y) == pytest.approx(M.ssim(y, x), abs=1e-6)


def test_ssim_known_value_constant_images():
    # Two flat images: only the luminance term remains, (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    a, b = np.full((20, 20), 100.0, np.float32), np.full((20, 20), 150.0, np.float32)
    c1 = (0.01 * 255) ** 2
    want = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)
    assert M.ssim(a, b) == pytest.approx(want, rel=1e-4)


def test_ssim_on_an_image_smaller_than_the_window():
    x = textured(6, 9).astype(np.float32)
    assert M.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert M.ssim(x, x * 0.5) < 1.0


def test_ssim_mask_scores_only_the_selected_region():
    x = textured(48, 48)
    y = x.copy()
    y[:, :24] = 255 - y[:, :24]  # damage the left half only
    right = np.zeros((48, 48), dtype=bool)
    right[:, 30:] = True  # windows centred here never see the left half (radius 5)
    assert M.ssim_frames(x[None], y[None], mask=right)[0] == pytest.approx(1.0, abs=1e-6)
    assert M.ssim_frames(x[None], y[None], mask=~right)[0] < 0.6


def test_known_shift_lowers_psnr_and_ssim():
    x = textured(48, 48)
    shifted = np.roll(x, 3, axis=1)
    assert M.psnr(x, shifted) < 15
    assert M.ssim(x, shifted) < 0.2


# --- chunk boundaries and flicker ----------------------------------------------------------------
def test_jump_ratio_of_a_smooth_ramp_is_one():
    v = ramp_video(t=13)
    assert M.boundary_jump_ratio(v, chunk=3) == pytest.approx(1.0, abs=1e-6)


def test_jump_ratio_of_still_video_is_one():
    v = np.repeat(textured()[None], 10, axis=0)
    assert M.boundary_jump_ratio(v, chunk=3) == 1.0


def test_jump_ratio_with_seams_at_every_boundary():
    chunk, t = 3, 15
    v = ramp_video(t=t, step=1.0).astype(np.int32)
    seam = (np.arange(t) // chunk) * 12  # a jump of 12 levels entering every chunk
    seamed = np.clip(v + seam[:, None, None, None], 0, 255).astype(np.uint8)
    ratio = M.boundary_jump_ratio(seamed, chunk)
    assert ratio > 50  # (1 + 12)^2 / 1^2 = 169
    # boundaries elsewhere than the seams look seamless; offsets follow the stream index
    assert M.boundary_jump_ratio(seamed[1:], chunk, first_index=1) == pytest.approx(ratio)
    assert M.boundary_jump_ratio(seamed, chunk=5) < 2


def test_jump_ratio_from_energy_edge_cases():
    assert M.jump_ratio_from_energy(np.array([0.0, 0.0, 5.0]), 3) == float("inf")
    assert math.isnan(M.jump_ratio_from_energy(np.array([1.0, 1.0]), 1))  # no within-chunk transition
    assert math.isnan(M.jump_ratio_from_energy(np.array([1.0]), 3))  # no boundary transition


def test_flicker_zero_for_smooth_motion_positive_for_noise():
    v = ramp_video(t=10)
    assert M.flicker(v) == pytest.approx(0.0, abs=1e-4)
    rng = np.random.default_rng(0)
    noisy = np.clip(v + rng.normal(0, 3, v.shape), 0, 255).astype(np.uint8)
    assert M.flicker(noisy) > 2.0
    mask = np.zeros(v.shape[1:3], dtype=bool)
    noisy2 = v.copy()
    noisy2[::2, :8] = 0  # flicker only in the first 8 rows
    mask[16:] = True
    assert M.flicker(noisy2, mask) == pytest.approx(0.0, abs=1e-4)
    assert M.flicker(noisy2, ~mask) > 10


# --- mouth openness, lip sync, envelope -----------------------------------------------------------
def test_openness_follows_a_known_signal():
    t = np.arange(60)
    signal = 0.5 + 0.5 * np.sin(t / 4.0)
    frames, boxes, ref = mouth_video(signal)
    opened = M.mouth_openness(frames, boxes, ref)
    assert opened.shape == (60,)
    assert M.lipsync_correlation(opened, signal) > 0.97
    assert np.all(opened >= 0) and opened.min() == pytest.approx(0.0, abs=1e-6)


def test_frozen_mouth_scores_zero_not_nan():
    signal = 0.5 + 0.5 * np.sin(np.arange(40) / 3.0)
    frames, boxes, ref = mouth_video(np.zeros(40))
    opened = M.mouth_openness(frames, boxes, ref)
    assert M.lipsync_correlation(opened, signal) == 0.0
    assert M.pearson(np.full(5, np.nan), np.arange(5)) == 0.0


def test_lipsync_anticorrelated_and_nan_pairs_skipped():
    s = np.sin(np.arange(50) / 5.0)
    assert M.lipsync_correlation(-s, s) == pytest.approx(-1.0)
    a = s.copy()
    a[3] = np.nan
    assert M.lipsync_correlation(a, s) == pytest.approx(1.0)


def test_envelope_is_rms_per_frame():
    spf = 640
    audio = np.concatenate([np.zeros(spf), np.full(spf, 0.5), np.sin(np.linspace(0, 200 * np.pi, spf))])
    env = M.envelope(audio.astype(np.float32), spf)
    assert env.shape == (3,)
    assert env[0] == 0.0 and env[1] == pytest.approx(0.5) and env[2] == pytest.approx(1 / math.sqrt(2), rel=1e-2)
    assert M.envelope(audio, spf, n_frames=5).shape == (5,)


def test_measurement_boxes_have_fixed_size_and_follow_centre():
    boxes = np.array([[10, 10, 20, 14], [12, 11, 20, 19]], dtype=float)
    mb = M.measurement_boxes(boxes, margin=0.0)
    assert np.allclose(mb[:, 2] - mb[:, 0], 10) and np.allclose(mb[:, 3] - mb[:, 1], 8)
    assert np.allclose((mb[:, 0] + mb[:, 2]) / 2, [15, 16])
    assert M.union_box(boxes, 32, 32) == (10, 10, 20, 19)


# --- over time -----------------------------------------------------------------------------------
def test_window_means_and_drift_ratio():
    s = np.array([1, 1, 2, 2, 3, 3, 4.0])
    assert M.window_means(s[:6], 2).tolist() == [1, 2, 3]
    assert M.window_means(s, 4).tolist() == pytest.approx([1.5, 10 / 3])  # last part: 3 >= half a window
    assert M.window_means(s[:5], 4).tolist() == [1.5]  # last part of 1 is dropped
    d = M.drift_ratio(30.0, 27.0)
    assert d["ratio"] == pytest.approx(0.9) and d["change_pct"] == pytest.approx(-10.0)
    assert math.isnan(M.drift_ratio(0.0, 1.0)["ratio"])
