"""Face detection, crop/alignment for the model, and seamless paste-back into the original image.

Geometry (CropConfig): the crop is a square of side `face box side * face_scale` (original pixels),
with the face box centre horizontally centred and at `face_center_y` of the crop height, optionally
rotated so the eyes are level, resized to `size` x `size` model pixels. `FaceCrop` holds the affine
map original -> crop and its inverse. Detection uses OpenCV's bundled Haar cascades (frontal face;
eyes for the in-plane angle), so it works offline.

Paste-back (`Paster`): the generated crop is colour-matched (per-channel mean/std of its border
ring matched to the original crop's ring), warped back with precomputed maps and blended with a
feathered mask (rectangle by default, or an ellipse) into the full-resolution original.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from knotanim.config import CropConfig
from knotanim.errors import BackendUnavailable, InputError

if TYPE_CHECKING:
    import torch

DETECT_MAX_SIDE = 1024  # images are downscaled to at most this side (pixels) for detection
MAX_EYE_ANGLE = 25.0  # degrees; larger eye-line angles are treated as misdetections (no rotation)


@dataclass(frozen=True)
class FaceBox:
    """A detected face: axis-aligned box in original pixels (x, y = top-left corner)."""

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return self.w * self.h

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)


@dataclass(frozen=True)
class FaceCrop:
    """Where the model's square crop lies in the original image.

    matrix: (2, 3) float64 affine, original pixel (x, y) -> crop pixel (x, y).
    inverse: (2, 3) float64 affine, crop pixel -> original pixel.
    size: crop side in model pixels. image_shape: (H, W) of the original.
    box: the face used (None for the whole-image centre crop). angle: in-plane rotation, degrees.
    """

    matrix: np.ndarray
    inverse: np.ndarray
    size: int
    image_shape: tuple[int, int]
    box: FaceBox | None = None
    angle: float = 0.0

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) original pixel coordinates to crop coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return p @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) crop pixel coordinates to original coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return p @ self.inverse[:, :2].T + self.inverse[:, 2]


def _cascade(name: str) -> "cv2.CascadeClassifier":
    if not hasattr(cv2, "CascadeClassifier") or not getattr(getattr(cv2, "data", None), "haarcascades", ""):
        raise BackendUnavailable(
            f"face detection needs OpenCV's Haar cascades, which OpenCV {cv2.__version__} does not ship: "
            "install opencv-python-headless<5, or use --no-face-detect")
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV Haar cascade {path} could not be loaded")
    return cascade


def _gray_for_detection(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Equalised grayscale, downscaled to DETECT_MAX_SIDE; returns (gray, scale original->gray)."""
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image
    return cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)), scale


def detect_faces(image: np.ndarray, min_size: int = 24) -> list[FaceBox]:
    """Frontal faces in a uint8 (H, W, 3) RGB image, largest first (boxes in original pixels).

    min_size: smallest face side searched for, in detection pixels (the image is first
    downscaled to DETECT_MAX_SIDE).
    """
    gray, scale = _gray_for_detection(image)
    found = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size)
    )
    boxes = [FaceBox(x / scale, y / scale, w / scale, h / scale) for (x, y, w, h) in np.reshape(found, (-1, 4))]
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def eye_angle(image: np.ndarray, box: FaceBox) -> float:
    """In-plane rotation of the face in degrees (positive: the right-hand eye is lower), 0 if unsure."""
    x0, y0 = max(0, int(box.x)), max(0, int(box.y))
    x1, y1 = int(box.x + box.w), int(box.y + box.h * 0.6)
    roi = image[y0:y1, x0:x1]
    if roi.size == 0 or min(roi.shape[:2]) < 20:
        return 0.0
    gray = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY)
    side = max(8, int(box.w * 0.08))
    eyes = np.reshape(_cascade("haarcascade_eye.xml").detectMultiScale(gray, 1.1, 3, minSize=(side, side)), (-1, 4))
    centers = [(x + w / 2, y + h / 2, w * h) for (x, y, w, h) in eyes]
    left = [c for c in centers if c[0] < box.w * 0.5]
    right = [c for c in centers if c[0] >= box.w * 0.5]
    if not left or not right:
        return 0.0
    (lx, ly, _), (rx, ry, _) = max(left, key=lambda c: c[2]), max(right, key=lambda c: c[2])
    dx, dy = rx - lx, ry - ly
    if not 0.25 * box.w <= math.hypot(dx, dy) <= 0.7 * box.w:
        return 0.0
    angle = math.degrees(math.atan2(dy, dx))
    return angle if abs(angle) <= MAX_EYE_ANGLE else 0.0


