"""How much of the mouth's motion the model's audio input can tell: a probe, no video model involved.

A small MLP learns ground-truth mouth openness (the generator's `mouth_open`) from one frame's audio
window (the exact per-frame features the DiT gets) on training-split speech, and is scored on
held-out speakers' speech by Pearson r: the same correlation KnotBench's lip-sync score uses, but
against the truth instead of openness measured in pixels. It bounds what a video model can reach
with these features and this much data (a better probe could do better; the model never sees more).
Run for several audio look-aheads to see what latency buys.

  python scripts/probe_audio_mouth.py --lookahead 4 8 12
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from knotanim.config import KnotAnimConfig
from knotanim.data import SpeechCorpus, make_clip
from knotanim.frontends.audio_features import AudioFeatures

FRAMES_PER_CLIP = 100


def collect(cfg: KnotAnimConfig, corpus_path: str, split: str, n_clips: int, seed0: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, n_mels * W], mouth_open [N]) over n_clips generated clips of FRAMES_PER_CLIP frames."""
    corpus, features = SpeechCorpus(corpus_path), AudioFeatures(cfg)
    xs, ys = [], []
    for i in range(n_clips):
        clip = make_clip(seed0 + i, FRAMES_PER_CLIP, size=64, fps=cfg.fps, head_motion=0.0, corpus=corpus, split=split)
        xs.append(features.clip_features(clip.audio, FRAMES_PER_CLIP).reshape(FRAMES_PER_CLIP, -1))
        ys.append(clip.params["mouth_open"][:FRAMES_PER_CLIP])
    return torch.tensor(np.concatenate(xs)), torch.tensor(np.concatenate(ys), dtype=torch.float32)


def probe(x_train, y_train, x_test, y_test, iters: int, seed: int) -> float:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.LayerNorm(x_train.shape[1]), torch.nn.Linear(x_train.shape[1], 256),
                              torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(256, 1))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    for _ in range(iters):
        i = torch.randint(0, len(x_train), (256,))
        loss = (net(x_train[i]).squeeze(-1) - y_train[i]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x_test).squeeze(-1).numpy()
    return float(np.corrcoef(pred, y_test.numpy())[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-corpus", default=".cache/data/speech_train.npz")
    ap.add_argument("--eval-corpus", default=".cache/data/speech_eval.npz")
    ap.add_argument("--lookahead", type=int, nargs="+", default=[4], help="audio look-ahead, in 10-ms mel frames")
    ap.add_argument("--train-clips", type=int, default=200)
    ap.add_argument("--eval-clips", type=int, default=40)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for ahead in args.lookahead:
        cfg = KnotAnimConfig().replace(audio={"lookahead_frames": ahead})
        xtr, ytr = collect(cfg, args.train_corpus, "train", args.train_clips, 0)
        xte, yte = collect(cfg, args.eval_corpus, "eval", args.eval_clips, 10_000)
        rs = [probe(xtr, ytr, xte, yte, args.iters, seed) for seed in range(3)]
        row = {"lookahead_ms": ahead * 1000 * cfg.audio.hop / cfg.audio.sample_rate,
               "context_ms": cfg.audio.context_frames * 1000 * cfg.audio.hop / cfg.audio.sample_rate,
               "train_frames": len(ytr), "eval_frames": len(yte), "pearson_r": rs}
        rows.append(row)
        print(f"look-ahead {row['lookahead_ms']:.0f} ms (context {row['context_ms']:.0f} ms): held-out r = "
              f"{np.mean(rs):.3f} (seeds {', '.join(f'{r:.3f}' for r in rs)}), {len(ytr)} training frames", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
