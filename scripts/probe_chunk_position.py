"""Does a frame's quality depend on its position in the chunk? (the saw-tooth of probe_drift)

For held-out still-head KnotBench clips (the same clip generation, held-out speech and scoring as
`knotanim eval`, through `scripts/probe_drift.py`'s `eval_clip`), each model is streamed exactly as
KnotBench's runner streams a row (`runner._stream_video`, knot on and/or off, running ahead on),
keeping the frames, and the per-frame series of KnotBench's ClipScorer are averaged by the frame's
position in its chunk (stream frame t sits at position t % C; chunk boundaries lie between frames
jC-1 and jC, as `metrics.jump_ratio_from_energy` has them):

  - appearance SSIM (face outside the mouth vs the reference), PSNR vs ground truth, mouth PSNR;
  - the frame-to-frame difference energy *into* the frame (`jump_energy`; into position 0 crosses a
    chunk boundary, into 1..C-1 stays inside the chunk);
  - KnotBench's flicker (mean |second temporal difference| of luma over the static face) centred on
    the frame.

Then how much of the flicker figure the per-position offset accounts for: the flicker recomputed after
subtracting, from every frame's luma, the mean luma image of its position minus the mean luma image of
all frames (the per-position mean offset, pixel by pixel). The autoencoder round trip of the ground
truth is the control row: it has no chunks, so what removal takes from it is the removal's own bias.

  python scripts/probe_chunk_position.py --corpus .cache/data/speech_eval.npz --clips still-a --frames 99 --knot on,off
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from knotanim.eval import metrics as M
from knotanim.eval.runner import _score_array, _stream_video
from knotanim.eval.scoring import ClipScore, ClipScorer
from knotanim.eval.spec import ClipSpec, full_spec
from knotanim.eval.speech import EvalSpeech

SERIES = ("appearance_ssim", "psnr", "psnr_mouth")


def _probe_drift():
    spec = importlib.util.spec_from_file_location("probe_drift", Path(__file__).with_name("probe_drift.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Recorder:
    """A ClipScorer that also keeps the frames it scores (for `_stream_video`, which only calls update)."""

    def __init__(self, scorer: ClipScorer) -> None:
        self.scorer, self.blocks = scorer, []

    def update(self, block: np.ndarray) -> None:
        self.blocks.append(np.asarray(block).copy())
        self.scorer.update(block)

    def frames(self, n: int) -> np.ndarray:
        return np.concatenate(self.blocks)[:n]


def by_position(series: np.ndarray, chunk: int, first_index: int = 0) -> np.ndarray:
    """Mean of a per-frame series whose entry i belongs to stream frame first_index + i, for each
    position p in 0..chunk-1 (NaNs ignored) -> float64 [chunk]."""
    s = np.asarray(series, dtype=np.float64)
    pos = (first_index + np.arange(len(s))) % chunk
    out = np.full(chunk, np.nan)
    for p in range(chunk):
        v = s[(pos == p) & np.isfinite(s)]
        if len(v):
            out[p] = v.mean()
    return out


def detrended(series: np.ndarray) -> np.ndarray:
    """x[t] minus the centred 3-frame mean (x[t-1] + x[t] + x[t+1]) / 3 (NaN at both ends): a linear
    trend (drift) gives 0, a period-3 saw-tooth keeps its deviation from its own mean exactly. The
    per-position means of the raw series carry a drift's slope (position 0 comes first in its chunk)."""
    s = np.asarray(series, dtype=np.float64)
    out = np.full(len(s), np.nan)
    if len(s) >= 3:
        out[1:-1] = s[1:-1] - (s[:-2] + s[1:-1] + s[2:]) / 3
    return out


def position_offset_removed(lum: np.ndarray, chunk: int) -> np.ndarray:
    """Luma [T, ...] minus the per-position mean offset: frame t loses mean(lum at position t % chunk)
    - mean(lum), pixel by pixel."""
    lum = np.asarray(lum, dtype=np.float64)
    pos = np.arange(len(lum)) % chunk
    mean = lum.mean(axis=0)
    out = lum.copy()
    for p in range(chunk):
        if (pos == p).any():
            out[pos == p] -= lum[pos == p].mean(axis=0) - mean
    return out


def flicker_split(frames: np.ndarray, mask: np.ndarray, chunk: int, control_period: int = 4) -> dict[str, float]:
    """KnotBench's flicker of `frames` over `mask`, and the same after removing the per-position mean
    offset -> {"flicker", "flicker_removed", "share"} (share: the fraction the offset accounts for), and
    "share_control": the same removal with a period that is not the chunk's (`control_period`): what
    removing that many mean images takes from frame-to-frame noise alone (the removal's own bias)."""
    lum = M.to_luma(frames)[:, np.asarray(mask, dtype=bool)].astype(np.float64)  # [T, n_pixels]

    def fl(x):
        return float(np.abs(x[2:] - 2 * x[1:-1] + x[:-2]).mean()) if len(x) >= 3 else 0.0

    a, b = fl(lum), fl(position_offset_removed(lum, chunk))
    c = fl(position_offset_removed(lum, control_period))
    def share(x):
        return (a - x) / a if a > 0 else float("nan")

    return {"flicker": a, "flicker_removed": b, "share": share(b), "share_control": share(c)}


