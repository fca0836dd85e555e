"""Domain randomisation, fixed within a clip: backgrounds, colour transforms, tone, grain, patches.

Everything takes a numpy Generator and returns arrays; the same draw is used for every frame
of a clip, so a model must copy appearance from the reference frame instead of memorising the
generator's look. Natural images come from assets/ (photographs that ship with scikit-image).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from knotanim.data.compose import Finish

ASSETS = Path(__file__).with_name("assets")


def load_asset_rgb(name: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB image from assets/."""
    img = cv2.imread(str(ASSETS / name), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(ASSETS / name)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def natural_image(rng: np.random.Generator) -> np.ndarray:
    """One random background photograph (uint8 RGB, longest side 256)."""
    names = sorted(p.name for p in ASSETS.glob("bg_*.jpg"))
    return load_asset_rgb(names[int(rng.integers(len(names)))])


def smooth_noise(rng: np.random.Generator, size: int, scale: float, channels: int = 1) -> np.ndarray:
    """float32 [size, size, channels] smooth noise, zero mean, unit-ish std; `scale` = feature size in pixels."""
    n = max(2, int(round(size / max(scale, 1.0))) + 2)
    small = rng.standard_normal((n, n, channels)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(size, size, channels)
    return big / (big.std() + 1e-6)


def fractal_noise(rng: np.random.Generator, size: int, octaves: int = 4, base: float = 64.0, channels: int = 1) -> np.ndarray:
    """Sum of smooth noises at halving scales, float32 [size, size, channels], std ~1."""
    out = np.zeros((size, size, channels), np.float32)
    amp = 1.0
    for o in range(octaves):
        out += amp * smooth_noise(rng, size, base / 2 ** o, channels)
        amp *= 0.55
    return out / (out.std() + 1e-6)


def random_color(rng: np.random.Generator, sat: tuple[float, float] = (0.1, 0.7), val: tuple[float, float] = (0.2, 0.95)) -> np.ndarray:
    """float32 [3] RGB 0..255 from a random hue/saturation/value."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def background(rng: np.random.Generator, size: int, kind: str | None = None) -> np.ndarray:
    """float32 [size, size, 3] 0..255: flat, gradient, textured, natural (blurred photo) or patches."""
    kind = kind or str(rng.choice(["flat", "gradient", "textured", "natural", "natural", "patches"]))
    if kind == "flat":
        return np.broadcast_to(random_color(rng), (size, size, 3)).astype(np.float32)
    if kind == "gradient":
        c0, c1 = random_color(rng), random_color(rng)
        ang = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        t = np.clip(0.5 + (xx * np.cos(ang) + yy * np.sin(ang)) * rng.uniform(0.8, 1.6), 0, 1)[..., None]
        if rng.random() < 0.4:  # radial vignette-like studio backdrop
            t = np.clip(np.sqrt(xx ** 2 + yy ** 2)[..., None] * 1.6, 0, 1)
        return c0 * (1 - t) + c1 * t
    if kind == "textured":
        c0, c1 = random_color(rng), random_color(rng)
        n = fractal_noise(rng, size, int(rng.integers(2, 6)), rng.uniform(8, 96))
        t = 1 / (1 + np.exp(-n * rng.uniform(0.6, 3.0)))
        return c0 * (1 - t) + c1 * t
    if kind == "natural":
        img = natural_image(rng)
        out = _random_crop(rng, img, size).astype(np.float32)
        sigma = rng.uniform(0, 6) if rng.random() < 0.7 else 0.0  # shallow depth of field
        return cv2.GaussianBlur(out, (0, 0), sigma) if sigma > 0.3 else out
    # patches: a collage of crops from several natural images over a flat colour
    out = np.broadcast_to(random_color(rng), (size, size, 3)).astype(np.float32).copy()
    for _ in range(int(rng.integers(3, 8))):
        img = natural_image(rng)
        ps = int(rng.integers(size // 5, size // 2))
        patch = _random_crop(rng, img, ps).astype(np.float32)
        x, y = (int(v) for v in rng.integers(-ps // 3, size - ps // 2, 2))
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + ps, size), min(y + ps, size)
        out[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]
    return cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 4))


def _random_crop(rng: np.random.Generator, img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = img[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class ColorTransform:
    """An affine colour map applied to linear layers: rgb' = rgb @ matrix.T + bias (0..255 units)."""

    matrix: np.ndarray  # float32 [3, 3]
    bias: np.ndarray  # float32 [3]

    def image(self, img: np.ndarray) -> np.ndarray:
        """float32 [..., 3] -> float32 [..., 3] (not clipped)."""
        return img @ self.matrix.T + self.bias

    def color(self, rgb) -> tuple[float, float, float]:
        v = np.asarray(rgb, np.float32) @ self.matrix.T + self.bias
        return tuple(float(c) for c in np.clip(v, 0, 255))


def color_transform(rng: np.random.Generator, strength: float = 1.0) -> ColorTransform:
    """Random white balance, saturation, contrast, brightness and a small hue-mixing matrix."""
    s = strength
    gains = np.exp(rng.normal(0, 0.08 * s, 3)).astype(np.float32)  # white balance
    sat = float(np.clip(rng.normal(1.0, 0.25 * s), 0.0, 1.8))
    if rng.random() < 0.05 * s:
        sat = 0.0  # greyscale
    grey = np.full((3, 3), 1 / 3, np.float32)
    m = sat * np.eye(3, dtype=np.float32) + (1 - sat) * grey
    m = m + rng.normal(0, 0.04 * s, (3, 3)).astype(np.float32)
    contrast = float(np.exp(rng.normal(0, 0.15 * s)))
    m = contrast * (np.diag(gains) @ m)
    bias = (128 * (1 - contrast) + rng.normal(0, 12 * s)) + rng.normal(0, 4 * s, 3)
    return ColorTransform(m.astype(np.float32), bias.astype(np.float32))


def finish(rng: np.random.Generator, size: int, strength: float = 1.0) -> Finish:
    """Random tone curve (gamma, toe/shoulder), grain level and defocus for one clip."""
    x = np.arange(256, dtype=np.float32) / 255
    chans = []
    gamma = np.exp(rng.normal(0, 0.2 * strength))
    s_curve = rng.uniform(-0.3, 0.6) * strength
    for _ in range(3):
        g = gamma * np.exp(rng.normal(0, 0.04 * strength))
        y = x ** g
        y = y + s_curve * 0.15 * np.sin(2 * np.pi * y) * -1
        chans.append(np.clip(y * 255 + 0.5, 0, 255))
    lut = np.stack(chans, -1).astype(np.uint8)[:, None, :]
    grain = None
    if rng.random() < 0.8:
        level = rng.uniform(1, 7) * strength
        g = rng.standard_normal((size, size, 1 if rng.random() < 0.6 else 3)).astype(np.float32)
        if rng.random() < 0.5:
            g = cv2.GaussianBlur(g, (0, 0), 0.7).reshape(size, size, -1) * 1.6
        grain = np.broadcast_to(g * level, (size, size, 3)).astype(np.int16)
    blur = rng.uniform(0.4, 1.3) if rng.random() < 0.3 else 0.0
    return Finish(lut, grain, float(blur))


def lfw_patches() -> np.ndarray:
    """uint8 [200, 25, 25] tiny grey faces (texture sources)."""
    with np.load(ASSETS / "lfw_faces.npz") as z:
        return z["faces"]
