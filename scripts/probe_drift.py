"""Where does the appearance drift come from? Exposure bias, or something the history does not explain?

For held-out still-head KnotBench clips (the same clip generation, held-out speech and scoring as
`knotanim eval`), three videos are scored frame by frame with KnotBench's ClipScorer:

  (a) own history: the normal stream, `anim.stream(reference, seed, head_motion=0)` fed the clip's
      audio and finished, exactly as KnotBench's runner streams a row;
  (b) ground-truth history: every chunk sampled by the same ChunkStep (same sampler steps and shift,
      same per-chunk noise, knot and running ahead on), but the history ring holds the K/V of the
      clean ground-truth latents of the previous frames (written by ChunkStep's own cache pass run on
      them) and the knot is the ground-truth latent: teacher forcing at inference, as stage 2 trains
      (`_dit_inputs` without its context_noise / knot_noise);
  (c) the autoencoder round trip of the ground truth (encode + decode each true frame): the ceiling.

(b) runs chunk by chunk rather than through one full-sequence `teacher_forced_forward`: that dense
token mask would take ~14 GB for 100 frames. `--check-chunks K` (default 4) verifies on the first K
chunks that (b) equals the training path, `DistillLoss.sample` over `teacher_forced_forward` with
stage 2's inputs built for the clip (clean history, ground-truth knots, the stream's running-ahead
schedule).

  python scripts/probe_drift.py --corpus .cache/data/speech_eval.npz --frames 99 --out .cache/probe_drift.png
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from knotanim.eval.runner import _score_array, _stream_video
from knotanim.eval.scoring import ClipScore, ClipScorer, ClipTruth
from knotanim.eval.spec import ClipSpec, full_spec
from knotanim.eval.speech import EvalSpeech
from knotanim.frontends.audio_features import AudioFeatures
from knotanim.model.autoencoder import tensor_to_frames
from knotanim.model.layout import RunAhead, SequenceLayout, expand_frame_mask
from knotanim.model.sequence import knot_conditioning
from knotanim.stream.rollout import ChunkLoop
from knotanim.stream.sampler import sampling_times
from knotanim.stream.step import ChunkStep

ROWS = ("own history", "GT history", "AE round trip")


def eval_clip(cfg, spec: ClipSpec, speech: EvalSpeech):
    """(clip, ClipTruth) exactly as KnotBench's runner makes them (`_run_clips`)."""
    from knotanim.data import make_clip

    bench = full_spec(0)
    utterance = speech.for_clip(spec.seed, spec.n_frames / cfg.fps)
    clip = make_clip(spec.seed, spec.n_frames, size=cfg.frame_size, fps=cfg.fps, head_motion=spec.head_motion,
                     speech=utterance, split=spec.split, source=spec.source)
    truth = ClipTruth.from_clip(spec, clip, cfg.stream.chunk, bench.mouth_margin, bench.drift_window_s)
    return clip, truth


