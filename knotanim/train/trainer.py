"""Training stages 1 (frame autoencoder), 2 (teacher-forced Knot Forcing chunks), 3 (self-rollout)
and 4 (few-step sampler distillation).

Run through `knotanim train CONFIG` (one process) or `torchrun --nproc-per-node N -m knotanim.cli.main
train CONFIG` (DDP, or FSDP2 with `parallel: fsdp`). Each stage writes to OUT/: log.csv, loss.png,
samples.png, state/ (resumable training state), model/ (the EMA weights as a shippable checkpoint
folder) and, with `tensorboard: true`, tensorboard/.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from knotanim.animator import KnotAnimator
from knotanim.checkpoint import load_checkpoint
from knotanim.errors import ConfigError
from knotanim.frontends.face import mouth_cells
from knotanim.model.attention import BlockMaskAttention, flex_available
from knotanim.model.autoencoder import frames_to_tensor
from knotanim.model.layout import RunAhead, SequenceLayout, expand_frame_mask
from knotanim.model.sequence import knot_conditioning, teacher_forced_forward
from knotanim.stream.rollout import rollout_latents
from knotanim.stream.sampler import add_noise, sampling_times, share_noise, shift_time, velocity_target
from knotanim.stream.step import ChunkStep
from knotanim.stream.stream import noise_correlation_map
from knotanim.train.common import (EMA, TrainLog, any_rank, cleanup_distributed, full_tensor, load_state, lr_at,
                                   save_state, setup_distributed, shard_module)
from knotanim.train.config import TrainConfig, describe
from knotanim.train.data import ClipRequest, clip_loader


class AutoencoderLoss(nn.Module):
    """L1 + image-gradient L1 reconstruction, with a small latent penalty that keeps latents bounded.

    For a codec that renders from the reference (the warp codec), the L1 counts `moved_weight` times where
    the frame differs from its reference by more than 20/255 (head motion, mouth, eyes: 11-12 % of the
    pixels, where copying the reference is wrong), the flow is kept smooth (`flow_smoothness` times its
    total variation) and showing the warped reference is preferred to the generated fill
    (`fill_penalty` times the mean of 1 - visibility), so the fill paints only what the reference lacks."""

    def __init__(self, autoencoder: nn.Module, moved_weight: float = 5.0, flow_smoothness: float = 0.5,
                 fill_penalty: float = 0.01):
        super().__init__()
        self.autoencoder = autoencoder
        self.moved_weight, self.flow_smoothness, self.fill_penalty = moved_weight, flow_smoothness, fill_penalty

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, reference [N, 3, H, W] in [-1, 1] (each frame's own clip reference) -> (loss, plain L1)."""
        y, parts, z = self.autoencoder.reconstruct(x, reference)
        error = (y - x).abs()
        l1 = error.mean()
        grad = sum(((y.diff(dim=d) - x.diff(dim=d)).abs().mean() for d in (2, 3)))
        loss = 0.5 * grad + 1e-4 * z.pow(2).mean()
        if parts is None:
            return loss + l1, l1.detach()
        moved = ((x - reference).abs().amax(1, keepdim=True) > 40 / 255).float()  # 20/255 in [0, 1] units
        loss = loss + (error * (1 + (self.moved_weight - 1) * moved)).mean()
        tv = sum(parts.flow.diff(dim=d).abs().mean() for d in (2, 3))
        return loss + self.flow_smoothness * tv + self.fill_penalty * (1 - parts.visibility).mean(), l1.detach()


