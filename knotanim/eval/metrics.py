"""KnotBench metrics: pure numpy functions on frames, boxes and audio.

Conventions (every function):
- a frame is uint8 (or float in 0..255) RGB [H, W, 3]; a video is [T, H, W, 3];
- a grey image is [H, W] / a grey video [T, H, W] in luma levels 0..255 (`to_luma`);
- a box is (x0, y0, x1, y1) in pixels, x1/y1 exclusive; `boxes` is [T, 4];
- audio is float32 mono samples; `spf` is samples per video frame.

Per-frame "series" functions (`*_frames`, `frame_diff_energy`, `second_diff_energy`) let a caller
score a long stream block by block and summarise at the end; the scalar functions are their means.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 weights (read-only use)
PSNR_CAP_DB = 100.0  # PSNR of identical images, which is +inf, is reported as this


# --- basics ------------------------------------------------------------------------------------
def to_luma(x: np.ndarray) -> np.ndarray:
    """[..., H, W, 3] RGB -> float32 [..., H, W] luma (0..255). A [..., H, W] input (last axis not 3)
    is taken as already grey and only cast."""
    x = np.asarray(x)
    if x.ndim >= 3 and x.shape[-1] == 3:
        x = x.astype(np.float32, copy=False)  # elementwise, so results never depend on batch size
        return LUMA[0] * x[..., 0] + LUMA[1] * x[..., 1] + LUMA[2] * x[..., 2]
    return x.astype(np.float32, copy=False)


def _clip_box(box, height: int, width: int) -> tuple[int, int, int, int]:
    """Round a float box outward to whole pixels and clip it to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    x1, y1 = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
    return x0, y0, max(x0, x1), max(y0, y1)


def union_box(boxes: np.ndarray, height: int, width: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    """Smallest pixel box holding every box of [T, 4], grown by `margin` x its size on each side."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return _clip_box((x0 - mx, y0 - my, x1 + mx, y1 + my), height, width)


def measurement_boxes(boxes: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """[T, 4] mouth boxes -> [T, 4] boxes of one fixed size that follow each box's centre.

    The size is the clip's largest box width/height, grown by `margin` x that size on each side,
    so the measured area does not change with the mouth opening and tolerates small pose offsets.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    hw = (boxes[:, 2] - boxes[:, 0]).max() * (0.5 + margin)
    hh = (boxes[:, 3] - boxes[:, 1]).max() * (0.5 + margin)
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)


def box_mask(box, height: int, width: int, inside: bool = True) -> np.ndarray:
    """bool [H, W]: True inside `box` (or outside it, with inside=False)."""
    x0, y0, x1, y1 = _clip_box(box, height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask if inside else ~mask


# --- PSNR ----------------------------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, max_db: float = PSNR_CAP_DB) -> float:
    """PSNR in dB between two arrays of the same shape, over all their values; identical -> max_db."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse <= 0.0:
        return float(max_db)
    return float(min(max_db, 10.0 * math.log10(data_range**2 / mse)))


def psnr_frames(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, max_db: float = PSNR_CAP_DB) -> np.ndarray:
    """Per-frame PSNR (dB) of videos [T, H, W(, C)] -> float64 [T], each capped at max_db."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"psnr_frames: shapes differ: {a.shape} vs {b.shape}")
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1).astype(np.float64)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-30))
    return np.minimum(np.where(mse > 0, db, max_db), max_db)


