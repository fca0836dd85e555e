"""The stream's state stays fixed-size, the knot and running ahead do what they should, and inputs are checked."""
import numpy as np
import pytest
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.config import SamplerConfig
from knotanim.errors import InputError
from knotanim.model.layout import RunAhead


def test_frames_have_indices_timestamps_and_shape(anim, ref):
    s = anim.stream(ref)
    spf = anim.config.samples_per_frame
    frames = s.push_audio(np.zeros(spf * 10, np.float32)) + s.finish(total_frames=10)
    assert [f.index for f in frames] == list(range(10))
    assert frames[3].timestamp == pytest.approx(3 / anim.config.fps)
    assert all(f.image.shape == (64, 64, 3) and f.image.dtype == np.uint8 for f in frames)


def test_state_is_constant_size_over_1000_frames(anim, ref):
    s = anim.stream(ref, seed=1)
    spf = anim.config.samples_per_frame
    rng = np.random.default_rng(1)
    sizes, buffered = set(), set()
    emitted = 0
    for _ in range(100):
        emitted += len(s.push_audio(rng.standard_normal(spf * 10).astype(np.float32) * 0.1))
        sizes.add((s.ring.k.shape, s.ring.v.shape, s.reference.k.shape, s.knot.latent.shape))
        buffered.add(s.audio._buffer.size <= 2 * anim.config.samples_per_frame + s.audio.features.span_length())
        assert len(s._features) <= s.span
    assert emitted >= 990
    assert len(sizes) == 1 and buffered == {True}
    # Ring positions stay relative and bounded: the oldest slot is exactly L frames back at most.
    pos, valid = s.ring.relative_positions(s.chunk_start, "cpu")
    assert valid.all() and pos.min() >= -anim.config.stream.window and pos.max() < 0


