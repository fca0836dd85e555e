"""Turn generated face crops into output frames: fixed size, optional flat background, letterboxing.

The flat background is a soft elliptical matte around the face (not a segmentation): the crop is
blended over the colour with a feathered ellipse, which hides the generated background well
enough for calls at no cost.
"""
from __future__ import annotations

import cv2
import numpy as np


def parse_colour(text: str | tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """"#rrggbb", "r,g,b" or a tuple -> (r, g, b) 0..255; None / "" / "keep" -> None (keep background)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "keep", "none")):
        return None
    if isinstance(text, tuple):
        return tuple(int(np.clip(c, 0, 255)) for c in text)  # type: ignore[return-value]
    t = text.strip().lstrip("#")
    if "," in t:
        parts = [int(p) for p in t.split(",")]
    elif len(t) == 6:
        parts = [int(t[i:i + 2], 16) for i in (0, 2, 4)]
    else:
        raise ValueError(f"colour must be #rrggbb or r,g,b, not {text!r}")
    if len(parts) != 3:
        raise ValueError(f"colour must have three components, not {text!r}")
    return tuple(int(np.clip(c, 0, 255)) for c in parts)  # type: ignore[return-value]


def ellipse_matte(size: int, feather: float = 0.12) -> np.ndarray:
    """(size, size, 1) float32 weight: 1 on the face and shoulders ellipse, feathered to 0 outside."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.sqrt(((x - 0.5) / 0.40) ** 2 + ((y - 0.55) / 0.52) ** 2)
    t = np.clip((1.0 - r) / max(feather, 1e-3), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t))[:, :, None].astype(np.float32)


class Composer:
    """Generated crop (any square size) -> uint8 (size, size, 3) output frame.

    size: output side in pixels. background: None keeps the generated background, (r, g, b) puts
    the face on that flat colour. Both can be changed between frames (set_background).
    """

    def __init__(self, size: int, background: tuple[int, int, int] | None = None):
        self.size = int(size)
        self._matte = ellipse_matte(self.size)
        self.set_background(background)

    def set_background(self, background: tuple[int, int, int] | None) -> None:
        self.background = background
        self._flat = None if background is None else np.full((self.size, self.size, 3), background, np.float32)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        if crop.shape[0] != self.size or crop.shape[1] != self.size:
            interp = cv2.INTER_AREA if crop.shape[0] > self.size else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (self.size, self.size), interpolation=interp)
        flat = self._flat
        if flat is None:
            return np.ascontiguousarray(crop)
        out = crop.astype(np.float32) * self._matte + flat * (1.0 - self._matte)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def letterbox(image: np.ndarray, width: int, height: int, colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Fit `image` (uint8 HxWx3) inside width x height pixels, centred, bars of `colour`."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.empty((height, width, 3), np.uint8)
    out[:] = colour
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out
