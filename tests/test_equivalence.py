"""Streaming mode and full-sequence (training) mode compute the same function."""
import numpy as np
import pytest
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.frontends.audio_features import AudioFeatures
from knotanim.model.layout import RunAhead, SequenceLayout
from knotanim.model.sequence import knot_conditioning, teacher_forced_forward


class Recorder:
    """Records every model call's inputs and output through a forward hook."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_hook(self.hook)

    def hook(self, module, args, output):
        x_in, t = args[0], args[1]
        self.calls.append((x_in.clone(), t.clone(), output[0].clone()))


def _anim(seed=0, **stream):
    cfg = tiny_config(stream=stream) if stream else tiny_config()
    anim = KnotAnimator.from_config(cfg, seed=seed)
    # Random (non-zero) output layers so the check is not trivially satisfied by zero-initialised heads.
    anim.model.randomize_zero_init(seed=seed + 1)
    return anim


@pytest.mark.parametrize("knot", [True, False])
@pytest.mark.parametrize("run_ahead", [True, False])
def test_stream_equals_full_sequence(knot, run_ahead):
    anim = _anim()
    cfg = anim.config
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    n_chunks = 6  # 12 committed frames, well past the window of 3
    stream = anim.stream(ref, seed=3, head_motion=0.3, knot=knot, run_ahead=run_ahead)
    step = stream.step
    recorder = Recorder(anim.model)
    samples = rng.standard_normal(cfg.samples_per_frame * 40).astype(np.float32) * 0.3
    # Drive chunk by chunk, keeping the committed latents the stream produced.
    stream.audio.push(samples)
    for _ in range(n_chunks):
        assert stream._gather_features(force=False)
        stream._run_chunk()
    recorder.handle.remove()
    steps = len(step.times) - 1
    per_chunk = steps + 1  # denoising calls + cache pass
    assert len(recorder.calls) == n_chunks * per_chunk
    c = cfg.autoencoder.latent_channels
    # The clean frames are the inputs of each chunk's cache pass.
    clean = torch.cat([recorder.calls[j * per_chunk + steps][0][:, :, :c] for j in range(n_chunks)], 1)

    layout = SequenceLayout.build(cfg.stream, n_chunks, RunAhead.from_config(cfg.stream, knot, run_ahead))
    audio = torch.from_numpy(AudioFeatures(cfg).clip_features(samples, layout.n_frames)).unsqueeze(0)
    ref_latent = anim.encode_frames(ref[None])
    motion = torch.tensor([0.3])
    for i in range(steps):
        calls = [recorder.calls[j * per_chunk + i] for j in range(n_chunks)]
        noisy = torch.stack([x[:, :, :c] for x, _, _ in calls], 1)
        cond = torch.stack([x[:, :, c:] for x, _, _ in calls], 1)
        t = torch.stack([tt[:, 0] for _, tt, _ in calls], 1)
        with torch.no_grad():
            v_full = teacher_forced_forward(anim.model, layout, ref_latent, clean, noisy, cond, t, audio, motion)
        v_stream = torch.stack([v for _, _, v in calls], 1)
        assert v_stream.abs().mean() > 1e-3  # a real signal, not zeros
        torch.testing.assert_close(v_full, v_stream, atol=2e-4, rtol=2e-4)
    # With the knot, chunks after the first are conditioned at position 0 and only there.
    cond0 = torch.stack([recorder.calls[j * per_chunk][0][:, :, c:] for j in range(n_chunks)], 1)
    if knot:
        assert torch.all(cond0[:, 0] == 0)
        assert torch.all(cond0[:, 1:, 0, c] == 1) and torch.all(cond0[:, 1:, 1:] == 0)
    else:
        assert torch.all(cond0 == 0)


def test_knot_conditioning_helper_matches_stream_layout():
    knots = torch.randn(1, 3, 4, 2, 2)
    cond = knot_conditioning(knots, 3, 3, (1, 4, 2, 2))
    assert torch.all(cond[:, 0] == 0)
    assert torch.equal(cond[:, 1:, 0, :4], knots[:, 1:])
    assert torch.all(cond[:, :, 1:] == 0)
