"""Profile one stage-2 training step of the default model on random latents (no data loader).

    python scripts/profile_train_step.py [--batch 24] [--chunks 4] [--steps 10] [--compile] [--no-flex]

Steps cycle through every layout training draws (knot on/off, running ahead on/off, each phase
of the reference's lead: trainer.all_training_layouts), as training does, so `--compile` (the
trainer's regional compile, trainer.compile_blocks) pays every recompile it will pay in training:
the first pass over the layouts is timed apart. Prints the step time, the achieved TFLOP/s against
the matmul floor, and the top CUDA ops by time, so the next speed-up targets what actually costs. Run on the accelerator machine; on a CPU
it runs too (slowly) and reports CPU time instead.
"""
from __future__ import annotations

import argparse
import time

import torch

from knotanim.config import KnotAnimConfig
from knotanim.model.attention import BlockMaskAttention, flex_available
from knotanim.model.dit import KnotDiT
from knotanim.model.layout import expand_frame_mask
from knotanim.train.trainer import TeacherForcedLoss, all_training_layouts, compile_blocks


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
        compile_blocks(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    layouts = all_training_layouts(cfg.stream, args.chunks)
    flex = not args.no_flex and dev.type == "cuda" and flex_available()
    masks = [BlockMaskAttention(lay.frame_mask(), cfg.tokens_per_frame, dev, compiled=True) if flex
             else expand_frame_mask(lay.frame_mask(), cfg.tokens_per_frame).to(dev) for lay in layouts]
    B, c, h = args.batch, cfg.autoencoder.latent_channels, cfg.latent_size
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(i: int) -> None:
        layout, mask = layouts[i % len(layouts)], masks[i % len(layouts)]
        n, F = layout.n_chunks, layout.span
        x0 = torch.randn(B, n, F, c, h, h, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = loss_fn(layout, mask, torch.randn(B, c, h, h, device=dev),
                           torch.randn(B, layout.n_clean, c, h, h, device=dev), x0,
                           torch.randn(B, n, c, h, h, device=dev), torch.rand(B, n, device=dev), torch.randn_like(x0),
                           torch.randn(B, layout.n_frames, cfg.audio.n_mels, cfg.audio_window, device=dev),
                           torch.rand(B, device=dev), torch.ones(B, n, F, 1, h, h, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for i in range(len(layouts)):  # the first pass over every layout: compiles, autotuning, allocator growth
        step(i)
    sync()
    first_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    print(f"{len(layouts)} training layouts; first pass over them {first_pass:.1f} s")
    params = sum(p.numel() for p in model.parameters())
    mean_frames = sum(lay.n_clean + lay.n_chunks * lay.span for lay in layouts) / len(layouts)
    tokens = int(B * mean_frames * cfg.tokens_per_frame)
    flops = 6 * params * tokens  # matmul work of forward + backward (attention excluded)
    print(f"step {dt * 1000:.1f} ms  tokens/step {tokens}  params {params / 1e6:.1f}M  "
          f"~{flops / dt / 1e12:.1f} TFLOP/s (linear layers only)  device {dev}  compile {args.compile}  "
          f"mask {'flex' if flex else 'dense'}")
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(2):
            step(i)
        sync()
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25))


if __name__ == "__main__":
    main()