class TeacherForcedLoss(nn.Module):
    """Flow-matching loss over all chunks of a clip in one pass, weighted towards the moving regions
    and (region_weight) the mouth."""

    def __init__(self, model: nn.Module, moving_weight: float):
        super().__init__()
        self.model, self.moving_weight = model, moving_weight

    def forward(self, layout, mask, ref_latent, clean, x0, knots, t, noise, audio, motion, region_weight):
        n, span = layout.n_chunks, layout.span
        noisy = add_noise(x0, noise, t.view(*t.shape, 1, 1, 1, 1))
        cond = knot_conditioning(knots, n, span, ref_latent.shape, x0.device).to(x0.dtype)
        v = teacher_forced_forward(self.model, layout, ref_latent, clean, noisy, cond, t, audio, motion, mask)
        target = velocity_target(x0, noise)
        weight = region_loss_weight(x0, ref_latent, self.moving_weight, region_weight)
        return (weight * (v - target).pow(2)).mean()


def region_loss_weight(x0: torch.Tensor, ref_latent: torch.Tensor, moving_weight: float,
                       region_weight: torch.Tensor) -> torch.Tensor:
    """TeacherForcedLoss's per-cell weight: `moving_weight` where the target differs from the
    reference (ramping in over a latent difference of 0.5), times the mouth factor `region_weight`."""
    diff = (x0 - ref_latent[:, None, None]).abs().mean(3, keepdim=True)  # [B, n, F, 1, h, w]
    return (1 + (moving_weight - 1) * (diff / 0.5).clamp(0, 1)) * region_weight


class DistillLoss(nn.Module):
    """Stage 4: the student's `student_steps`-step sample of every chunk matches the frozen teacher's
    `teacher_steps`-step sample from the same noise and conditioning.

    Both sample each chunk as the stream does (Euler on the velocity over `sampling_times` with the
    model's shift), all chunks of the clip at once through `teacher_forced_forward`, which computes the
    stream's ChunkStep chunk by chunk (tests/test_equivalence.py): the history is whatever the inputs
    hold (clean ground truth as in stage 2, or the student's own rollout), the knot and running-ahead
    reference likewise. The teacher runs without gradients; the student's few steps are backpropagated
    through end to end (2 steps cost two forwards' activations, as much as a stage-2 step with
    twice the batch), which is simpler than per-step trajectory matching and needs no alignment of the
    student's times with the teacher's. The loss is on the final clean latents of every chunk frame (the
    knot frame included; the stream's fusion with the previous knot is a fixed average after it), with
    TeacherForcedLoss's weighting (moving regions, mouth boxes), plus `gt_weight` times the same error
    against the ground truth: the data has it exactly, and it keeps the student from copying the
    teacher's mistakes; kept small, as a sample's regression onto ground truth alone averages over what
    the audio leaves open (head motion, blinks) and blurs. Same inputs as TeacherForcedLoss; its flow
    times `t` are not used (the samplers' times are fixed)."""

    def __init__(self, model: nn.Module, teacher: nn.Module, moving_weight: float, teacher_steps: int,
                 student_steps: int, shift: float, gt_weight: float):
        super().__init__()
        self.model, self.teacher, self.moving_weight, self.gt_weight = model, teacher, moving_weight, gt_weight
        self.teacher_times, self.student_times = sampling_times(teacher_steps, shift), sampling_times(student_steps, shift)

    @staticmethod
    def sample(model, times, layout, mask, ref_latent, clean, cond, noise, audio, motion) -> torch.Tensor:
        """Euler over `times` from `noise` [B, n, F, c, h, w] for every chunk at once -> clean latents."""
        x = noise
        for t_now, t_next in zip(times[:-1], times[1:]):
            t = torch.full(noise.shape[:2], t_now, device=noise.device)
            x = x + (t_next - t_now) * teacher_forced_forward(model, layout, ref_latent, clean, x, cond, t, audio,
                                                              motion, mask)
        return x

    def forward(self, layout, mask, ref_latent, clean, x0, knots, t, noise, audio, motion, region_weight):
        cond = knot_conditioning(knots, layout.n_chunks, layout.span, ref_latent.shape, x0.device).to(x0.dtype)
        args = (layout, mask, ref_latent, clean, cond, noise, audio, motion)
        with torch.no_grad():
            target = self.sample(self.teacher, self.teacher_times, *args)
        student = self.sample(self.model, self.student_times, *args)
        weight = region_loss_weight(x0, ref_latent, self.moving_weight, region_weight)
        loss = (weight * (student - target).pow(2)).mean()
        if self.gt_weight:
            loss = loss + self.gt_weight * (weight * (student - x0).pow(2)).mean()
        return loss