def test_streaming_is_deterministic_per_seed_and_differs_across_seeds(anim, ref):
    spf = anim.config.samples_per_frame
    audio = np.random.default_rng(2).standard_normal(spf * 12).astype(np.float32) * 0.2

    def run(seed):
        s = anim.stream(ref, seed=seed)
        return np.stack([f.image for f in s.push_audio(audio) + s.finish()])

    a, b, c = run(5), run(5), run(6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_reset_replays_the_same_frames(anim, ref):
    spf = anim.config.samples_per_frame
    audio = np.random.default_rng(3).standard_normal(spf * 8).astype(np.float32) * 0.2
    s = anim.stream(ref, seed=9)
    first = np.stack([f.image for f in s.push_audio(audio) + s.finish()])
    s.reset()
    second = np.stack([f.image for f in s.push_audio(audio) + s.finish()])
    assert np.array_equal(first, second)


def test_reference_swap_recomputes_only_the_reference_cache(anim, ref):
    s = anim.stream(ref)
    spf = anim.config.samples_per_frame
    s.push_audio(np.zeros(spf * 8, np.float32))
    ring_before, knot_before, old_ref = s.ring.k.clone(), s.knot.latent.clone(), s.reference.k.clone()
    s.set_reference(255 - ref)
    assert torch.equal(s.ring.k, ring_before) and torch.equal(s.knot.latent, knot_before)
    assert not torch.equal(s.reference.k, old_ref)
    assert s.frames_emitted > 0


def test_knot_is_carried_conditioned_and_fused(anim, ref):
    s = anim.stream(ref, knot=True)
    assert s.span == anim.config.stream.chunk + 1
    assert not s.knot.valid
    spf = anim.config.samples_per_frame
    s.push_audio(np.zeros(spf * 12, np.float32))
    assert s.knot.valid
    # Fusion: the first committed frame of a chunk is the mean of the knot and the new prediction.
    calls = []
    h = anim.model.register_forward_hook(lambda m, a, o: calls.append((a[0].clone(), o[0].clone())))
    knot = s.knot.latent.clone()
    ring_k = s.ring.k.clone()
    s.push_audio(np.zeros(spf * anim.config.stream.chunk, np.float32))
    h.remove()
    c = anim.config.autoencoder.latent_channels
    x_in_first = calls[0][0]
    assert torch.equal(x_in_first[0, 0, c:2 * c], knot[0]) and torch.all(x_in_first[0, 0, 2 * c] == 1)
    assert torch.all(x_in_first[0, 1:, c:] == 0)
    committed = calls[-1][0][0, :, :c]  # the cache pass sees the committed (fused) frames
    steps = len(s.step.times) - 1
    x = calls[0][0][0, :, :c]
    for (xi, v), (t0, t1) in zip(calls[:steps], zip(s.step.times[:-1], s.step.times[1:])):
        x = x + (t1 - t0) * v[0]
    torch.testing.assert_close(committed[0], (x[0] + knot[0]) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(committed[1:], x[1:anim.config.stream.chunk], atol=1e-5, rtol=1e-5)
    assert not torch.equal(s.ring.k, ring_k)


def test_no_knot_denoises_exactly_the_committed_frames(anim, ref):
    s = anim.stream(ref, knot=False)
    assert s.span == anim.config.stream.chunk
    s.push_audio(np.zeros(anim.config.samples_per_frame * 12, np.float32))
    assert not s.knot.valid


def test_run_ahead_keeps_the_reference_ahead_and_advances_by_the_stride():
    cfg = tiny_config().stream
    ra = RunAhead.from_config(cfg, knot=True, enabled=True)
    span = cfg.chunk + cfg.knot
    positions = [ra.position(j * cfg.chunk) for j in range(2000)]
    rel = [ra.relative(j * cfg.chunk) for j in range(2000)]
    assert all(span <= r < span + cfg.run_ahead_stride for r in rel)  # always a future anchor, bounded
    steps = {b - a for a, b in zip(positions, positions[1:])}
    assert steps <= {0, cfg.run_ahead_stride, 2 * cfg.run_ahead_stride}
    assert all(b >= a for a, b in zip(positions, positions[1:]))
    off = RunAhead.from_config(cfg, knot=True, enabled=False)
    assert {off.position(j) for j in range(0, 100, 2)} == {cfg.reference_fixed_position}
    assert off.relative(1000) < -900  # without running ahead the rollout leaves the reference behind


def test_bad_audio_and_reference_inputs(anim, ref):
    s = anim.stream(ref)
    spf = anim.config.samples_per_frame
    # NaN/Inf are cleaned, stereo is averaged, ints are scaled: documented conversions, no crash.
    bad = np.full(spf * 4, np.nan, np.float32)
    bad[::7] = np.inf
    frames = s.push_audio(bad)
    stereo = np.random.default_rng(0).standard_normal((spf * 4, 2)).astype(np.float32)
    frames += s.push_audio(stereo)
    frames += s.push_audio((np.random.default_rng(1).standard_normal(spf * 4) * 1000).astype(np.int16))
    frames += s.finish()
    assert len(frames) == 12 and all(np.isfinite(f.image).all() for f in frames)
    with pytest.raises(InputError):
        s.push_audio(np.array(["a", "b"]))
    with pytest.raises(InputError):
        s.push_audio(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(InputError):
        anim.stream(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(InputError):
        anim.stream(np.zeros((0, 5, 3), np.uint8))
    # Grayscale and RGBA references are converted.
    anim.stream(ref[:, :, 0])
    anim.stream(np.concatenate((ref, np.full((64, 64, 1), 255, np.uint8)), 2))


def test_empty_and_silent_audio(anim, ref):
    s = anim.stream(ref)
    assert s.push_audio(np.zeros(0, np.float32)) == []
    assert s.finish() == []
    s2 = anim.stream(ref)
    frames = s2.push_audio(np.zeros(anim.config.samples_per_frame * 6, np.float32)) + s2.finish()
    assert len(frames) == 6


def test_set_steps_mid_stream_keeps_the_caches(anim, ref):
    s = anim.stream(ref, steps=2)
    spf = anim.config.samples_per_frame
    s.push_audio(np.zeros(spf * 6, np.float32))
    ring, index = s.ring.k.clone(), s.chunk_index
    s.set_steps(1)
    calls = []
    h = anim.model.register_forward_hook(lambda m, a, o: calls.append(1))
    s.push_audio(np.zeros(spf * anim.config.stream.chunk, np.float32))
    h.remove()
    assert len(calls) == 2  # one denoising step + the cache pass (was 2 + 1)
    assert s.chunk_index == index + 1 and not torch.equal(s.ring.k, ring)


def test_chunk_noise_mixes_a_shared_part_and_keeps_unit_variance():
    from knotanim.stream.stream import chunk_noise

    plain = chunk_noise(torch.Generator().manual_seed(3), 4, 8, 16)
    again = torch.randn((1, 4, 8, 16, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, again)  # correlation 0 draws exactly what the stream always drew
    mixed = chunk_noise(torch.Generator().manual_seed(3), 4, 8, 64, correlation=0.6)
    flat = mixed[0].reshape(4, -1)
    assert flat.std(dim=1).sub(1).abs().max() < 0.02  # every frame still N(0, 1)
    corr = torch.corrcoef(flat)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.sub(0.6).abs().max() < 0.03  # frames correlate by the share asked for


def test_noise_correlation_config_is_validated_and_changes_the_stream(ref):
    from knotanim.errors import ConfigError

    with pytest.raises(ConfigError, match="noise_correlation"):
        tiny_config(sampler=SamplerConfig(steps=2, noise_correlation=1.0)).validate()
    base = KnotAnimator.from_config(tiny_config(), seed=0)
    shared = KnotAnimator.from_config(tiny_config(sampler=SamplerConfig(steps=2, noise_correlation=0.5)), seed=0)
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    a = [f.image for f in base.stream(ref, seed=1).push_audio(audio)]
    b = [f.image for f in shared.stream(ref, seed=1).push_audio(audio)]
    assert len(a) == len(b) > 0 and any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_noise_correlation_leaves_the_mouth_area_independent():
    from knotanim.stream.stream import chunk_noise, noise_correlation_map

    cfg = tiny_config(sampler=SamplerConfig(steps=2, noise_correlation=0.8))
    cmap = noise_correlation_map(cfg)
    assert cmap.shape == (cfg.latent_size, cfg.latent_size)
    mouth = cmap == 0
    assert 0 < int(mouth.sum()) < cmap.numel() / 4 and bool((cmap[~mouth] == 0.8).all())
    assert bool(mouth[-cfg.latent_size // 4 - 1:, :].any()) and not bool(mouth[: cfg.latent_size // 2].any())  # lower face
    noise = chunk_noise(torch.Generator().manual_seed(0), 3, 256, cfg.latent_size, cmap)[0]  # [3, C, h, w]
    same_outside = torch.corrcoef(noise[:, :, ~mouth].reshape(3, -1))[0, 1]
    same_inside = torch.corrcoef(noise[:, :, mouth].reshape(3, -1))[0, 1]
    assert abs(float(same_outside) - 0.8) < 0.05 and abs(float(same_inside)) < 0.05
