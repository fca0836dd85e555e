"""Training configuration: one file per recipe stage (configs/train/*.yaml)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knotanim.config import KnotAnimConfig, _build
from knotanim.errors import ConfigError

PARALLEL_MODES = ("ddp", "fsdp")
DISTILL_HISTORIES = ("clean", "rollout")
ROLLOUT_CLIPS = ("all", "still")
ROLLOUT_KNOT_TARGETS = ("truth", "own")


@dataclass(frozen=True)
class DataConfig:
    source: str = "generator"  # "generator" (synthetic clips made on the fly) or "videos" (a folder of mp4s)
    speech_corpus: str = ""  # .npz built by `knotanim data build-speech` (empty: silent clips only)
    video_folder: str = ""  # for source = "videos": mp4 files with audio, one speaker each
    photo_fraction: float = 0.15  # share of clips animated from real photographs
    still_fraction: float = 0.3  # share of clips with head_motion = 0 (ground truth is a function of audio)
    workers: int = 8  # DataLoader worker processes per rank
    seed_offset: int = 0  # shifts the clip seeds (resume with fresh data)


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "dit"  # "autoencoder" (stage 1), "dit" (stage 2: teacher-forced chunks), "rollout" (stage 3: self-rollout),
    # "distill" (stage 4: few-step sampler distillation)
    model: dict = field(default_factory=dict)  # KnotAnimConfig overrides (the model being trained)
    init_from: str = ""  # checkpoint folder to start from (e.g. the stage-1 result or the shipped default)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 10000  # optimiser steps (stops earlier at max_minutes)
    max_minutes: float = 0.0  # wall-clock budget; 0 = unlimited
    reuse: int = 2  # optimiser steps per loaded batch (fresh noise, time and mode each time; data is the bottleneck)
    batch_size: int = 16  # clips (dit) or frames (autoencoder) per rank per step
    chunks: int = 4  # chunks per training clip (dit)
    lr: float = 3e-4
    warmup: int = 300
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999  # EMA decay of the weights that get saved as the model
    bf16: bool = True  # autocast to bfloat16 on CUDA
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile each DiT block (regional: see trainer.compile_blocks)
    flex_attention: bool = True  # block-sparse FlexAttention on CUDA (dense SDPA mask otherwise)
    moving_weight: float = 10.0  # loss weight where the target differs from the reference (mouth, eyes)
    mouth_weight: float = 1.0  # extra loss factor inside each frame's mouth box (1 = no extra weight)
    knot_probability: float = 0.85  # share of batches trained with the knot (the rest: plain causal chunks)
    run_ahead_probability: float = 0.85  # share of batches with the running-ahead reference
    context_noise: float = 0.05  # max std of noise added to clean history latents (exposure-bias guard)
    knot_noise: float = 0.1  # max std of noise added to the knot latent
    rollout_steps: int = 4  # sampler steps of the self-rollout that makes the history (stage 3)
    rollout_clips: str = "all"  # stage 3: which clips get their own history: "all", or "still" (motion 0; the rest
    # keep stage 2's ground-truth history, since a moving head's ground truth does not continue a rolled-out pose)
    rollout_knot_target: str = "truth"  # stage 3, rolled-out clips: the target at each chunk's knot position,
    # "truth" (the ground-truth frame) or "own" (the rolled-out knot the chunk is conditioned on, so the model
    # learns to continue its knot, as stage 2 teaches with ground-truth knots, instead of to leave it)
    still_motion: float = 0.1  # head-motion intensity at or below which a clip counts as still (synthetic moving: 0.2-1)
    teacher_steps: int = 4  # stage 4: Euler steps of the frozen teacher (the init_from model) per chunk
    student_steps: int = 2  # stage 4: Euler steps the student learns to sample in (the exported sampler.steps)
    gt_weight: float = 0.25  # stage 4: weight of the student sample's error against the ground truth (teacher's: 1)
    distill_history: str = "clean"  # stage 4: "clean" (ground-truth history, as stage 2) or "rollout" (the student's own)
    parallel: str = "ddp"  # under torchrun with several ranks: "ddp" (replicated weights) or "fsdp" (FSDP2-sharded)
    tensorboard: bool = False  # rank 0 also writes log.csv's scalars to OUT/tensorboard/ (needs the tensorboard package)
    log_every: int = 50
    save_every: int = 1000
    seed: int = 0

    def __post_init__(self):
        if self.parallel not in PARALLEL_MODES:
            raise ConfigError(f"train.parallel must be one of {', '.join(PARALLEL_MODES)}, got {self.parallel!r}")
        if not (isinstance(self.teacher_steps, int) and self.teacher_steps >= 1):
            raise ConfigError(f"train.teacher_steps must be an integer >= 1, got {self.teacher_steps!r}")
        if not (isinstance(self.student_steps, int) and 1 <= self.student_steps <= self.teacher_steps):
            raise ConfigError(f"train.student_steps must be an integer from 1 to teacher_steps ({self.teacher_steps}), "
                              f"got {self.student_steps!r}")
        if not self.gt_weight >= 0:
            raise ConfigError(f"train.gt_weight must be >= 0, got {self.gt_weight!r}")
        if self.rollout_clips not in ROLLOUT_CLIPS:
            raise ConfigError(f"train.rollout_clips must be one of {', '.join(ROLLOUT_CLIPS)}, got {self.rollout_clips!r}")
        if self.rollout_knot_target not in ROLLOUT_KNOT_TARGETS:
            raise ConfigError(f"train.rollout_knot_target must be one of {', '.join(ROLLOUT_KNOT_TARGETS)}, "
                              f"got {self.rollout_knot_target!r}")
        if self.distill_history not in DISTILL_HISTORIES:
            raise ConfigError(f"train.distill_history must be one of {', '.join(DISTILL_HISTORIES)}, "
                              f"got {self.distill_history!r}")

    def model_config(self, base: KnotAnimConfig | None = None) -> KnotAnimConfig:
        base = base or KnotAnimConfig()
        return KnotAnimConfig.from_dict(_merge(base.to_dict(), self.model))

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> "TrainConfig":
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"cannot read training config {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse training config {path}: {str(e).splitlines()[0]}") from None
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} must look like key=value (e.g. steps=100)")
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = _override_value(value)
        model = data.pop("model", {}) or {}
        cfg = _build(cls, data, "train")
        return dataclasses.replace(cfg, model=model)


_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _override_value(text: str):
    """A --set value as YAML reads it, except that a number in exponent notation without a dot (3e-5), which
    YAML 1.1 reads as a string, is a float."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def describe(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