def face_crop_for_box(image_shape: tuple[int, int], box: FaceBox, crop_cfg: CropConfig, size: int, angle: float = 0.0) -> FaceCrop:
    """The FaceCrop of a face box per CropConfig (crop side = box side * face_scale), rotated by angle."""
    cx, cy = box.center
    side = max(box.w, box.h) * crop_cfg.face_scale
    m = cv2.getRotationMatrix2D((cx, cy), angle, size / side)  # keeps (cx, cy) fixed
    m[0, 2] += size / 2 - cx
    m[1, 2] += crop_cfg.face_center_y * size - cy
    return FaceCrop(m, cv2.invertAffineTransform(m), size, tuple(image_shape[:2]), box, angle)


def centre_crop(image_shape: tuple[int, int], size: int) -> FaceCrop:
    """The whole-image FaceCrop: the largest centred square, resized to size x size."""
    h, w = image_shape[:2]
    s = size / min(h, w)
    m = np.array([[s, 0.0, size / 2 - s * w / 2], [0.0, s, size / 2 - s * h / 2]])
    return FaceCrop(m, cv2.invertAffineTransform(m), size, (h, w), None, 0.0)


def warp_to_crop(image: np.ndarray, fc: FaceCrop) -> np.ndarray:
    """Sample the (size, size, 3) uint8 crop of `image` (area-averaged when shrinking; edges replicated)."""
    corners = fc.to_original(np.array([[0, 0], [fc.size, 0], [0, fc.size], [fc.size, fc.size]]))
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(math.floor(v)) - 2) for v in corners.min(axis=0))
    x1, y1 = min(w, int(math.ceil(corners[:, 0].max())) + 2), min(h, int(math.ceil(corners[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:  # crop entirely outside the image (cannot happen for detected faces)
        x0, y0, x1, y1 = 0, 0, w, h
    roi = image[y0:y1, x0:x1]
    m = fc.matrix.copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)  # roi coordinates -> crop
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale < 1.0:  # shrink with area averaging first, then warp at ~unit scale
        rw, rh = max(1, round(roi.shape[1] * scale)), max(1, round(roi.shape[0] * scale))
        sx, sy = roi.shape[1] / rw, roi.shape[0] / rh
        roi = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
        m = m @ np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2], [0, 0, 1]])
    return cv2.warpAffine(roi, m, (fc.size, fc.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop_face(
    image: np.ndarray,
    crop_cfg: CropConfig,
    size: int,
    face_index: int = 0,
    detect: bool = True,
    align: bool = True,
) -> tuple[np.ndarray, FaceCrop]:
    """Detect, choose (face_index into faces sorted by size, descending), align and crop a face.

    image: uint8 (H, W, 3) RGB. Returns (crop uint8 (size, size, 3), FaceCrop).
    detect=False uses the largest centred square of the whole image instead.
    Raises InputError when no face is found, the index is out of range or the face is too small.
    """
    if not detect:
        fc = centre_crop(image.shape, size)
        return warp_to_crop(image, fc), fc
    faces = detect_faces(image)
    if not faces:
        raise InputError("no face found in the image; use --no-face-detect to animate the whole image (centre square crop)")
    if not 0 <= face_index < len(faces):
        raise InputError(f"face index {face_index} is out of range: {len(faces)} face(s) found (0 is the largest)")
    box = faces[face_index]
    if min(box.w, box.h) < crop_cfg.min_face_pixels:
        raise InputError(
            f"the face is {min(box.w, box.h):.0f} px wide, smaller than the {crop_cfg.min_face_pixels} px needed to "
            "animate it; use a larger image"
        )
    angle = eye_angle(image, box) if align else 0.0
    fc = face_crop_for_box(image.shape, box, crop_cfg, size, angle)
    return warp_to_crop(image, fc), fc


def _feather_mask(size: int, shape: str, feather: float) -> np.ndarray:
    """(size, size) float32 blend weight in crop space: 1 inside, smooth ramp of `feather`*size to 0."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size  # pixel centres in 0..1
    width = max(feather, 1e-3)
    if shape == "ellipse":
        y, x = np.meshgrid(c, c, indexing="ij")
        r = np.sqrt(((x - 0.5) / 0.46) ** 2 + ((y - 0.5) / 0.49) ** 2)
        t = np.clip((1.0 - r) / width, 0.0, 1.0)
    elif shape == "rect":
        edge = np.minimum(c, 1.0 - c)
        t = np.clip(np.minimum(edge[:, None], edge[None, :]) / width, 0.0, 1.0)
    else:
        raise ValueError("mask must be 'rect' or 'ellipse'")
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep


def mouth_area_box(size: int, face_scale: float, face_center_y: float) -> np.ndarray:
    """float32 [4] (x0, y0, x1, y1 pixels): the mouth area of a crop made with this CropConfig geometry.

    The face box (side size / face_scale) is centred at (size / 2, face_center_y * size); the mouth
    area is its lower-middle part: x within +-0.3 box sides of the centre, y from 0.1 to 0.55 box
    sides below the centre (covers jaw opening too)."""
    side = size / face_scale
    cx, cy = size / 2, face_center_y * size
    return np.array([cx - 0.3 * side, cy + 0.1 * side, cx + 0.3 * side, cy + 0.55 * side], np.float32)


def mouth_cells(boxes: torch.Tensor, frame_size: int, latent_size: int) -> torch.Tensor:
    """1 on the latent cells whose centre lies in the frame's mouth box, else 0.

    boxes: [B, T, 4] (x0, y0, x1, y1 pixels) -> [B, T, 1, h, w] with h = w = latent_size.
    """
    import torch

    centres = (torch.arange(latent_size, device=boxes.device, dtype=torch.float32) + 0.5) * (frame_size / latent_size)
    x0, y0, x1, y1 = (boxes[..., i, None].float() for i in range(4))  # [B, T, 1]
    in_x = (centres >= x0) & (centres <= x1)  # [B, T, w]
    in_y = (centres >= y0) & (centres <= y1)  # [B, T, h]
    return (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).float().unsqueeze(2)  # [B, T, 1, h, w]


class Paster:
    """Pastes generated crops back into one original image; all maps and masks are built once.

    original: uint8 (H, W, 3) RGB. face_crop: its FaceCrop. reference_crop: the crop the model was
    given (default: computed with warp_to_crop). mask: "rect" or "ellipse"; feather: ramp width as a
    fraction of the crop side; colour_match: match the generated ring's mean/std to the original's.
    """

    def __init__(self, original: np.ndarray, face_crop: FaceCrop, reference_crop: np.ndarray | None = None,
                 mask: str = "rect", feather: float = 0.12, colour_match: bool = True, ring: float = 0.06):
        self.original = np.ascontiguousarray(original)
        self.face_crop = fc = face_crop
        h, w = original.shape[:2]
        size = fc.size
        corners = fc.to_original(np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        self.x0, self.y0 = (max(0, int(math.floor(v))) for v in corners.min(axis=0))
        self.x1 = min(w, int(math.ceil(corners[:, 0].max())) + 1)
        self.y1 = min(h, int(math.ceil(corners[:, 1].max())) + 1)
        ys, xs = np.mgrid[self.y0:self.y1, self.x0:self.x1].astype(np.float64)
        m = fc.matrix
        # remap samples the crop at crop-pixel coordinates of each original pixel in the ROI
        self.map_x = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(np.float32)
        self.map_y = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(np.float32)
        crop_mask = _feather_mask(size, mask, feather)
        roi_mask = cv2.remap(crop_mask, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self.mask = np.ascontiguousarray(roi_mask, dtype=np.float32)  # (h, w) blend weight of the crop
        self.inv_mask = np.ascontiguousarray(1.0 - self.mask, dtype=np.float32)
        self.map1, self.map2 = cv2.convertMaps(self.map_x, self.map_y, cv2.CV_16SC2)  # fixed-point: faster remap
        self.colour_match = colour_match
        if colour_match:
            ref = warp_to_crop(original, fc) if reference_crop is None else reference_crop
            self.ring_index = self._ring_pixels(size, ring, h, w)
            ring_px = ref.reshape(-1, 3)[self.ring_index].astype(np.float32)
            self.ref_mean, self.ref_std = ring_px.mean(axis=0), ring_px.std(axis=0)

    def _ring_pixels(self, size: int, ring: float, h: int, w: int) -> np.ndarray:
        """Flat indices of crop pixels in the border ring that map inside the original image."""
        c = np.arange(size)
        edge = np.minimum(c, size - 1 - c)
        band = max(2, int(round(ring * size)))
        in_ring = np.minimum(edge[:, None], edge[None, :]) < band
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
        inv = self.face_crop.inverse
        ox = inv[0, 0] * (xs + 0.5) + inv[0, 1] * (ys + 0.5) + inv[0, 2]
        oy = inv[1, 0] * (xs + 0.5) + inv[1, 1] * (ys + 0.5) + inv[1, 2]
        inside = (ox >= 0) & (ox <= w) & (oy >= 0) & (oy <= h)
        index = np.flatnonzero(in_ring & inside)
        return index if index.size >= 16 else np.flatnonzero(in_ring)

    def match_colour(self, crop: np.ndarray) -> np.ndarray:
        """float32 (size, size, 3) crop with its ring's per-channel mean/std matched (gain 0.5..2)."""
        g = crop.astype(np.float32)
        if not self.colour_match:
            return g
        ring_px = g.reshape(-1, 3)[self.ring_index]
        mean, std = ring_px.mean(axis=0), ring_px.std(axis=0)
        gain = np.clip(self.ref_std / np.maximum(std, 1.0), 0.5, 2.0)
        return (g - mean) * gain + self.ref_mean

    def __call__(self, generated_crop: np.ndarray) -> np.ndarray:
        """Paste one generated uint8 (s, s, 3) crop; returns a new uint8 (H, W, 3) frame."""
        size = self.face_crop.size
        if generated_crop.shape[:2] != (size, size):
            generated_crop = cv2.resize(generated_crop, (size, size), interpolation=cv2.INTER_LINEAR)
        g = np.clip(self.match_colour(generated_crop) + 0.5, 0, 255).astype(np.uint8)
        warped = cv2.remap(g, self.map1, self.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out = self.original.copy()
        roi = out[self.y0:self.y1, self.x0:self.x1]
        out[self.y0:self.y1, self.x0:self.x1] = cv2.blendLinear(warped, roi, self.mask, self.inv_mask)
        return out


def paste_back(original: np.ndarray, generated_crop: np.ndarray, face_crop: FaceCrop, **options) -> np.ndarray:
    """One-shot paste (builds a Paster): uint8 (H, W, 3) original-size frame. Use Paster per render."""
    return Paster(original, face_crop, **options)(generated_crop)
