"""FlexAttention's block-sparse path computes what dense SDPA with the same mask computes."""
import pytest
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.model.attention import BlockMaskAttention, flex_available
from knotanim.model.layout import RunAhead, SequenceLayout
from knotanim.model.sequence import knot_conditioning, teacher_forced_forward


@pytest.mark.skipif(not flex_available(), reason="this torch has no FlexAttention")
def test_flex_block_mask_matches_dense_sdpa_in_training_mode():
    anim = KnotAnimator.from_config(tiny_config(), seed=0)
    anim.model.randomize_zero_init(seed=0)
    cfg = anim.config
    sc = cfg.stream
    layout = SequenceLayout.build(sc, 4, RunAhead.from_config(sc, True, True, start=4))
    c, h = cfg.autoencoder.latent_channels, cfg.latent_size
    B = 2
    ref = torch.randn(B, c, h, h)
    clean = torch.randn(B, layout.n_clean, c, h, h)
    noisy = torch.randn(B, 4, layout.span, c, h, h)
    cond = knot_conditioning(torch.randn(B, 4, c, h, h), 4, layout.span, ref.shape)
    t = torch.rand(B, 4)
    audio = torch.randn(B, layout.n_frames, cfg.audio.n_mels, cfg.audio_window)
    motion = torch.rand(B)
    with torch.no_grad():
        dense = teacher_forced_forward(anim.model, layout, ref, clean, noisy, cond, t, audio, motion)
        flex_mask = BlockMaskAttention(layout.frame_mask(), cfg.tokens_per_frame, "cpu", compiled=False)
        sparse = teacher_forced_forward(anim.model, layout, ref, clean, noisy, cond, t, audio, motion, flex_mask)
    assert dense.abs().mean() > 1e-3
    torch.testing.assert_close(sparse, dense, atol=1e-4, rtol=1e-4)