# --- SSIM ----------------------------------------------------------------------------------------
def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps, float32 [size]."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return (w / w.sum()).astype(np.float32)


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of float32 [..., H, W] with symmetric 1-D taps along H and W.

    Frame by frame through OpenCV's separable filter (the border it pads never reaches the 'valid'
    positions kept), so a result never depends on how many frames are passed at once."""
    n = len(taps)
    h, w = x.shape[-2] - n + 1, x.shape[-1] - n + 1
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-2], x.shape[-1])
    out = np.empty((len(flat), h, w), dtype=np.float32)
    k = np.asarray(taps, dtype=np.float32)
    for i, frame in enumerate(flat):
        out[i] = cv2.sepFilter2D(frame, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT)[n // 2 : n // 2 + h,
                                                                                       n // 2 : n // 2 + w]
    return out.reshape(*x.shape[:-2], h, w)


def _window_for(height: int, width: int, size: int, sigma: float) -> np.ndarray:
    """The Gaussian window, shrunk (odd side, sigma scaled alike) when the image is smaller than it."""
    side = min(size, height, width)
    side -= 1 - side % 2
    if side < 1:
        raise ValueError(f"ssim: image {height}x{width} is empty")
    return gaussian_window(side, sigma * side / size)


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, size: int = 11, sigma: float = 1.5,
             k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """SSIM map (Wang et al. 2004) of luma images [..., H, W(, 3)] with a Gaussian window.

    Returns float32 [..., H - s + 1, W - s + 1] ('valid' positions; s = window side, 11 unless the
    image is smaller). Entry [i, j] scores the window centred on pixel (i + s//2, j + s//2).
    """
    x, y = to_luma(a), to_luma(b)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ: {x.shape} vs {y.shape}")
    taps = _window_for(x.shape[-2], x.shape[-1], size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = _filter_valid(x, taps), _filter_valid(y, taps)
    sxx = _filter_valid(x * x, taps) - mx * mx
    syy = _filter_valid(y * y, taps) - my * my
    sxy = _filter_valid(x * y, taps) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return (num / den).astype(np.float32)


def ssim_frames(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, **kw) -> np.ndarray:
    """Mean SSIM per frame of videos [T, H, W(, 3)] -> float64 [T].

    mask: optional bool [H, W]; only windows centred on True pixels are averaged (e.g. the face
    outside the mouth box).
    """
    m = ssim_map(a, b, **kw)
    if m.ndim == 2:
        m = m[None]
    if mask is None:
        return m.reshape(len(m), -1).mean(axis=1, dtype=np.float64)
    h, w = np.asarray(mask).shape
    r0, c0 = (h - m.shape[-2]) // 2, (w - m.shape[-1]) // 2
    sel = np.asarray(mask, dtype=bool)[r0 : r0 + m.shape[-2], c0 : c0 + m.shape[-1]]
    if not sel.any():
        return np.full(len(m), np.nan)
    return m[:, sel].mean(axis=1, dtype=np.float64)


def ssim(a: np.ndarray, b: np.ndarray, **kw) -> float:
    """Mean SSIM of two images [H, W(, 3)] or videos [T, H, W(, 3)] (mean over frames); 1 = identical."""
    return float(np.mean(ssim_frames(a, b, **kw)))


def crop(frames: np.ndarray, box) -> np.ndarray:
    """Crop [..., H, W, C] (or [..., H, W]) to a pixel box."""
    frames = np.asarray(frames)
    rgb = frames.ndim >= 3 and frames.shape[-1] == 3
    h, w = (frames.shape[-3], frames.shape[-2]) if rgb else frames.shape[-2:]
    x0, y0, x1, y1 = _clip_box(box, h, w)
    return frames[..., y0:y1, x0:x1, :] if rgb else frames[..., y0:y1, x0:x1]


# --- mouth openness and lip sync -----------------------------------------------------------------
def _patch(img: np.ndarray, box, w: int, h: int) -> np.ndarray:
    """A w x h patch of [H, W, C] whose top-left corner is the box's (rounded), kept inside the image."""
    x0 = min(max(0, int(round(float(box[0])))), img.shape[1] - w)
    y0 = min(max(0, int(round(float(box[1])))), img.shape[0] - h)
    return img[y0 : y0 + h, x0 : x0 + w]


def mouth_openness(frames: np.ndarray, boxes: np.ndarray, reference: np.ndarray,
                   ref_box: np.ndarray | None = None) -> np.ndarray:
    """Measured mouth openness per frame: how far the mouth region has moved away from the closed
    mouth of the reference.

    frames [T, H, W, 3], boxes [T, 4] px (one size: use `measurement_boxes`), reference [H, W, 3]
    (neutral, closed mouth), ref_box [4]: the mouth box in the reference (default: the median box).
    openness[t] = mean |frame patch - reference patch| / 255 over the box's pixels and RGB, where
    both patches have the median box size. 0 = the closed mouth of the reference; an open mouth
    (dark interior, teeth, tongue) raises it whichever way its colours go, so the one measurement
    serves rendered ground truth, real photos and model output. Returns float64 [T] in 0..1.
    """
    frames = np.asarray(frames)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(frames):
        raise ValueError(f"mouth_openness: {len(frames)} frames but {len(boxes)} boxes")
    h_img, w_img = frames.shape[1:3]
    med = np.median(boxes, axis=0) if ref_box is None else np.asarray(ref_box, dtype=np.float64)
    w = int(np.clip(round(med[2] - med[0]), 1, w_img))
    h = int(np.clip(round(med[3] - med[1]), 1, h_img))
    ref = _patch(np.asarray(reference), med, w, h).astype(np.float32)
    out = np.empty(len(frames))
    for t, box in enumerate(boxes):
        out[t] = float(np.abs(_patch(frames[t], box, w, h).astype(np.float32) - ref).mean()) / 255.0
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two [T] series over their finite pairs; 0.0 when undefined (fewer than
    3 pairs, or a constant series, e.g. a frozen mouth)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if den <= 1e-12 * max(1.0, len(a)):
        return 0.0
    return float(np.clip(np.dot(a, b) / den, -1.0, 1.0))


def lipsync_correlation(measured_openness: np.ndarray, true_openness: np.ndarray) -> float:
    """Lip-sync score: Pearson r between measured openness [T] and ground-truth mouth_open [T]
    (NaN/undefined -> 0.0). Read it against the ceiling: the same measurement on ground truth."""
    return pearson(measured_openness, true_openness)


def envelope(audio: np.ndarray, spf: int, n_frames: int | None = None) -> np.ndarray:
    """Audio envelope: RMS of each frame's samples audio[i*spf:(i+1)*spf] -> float64 [T].

    T = n_frames if given (missing audio counts as silence), else ceil(len(audio) / spf).
    """
    audio = np.asarray(audio, dtype=np.float64).ravel()
    t = int(n_frames) if n_frames is not None else -(-len(audio) // spf)
    padded = np.zeros(t * spf)
    n = min(len(audio), t * spf)
    padded[:n] = audio[:n]
    return np.sqrt((padded.reshape(t, spf) ** 2).mean(axis=1))


# --- temporal smoothness ---------------------------------------------------------------------------
def frame_diff_energy(frames: np.ndarray) -> np.ndarray:
    """Mean squared difference (levels^2, over pixels and RGB) between consecutive frames:
    [T, H, W, C] -> float64 [T-1]; entry t is the transition from frame t to frame t+1."""
    x = np.asarray(frames, dtype=np.float32)
    if len(x) < 2:
        return np.zeros(0)
    d = x[1:] - x[:-1]
    return (d * d).reshape(len(d), -1).mean(axis=1).astype(np.float64)


def jump_ratio_from_energy(energy: np.ndarray, chunk: int, first_index: int = 0) -> float:
    """Chunk-boundary jump ratio from `frame_diff_energy` output [T-1].

    energy[t] is the transition into frame first_index + t + 1; it crosses a chunk boundary when
    that frame index is a multiple of `chunk` (boundaries sit between frames j*C-1 and j*C).
    Returns mean(boundary energy) / mean(within-chunk energy): 1.0 = seamless; 1.0 also when both
    are 0 (a still video); inf when only boundaries move; NaN when either set is empty.
    """
    energy = np.asarray(energy, dtype=np.float64)
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    into = first_index + 1 + np.arange(len(energy))
    at = (into % chunk) == 0
    if not at.any() or at.all():
        return float("nan")
    b, w = float(energy[at].mean()), float(energy[~at].mean())
    if w <= 0.0:
        return 1.0 if b <= 0.0 else float("inf")
    return b / w


def boundary_jump_ratio(frames: np.ndarray, chunk: int, first_index: int = 0) -> float:
    """Mean frame-difference energy across chunk boundaries / within chunks, for [T, H, W, C] whose
    first frame has stream index `first_index`. 1.0 = seamless; a seam at every boundary gives >> 1."""
    return jump_ratio_from_energy(frame_diff_energy(frames), chunk, first_index)


def second_diff_energy(frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean |L[t+1] - 2 L[t] + L[t-1]| of luma (levels) over the pixels of `mask` (bool [H, W];
    all if None): [T, H, W(, 3)] -> float64 [T-2]; entry t is centred on frame t+1."""
    lum = to_luma(frames)
    if len(lum) < 3:
        return np.zeros(0)
    acc = np.abs(lum[2:] - 2 * lum[1:-1] + lum[:-2])
    if mask is not None:
        acc = acc[:, np.asarray(mask, dtype=bool)]
    return acc.reshape(len(acc), -1).mean(axis=1).astype(np.float64)


def flicker(frames: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Temporal flicker: mean absolute second temporal difference of luma (levels, 0..255) over the
    static region `mask` (bool [H, W], e.g. all but the mouth). Smooth motion (constant speed) and
    still video give 0; frame-to-frame noise gives ~2.4x its per-frame std."""
    e = second_diff_energy(frames, mask)
    return float(e.mean()) if len(e) else 0.0


# --- over time ----------------------------------------------------------------------------------
def window_means(series: np.ndarray, window: int) -> np.ndarray:
    """Mean of consecutive windows of `window` samples (NaNs ignored; a shorter last window only if
    it is at least half a window) -> float64 [n_windows]."""
    s = np.asarray(series, dtype=np.float64)
    window = max(1, int(window))
    n = len(s) // window + (1 if len(s) % window >= max(1, window // 2) else 0)
    out = np.full(n, np.nan)
    for i in range(n):
        part = s[i * window : (i + 1) * window]
        part = part[np.isfinite(part)]
        if len(part):
            out[i] = part.mean()
    return out


def drift_ratio(first: float, last: float) -> dict[str, float]:
    """Long-horizon drift of one metric: {"first", "last", "ratio": last/first,
    "change_pct": 100 (last - first) / |first|} (NaN where first is 0 or missing)."""
    first, last = float(first), float(last)
    ok = math.isfinite(first) and math.isfinite(last) and first != 0.0
    return {
        "first": first,
        "last": last,
        "ratio": last / first if ok else float("nan"),
        "change_pct": 100.0 * (last - first) / abs(first) if ok else float("nan"),
    }
