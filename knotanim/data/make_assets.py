"""Build-time helper: copy the few public-domain photographs the generator uses into assets/.

Needs scikit-image and matplotlib (not runtime dependencies), run once by a maintainer:

    pip install --target /tmp/skim scikit-image
    PYTHONPATH=/tmp/skim python -m knotanim.data.make_assets

Writes (total well under 1.5 MB):
- astronaut.jpg (train identity) and grace_hopper.jpg (eval-only identity), full photos;
- bg_<name>.jpg: natural images, longest side 256 px, for backgrounds and texture patches;
- lfw_faces.npz: `faces` uint8 [200, 25, 25] grey tiny faces (texture/patch sources).
The face landmarks of the two portraits live in photo.py (hand-annotated, Haar-checked).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

ASSETS = Path(__file__).with_name("assets")
BACKGROUNDS = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "hubble_deep_field",
               "immunohistochemistry", "colorwheel", "retina")


def _save_jpg(path: Path, rgb: np.ndarray, quality: int) -> None:
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def main() -> None:
    import matplotlib
    import skimage.data as sd

    ASSETS.mkdir(exist_ok=True)
    _save_jpg(ASSETS / "astronaut.jpg", sd.astronaut(), 92)
    gh = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    (ASSETS / "grace_hopper.jpg").write_bytes(gh.read_bytes())
    for name in BACKGROUNDS:
        img = getattr(sd, name)()
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        scale = 256 / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        _save_jpg(ASSETS / f"bg_{name}.jpg", img, 85)
    faces = np.clip(sd.lfw_subset() * 255 + 0.5, 0, 255).astype(np.uint8)
    np.savez_compressed(ASSETS / "lfw_faces.npz", faces=faces)
    total = sum(os.path.getsize(p) for p in ASSETS.iterdir())
    print(f"assets: {total / 1e6:.2f} MB in {ASSETS}")


if __name__ == "__main__":
    main()
