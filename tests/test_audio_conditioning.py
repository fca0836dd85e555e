"""How speech reaches the model and the loss: per-frame audio attention, and the mouth-weighted loss."""
import numpy as np
import torch
import yaml

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.model.dit import AudioCrossAttention, KnotDiT
from knotanim.train.config import DataConfig, TrainConfig
from knotanim.train.data import ClipRequest, clip_loader
from knotanim.train.trainer import _init_animator, mouth_cells, mouth_weight


def test_audio_attention_reads_only_its_own_frame():
    torch.manual_seed(0)
    attn = AudioCrossAttention(width=16, inner=64)
    torch.nn.init.normal_(attn.proj.weight)  # zero at start; give it weights so the output shows
    x = torch.randn(2, 3, 5, 16)
    audio = torch.randn(2, 3, 4, 64)
    base = attn(x, audio)
    changed = audio.clone()
    changed[:, 1] += 1.0
    out = attn(x, changed)
    assert torch.allclose(out[:, 0], base[:, 0]) and torch.allclose(out[:, 2], base[:, 2])
    assert not torch.allclose(out[:, 1], base[:, 1])


def test_a_fresh_audio_attention_changes_nothing_until_trained():
    cfg = tiny_config()
    assert cfg.model.audio_attention
    torch.manual_seed(1)
    without = KnotDiT(cfg.replace(model={"audio_attention": False})).randomize_zero_init(seed=2).eval()
    torch.manual_seed(1)
    with_attention = KnotDiT(cfg).eval()
    missing, unexpected = with_attention.load_state_dict(without.state_dict(), strict=False)
    assert not unexpected and missing and all("audio_attn" in k or "audio_token" in k for k in missing)
    B, Fr, c, s = 1, 2, cfg.autoencoder.latent_channels, cfg.latent_size
    args = (torch.randn(B, Fr, 2 * c + 1, s, s), torch.rand(B, Fr), torch.randn(B, Fr, cfg.audio.n_mels, cfg.audio_window),
            torch.rand(B), torch.arange(Fr))
    with torch.no_grad():
        assert torch.equal(without(*args)[0], with_attention(*args)[0])
        for block in with_attention.blocks:  # once trained (here: random), the audio changes the output
            torch.nn.init.normal_(block.audio_attn.proj.weight)
        assert not torch.allclose(without(*args)[0], with_attention(*args)[0])


def test_training_switches_audio_attention_on_for_a_checkpoint_without_it(tmp_path):
    old = KnotAnimator.from_config(tiny_config(model={"audio_attention": False}), device="cpu")
    old.save_pretrained(tmp_path / "old")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "dit", "init_from": str(tmp_path / "old")}))
    inherited = _init_animator(TrainConfig.load(path), torch.device("cpu"))
    assert not inherited.config.model.audio_attention and inherited.config.frame_size == 64  # sizes from the checkpoint
    switched = _init_animator(TrainConfig.load(path, ["model.model.audio_attention=true"]), torch.device("cpu"))
    assert switched.config.model.audio_attention and switched.config.frame_size == 64
    assert torch.equal(switched.model.blocks[0].attn.qkv.weight, old.model.blocks[0].attn.qkv.weight.float())


def test_mouth_weight_map_marks_the_cells_inside_each_frame_box():
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 8.0], [32.0, 32.0, 64.0, 64.0]]])  # [B=1, T=2, 4] on a 64-px frame
    w = mouth_weight(mouth_cells(boxes, frame_size=64, latent_size=8), weight=5.0)  # cells of 8 px, centres at 4, 12, ...
    assert w.shape == (1, 2, 1, 8, 8)
    assert set(w.unique().tolist()) == {1.0, 5.0}
    assert int((w[0, 0] == 5).sum()) == 2 * 1  # x centres 4, 12 inside [0, 16]; y centre 4 inside [0, 8]
    assert int((w[0, 1] == 5).sum()) == 4 * 4
    assert bool((w[0, 1, 0, 4:, 4:] == 5).all()) and bool((w[0, 1, 0, :4] == 1).all())
    assert torch.equal(mouth_weight(mouth_cells(boxes, 64, 8), 1.0), torch.ones(1, 2, 1, 8, 8))


def test_generated_batches_carry_the_true_mouth_boxes():
    cfg = tiny_config()
    T = 7
    batch = next(iter(clip_loader(cfg, DataConfig(workers=0, speech_corpus=""), ClipRequest(T), 2)))
    boxes = batch["mouth_box"].numpy()
    assert boxes.shape == (2, T, 4)
    assert np.all(boxes[..., 2] > boxes[..., 0]) and np.all(boxes[..., 3] > boxes[..., 1])
    centre_y = (boxes[..., 1] + boxes[..., 3]) / 2
    assert np.all((centre_y > cfg.frame_size * 0.5) & (centre_y < cfg.frame_size))  # below the middle: a mouth


