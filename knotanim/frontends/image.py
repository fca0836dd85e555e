"""Portrait loading: any image Pillow or OpenCV reads -> uint8 HxWx3 RGB.

Conversions (documented behaviour, applied in this order):

* The pixel count is checked from the file header (Pillow's lazy open) BEFORE any pixel data is
  decoded: images above `max_pixels` (default `MAX_PIXELS`, 64 megapixels) are refused.
* EXIF orientation is honoured (`PIL.ImageOps.exif_transpose`): the returned array is upright.
* 16-bit and 32-bit integer images are scaled to 8 bits (value / 257, i.e. 65535 -> 255);
  float images are taken as 0..1 when their maximum is <= 1, otherwise clipped to 0..255.
* Grayscale is replicated to three channels; palette, CMYK, YCbCr, LAB are converted to RGB.
* Transparency (RGBA, LA, palette with alpha) is composited over white.
* Files Pillow cannot identify are retried with OpenCV (`cv2.imread`, IMREAD_UNCHANGED); for those
  the pixel limit is checked after decoding (OpenCV has its own hard limit of 2^30 pixels).

Images smaller than `MIN_SIDE` pixels on either side are refused as too small to animate.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from knotanim.errors import InputError

MAX_PIXELS = 64_000_000  # default pixel limit (64 megapixels), checked from the header
MIN_SIDE = 64  # smallest accepted image side, pixels


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) in pixels read from the header only (no pixel decoding), EXIF rotation applied.

    Raises InputError when the file is missing or not an image Pillow can identify.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    except Image.DecompressionBombError:
        raise InputError(f"image {path} is absurdly large (refused before decoding)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"cannot read image {path}: {_first_line(e)}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Load a portrait as uint8 RGB of shape (H, W, 3), upright, validated (see module docstring).

    Raises InputError (one line) for a missing, unreadable, truncated, too small or too large image.
    """
    path = Path(path)
    _check_file(path)
    rgb = _load_with_pillow(path, max_pixels)
    if rgb is None:  # Pillow could not identify the format: try OpenCV
        rgb = _load_with_opencv(path)
        if rgb.shape[0] * rgb.shape[1] > max_pixels:
            raise InputError(_too_large(path, rgb.shape[1], rgb.shape[0], max_pixels))
    return validate_image(rgb, min_side=min_side, name=str(path))


def validate_image(image: np.ndarray, min_side: int = MIN_SIDE, name: str = "image") -> np.ndarray:
    """Check an in-memory image is uint8 (H, W, 3) with both sides >= min_side; returns it contiguous."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise InputError(f"{name}: expected a uint8 HxWx3 RGB array, got {getattr(image, 'dtype', type(image))} {shape}")
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise InputError(f"{name} is {w}x{h} pixels: too small to animate (needs at least {min_side} px per side)")
    return np.ascontiguousarray(image)


def to_rgb8(array: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Convert any decoded pixel array to uint8 (H, W, 3) RGB with the documented rules.

    array: (H, W), (H, W, 1), (H, W, 2) gray+alpha, (H, W, 3) colour or (H, W, 4) colour+alpha;
    any integer or float dtype. bgr=True when channel order is OpenCV's BGR(A).
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"unsupported image layout {a.shape}")
    x = _to_unit_float(a)
    alpha = None
    if x.shape[2] in (2, 4):
        x, alpha = x[:, :, :-1], x[:, :, -1:]
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif bgr:
        x = x[:, :, ::-1]
    if alpha is not None:  # composite over white
        x = x * alpha + (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8))


def _to_unit_float(a: np.ndarray) -> np.ndarray:
    """Scale pixel values to float32 0..1 (uint8 / 255, 16-bit and wider / 65535, float as is)."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        x = a.astype(np.float32)
        peak = float(x.max()) if x.size else 0.0
        return np.clip(x / (255.0 if peak <= 255 else 65535.0), 0.0, 1.0)
    x = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    peak = float(x.max()) if x.size else 0.0
    return np.clip(x if peak <= 1.0 else x / 255.0, 0.0, 1.0)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"image {path} does not exist")
    if path.is_dir():
        raise InputError(f"image {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise InputError(f"image {path} is empty (0 bytes)")


def _too_large(path: Path, w: int, h: int, max_pixels: int) -> str:
    return (
        f"image {path} is {w}x{h} ({w * h / 1e6:.1f} megapixels), above the limit of "
        f"{max_pixels / 1e6:g} megapixels; downscale it first"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _load_with_pillow(path: Path, max_pixels: int) -> np.ndarray | None:
    """Decode with Pillow; None when Pillow does not know the format."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # lazy: reads the header only
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError:
        raise InputError(f"image {path} is absurdly large (refused before decoding)") from None
    except OSError as e:
        raise InputError(f"cannot read image {path}: {_first_line(e)}") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise InputError(_too_large(path, w, h, max_pixels))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return _pil_to_rgb8(im)
        except InputError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            msg = _first_line(e)
            if "truncated" in msg.lower():
                msg = "the file is truncated or damaged"
            raise InputError(f"cannot decode image {path}: {msg}") from None


def _pil_to_rgb8(im) -> np.ndarray:
    """Pillow image of any mode -> uint8 (H, W, 3) RGB."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
        im = im.convert("RGB")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    return to_rgb8(np.asarray(im))


def _load_with_opencv(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise InputError(f"cannot read image {path}: not an image format Pillow or OpenCV can decode")
    return to_rgb8(arr, bgr=arr.ndim == 3 and arr.shape[2] >= 3)
