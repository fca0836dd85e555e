"""Stage 4 (few-step sampler distillation) on the CPU with a tiny model: the loss, its gradient, the stage's
run, export (the student's step count becomes the model's sampler.steps), resume and config checks."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.errors import ConfigError
from knotanim.train.config import DataConfig, TrainConfig
from knotanim.train.data import ClipRequest, clip_loader
from knotanim.train.trainer import DistillLoss, _dit_inputs, _encode_batch, frozen_teacher, train

TINY = tiny_config().to_dict()


def _teacher_checkpoint(path: Path) -> Path:
    """A tiny model whose zero-initialised layers hold random values, so its samples depend on its inputs."""
    anim = KnotAnimator.from_config(tiny_config(), device="cpu", seed=0)
    anim.model.randomize_zero_init(seed=1)
    return anim.save_pretrained(path)


def _write(tmp_path: Path, name: str, **cfg) -> Path:
    base = {"stage": "distill", "batch_size": 2, "chunks": 2, "steps": 2, "warmup": 1, "log_every": 1,
            "save_every": 100, "data": {"workers": 0, "speech_corpus": ""}, "bf16": False, "teacher_steps": 2,
            "student_steps": 1, "reuse": 1}
    base.update(cfg)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    return path


def _fixed_inputs(anim: KnotAnimator, cfg: TrainConfig):
    """One batch's loss inputs (noise drawn once), as the trainer builds them."""
    mc = anim.config
    n_frames = cfg.chunks * mc.stream.chunk + mc.stream.knot
    batch = next(iter(clip_loader(mc, cfg.data, ClipRequest(n_frames, base_seed=5), cfg.batch_size)))
    enc = _encode_batch(anim, batch)
    torch.manual_seed(0)
    inputs, _ = _dit_inputs(anim, cfg, enc, np.random.default_rng(0), {})
    return inputs


def _cfg(**kw) -> TrainConfig:
    base = dict(stage="distill", batch_size=2, chunks=2, data=DataConfig(workers=0), knot_probability=1.0)
    base.update(kw)
    return TrainConfig(**base)


def _loss(anim, teacher, cfg: TrainConfig) -> DistillLoss:
    return DistillLoss(anim.model, teacher, cfg.moving_weight, cfg.teacher_steps, cfg.student_steps,
                       anim.config.sampler.shift, cfg.gt_weight)


def test_distill_loss_is_zero_for_the_teacher_itself_and_moves_only_the_student(tmp_path):
    anim = KnotAnimator.from_pretrained(_teacher_checkpoint(tmp_path / "teacher"), device="cpu")
    anim.autoencoder.eval()
    cfg = _cfg(teacher_steps=2, student_steps=2, gt_weight=0.0)
    inputs = _fixed_inputs(anim, cfg)
    teacher = frozen_teacher(anim.model)
    assert float(_loss(anim, teacher, cfg)(*inputs).detach()) == 0.0  # same weights, same steps, same noise
    assert float(_loss(anim, teacher, _cfg(teacher_steps=2, student_steps=2, gt_weight=0.25))(*inputs).detach()) > 0

    # One student step against two teacher steps: a gap, whose gradient reaches the student alone.
    cfg = _cfg(teacher_steps=2, student_steps=1, gt_weight=0.0)
    loss_module = _loss(anim, teacher, cfg)
    opt = torch.optim.Adam(anim.model.parameters(), lr=3e-4)
    losses = []
    for _ in range(6):
        loss = loss_module(*inputs)
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert all(p.grad is None for p in teacher.parameters())
            assert sum(float(p.grad.abs().sum()) for p in anim.model.parameters() if p.grad is not None) > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 0 and losses[-1] < 0.8 * losses[0], losses  # the student moves toward the teacher
    reference = frozen_teacher(KnotAnimator.from_pretrained(tmp_path / "teacher", device="cpu").model)
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), reference.state_dict().values()))


def test_distill_stage_trains_exports_with_the_student_steps_and_resumes(tmp_path):
    init = _teacher_checkpoint(tmp_path / "teacher")
    out = tmp_path / "distill"
    cfg = TrainConfig.load(_write(tmp_path, "d.yaml", init_from=str(init)))
    res = train(cfg, out, device="cpu", progress=lambda s: None)
    assert res.step == 2
    meta = json.loads((res.model_dir / "config.json").read_text())
    assert meta["trained_steps"] == {"distill": 2}
    assert KnotAnimator.from_pretrained(res.model_dir, device="cpu").config.sampler.steps == 1  # no flags needed
    assert KnotAnimator.from_pretrained(init, device="cpu").config.sampler.steps == 2  # the teacher's tiny default
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].split(",")[-1] == "listen_gap" and all("nan" not in r for r in rows)

    lines = []
    cfg = TrainConfig.load(_write(tmp_path, "d2.yaml", init_from=str(init), steps=3, distill_history="rollout"))
    train(cfg, out, device="cpu", progress=lines.append)
    assert any("resumed" in line and "step 2" in line for line in lines)
    assert json.loads((out / "state" / "state.json").read_text())["step"] == 3
    assert json.loads((out / "model" / "config.json").read_text())["trained_steps"] == {"distill": 3}


def test_distill_config_errors(tmp_path):
    path = _write(tmp_path, "d.yaml")
    for override, message in (("student_steps=3", "student_steps must be an integer from 1 to teacher_steps"),
                              ("student_steps=0", "student_steps must be an integer from 1"),
                              ("teacher_steps=0", "teacher_steps must be an integer >= 1"),
                              ("gt_weight=-1", "gt_weight must be >= 0"),
                              ("distill_history=own", "distill_history must be one of clean, rollout")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig.load(path, [override])
    with pytest.raises(ConfigError, match="stage distill needs init_from"):
        train(TrainConfig.load(path), tmp_path / "out", device="cpu", progress=lambda s: None)
    shipped = TrainConfig.load(Path(__file__).resolve().parent.parent / "configs" / "train" / "stage4_distill.yaml")
    assert (shipped.stage, shipped.teacher_steps, shipped.student_steps) == ("distill", 4, 2)
