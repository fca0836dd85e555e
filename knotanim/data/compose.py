"""Per-frame compositing shared by the synthetic and photo portraits.

A clip has a static plate (background + shoulders), a head layer (RGB + alpha, drawn in the
"head canvas" whose geometry follows the face framing convention) and a finish (tone curve +
grain) that is fixed for the clip. Each frame: features are drawn into the head layer, the layer
is warped by the head pose (a homography of the rotated face plane plus a translation) and
blended over the plate, then finished.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Pose:
    """Head pose: rotations in degrees, translations in pixels of the frame."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    tx: float = 0.0
    ty: float = 0.0

    @property
    def still(self) -> bool:
        return self.yaw == 0 and self.pitch == 0 and self.roll == 0 and self.tx == 0 and self.ty == 0


def pose_homography(pose: Pose, centre: tuple[float, float], focal: float) -> np.ndarray:
    """3x3 homography (float64) mapping head-canvas pixels to frame pixels.

    The face is a plane through `centre` (x, y pixels) facing the camera at distance `focal`
    (pixels); it is rotated by yaw (about the vertical axis), pitch and roll, projected, then
    shifted by (tx, ty). Identity for a still pose.
    """
    if pose.still:
        return np.eye(3)
    y, p, r = np.deg2rad([pose.yaw, pose.pitch, pose.roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    rot = rz @ rx @ ry
    cx, cy = centre
    k = np.array([[focal, 0, cx + pose.tx], [0, focal, cy + pose.ty], [0, 0, 1]])
    # plane point (x, y) -> (x - cx, y - cy, 0), rotated about the face centre, pushed to depth focal
    a = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 0]], np.float64)
    depth = np.array([[0, 0, 0], [0, 0, 0], [0, 0, focal]], np.float64)
    h = k @ (rot @ a + depth)
    return h / h[2, 2]


def warp_box(h: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1 float32 pixels, clipped to the frame) of a head-canvas box after h."""
    x0, y0, x1, y1 = box
    pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    q = cv2.perspectiveTransform(pts[None], h)[0]
    lo = np.clip(np.floor(q.min(0)) - 1, 0, size)
    hi = np.clip(np.ceil(q.max(0)) + 1, 0, size)
    return np.array([lo[0], lo[1], hi[0], hi[1]], np.float32)


def composite(plate: np.ndarray, head_rgba: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Blend the warped head layer over the plate.

    plate: float32 [S, S, 3] 0..255; head_rgba: uint8 [S, S, 4]; h: 3x3 homography.
    Returns float32 [S, S, 3].
    """
    s = plate.shape[0]
    if np.allclose(h, np.eye(3)):
        warped = head_rgba
    else:
        warped = cv2.warpPerspective(head_rgba, h, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    a = warped[..., 3:4].astype(np.float32) * (1 / 255)
    out = warped[..., :3].astype(np.float32)
    out -= plate
    out *= a
    out += plate
    return out


@dataclass
class Finish:
    """Per-clip camera look: per-channel tone curve (LUT), additive grain, optional defocus blur."""

    lut: np.ndarray  # uint8 [256, 1, 3]
    grain: np.ndarray | None  # int16 [S, S, 3] or None
    blur_sigma: float = 0.0

    def apply(self, img: np.ndarray) -> np.ndarray:
        """float32 [S, S, 3] 0..255 -> uint8 [S, S, 3]."""
        if self.blur_sigma > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), self.blur_sigma)
        if self.grain is not None:
            img = img + self.grain
        u8 = np.clip(img, 0, 255).astype(np.uint8) if self.grain is not None else cv2.convertScaleAbs(img)
        return cv2.LUT(u8, self.lut)


def identity_finish() -> Finish:
    return Finish(np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2), None, 0.0)