def _stage2_inputs(model_cfg, seed=0):
    from knotanim.train.trainer import _dit_inputs

    anim = KnotAnimator.from_config(model_cfg, device="cpu", seed=seed)
    cfg = TrainConfig(stage="dit", chunks=2, mouth_weight=4.0, data=DataConfig(workers=0, speech_corpus=""))
    n_frames = 2 * model_cfg.stream.chunk + model_cfg.stream.knot
    batch = next(iter(clip_loader(model_cfg, cfg.data, ClipRequest(n_frames), 3)))
    from knotanim.train.trainer import _encode_batch

    enc = _encode_batch(anim, batch)
    inputs, mouth = _dit_inputs(anim, cfg, enc, np.random.default_rng(seed), {})
    return anim, inputs, mouth


def test_listening_gap_is_zero_for_a_deaf_model_and_not_for_one_that_hears():
    from knotanim.train.trainer import TeacherForcedLoss, listening_gap

    cfg = tiny_config()
    anim, inputs, mouth = _stage2_inputs(cfg)
    inputs = (*inputs[:8], torch.randn_like(inputs[8]), *inputs[9:])  # three different sounds (no corpus here)
    assert set(mouth.unique().tolist()) == {0.0, 1.0}  # a 0/1 map of the mouth boxes over the chunks' frames
    assert mouth.shape == inputs[-1].shape
    deaf = anim.model.randomize_zero_init(seed=3)
    for p in list(deaf.audio_embed.parameters()) + [q for b in deaf.blocks for q in b.audio_attn.proj.parameters()]:
        torch.nn.init.zeros_(p)  # the audio reaches nothing
    assert listening_gap(TeacherForcedLoss(deaf, 10.0), inputs, mouth) == 0.0
    for b in deaf.blocks:
        torch.nn.init.normal_(b.audio_attn.proj.weight, std=0.5)
    assert listening_gap(TeacherForcedLoss(deaf, 10.0), inputs, mouth) != 0.0


def test_switching_audio_attention_off_leaves_its_weights_out_with_a_note(tmp_path):
    KnotAnimator.from_config(tiny_config(), device="cpu").save_pretrained(tmp_path / "with")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "dit", "init_from": str(tmp_path / "with")}))
    notes = []
    anim = _init_animator(TrainConfig.load(path, ["model.model.audio_attention=false"]), torch.device("cpu"), notes.append)
    assert not anim.config.model.audio_attention
    assert len(notes) == 1 and "not used by the configured model" in notes[0] and "audio" in notes[0]


def test_train_module_entry_point_reports_a_bad_checkpoint_in_one_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"stage": "dit", "init_from": str(tmp_path / "missing")}))
    r = subprocess.run([sys.executable, "-m", "knotanim.cli.train", str(path), "--out", str(tmp_path / "o"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("knotanim train: error:"), r.stderr


def test_training_noise_shares_the_samplers_part_across_a_chunks_frames_outside_the_mouth():
    from knotanim.config import SamplerConfig
    from knotanim.stream.stream import noise_correlation_map

    cfg = tiny_config(sampler=SamplerConfig(steps=2, noise_correlation=0.6))
    _, inputs, _ = _stage2_inputs(cfg)
    noise = inputs[7]  # [B, n, F, c, h, w], as the loss module takes it
    mouth = noise_correlation_map(cfg) == 0
    frames = noise.movedim(2, 0)  # [F, B, n, c, h, w]
    outside = torch.corrcoef(frames[..., ~mouth].reshape(frames.shape[0], -1))
    inside = torch.corrcoef(frames[..., mouth].reshape(frames.shape[0], -1))
    pairs = ~torch.eye(frames.shape[0], dtype=torch.bool)
    assert outside[pairs].sub(0.6).abs().max() < 0.1 and inside[pairs].abs().max() < 0.15
    assert abs(float(noise.std()) - 1) < 0.05  # each frame's noise is still N(0, I)
    _, plain, _ = _stage2_inputs(tiny_config())  # off: plain N(0, I), as before
    corr = torch.corrcoef(plain[7].movedim(2, 0).reshape(plain[7].shape[2], -1))
    assert corr[~torch.eye(corr.shape[0], dtype=torch.bool)].abs().max() < 0.1