@torch.no_grad()
def encode(anim, frames: np.ndarray, batch: int = 16) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> latents [T, c, h, w]."""
    return torch.cat([anim.encode_frames(frames[a : a + batch]) for a in range(0, len(frames), batch)])


@torch.no_grad()
def decode(anim, latents: torch.Tensor, batch: int = 16) -> np.ndarray:
    return np.concatenate([tensor_to_frames(anim.decode(latents[a : a + batch])) for a in range(0, len(latents), batch)])


def chunk_noise(cfg, seed: int, n_chunks: int, span: int) -> list[torch.Tensor]:
    """The initial noise of each chunk, drawn as KnotStream._run_chunk draws it (same seed: same noise)."""
    g = torch.Generator().manual_seed(seed)
    c, size = cfg.autoencoder.latent_channels, cfg.latent_size
    return [torch.randn((1, span, c, size, size), generator=g) for _ in range(n_chunks)]


def stream_schedule(cfg) -> RunAhead:
    """The running-ahead schedule of a default stream (knot on, running ahead on)."""
    return RunAhead.from_config(cfg.stream, cfg.stream.knot > 0, enabled=True)


@torch.no_grad()
def ground_truth_history(anim, reference: np.ndarray, gt: torch.Tensor, features: np.ndarray, seed: int,
                         n_frames: int, motion: float = 0.0, steps: int | None = None,
                         return_raw: bool = False):
    """(b): every chunk sampled by the stream's ChunkStep, conditioned on ground-truth history and knots.

    gt: clean latents [>= n_frames, c, h, w]; features: [>= n_chunks * C + k, n_mels, W] per-frame
    audio windows. The history ring gets the K/V of the ground-truth frames from ChunkStep's own cache
    pass (a ChunkStep with no denoising step commits its input as is), the knot after chunk j is the
    ground-truth latent of frame (j + 1) * C. -> committed latents [n_chunks * C, c, h, w] (the first
    frame of each chunk fused with the knot, as the stream does); with return_raw also each chunk's
    unfused sample [n_chunks, F, c, h, w].
    """
    cfg, dev = anim.config, anim.device
    sc = cfg.stream
    knot = sc.knot > 0
    schedule = stream_schedule(cfg)
    C, F = sc.chunk, schedule.span
    n_chunks = -(-n_frames // C)
    need = n_chunks * C + F
    gt = torch.cat((gt, gt[-1:].expand(max(0, need - len(gt)), *gt.shape[1:]))).to(dev)  # frames past the clip: unused
    step = anim.chunk_step(steps)
    cache_pass = ChunkStep(anim.model, C, 1, cfg.sampler.shift)
    cache_pass.times = [0.0]  # no denoising: commits its "noise" input (the ground truth) and writes its K/V
    reference_cache = anim.reference_cache(reference)
    loop = ChunkLoop(cfg, 1, knot, schedule, dev, anim.dtype)
    raw: list[torch.Tensor] = []

    def run(ref_k, ref_v, hist_k, hist_v, hist_pos, hist_valid, knot_latent, knot_mask, ref_pos, audio, noise, mo):
        s = loop.chunk_start
        committed, sampled_knot, _, _ = step(ref_k, ref_v, hist_k, hist_v, hist_pos, hist_valid, knot_latent, knot_mask,
                                             ref_pos, audio, noise, mo)
        if return_raw:
            raw.append(torch.cat((committed[:, :1] if not float(knot_mask[0]) else
                                  (2 * committed[:, :1] - knot_latent[:, None]), committed[:, 1:],
                                  sampled_knot[:, None]), 1)[:, :F])
        true = gt[None, s : s + F]
        _, _, new_k, new_v = cache_pass(ref_k, ref_v, hist_k, hist_v, hist_pos, hist_valid, knot_latent,
                                        torch.zeros_like(knot_mask), ref_pos, audio, true, mo)
        return committed, gt[None, s + C], new_k, new_v

    audio_all = torch.from_numpy(np.ascontiguousarray(features[:need])).unsqueeze(0).to(dev)
    mo = torch.tensor([float(motion)], device=dev)
    out = []
    for j, noise in enumerate(chunk_noise(cfg, seed, n_chunks, F)):
        s = j * C
        out.append(loop.advance(run, reference_cache, audio_all[:, s : s + F], noise.to(dev), mo)[0])
    latents = torch.cat(out)
    return (latents, torch.cat(raw)) if return_raw else latents


@torch.no_grad()
def training_path_sample(anim, reference: np.ndarray, gt: torch.Tensor, features: np.ndarray, seed: int,
                         n_chunks: int, motion: float = 0.0, steps: int | None = None) -> torch.Tensor:
    """(b) through the training code: stage 2's inputs for the clip's first n_chunks chunks (clean
    ground-truth history without context noise, ground-truth knots without knot noise, knot and
    running ahead on, the stream's schedule) sampled by `DistillLoss.sample` (all chunks at once through
    `teacher_forced_forward`). -> unfused samples [n_chunks, F, c, h, w]."""
    from knotanim.train.trainer import DistillLoss

    cfg, dev = anim.config, anim.device
    sc = cfg.stream
    schedule = stream_schedule(cfg)
    layout = SequenceLayout.build(sc, n_chunks, schedule)
    C, F = layout.chunk, layout.span
    mask = expand_frame_mask(layout.frame_mask(), cfg.tokens_per_frame).to(dev)
    ref_latent = anim.encode_frames(_prepared(anim, reference)[None])
    lat = gt[: layout.n_frames].unsqueeze(0).to(dev)
    idx = (torch.arange(n_chunks).unsqueeze(1) * C + torch.arange(F)).to(dev)
    x0 = lat[:, idx]  # [1, n, F, c, h, w]
    clean = lat[:, : layout.n_clean]  # _dit_inputs adds context_noise here: left out
    knots = x0[:, :, 0] if sc.knot > 0 else None  # _dit_inputs adds knot_noise here: left out
    cond = knot_conditioning(knots, n_chunks, F, ref_latent.shape, dev).to(x0.dtype)
    noise = torch.stack([n[0] for n in chunk_noise(cfg, seed, n_chunks, F)]).unsqueeze(0).to(dev)
    audio = torch.from_numpy(np.ascontiguousarray(features[: layout.n_frames])).unsqueeze(0).to(dev)
    times = sampling_times(steps or cfg.sampler.steps, cfg.sampler.shift)
    x = DistillLoss.sample(anim.model, times, layout, mask, ref_latent, clean, cond, noise, audio,
                           torch.tensor([float(motion)], device=dev))
    return x[0]


def _prepared(anim, reference: np.ndarray) -> np.ndarray:
    from knotanim.animator import prepare_reference

    return prepare_reference(reference, anim.config.frame_size)


def own_history(anim, truth: ClipTruth, audio: np.ndarray, seed: int, strip: int) -> tuple[ClipScore, float]:
    """(a): KnotBench's own streaming of a row (runner._stream_video), scored as it streams."""
    scorer = ClipScorer(truth, strip_frames=strip)
    spent = _stream_video(anim, truth, audio, scorer, seed, knot=True, run_ahead=True, steps=None)
    return scorer.result(seconds=spent), spent


