"""Profile one stage-2 training step of the default model on random latents (no data loader).

    python scripts/profile_train_step.py [--batch 24] [--chunks 4] [--steps 10] [--compile] [--no-flex]

Prints the step time, the achieved TFLOP/s against the matmul floor, and the top CUDA ops by
time, so the next speed-up targets what actually costs. Run on the accelerator machine; on a CPU
it runs too (slowly) and reports CPU time instead.
"""
from __future__ import annotations

import argparse
import time

import torch

from knotanim.config import KnotAnimConfig
from knotanim.model.attention import BlockMaskAttention, flex_available
from knotanim.model.dit import KnotDiT
from knotanim.model.layout import RunAhead, SequenceLayout, expand_frame_mask
from knotanim.train.trainer import TeacherForcedLoss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args()

    cfg = KnotAnimConfig()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = KnotDiT(cfg).randomize_zero_init(std=0.02).to(dev)  # non-zero heads: every op does real work
    loss_fn = TeacherForcedLoss(model, 10.0)
    if args.compile:
        loss_fn = torch.compile(loss_fn, dynamic=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    sc = cfg.stream
    layout = SequenceLayout.build(sc, args.chunks, RunAhead.from_config(sc, True, True))
    if not args.no_flex and dev.type == "cuda" and flex_available():
        mask = BlockMaskAttention(layout.frame_mask(), cfg.tokens_per_frame, dev, compiled=True)
    else:
        mask = expand_frame_mask(layout.frame_mask(), cfg.tokens_per_frame).to(dev)
    B, c, h = args.batch, cfg.autoencoder.latent_channels, cfg.latent_size
    ref = torch.randn(B, c, h, h, device=dev)
    clean = torch.randn(B, layout.n_clean, c, h, h, device=dev)
    x0 = torch.randn(B, layout.n_chunks, layout.span, c, h, h, device=dev)
    knots = torch.randn(B, layout.n_chunks, c, h, h, device=dev)
    audio = torch.randn(B, layout.n_frames, cfg.audio.n_mels, cfg.audio_window, device=dev)
    motion = torch.rand(B, device=dev)
    region_weight = torch.ones(B, layout.n_chunks, layout.span, 1, h, h, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        t = torch.rand(B, layout.n_chunks, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = loss_fn(layout, mask, ref, clean, x0, knots, t, torch.randn_like(x0), audio, motion, region_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    params = sum(p.numel() for p in model.parameters())
    tokens = B * (layout.n_clean + layout.n_chunks * layout.span) * cfg.tokens_per_frame
    flops = 6 * params * tokens  # matmul work of forward + backward (attention excluded)
    print(f"step {dt * 1000:.1f} ms  tokens/step {tokens}  params {params / 1e6:.1f}M  "
          f"~{flops / dt / 1e12:.1f} TFLOP/s (linear layers only)  device {dev}  compile {args.compile}  "
          f"mask {'flex' if isinstance(mask, BlockMaskAttention) else 'dense'}")
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(2):
            step()
        sync()
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25))


if __name__ == "__main__":
    main()