def frozen_teacher(model: nn.Module) -> nn.Module:
    """Stage 4's teacher: a frozen copy of the model as it starts (the init_from weights)."""
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    teacher.grad_checkpointing = False  # no gradients: nothing to recompute
    return teacher


def mouth_weight(cells: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-cell loss factor from `mouth_cells`: `weight` in the mouth box, 1 elsewhere."""
    return 1 + (weight - 1) * cells


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _init_animator(cfg: TrainConfig, device: torch.device, progress=print) -> KnotAnimator:
    """The model to train: the checkpoint it starts from (so a later stage inherits the earlier
    stage's sizes) with the config's `model` overrides on top, or the defaults with them when it
    starts from nothing. Layers the checkpoint lacks (e.g. audio attention switched on for a model
    trained without it) keep their initialisation; the new ones start as no-ops. Weights of layers
    the overrides switched off are left out, with a note; without overrides, weights the model has
    no place for mean the checkpoint does not fit."""
    tensors = None
    if cfg.init_from:
        ckpt_cfg, tensors, _ = load_checkpoint(cfg.init_from)
    model_cfg = cfg.model_config(base=ckpt_cfg if tensors is not None else None)
    if cfg.stage == "distill":  # the student samples in student_steps: the export's default for every entry point
        model_cfg = model_cfg.replace(sampler={"steps": cfg.student_steps})
    anim = KnotAnimator.from_config(model_cfg, device=device, seed=cfg.seed)
    for prefix, module in (("dit.", anim.model), ("autoencoder.", anim.autoencoder)):
        state = {k[len(prefix):]: v.float() for k, v in (tensors or {}).items() if k.startswith(prefix)}
        if state and prefix == "autoencoder." and ckpt_cfg.autoencoder.kind != model_cfg.autoencoder.kind:
            progress(f"note: the {model_cfg.autoencoder.kind} codec starts afresh (not from {cfg.init_from}'s "
                     f"{ckpt_cfg.autoencoder.kind} autoencoder)")
            state = {}
        if state and cfg.model:  # overrides may change sizes (a new codec, another patch): those layers start afresh
            own = module.state_dict()
            resized = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
            if resized:
                progress(f"note: {len(resized)} tensor(s) of {cfg.init_from} change size under the overrides and "
                         f"start afresh, e.g. {prefix}{resized[0]}")
                state = {k: v for k, v in state.items() if k not in resized}
        if state:
            try:
                missing, unexpected = module.load_state_dict(state, strict=False)
            except RuntimeError as e:  # size mismatches
                raise ConfigError(f"{cfg.init_from} does not fit the configured model: {str(e).splitlines()[1:2]}") from None
            if unexpected and not cfg.model:
                raise ConfigError(f"{cfg.init_from} does not fit the configured model (unexpected {unexpected[:3]})")
            if unexpected:
                progress(f"note: {len(unexpected)} tensor(s) of {cfg.init_from} not used by the configured model, "
                         f"e.g. {prefix}{unexpected[0]}")
    return anim


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class TrainResult:
    model_dir: Path  # the exported EMA checkpoint (written by rank 0)
    step: int
    module: nn.Module  # the trained module (live weights, not EMA) of this rank; under FSDP its shards,
    # which hold the (destroyed) process group and gloo's threads until dropped (cleanup_distributed)


def train(cfg: TrainConfig, out: str | Path, resume: bool = True, device: str | None = None,
          progress=print) -> TrainResult:
    """Run the configured stage on this process (one rank under torchrun)."""
    if cfg.stage not in ("autoencoder", "dit", "rollout", "distill"):
        raise ConfigError(f"unknown training stage {cfg.stage!r} (autoencoder, dit, rollout or distill)")
    if cfg.stage == "distill" and not cfg.init_from:
        raise ConfigError("stage distill needs init_from: the model to distil (the teacher, and the student's start)")
    d = setup_distributed(device)
    out = Path(out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + d.rank)
    anim = _init_animator(cfg, d.device, progress if d.main else (lambda _: None))
    anim.model.train()
    anim.autoencoder.train()
    stage_ae = cfg.stage == "autoencoder"
    module = anim.autoencoder if stage_ae else anim.model
    if not stage_ae:
        anim.autoencoder.eval().requires_grad_(False)
        anim.model.grad_checkpointing = cfg.grad_checkpointing
    if stage_ae:
        loss_module = AutoencoderLoss(module)
    elif cfg.stage == "distill":
        teacher = frozen_teacher(module)  # before sharding and compiling: the init_from weights, whole on every rank
        loss_module = DistillLoss(module, teacher, cfg.moving_weight, cfg.teacher_steps, cfg.student_steps,
                                  anim.config.sampler.shift, cfg.gt_weight)
    else:
        loss_module = TeacherForcedLoss(module, cfg.moving_weight)
    # listen_gap's probe: the flow-matching error with own and other audio (stage 4: of the student)
    probe = TeacherForcedLoss(module, cfg.moving_weight) if cfg.stage == "distill" else loss_module
    sharded = d.world > 1 and cfg.parallel == "fsdp"
    if sharded:  # FSDP2 shards the trained module in place; the loss module calls it as before
        shard_module(module, d, ("encode_raw", "decode_raw") if stage_ae else ("reference_kv",))
        wrapped = loss_module
    elif d.world > 1:
        wrapped = DDP(loss_module, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    else:
        wrapped = loss_module
    if cfg.compile and not stage_ae:
        compile_blocks(module)
        if cfg.stage == "distill":
            compile_blocks(loss_module.teacher)
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        (no_decay if p.ndim < 2 or "embed" in name or "modulation" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95), fused=d.device.type == "cuda")
    ema = EMA(module, cfg.ema)
    step = 0
    state_dir = out / "state"
    if resume and (state_dir / "state.json").exists():
        step = load_state(state_dir, {"model": module}, opt, ema)
        if d.main:
            progress(f"resumed from {state_dir} at step {step}")

    mc = anim.config
    n_frames = (cfg.chunks - 1) * mc.stream.chunk + mc.stream.chunk + mc.stream.knot
    per_rank_batch = cfg.batch_size  # clips per step
    if stage_ae:  # clips per step, frames come from each: the warp codec learns from many references per step
        per_rank_batch = -(-cfg.batch_size // n_frames) if mc.autoencoder.kind == "warp" else 4
    loader = clip_loader(mc, cfg.data, ClipRequest(n_frames, d.rank, d.world, cfg.seed * 1_000_003 + step * 997),
                         per_rank_batch)
    log = TrainLog(out, cfg.tensorboard, progress, fresh=step == 0) if d.main else None
    masks: dict = {}
    rng = np.random.default_rng(cfg.seed + 31 * step + d.rank)
    t_start, last = time.time(), time.time()
    running = []
    data_wait, fetch_start = 0.0, time.time()
    for batch, repeat in ((b, r) for b in loader for r in range(cfg.reuse)):
        time_up = bool(cfg.max_minutes) and time.time() - t_start > cfg.max_minutes * 60
        if cfg.max_minutes:  # several ranks: all stop at the same step, when the first one's time is up
            time_up = any_rank(time_up, d)
        if step >= cfg.steps or time_up:
            break
        data_wait += time.time() - fetch_start
        if repeat == 0:  # a fresh batch: to the device, and (stage 2/3) into latents once for all its reuses
            on_device = _to_device(batch, d.device)
            if not stage_ae:
                with _autocast(d.device, cfg.bf16):
                    encoded = _encode_batch(anim, on_device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        with _autocast(d.device, cfg.bf16):
            if stage_ae:
                frames = on_device["frames"]  # [B, T, H, W, 3]
                refs = on_device["reference"].unsqueeze(1).expand_as(frames).flatten(0, 1)
                pick = torch.randperm(refs.shape[0], device=frames.device)[: cfg.batch_size]
                loss, metric = wrapped(frames.flatten(0, 1)[pick].permute(0, 3, 1, 2).float() / 127.5 - 1,
                                       refs[pick].permute(0, 3, 1, 2).float() / 127.5 - 1)
            else:
                inputs, mouth = _dit_inputs(anim, cfg, encoded, rng, masks)
                loss, metric = wrapped(*inputs), None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = full_tensor(torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip))  # FSDP: all ranks
        opt.step()
        ema.update(module, step)
        step += 1
        running.append(float(loss.detach()))
        log_now = step % cfg.log_every == 0 or step == 1
        if log_now and not stage_ae and (d.main or sharded):  # under FSDP every rank joins the model's forwards
            with _autocast(d.device, cfg.bf16):
                listen_gap = listening_gap(probe, inputs, mouth)
        if d.main and log_now:
            rate = cfg.log_every / max(time.time() - last, 1e-9) if step > 1 else 0.0
            last = time.time()
            values = {"loss": float(np.mean(running)), "grad_norm": float(gnorm), "lr": opt.param_groups[0]["lr"],
                      "steps_per_s": rate, "data_wait_s": data_wait}
            data_wait = 0.0
            if metric is not None:
                values["loss_l1"] = float(metric)
            if not stage_ae:
                values["listen_gap"] = listen_gap
            log.write(step, **values)
            progress(f"step {step}/{cfg.steps}  " + "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
            running = []
        if (d.main or sharded) and step % cfg.save_every == 0:
            _checkpoint(out, step, module, opt, ema, anim, cfg, log, d.main, sharded, d.world)
        fetch_start = time.time()
    if d.main or sharded:
        _checkpoint(out, step, module, opt, ema, anim, cfg, log, d.main, sharded, d.world)
    if d.main:
        log.close()
        progress(f"done at step {step} in {(time.time() - t_start) / 60:.1f} min; model in {out / 'model'}")
    del wrapped  # DDP holds the process group: it has to go before the group can
    cleanup_distributed(d)
    return TrainResult(out / "model", step, module)


@torch.no_grad()
def _encode_batch(anim: KnotAnimator, batch: dict) -> dict:
    """Frames and reference -> latents (frozen autoencoder), once per loaded batch."""
    B, T = batch["frames"].shape[:2]
    x = batch["frames"].flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1
    lat = anim.autoencoder.encode(x).float()
    ref = anim.autoencoder.encode(batch["reference"].permute(0, 3, 1, 2).float() / 127.5 - 1).float()
    return {"latents": lat.view(B, T, *lat.shape[1:]), "reference": ref, "audio": batch["audio"], "motion": batch["motion"],
            "mouth_box": batch["mouth_box"]}


def training_layout(sc, chunks: int, knot: bool, run_ahead: bool, phase: int) -> tuple[RunAhead, SequenceLayout]:
    """The run-ahead schedule and sequence layout of one training clip: knot on/off, running ahead
    on/off, and the reference's lead at `phase` (0 .. stride-1) frames past the chunk span, so every
    phase of the lead is trained."""
    schedule = RunAhead.from_config(sc, knot, run_ahead)
    schedule = dataclasses.replace(schedule, start=schedule.span + phase)
    return schedule, SequenceLayout.build(sc, chunks, schedule)


def all_training_layouts(sc, chunks: int) -> list[SequenceLayout]:
    """Every distinct layout training draws (the shapes a compiled model meets)."""
    seen: dict = {}
    for knot in (True, False):
        for run_ahead in (True, False):
            for phase in range(sc.run_ahead_stride):
                layout = training_layout(sc, chunks, knot, run_ahead, phase)[1]
                seen.setdefault((layout.span, layout.ref_positions), layout)
    return list(seen.values())


def compile_blocks(model: nn.Module, recompile_limit: int = 64) -> None:
    """torch.compile each transformer block (regional compilation), not the whole loss.

    Training draws several layouts (knot on/off, running ahead on/off, each phase of the lead:
    `all_training_layouts`) whose sequences and masks differ; a whole-loss graph would be compiled
    again, forward and backward, for each of them, and past dynamo's recompile limit run eagerly.
    A block sees only a few distinct shapes, compiles in seconds, and all blocks share the code.
    The limit is raised so no variant silently falls back to eager (dynamo's setting is per process).
    """
    import torch._dynamo

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), recompile_limit))
    for block in model.blocks:
        block.compile(dynamic=False)


def _dit_inputs(anim: KnotAnimator, cfg: TrainConfig, enc: dict, rng: np.random.Generator, masks: dict):
    """The loss module's inputs for one step, and the mouth boxes as a 0/1 map over its frames.

    Stage 2 (teacher forcing: clean ground-truth history) or stage 3 (self-rollout: the model's own
    history and knots, generated chunk by chunk as the stream does, ground truth only as the target; for
    the clips `own_history_rows` picks, the rest keep stage 2's history).
    Stage 4 takes stage 2's inputs, or with distill_history "rollout" the student's own history sampled
    in student_steps (DistillLoss uses the noise, not the flow times)."""
    mc, dev = anim.config, enc["latents"].device
    sc = mc.stream
    knot = bool(rng.random() < cfg.knot_probability)
    run_ahead = bool(rng.random() < cfg.run_ahead_probability)
    schedule, layout = training_layout(sc, cfg.chunks, knot, run_ahead, int(rng.integers(0, sc.run_ahead_stride)))
    key = (layout.span, layout.ref_positions)
    if key not in masks:
        if cfg.flex_attention and dev.type == "cuda" and flex_available():
            masks[key] = BlockMaskAttention(layout.frame_mask(), mc.tokens_per_frame, dev, compiled=True)
        else:
            masks[key] = expand_frame_mask(layout.frame_mask(), mc.tokens_per_frame).to(dev)
    lat, ref = enc["latents"][:, : layout.n_frames], enc["reference"]
    audio, motion = enc["audio"][:, : layout.n_frames], enc["motion"]
    B = lat.shape[0]
    n, C, span = layout.n_chunks, layout.chunk, layout.span
    idx = (torch.arange(n).unsqueeze(1) * C + torch.arange(span)).to(dev)  # [n, F]
    x0 = lat[:, idx]  # [B, n, F, c, h, w]
    clean = lat[:, : layout.n_clean]  # stage 2's history: the ground truth, lightly noised
    clean = clean + torch.randn_like(clean) * cfg.context_noise * torch.rand(B, 1, 1, 1, 1, device=dev)
    knots = None
    if knot:
        knots = x0[:, :, 0] + torch.randn_like(x0[:, :, 0]) * cfg.knot_noise * torch.rand(B, 1, 1, 1, 1, device=dev)
    # the model's sampler.noise_correlation: its training noise, like its stream's, shares that part across a
    # chunk's frames outside the mouth (0: an all-zero map, plain N(0, I) per frame, nothing more drawn)
    correlation = noise_correlation_map(mc)
    own = own_history_rows(cfg, motion)
    if own is not None:  # these clips' history and knots are the model's own, generated as the stream does
        steps = cfg.rollout_steps if cfg.stage == "rollout" else cfg.student_steps  # stage 4: the student's own history
        step = ChunkStep(anim.model, C, steps, mc.sampler.shift)
        # The whole batch rolls out, whichever rows keep it: one batch size for the compiled blocks. Rolling
        # out only the picked rows gave each step its own batch size (how many clips are still varies),
        # and every new size recompiled the blocks (measured: 68 steps in 9.3 min on two H200s, against
        # 591 in 8.5 min on one when every clip rolled out). It also keeps the forwards the same on every
        # FSDP rank (each gathers the shards), whatever its batch holds.
        gen = rollout_latents(step, ref, audio, motion, n, knot, schedule, noise_correlation=correlation)
        if own.numel():
            clean[own] = gen.committed[own].to(clean.dtype)
            if knot:
                knots[own] = gen.knots[own].to(knots.dtype)
                if cfg.stage == "rollout" and cfg.rollout_knot_target == "own":  # chunk 0 has no knot: keeps the truth
                    x0[own, 1:, 0] = gen.knots[own, 1:].to(x0.dtype)
    t = shift_time(torch.rand(B, n, device=dev), mc.sampler.shift)
    noise = share_noise(torch.randn_like(x0), correlation, frame_dim=2)  # x0 [B, n, F, c, h, w]
    boxes = enc["mouth_box"][:, : layout.n_frames]
    mouth = mouth_cells(boxes, mc.frame_size, mc.latent_size)[:, idx]
    region = mouth_weight(mouth, cfg.mouth_weight)
    return (layout, masks[key], ref, clean, x0, knots, t, noise, audio, motion, region), mouth


def own_history_rows(cfg: TrainConfig, motion: torch.Tensor) -> torch.Tensor | None:
    """Which clips of the batch condition on their own rolled-out history (indices), or None for none
    (teacher forcing: stage 2, stage 4 on clean history). Stage 3 with rollout_clips "still" keeps the
    moving clips on the ground-truth history: their target, the ground truth's next chunk, continues
    the ground truth's head pose, not the one the rollout drifted to, so training on it teaches the
    model to jump back to a pose it cannot know (KnotBench: flicker x3 on moving heads)."""
    if cfg.stage == "rollout":
        if cfg.rollout_clips == "still":
            return torch.nonzero(motion <= cfg.still_motion).flatten()
        return torch.arange(motion.shape[0], device=motion.device)
    if cfg.stage == "distill" and cfg.distill_history == "rollout":
        return torch.arange(motion.shape[0], device=motion.device)
    return None


@torch.no_grad()
def listening_gap(loss_module: nn.Module, inputs: tuple, mouth: torch.Tensor) -> float:
    """Does the model listen? (L_other - L_own) / L_own: its flow-matching error inside the mouth boxes
    with another clip's audio (the batch rolled by one; silence for a batch of one) against its own,
    same noise and times. 0: the audio makes no difference to the mouth; it grows as lip-sync is
    learnt. The plain loss module runs (no DDP, no compile): rank 0 calls it alone (under FSDP every
    rank does, as the sharded weights are gathered for each forward)."""
    *head, audio, motion, _ = inputs
    other = audio.roll(1, dims=0) if audio.shape[0] > 1 else torch.zeros_like(audio)
    own = float(loss_module(*head, audio, motion, mouth))
    return (float(loss_module(*head, other, motion, mouth)) - own) / max(own, 1e-12)


def _checkpoint(out: Path, step: int, module, opt, ema: EMA, anim: KnotAnimator, cfg: TrainConfig, log: TrainLog | None,
                write: bool = True, sharded: bool = False, world: int = 1) -> None:
    """state/, model/ (the EMA weights), samples.png and loss.png. Unsharded: rank 0 alone calls this
    and swaps the EMA weights into the module for the export. Sharded (FSDP): every rank calls it, as
    the shards are gathered into full tensors; rank 0 (write) exports from an unsharded copy."""
    tensors = save_state(out / "state", step, {"model": module}, opt, ema,
                         {"train_config": describe(cfg), "world": world}, write=write)
    if not write:
        return
    if sharded:
        export = _unsharded_copy(anim, cfg, {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
    else:
        live = {k: v.detach().clone() for k, v in module.state_dict().items()}
        ema.copy_to(module)
        export = anim
    if cfg.stage == "autoencoder":
        _measure_latent_stats(export, cfg)
    trained = dict(_trained_steps(cfg.init_from))
    trained[cfg.stage] = trained.get(cfg.stage, 0) + step
    export.save_pretrained(out / "model", dtype=torch.bfloat16, extra={"trained_steps": trained})
    _write_samples(export, cfg, out / "samples.png")
    if not sharded:
        module.load_state_dict(live)
    log.plot()


def _unsharded_copy(anim: KnotAnimator, cfg: TrainConfig, trained_state: dict) -> KnotAnimator:
    """Rank 0's export under FSDP: a plain animator holding the frozen part's weights (never sharded)
    from `anim` and the trained part's from `trained_state` (full tensors gathered from the shards)."""
    copy = KnotAnimator.from_config(anim.config, device=anim.device, seed=cfg.seed)
    trained, frozen = ("autoencoder", "model") if cfg.stage == "autoencoder" else ("model", "autoencoder")
    getattr(copy, frozen).load_state_dict(getattr(anim, frozen).state_dict())
    getattr(copy, trained).load_state_dict(trained_state)
    return copy


def _trained_steps(init_from: str) -> dict:
    """Optimiser steps per stage behind the checkpoint a run starts from (its manifest's record)."""
    if not init_from:
        return {}
    from knotanim.checkpoint import read_manifest

    steps = read_manifest(init_from)[1].get("trained_steps", {})
    return {str(k): int(v) for k, v in steps.items()} if isinstance(steps, dict) else {}


@torch.no_grad()
def _write_samples(anim: KnotAnimator, cfg: TrainConfig, path: Path, n_frames: int = 16) -> None:
    """A strip of a fixed clip: ground truth on top, the (EMA) model's output below.

    Stage 1 shows autoencoder reconstructions; later stages stream the clip's audio through the
    model with a still head, as KnotBench's still-head subset does.
    """
    import cv2

    from knotanim.data import SpeechCorpus, make_clip
    from knotanim.model.autoencoder import tensor_to_frames

    mc = anim.config
    corpus = SpeechCorpus(cfg.data.speech_corpus) if cfg.data.speech_corpus else None
    clip = make_clip(424_242, n_frames, size=mc.frame_size, fps=mc.fps, head_motion=0.0, corpus=corpus, split="train")
    was_training = anim.model.training, anim.autoencoder.training
    anim.model.eval()
    anim.autoencoder.eval()
    if cfg.stage == "autoencoder":
        x = frames_to_tensor(clip.frames, anim.device)
        ref = frames_to_tensor(clip.reference, anim.device).unsqueeze(0).expand_as(x)
        made = tensor_to_frames(anim.autoencoder.reconstruct(x, ref)[0])
    else:
        stream = anim.stream(clip.reference, seed=0, head_motion=0.0)
        out = stream.push_audio(clip.audio) + stream.finish(total_frames=n_frames)
        made = np.stack([f.image for f in out])
    anim.model.train(was_training[0])
    anim.autoencoder.train(was_training[1])
    pick = slice(0, n_frames, 2)
    strip = np.concatenate((np.concatenate(list(clip.frames[pick]), 1), np.concatenate(list(made[pick]), 1)), 0)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))


@torch.no_grad()
def _measure_latent_stats(anim: KnotAnimator, cfg: TrainConfig) -> None:
    """Per-channel mean/std of latents over generated frames, so diffusion sees unit-variance latents."""
    from knotanim.data import make_clip

    ae = anim.autoencoder
    zs = []
    for seed in range(8):
        clip = make_clip(10_000_000 + seed, 8, size=anim.config.frame_size, split="train")
        zs.append(ae.encode_raw(frames_to_tensor(clip.frames, anim.device)).float())
    z = torch.cat(zs).transpose(0, 1).flatten(1)
    ae.latent_mean.copy_(z.mean(1))
    ae.latent_std.copy_(z.std(1).clamp_min(1e-3))
