"""Sweep candidate lite-profile sizes: streaming frames/s on this CPU with random weights.

    python scripts/lite_speed.py [--threads 2] [--seconds 4]

Each candidate runs the whole stream path (DiT steps + cache pass + autoencoder decode) through
`KnotAnimator.stream`, audio pushed faster than real time. Prints one Markdown row per candidate.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from knotanim.animator import KnotAnimator
from knotanim.config import AutoencoderConfig, KnotAnimConfig, ModelConfig, SamplerConfig

CANDIDATES = {
    "160px w256 d6 s2 ae16": dict(frame_size=160, ae=16, width=256, depth=6, heads=4, steps=2),
    "160px w256 d6 s1 ae16": dict(frame_size=160, ae=16, width=256, depth=6, heads=4, steps=1),
    "128px w256 d6 s2 ae16": dict(frame_size=128, ae=16, width=256, depth=6, heads=4, steps=2),
    "160px w192 d6 s2 ae12": dict(frame_size=160, ae=12, width=192, depth=6, heads=3, steps=2),
    "192px w256 d6 s2 ae16": dict(frame_size=192, ae=16, width=256, depth=6, heads=4, steps=2),
}


def lite_config(frame_size, ae, width, depth, heads, steps) -> KnotAnimConfig:
    head = width // heads
    t = head // 4 // 2 * 2
    rest = head - t
    rope = (t, rest // 2 // 2 * 2, rest - rest // 2 // 2 * 2)
    return KnotAnimConfig(name="lite", frame_size=frame_size,
                          autoencoder=AutoencoderConfig(base_channels=ae, channel_mult=(1, 2, 4, 4)),
                          model=ModelConfig(width=width, depth=depth, heads=heads, rope_dims=rope),
                          sampler=SamplerConfig(steps=steps)).validate()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| candidate | frames/s | DiT params | AE params | CPU ({platform.machine()}, {args.threads} threads, torch {torch.__version__}) |")
    print("|---|---|---|---|---|")
    for name, kw in CANDIDATES.items():
        cfg = lite_config(**kw)
        anim = KnotAnimator.from_config(cfg)
        anim.model.randomize_zero_init(std=0.02)
        ref = np.random.default_rng(0).integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
        audio = (np.random.default_rng(1).standard_normal(int(args.seconds * 16000)) * 0.1).astype(np.float32)
        anim.stream(ref).push_audio(audio[:16000])  # warm-up
        s = anim.stream(ref)
        t0 = time.perf_counter()
        n = len(s.push_audio(audio))
        fps = n / (time.perf_counter() - t0)
        p = anim.parameter_count()
        print(f"| {name} | {fps:.1f} | {p['dit'] / 1e6:.1f}M | {p['autoencoder'] / 1e6:.2f}M | |")


if __name__ == "__main__":
    main()
