#!/usr/bin/env python
"""Stage 3's loss on one batch two ways: history = the model's own rollout vs the ground truth.

Same clips, knot/running-ahead draw, flow times and noise; only the history (and knots) differ.
The ratio says how far the model's own history is from what stage 2 trained it on (exposure bias),
and, by --motion, whether moving or still clips carry the gap.

  python scripts/probe_rollout_loss.py --model assets/default --batch 4
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from knotanim.errors import KnotAnimError  # noqa: E402
from knotanim.train import trainer as T  # noqa: E402
from knotanim.train.config import TrainConfig  # noqa: E402
from knotanim.train.data import ClipRequest, clip_loader  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "assets" / "default"))
    p.add_argument("--config", default=str(ROOT / "configs" / "train" / "stage3_self_rollout.yaml"))
    p.add_argument("--corpus", default=".cache/data/speech_train.npz")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--still-fraction", type=float, default=0.3, help="share of still clips drawn (stage 2's mix)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    cfg = TrainConfig.load(args.config, [f"init_from={args.model}", f"batch_size={args.batch}", "data.workers=0",
                                         f"data.speech_corpus={args.corpus}", "rollout_clips=all",
                                         f"data.still_fraction={args.still_fraction}"])
    dev = torch.device(args.device)
    anim = T._init_animator(cfg, dev, progress=lambda s: None)
    anim.model.eval()
    anim.autoencoder.eval()
    mc = anim.config
    n_frames = (cfg.chunks - 1) * mc.stream.chunk + mc.stream.chunk + mc.stream.knot
    batch = next(iter(clip_loader(mc, cfg.data, ClipRequest(n_frames, 0, 1, args.seed), args.batch)))
    enc = T._encode_batch(anim, {k: v.to(dev) for k, v in batch.items()})
    loss_module = T.TeacherForcedLoss(anim.model, cfg.moving_weight)
    print(f"model {args.model}")
    losses, shared = {}, None
    for history, stage in (("own", "rollout"), ("truth", "dit")):
        rng = np.random.default_rng(5)  # the same knot / running-ahead / lead-phase draw in both
        torch.manual_seed(9)
        with torch.no_grad():
            inputs, _ = T._dit_inputs(anim, dataclasses.replace(cfg, stage=stage), enc, rng, {})
            layout, mask, *rows = inputs  # rows: ref, clean, x0, knots, t, noise, audio, motion, region
            # The rollout draws from torch's generator, so the two calls' flow times and noise differ:
            # the own-history pass's are used for both, leaving the history (and knots) the only difference.
            if shared is None:
                shared = rows[4], rows[5]
            rows[4], rows[5] = shared
            clean = rows[1]
            gap = (clean - enc["latents"][:, : clean.shape[1]]).abs().mean(dim=(1, 2, 3, 4))
            per_clip = []
            for i in range(args.batch):  # the loss of each clip alone (same noise and times)
                torch.manual_seed(11)
                per_clip.append(float(loss_module(layout, mask, *[r[i: i + 1] if r is not None else None for r in rows])))
        losses[history] = (per_clip, gap)
    print("| clip | head motion | loss, own history | loss, ground-truth history | ratio | mean abs history error (own) |")
    print("|---|---|---|---|---|---|")
    for i in range(args.batch):
        own, truth = losses["own"][0][i], losses["truth"][0][i]
        print(f"| {i} | {float(enc['motion'][i]):.2f} | {own:.4f} | {truth:.4f} | {own / truth:.1f} | "
              f"{float(losses['own'][1][i]):.3f} |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KnotAnimError as e:  # a missing model or corpus, a bad --set: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
