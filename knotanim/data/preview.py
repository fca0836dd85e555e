"""Preview images of the generator: a contact sheet of portraits and a strip of a talking clip.

    python -m knotanim.data.preview --out docs/img/ [--corpus speech.npz]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from knotanim.data.clips import make_clip
from knotanim.data.corpus import SpeechCorpus
from knotanim.errors import OutputError


def contact_sheet(n: int = 24, cols: int = 6, size: int = 128, seed: int = 0) -> np.ndarray:
    """uint8 [rows*size, cols*size, 3]: references of n clips (every 6th one from a photo)."""
    tiles = []
    for i in range(n):
        source = "photo" if i % 12 == 11 else "synthetic"
        tiles.append(make_clip(seed + i, 1, size=size, head_motion=0.0, source=source, split="train" if i % 24 != 23 else "eval").reference)
    rows = [np.concatenate(tiles[r * cols:(r + 1) * cols], 1) for r in range(n // cols)]
    return np.concatenate(rows, 0)


def talking_strip(corpus: SpeechCorpus | None, seed: int = 7, n: int = 10, step: int = 3, size: int = 160) -> np.ndarray:
    """uint8 [size, n*size, 3]: every `step`-th frame of a talking clip, mouth-open value printed."""
    clip = make_clip(seed, n * step, size=size, head_motion=0.6, corpus=corpus)
    tiles = []
    for i in range(0, n * step, step):
        t = clip.frames[i].copy()
        cv2.putText(t, f"{clip.params['mouth_open'][i]:.2f}", (4, size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        x0, y0, x1, y1 = clip.params["mouth_box"][i].astype(int)
        cv2.rectangle(t, (x0, y0), (x1, y1), (0, 255, 0), 1)
        tiles.append(t)
    return np.concatenate(tiles, 1)


def write_previews(out: Path, corpus: SpeechCorpus | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "data_portraits.png", out / "data_talking_strip.png"]
    for p, img in zip(paths, (contact_sheet(), talking_strip(corpus))):
        if not cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OutputError(f"cannot write {p}")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--corpus", type=Path, default=None)
    args = ap.parse_args(argv)
    for p in write_previews(args.out, SpeechCorpus(args.corpus) if args.corpus else None):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
