"""The warp codec: warping is exact where it must be, frames come from the reference's pixels at any
resolution, every entry point's stream runs on it, and both training stages run on CPU."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.model.warp import WarpCodec, WarpParts, composite, identity_grid, warp
from knotanim.train.config import TrainConfig
from knotanim.train.trainer import AutoencoderLoss, train

WARP = {"kind": "warp", "factor": 16, "latent_channels": 4, "base_channels": 8, "flow_factor": 4}


def tiny_warp_config():
    return tiny_config(autoencoder=WARP, model={"patch": 1})


def _image(n=1, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_zero_flow_full_visibility_is_the_image_at_any_resolution():
    n = 2
    parts = WarpParts(flow=torch.zeros(n, 2, 16, 16), visibility=torch.ones(n, 1, 16, 16), fill=torch.zeros(n, 3, 64, 64))
    for size in (64, 200):  # the model's size, and a photo's own (not a multiple of it)
        image = _image(1, size)
        assert torch.allclose(composite(parts, image), image.expand(n, -1, -1, -1), atol=2e-4)  # float grid rounding


def test_flow_moves_pixels_and_zero_visibility_shows_the_fill():
    image = _image(1, 64)
    shift = torch.zeros(1, 2, 16, 16)
    shift[:, 0] = 2 * 4 / 64  # sample 4 pixels to the right
    moved = warp(image, shift)
    assert torch.allclose(moved[..., :, 8:56], image[..., :, 12:60], atol=1e-5)
    fill = torch.full((1, 3, 64, 64), 0.25)
    parts = WarpParts(flow=shift, visibility=torch.zeros(1, 1, 16, 16), fill=fill)
    assert torch.allclose(composite(parts, image), fill)


def test_identity_grid_hits_pixel_centres():
    g = identity_grid(1, 4, 8, "cpu", torch.float32)
    assert g.shape == (1, 4, 8, 2)
    assert torch.allclose(g[0, 0, :, 0], (torch.arange(8) + 0.5) / 4 - 1)
    assert torch.allclose(g[0, :, 0, 1], (torch.arange(4) + 0.5) / 2 - 1)


def test_codec_shapes_and_a_fresh_codec_shows_the_reference():
    cfg = tiny_warp_config()
    codec = WarpCodec(cfg.autoencoder).eval()
    frames, ref = _image(3, 64, 1), _image(1, 64, 2)
    with torch.no_grad():
        latents = codec.encode(frames)
        assert latents.shape == (3, 4, 4, 4)
        reference = codec.prepare_reference(ref)
        parts = codec.render(latents, reference)
        out = codec.decode(latents, reference=reference)
    assert parts.flow.shape == (3, 2, 16, 16) and parts.visibility.shape == (3, 1, 16, 16)
    assert parts.fill.shape == (3, 3, 64, 64) and out.shape == (3, 3, 64, 64)
    assert torch.all(parts.flow == 0)  # initialised as "copy the reference"
    assert (out - ref).abs().mean() < 0.1 * (frames - ref).abs().mean()
    with pytest.raises(ValueError, match="reference"):
        codec.decode(latents)


def test_loss_weights_moved_pixels_and_prefers_the_warp():
    cfg = tiny_warp_config()
    codec = WarpCodec(cfg.autoencoder)
    ref = _image(2, 64, 3)
    still = AutoencoderLoss(codec)(ref.clone(), ref)[0]
    moved_frames = ref.clone()
    moved_frames[..., 20:40, 20:40] = -ref[..., 20:40, 20:40]
    plain = AutoencoderLoss(codec, moved_weight=1.0)(moved_frames, ref)[0]
    weighted = AutoencoderLoss(codec, moved_weight=5.0)(moved_frames, ref)[0]
    assert still < plain < weighted


def test_stream_renders_from_the_reference():
    anim = KnotAnimator.from_config(tiny_warp_config())
    anim.model.randomize_zero_init(std=0.05)
    ref = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    stream = anim.stream(ref, seed=0)
    frames = stream.push_audio(np.zeros(8000, np.float32)) + stream.finish()
    assert len(frames) == 13 and frames[0].image.shape == (64, 64, 3)
    assert stream.reference.render is not None
    # The frames are made of the reference's pixels: far closer to it than an unrelated image is.
    other = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    dist = np.mean([np.abs(f.image.astype(int) - ref).mean() for f in frames])
    assert dist < 0.5 * np.abs(other.astype(int) - ref).mean()


def test_compiled_backend_leaves_decoding_to_the_stream():
    from knotanim.engines.base import CompiledTorchBackend

    anim = KnotAnimator.from_config(tiny_warp_config())
    backend = CompiledTorchBackend(anim.chunk_step(), "cpu", autoencoder=anim.autoencoder)
    assert backend.decode is None


def _write(tmp_path: Path, name: str, **cfg) -> Path:
    base = {"model": tiny_warp_config().to_dict(), "batch_size": 4, "chunks": 1, "steps": 2, "warmup": 1,
            "log_every": 1, "save_every": 100, "data": {"workers": 0, "speech_corpus": ""}, "bf16": False}
    base.update(cfg)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    return path


def test_codec_stage_then_dit_stage(tmp_path):
    codec_dir = train(TrainConfig.load(_write(tmp_path, "codec.yaml", stage="autoencoder")), tmp_path / "codec",
                      device="cpu", progress=lambda s: None).model_dir
    anim = KnotAnimator.from_pretrained(codec_dir, device="cpu")
    assert isinstance(anim.autoencoder, WarpCodec)
    assert not torch.all(anim.autoencoder.latent_std == 1)  # latent statistics were measured
    dit_dir = train(TrainConfig.load(_write(tmp_path, "dit.yaml", stage="dit", chunks=2, batch_size=2,
                                            init_from=str(codec_dir))),
                    tmp_path / "dit", device="cpu", progress=lambda s: None).model_dir
    trained = KnotAnimator.from_pretrained(dit_dir, device="cpu")
    assert torch.equal(trained.autoencoder.latent_std, anim.autoencoder.latent_std)  # the codec stays as stage 1 left it


def test_a_new_codec_starts_afresh_and_keeps_the_dit_blocks(tmp_path):
    """Stage 1 of a warp model from a conv-codec model: the DiT's blocks come along, resized layers and the
    codec start afresh, and the run says so."""
    conv = KnotAnimator.from_config(tiny_config(), seed=5)
    conv.save_pretrained(tmp_path / "conv")
    lines = []
    cfg = TrainConfig.load(_write(tmp_path, "codec.yaml", stage="autoencoder", steps=1, init_from=str(tmp_path / "conv")))
    model_dir = train(cfg, tmp_path / "codec", device="cpu", progress=lines.append).model_dir
    warped = KnotAnimator.from_pretrained(model_dir, device="cpu")
    kept = conv.model.blocks[0].attn.qkv.weight.to(torch.bfloat16).float()  # checkpoints hold bf16
    assert torch.equal(warped.model.blocks[0].attn.qkv.weight, kept)
    assert any("4 tensor(s)" in line and "start afresh" in line for line in lines)  # x_embed, ref_embed, out (2)
    assert any("codec starts afresh" in line for line in lines)