def position_table(score: ClipScore, frames: np.ndarray, mask: np.ndarray, chunk: int) -> dict[str, object]:
    """Per-position means of a scored video -> {"pos": {name: [chunk]}, "flicker": flicker_split, "jump_ratio"}."""
    s = score.series
    pos = {k: by_position(s[k], chunk) for k in SERIES if len(s[k])}
    pos["appearance_ssim_detrended"] = by_position(detrended(s["appearance_ssim"]), chunk)
    # jump_energy[0] is the transition into frame 1 (ClipScorer: the first entry starts the clip at frame 0)
    pos["diff_into"] = by_position(s["jump_energy"], chunk, first_index=1)
    pos["flicker_at"] = by_position(s["flicker"], chunk, first_index=1)  # flicker[t] is centred on frame t+1
    return {"pos": pos, "flicker": flicker_split(frames, mask, chunk), "jump_ratio": score.scalars.get("jump_ratio"),
            "scorer_flicker": score.scalars.get("flicker")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=".cache/data/speech_eval.npz", help="eval-split speech corpus (.npz)")
    ap.add_argument("--model", action="append", default=None,
                    help="checkpoint folder, repeatable (default: the shipped model)")
    ap.add_argument("--clips", default="still-a", help="still-head clips of KnotBench's full set, comma-separated")
    ap.add_argument("--frames", type=int, default=99, help="frames per clip")
    ap.add_argument("--knot", default="on,off", help="knot settings to stream: on, off or on,off")
    ap.add_argument("--seed", type=int, default=0, help="stream seed (KnotBench's default)")
    ap.add_argument("--no-control", action="store_true", help="skip the autoencoder round-trip control row")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    knots = [{"on": True, "off": False}[k.strip()] for k in args.knot.split(",") if k.strip()]

    from knotanim.animator import KnotAnimator

    pd = _probe_drift()
    speech = EvalSpeech(args.corpus)
    by_name = {c.name: c for c in full_spec(0).clips}
    rows = []  # (model, clip, row, table)
    for model in args.model or [None]:
        anim = KnotAnimator.from_pretrained(model, device="cpu", dtype=torch.float32)
        cfg, C = anim.config, anim.config.stream.chunk
        mname = Path(model).name if model else "shipped"
        for name in [c.strip() for c in args.clips.split(",") if c.strip()]:
            base = by_name[name]
            if not base.still or not base.has_ground_truth:
                raise SystemExit(f"{name} is not a still-head clip with ground truth")
            spec = ClipSpec(name, seed=base.seed, n_frames=args.frames, head_motion=0.0, source=base.source)
            clip, truth = pd.eval_clip(cfg, spec, speech)
            n = truth.n_frames
            for knot in knots:
                rec = Recorder(ClipScorer(truth, strip_frames=0))
                spent = _stream_video(anim, truth, clip.audio, rec, args.seed, knot=knot, run_ahead=True, steps=None)
                frames = rec.frames(n)
                rows.append((mname, name, f"knot {'on' if knot else 'off'}",
                             position_table(rec.scorer.result(), frames, truth.static, C)))
                print(f"{mname} {name} knot {'on' if knot else 'off'}: {n} frames in {spent:.0f} s", flush=True)
            if not args.no_control:
                t0 = time.perf_counter()
                video = pd.decode(anim, pd.encode(anim, truth.frames))[:n]
                rows.append((mname, name, "AE round trip",
                             position_table(_score_array(truth, video, False, 0), video, truth.static, C)))
                print(f"{mname} {name}: AE round trip in {time.perf_counter() - t0:.0f} s", flush=True)

    print()
    print("| model | clip | row | pos | app. SSIM | app. SSIM vs 3-frame mean (x1000) | PSNR (dB) | mouth PSNR (dB) "
          "| diff energy into frame | flicker at frame |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mname, clip, row, t in rows:
        p = t["pos"]
        for i in range(len(p["diff_into"])):
            print(f"| {mname} | {clip} | {row} | {i} | {p['appearance_ssim'][i]:.4f} | "
                  f"{1000 * p['appearance_ssim_detrended'][i]:+.2f} | {p['psnr'][i]:.2f} | "
                  f"{p['psnr_mouth'][i]:.2f} | {p['diff_into'][i]:.2f} | {p['flicker_at'][i]:.3f} |")
    print()
    print("| model | clip | row | jump ratio | flicker | flicker, per-position offset removed | share of flicker | share, period-4 control |")
    print("|---|---|---|---|---|---|---|---|")
    for mname, clip, row, t in rows:
        f = t["flicker"]
        print(f"| {mname} | {clip} | {row} | {t['jump_ratio']:.3f} | {f['flicker']:.3f} | {f['flicker_removed']:.3f} | "
              f"{100 * f['share']:.1f} % | {100 * f['share_control']:.1f} % |")


if __name__ == "__main__":
    main()
