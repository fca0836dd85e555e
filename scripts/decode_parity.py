#!/usr/bin/env python
"""How far a bf16 frame decoder's uint8 frames are from float32's, for a shipped model.

The example avatar (or --image) is encoded, its latent perturbed by Gaussian noise of a few sizes (what a
generated latent looks like next to a clean one), and each latent decoded twice: float32, and with the
convolutions in bf16 (`ConvAutoencoder.decode(..., dtype=torch.bfloat16)`, what a bf16 animator does).
Prints, per noise size, the largest and mean difference in uint8 levels and the PSNR of bf16 against float32.

  python scripts/decode_parity.py --model assets/default
  python scripts/decode_parity.py --model assets/lite --device cpu
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def parity(model: str, image: str, device: str, noise: list[float], seed: int = 0) -> list[dict]:
    from knotanim.animator import KnotAnimator, prepare_reference
    from knotanim.frontends.image import load_image
    from knotanim.model.autoencoder import tensor_to_frames

    anim = KnotAnimator.from_pretrained(model, device=device, dtype=torch.float32)
    frame = prepare_reference(load_image(image), anim.config.frame_size)
    g = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        clean = anim.encode_frames(frame[None])
        for std in noise:
            z = clean + std * torch.randn(clean.shape, generator=g).to(clean.device)
            a = tensor_to_frames(anim.autoencoder.decode(z)).astype(np.int64)
            b = tensor_to_frames(anim.autoencoder.decode(z, dtype=torch.bfloat16)).astype(np.int64)
            d = np.abs(a - b)
            mse = float((d.astype(np.float64) ** 2).mean())
            rows.append({"noise": std, "max_levels": int(d.max()), "mean_levels": float(d.mean()),
                         "share_over_1": float((d > 1).mean()),
                         "psnr_db": float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "assets" / "default"))
    p.add_argument("--image", default=str(REPO / "assets" / "examples" / "avatar.png"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--noise", default="0,0.1,0.3", help="comma-separated latent noise sizes")
    args = p.parse_args(argv)
    try:
        rows = parity(args.model, args.image, args.device, [float(x) for x in args.noise.split(",")])
    except Exception as e:  # noqa: BLE001 - one line, exit 1
        print(f"decode_parity: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"decoder bf16 vs float32, {args.model} on {args.device}, torch {torch.__version__}, image {args.image}")
    print("| latent noise | max levels | mean levels | share > 1 level | PSNR dB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['noise']:g} | {r['max_levels']} | {r['mean_levels']:.3f} | {r['share_over_1']:.2e} | "
              f"{r['psnr_db']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
