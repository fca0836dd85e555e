"""The warp codec: warping is exact where it must be, frames come from the reference's pixels at any
resolution, every entry point's stream runs on it, and both training stages run on CPU."""
from pathlib import Path

import cv2
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


def _photo(h=300, w=360, seed=4):
    rng = np.random.default_rng(seed)
    small = (rng.random((h // 6, w // 6, 3)) * 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # smooth enough to compare after resampling


def _motion(size, flow_px=(0.0, 0.0), visibility=1.0, fill=0):
    from knotanim.model.warp import FrameMotion

    flow = np.zeros((2, size // 4, size // 4), np.float32)
    flow[0], flow[1] = flow_px
    return FrameMotion(flow, np.full((size // 4, size // 4), visibility, np.float32), np.full((size, size, 3), fill, np.uint8))


def test_native_paste_keeps_the_photo_and_moves_its_own_pixels():
    from knotanim.frontends.face import face_crop_for_box, FaceBox
    from knotanim.frontends.native_paste import NativePaster

    photo = _photo()
    box = FaceBox(140, 100, 80, 80)
    fc = face_crop_for_box(photo.shape, box, tiny_config().crop, 64, angle=10.0)
    paste = NativePaster(photo, fc)
    still = paste(np.zeros((64, 64, 3), np.uint8), _motion(64))
    assert np.abs(still.astype(int) - photo).max() <= 1  # no motion: the photo itself, at its own resolution
    # A flow of 2 crop pixels to the right samples the photo A^-1 (2, 0) further: compare inside the crop's core.
    moved = paste(np.zeros((64, 64, 3), np.uint8), _motion(64, (2.0, 0.0)))
    d = np.linalg.inv(fc.matrix[:, :2]) @ np.array([2.0, 0.0])
    shift = np.float32([[1, 0, d[0]], [0, 1, d[1]]])
    expected = cv2.warpAffine(photo, shift, (photo.shape[1], photo.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    core = fc.to_original(np.array([[24.0, 24.0], [40.0, 40.0]]))
    (x0, y0), (x1, y1) = core.min(0).astype(int), core.max(0).astype(int)
    assert np.abs(moved[y0:y1, x0:x1].astype(int) - expected[y0:y1, x0:x1]).mean() < 1.5
    assert np.abs(still[y0:y1, x0:x1].astype(int) - expected[y0:y1, x0:x1]).mean() > 3  # the shift is visible
    # Nothing visible: the fill shows; outside the crop the photo is untouched.
    filled = paste(np.zeros((64, 64, 3), np.uint8), _motion(64, visibility=0.0, fill=200))
    assert np.all(filled[y0:y1, x0:x1] == 200)
    assert np.array_equal(filled[:, :paste.paster.x0], photo[:, :paste.paster.x0])


def test_onnx_renderer_matches_torch_and_the_stream_runs_on_it(tmp_path):
    pytest.importorskip("onnxruntime")
    from knotanim.engines.export import ensure_renderer_onnx
    from knotanim.engines.select import build_backend

    anim = KnotAnimator.from_config(tiny_warp_config())
    anim.model.randomize_zero_init(std=0.05)
    for head in (anim.autoencoder.flow_head, anim.autoencoder.visibility_head):  # a renderer that moves pixels
        torch.nn.init.normal_(head.weight, std=0.05)
    result = ensure_renderer_onnx(anim, tmp_path, progress=lambda s: None)
    assert result.parity.ok and set(result.parity.max_abs) == {"flow", "visibility", "fill"}
    assert result.parity.scale["flow"] > 0  # the parity compared a flow that is not all zeros
    assert ensure_renderer_onnx(anim, tmp_path, progress=lambda s: None).reused

    ref = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    audio = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    eager = anim.stream(ref, seed=3)
    want = eager.push_audio(audio) + eager.finish()
    backend = build_backend("onnxruntime", anim, artifacts=tmp_path, progress=lambda s: None)
    assert backend.render_parts is not None
    exported = anim.stream(ref, seed=3, backend=backend)
    got = exported.push_audio(audio) + exported.finish()
    assert len(got) == len(want)
    assert max(np.abs(a.image.astype(int) - b.image.astype(int)).max() for a, b in zip(got, want)) <= 2


def test_render_keeps_the_photo_outside_the_face_and_at_its_own_size(tmp_path):
    """knotanim's render with a warp-codec model: the output has the photo's size, and pixels outside the
    crop are the photo's own (the mp4's encoding aside)."""
    import av
    from PIL import Image

    from knotanim.frontends.audio_io import write_wav
    from knotanim.render import RenderOptions, render_to_file

    photo = _photo(240, 320)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    write_wav(tmp_path / "speech.wav", (0.2 * np.sin(np.arange(16000) / 9.0)).astype(np.float32)[None], 16000)
    anim = KnotAnimator.from_config(tiny_warp_config())
    summary = render_to_file(anim, tmp_path / "photo.png", tmp_path / "speech.wav", tmp_path / "out.mp4",
                             options=RenderOptions(face_detect=False, crf=10))
    assert (summary.width, summary.height) == (320, 240) and summary.frames == 25
    with av.open(str(tmp_path / "out.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    gray = lambda a: cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY).astype(int)  # noqa: E731 (yuv420 chroma)
    # The centre square crop spans columns 40..280: the bars beside it are the photo's.
    assert np.abs(gray(frame[:, :30]) - gray(photo[:, :30])).mean() < 2
    assert np.abs(gray(frame) - gray(photo)).mean() < 6


@pytest.mark.parametrize("where", ["left edge", "corner", "big photo"])
def test_native_paste_handles_faces_at_the_border_and_large_photos(where):
    """A crop that reaches past the photo's edge (a face at the border), or a large photo: a full frame
    of the photo's size, the photo's own pixels where nothing moves, no crash."""
    from knotanim.frontends.face import FaceBox, face_crop_for_box
    from knotanim.frontends.native_paste import NativePaster

    h, w = (1500, 2000) if where == "big photo" else (240, 320)
    photo = _photo(h, w, seed=7)
    box = {"left edge": FaceBox(0, 80, 70, 70), "corner": FaceBox(250, 170, 70, 70),
           "big photo": FaceBox(900, 600, 300, 300)}[where]
    fc = face_crop_for_box(photo.shape, box, tiny_config().crop, 64, angle=-15.0)
    paste = NativePaster(photo, fc)
    out = paste(np.zeros((64, 64, 3), np.uint8), _motion(64))
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - photo).max() <= 1
    moved = paste(np.zeros((64, 64, 3), np.uint8), _motion(64, (3.0, -2.0)))
    assert np.abs(moved.astype(int) - photo).mean() > 0  # the face region moved
