"""The codec alone: encode the true frames, make them again, and score them against the truth.

This is the upper bound of what the DiT can reach through a model's frame codec (the DiT only ever
generates latents). Clips are KnotBench's held-out kind (`make_clip(..., split="eval")`): the
held-out photograph animated by the generator ("photo") and held-out synthetic identities.

Scores per clip, each beside "copy the reference" (every frame replaced by the reference):
  psnr        dB over all pixels
  psnr_moved  dB over the pixels where the true frame differs from the reference by more than 20/255
              (head motion, mouth, eyes: where copying is wrong)
  sharpness   variance of the Laplacian in the face box (resized to 160^2), made / true frame
The made frames can be kept (`frames_out`) for the real-photo judge's identity distance.

    python -m knotanim.eval.codec --model PATH --corpus .cache/data/speech_eval.npz [--out DIR]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from knotanim.config import KnotAnimConfig
from knotanim.model.autoencoder import frames_to_tensor, tensor_to_frames

MOVED_THRESHOLD = 20  # levels of 255


@dataclass(frozen=True)
class CodecClip:
    name: str
    seed: int
    source: str  # "photo" (the held-out photograph) or "synthetic"
    head_motion: float
    n_frames: int = 50


def codec_clips(n_frames: int = 50) -> tuple[CodecClip, ...]:
    return (CodecClip("photo_still", 11, "photo", 0.0, n_frames), CodecClip("photo_moving", 12, "photo", 1.0, n_frames),
            CodecClip("synthetic_still", 13, "synthetic", 0.0, n_frames),
            CodecClip("synthetic_moving", 14, "synthetic", 1.0, n_frames))


def psnr(made: np.ndarray, true: np.ndarray, where: np.ndarray | None = None) -> float:
    """dB between uint8 images [..., H, W, 3]; `where` [..., H, W] bool picks the pixels (None: all)."""
    err = (made.astype(np.float64) - true.astype(np.float64)) ** 2
    mse = err.mean() if where is None else err[where].mean() if where.any() else float("nan")
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def face_box(config: KnotAnimConfig) -> tuple[int, int, int, int]:
    """Where the crop convention puts the face in a model frame: (x0, y0, x1, y1) pixels."""
    s, c = config.frame_size, config.crop
    side = s / c.face_scale
    cy = c.face_center_y * s
    return int(s / 2 - side / 2), int(cy - side / 2), int(s / 2 + side / 2), int(cy + side / 2)


def laplacian_sharpness(frames: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean variance of the Laplacian of the gray face box resized to 160^2, over uint8 frames [N, H, W, 3]."""
    x0, y0, x1, y1 = box
    values = []
    for f in frames:
        gray = cv2.cvtColor(np.ascontiguousarray(f[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
        values.append(cv2.Laplacian(cv2.resize(gray, (160, 160), interpolation=cv2.INTER_AREA), cv2.CV_64F).var())
    return float(np.mean(values))


@torch.no_grad()
def reconstruct(animator, frames: np.ndarray, reference: np.ndarray, batch: int = 16) -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> the codec's uint8 frames: encode each true frame, make it again."""
    cache = animator.reference_cache(reference)
    out = []
    for a in range(0, len(frames), batch):
        latents = animator.autoencoder.encode(frames_to_tensor(frames[a : a + batch], animator.device)).float()
        out.append(tensor_to_frames(animator.decode(latents, cache)))
    return np.concatenate(out)


def score_clip(animator, clip: CodecClip, frames_out: Path | None = None, corpus=None) -> dict:
    """corpus: a held-out SpeechCorpus (knotanim.data), so the mouth moves; None: silent clips."""
    from knotanim.data import make_clip

    cfg = animator.config
    made_clip = make_clip(clip.seed, clip.n_frames, size=cfg.frame_size, fps=cfg.fps, head_motion=clip.head_motion,
                          split="eval", source=clip.source, corpus=corpus)
    true, ref = made_clip.frames, made_clip.reference
    made = reconstruct(animator, true, ref)
    copy = np.broadcast_to(ref, true.shape)
    moved = np.abs(true.astype(np.int16) - ref.astype(np.int16)).max(-1) > MOVED_THRESHOLD
    box = face_box(cfg)
    row = {"clip": asdict(clip), "moved_fraction": float(moved.mean()),
           "psnr": psnr(made, true), "psnr_moved": psnr(made, true, moved),
           "copy_psnr": psnr(copy, true), "copy_psnr_moved": psnr(copy, true, moved),
           "sharpness": laplacian_sharpness(made, box) / max(laplacian_sharpness(true, box), 1e-9)}
    if frames_out is not None:
        frames_out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(frames_out / f"{clip.name}.npz", made=made)  # make_clip remakes the truth from the seed
    return row


def codec_report(animator, clips=None, frames_out: Path | None = None, corpus=None, progress=print) -> list[dict]:
    rows = []
    for clip in clips or codec_clips():
        row = score_clip(animator, clip, frames_out, corpus)
        progress(f"{clip.name:18s} PSNR {row['psnr']:5.2f} (copy {row['copy_psnr']:5.2f})  moved {row['psnr_moved']:5.2f} "
                 f"(copy {row['copy_psnr_moved']:5.2f}, {100 * row['moved_fraction']:.0f} % of pixels)  "
                 f"sharpness {row['sharpness']:.2f}")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from knotanim.animator import KnotAnimator

    p = argparse.ArgumentParser(prog="python -m knotanim.eval.codec", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=50, help="frames per clip")
    p.add_argument("--out", default=None, help="folder for codec.json and the made frames (npz per clip)")
    p.add_argument("--corpus", default=None, help="held-out speech corpus .npz (knotanim data build-speech --split eval), "
                   "so the mouth moves (default: silent clips)")
    args = p.parse_args(argv)
    anim = KnotAnimator.from_pretrained(args.model, device=args.device, dtype=torch.float32)
    out = Path(args.out) if args.out else None
    corpus = None
    if args.corpus:
        from knotanim.eval.speech import EvalSpeech

        corpus = EvalSpeech(args.corpus).corpus
    rows = codec_report(anim, codec_clips(args.frames), frames_out=out, corpus=corpus)
    if out is not None:
        (out / "codec.json").write_text(json.dumps({"model": args.model or "default", "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