def summarise(score: ClipScore, head: int = 10) -> dict[str, float]:
    s = score.series["appearance_ssim"]
    first, last = float(np.mean(s[:head])), float(np.mean(s[-head:]))
    return {"first": first, "last": last, "drift_pct": 100 * (last - first) / first,
            "psnr": float(np.mean(score.series["psnr"])) if len(score.series["psnr"]) else float("nan")}


def plot(curves: dict[str, dict[str, np.ndarray]], path: str, model_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=90)
    styles = dict(zip(ROWS, ("C3", "C0", "C2")))
    dashes = ("-", "--", ":")
    for ci, (clip, rows) in enumerate(curves.items()):
        for name, series in rows.items():
            ax.plot(np.arange(len(series)), series, dashes[ci % 3], color=styles[name], lw=1.4,
                    label=f"{name} ({clip})")
    ax.set_xlabel("frame (25 fps)")
    ax.set_ylabel("appearance SSIM vs reference")
    ax.set_title(f"Drift: own history vs ground-truth history ({model_name})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=".cache/data/speech_eval.npz", help="eval-split speech corpus (.npz)")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the shipped model)")
    ap.add_argument("--clips", default="still-a", help="still-head clips of KnotBench's full set, comma-separated")
    ap.add_argument("--frames", type=int, default=99, help="frames per clip")
    ap.add_argument("--seed", type=int, default=0, help="stream seed (KnotBench's default)")
    ap.add_argument("--check-chunks", type=int, default=4, help="chunks checked against the training path (0: skip)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=".cache/probe_drift.png")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from knotanim.animator import KnotAnimator

    anim = KnotAnimator.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    cfg = anim.config
    speech = EvalSpeech(args.corpus)
    by_name = {c.name: c for c in full_spec(0).clips}
    curves: dict[str, dict[str, np.ndarray]] = {}
    table = []
    for name in [c.strip() for c in args.clips.split(",") if c.strip()]:
        base = by_name[name]
        if not base.still or not base.has_ground_truth:
            raise SystemExit(f"{name} is not a still-head clip with ground truth")
        spec = ClipSpec(name, seed=base.seed, n_frames=args.frames, head_motion=0.0, source=base.source)
        clip, truth = eval_clip(cfg, spec, speech)
        n = truth.n_frames
        score_a, spent_a = own_history(anim, truth, clip.audio, args.seed, 6)
        print(f"{name}: (a) own history {n} frames in {spent_a:.0f} s", flush=True)

        gt = encode(anim, truth.frames)
        n_chunks = -(-n // cfg.stream.chunk)
        features = AudioFeatures(cfg).clip_features(clip.audio, (n_chunks + 1) * cfg.stream.chunk + cfg.stream.knot)
        t0 = time.perf_counter()
        lat_b, raw_b = ground_truth_history(anim, truth.reference, gt, features, args.seed, n, return_raw=True)
        video_b = decode(anim, lat_b[:n])
        print(f"{name}: (b) ground-truth history in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.check_chunks:
            k = min(args.check_chunks, len(raw_b))
            ref = training_path_sample(anim, truth.reference, gt, features, args.seed, k)
            err = float((ref - raw_b[:k]).abs().max())
            print(f"{name}: (b) vs training path (DistillLoss.sample, {k} chunks): max |diff| {err:.2e} "
                  f"(latent scale {float(raw_b[:k].abs().mean()):.2f})", flush=True)
        score_b = _score_array(truth, video_b, False, 6)
        score_c = _score_array(truth, decode(anim, gt[:n]), False, 6)
        rows = dict(zip(ROWS, (score_a, score_b, score_c)))
        curves[name] = {r: s.series["appearance_ssim"] for r, s in rows.items()}
        for r, s in rows.items():
            table.append((name, r, summarise(s)))
        gt_row = summarise(_score_array(truth, truth.frames, True, 6))
        table.append((name, "ground truth", gt_row))

    print()
    print("| clip | history | app. SSIM fr 0-9 | app. SSIM last 10 | drift | PSNR vs GT (dB) |")
    print("|---|---|---|---|---|---|")
    for clip, row, v in table:
        psnr = "" if row in ("ground truth",) or not np.isfinite(v["psnr"]) else f"{v['psnr']:.2f}"
        print(f"| {clip} | {row} | {v['first']:.4f} | {v['last']:.4f} | {v['drift_pct']:+.1f} % | {psnr} |")
    plot(curves, args.out, Path(args.model).name if args.model else "shipped model")
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
