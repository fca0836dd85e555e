"""Real photographs animated by warping: the second identity source.

astronaut (skimage.data) is the training photo; grace_hopper (matplotlib sample data) is kept for
evaluation only. Face boxes are what OpenCV's frontal-face Haar cascade reports on the full photos
(opencv-python 4.12, scaleFactor 1.1, minNeighbors 5); eyes and mouth were annotated by hand.
The photo is cropped with the framing convention (CropConfig), then per frame: the jaw region is
remapped downwards to open the mouth, the gap gets a dark interior with a hint of upper teeth,
blinks draw a skin-coloured lid with a lash line, and the feathered head region is warped by the pose.
"""
from __future__ import annotations

import cv2
import numpy as np

from knotanim.config import CropConfig
from knotanim.data.compose import Pose, composite, pose_homography, warp_box
from knotanim.data.randomize import color_transform, finish, load_asset_rgb

# face box (x, y, w, h), eye centres, mouth centre, mouth half width, all in photo pixels
PHOTOS = {
    "astronaut": {"file": "astronaut.jpg", "box": (177, 66, 95, 95), "eyes": ((202, 100), (246, 102)),
                  "mouth": (226, 146), "mouth_hw": 23.0, "split": "train"},
    "grace_hopper": {"file": "grace_hopper.jpg", "box": (155, 105, 222, 222), "eyes": ((221, 184), (306, 184)),
                     "mouth": (268, 277), "mouth_hw": 42.0, "split": "eval"},
}


def crop_affine(box: tuple[float, float, float, float], size: int, crop: CropConfig) -> np.ndarray:
    """2x3 affine (float64) mapping photo pixels to a size x size frame with the face framed by convention."""
    x, y, w, h = box
    side = max(w, h) * crop.face_scale
    k = size / side
    cx, cy = x + w / 2, y + h / 2
    return np.array([[k, 0, size / 2 - k * cx], [0, k, crop.face_center_y * size - k * cy]], np.float64)


class PhotoRenderer:
    """frame(pose, mouth_open, mouth_width, blink, gaze, brow) -> (uint8 [S,S,3], mouth_box float32 [4])."""

    def __init__(self, name: str, look_rng: np.random.Generator, size: int, crop: CropConfig = CropConfig()) -> None:
        info = PHOTOS[name]
        a = crop_affine(info["box"], size, crop)
        img = cv2.warpAffine(load_asset_rgb(info["file"]), a, (size, size), flags=cv2.INTER_AREA if a[0, 0] < 1 else cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
        k = a[0, 0]

        def tr(p):
            return (a[0, 0] * p[0] + a[0, 2], a[1, 1] * p[1] + a[1, 2])

        self.size = size
        ct = color_transform(look_rng, strength=float(look_rng.uniform(0.2, 0.9)))
        self.img = np.clip(ct.image(img), 0, 255).astype(np.float32)
        self.eyes = [tr(e) for e in info["eyes"]]
        self.mouth = tr(info["mouth"])
        self.mouth_hw = info["mouth_hw"] * k
        self.face = info["box"][2] * k
        self.centre = (size / 2, crop.face_center_y * size)
        # head layer: the crop with a feathered ellipse around face and hair
        alpha = np.zeros((size, size), np.uint8)
        cv2.ellipse(alpha, (int(self.centre[0]), int(self.centre[1] - 0.05 * self.face)),
                    (int(0.78 * self.face), int(1.0 * self.face)), 0, 0, 360, 255, -1, cv2.LINE_AA)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 0.08 * self.face)
        self.head = np.concatenate([self.img, alpha[..., None].astype(np.float32)], -1).round().clip(0, 255).astype(np.uint8)
        self.plate = self.img  # the still pose reproduces the photo exactly
        mx, my = self.mouth
        hw = self.mouth_hw
        self.mbox = (int(max(mx - 1.7 * hw, 0)), int(max(my - 0.9 * hw, 0)), int(min(mx + 1.7 * hw, size)), int(min(my + 1.9 * hw, size)))
        x0, y0, x1, y1 = self.mbox
        self.mbase = self.img[y0:y1, x0:x1].copy()
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self._grid = (xx, yy)
        self.ebox = []
        for ex, ey in self.eyes:
            r = 0.17 * self.face
            b = (int(ex - r), int(ey - 0.7 * r), int(ex + r) + 1, int(ey + 0.6 * r) + 1)
            self.ebox.append(b)
        above = [self.img[int(ey - 0.16 * self.face):int(ey - 0.09 * self.face), int(ex - 0.06 * self.face):int(ex + 0.06 * self.face)]
                 for ex, ey in self.eyes]
        self.lid_color = np.mean([p.reshape(-1, 3).mean(0) for p in above], 0) * 0.93
        self.finish = finish(look_rng, size, strength=float(look_rng.uniform(0.2, 0.8)))
        pad = int(np.ceil(3 * self.finish.blur_sigma)) + 1
        self._mouth_box = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        self._work = self.head.copy()

    def frame(self, pose: Pose, mouth_open: float, mouth_width: float, blink: float = 0.0,
              gaze: tuple[float, float] = (0.0, 0.0), brow: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        work = self._work
        x0, y0, x1, y1 = self.mbox
        work[y0:y1, x0:x1, :3] = np.clip(self._mouth(mouth_open, mouth_width), 0, 255).astype(np.uint8)
        for (ex, ey), b in zip(self.eyes, self.ebox):
            roi = self.img[b[1]:b[3], b[0]:b[2]].copy()
            if blink > 0.02:
                self._lid(roi, ex - b[0], ey - b[1], blink)
            work[b[1]:b[3], b[0]:b[2], :3] = np.clip(roi, 0, 255).astype(np.uint8)
        h = pose_homography(pose, self.centre, self.size * 2.5)
        img = self.finish.apply(composite(self.plate, work, h))
        return img, warp_box(h, self._mouth_box, self.size)

    def _mouth(self, o: float, w: float) -> np.ndarray:
        if o < 0.01 and abs(w) < 0.01:
            return self.mbase.copy()
        xx, yy = self._grid
        mx, my = self.mouth
        hw = self.mouth_hw * (1 + 0.12 * w)
        gap = o * 0.55 * self.mouth_hw
        y1 = self.mbox[3]
        bx = np.clip(1 - ((xx - mx) / (1.6 * hw)) ** 2, 0, 1)
        below = np.clip((y1 - yy) / max(y1 - my, 1), 0, 1)
        dy = np.where(yy > my, 0.75 * gap * bx * below, -0.25 * gap * bx * np.clip(1 - (my - yy) / (0.8 * hw), 0, 1))
        dx = (xx - mx) * (-0.12 * w) * bx * np.exp(-((yy - my) / (0.5 * hw)) ** 2)
        out = cv2.remap(self.mbase, (xx - dx - self.mbox[0]).astype(np.float32), (yy - dy - self.mbox[1]).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if gap > 0.5:
            inner = np.zeros(out.shape[:2], np.uint8)
            c = (int((mx - self.mbox[0]) * 16), int((my + 0.25 * gap - self.mbox[1]) * 16))
            cv2.ellipse(inner, c, (int(hw * 0.85 * 16), int(gap * 0.5 * 16)), 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
            m = cv2.GaussianBlur(inner.astype(np.float32) / 255, (0, 0), 0.8)[..., None]
            ly = yy - self.mbox[1] - (my - self.mbox[1] - 0.25 * gap)
            teeth = np.clip(1 - ly / (0.35 * gap + 1), 0, 1)[..., None] * np.clip(1 - ((xx - mx) / (0.7 * hw)) ** 4, 0, 1)[..., None]
            col = np.array([40, 14, 16], np.float32) * (1 - teeth) + np.array([205, 198, 185], np.float32) * teeth * 0.9
            out = out * (1 - m) + col * m
        return out

    def _lid(self, roi: np.ndarray, ex: float, ey: float, blink: float) -> None:
        r = 0.075 * self.face
        h = 0.045 * self.face
        xs = np.linspace(-1, 1, 15)
        top = ey - h * 1.3 * (1 - xs ** 2) ** 0.5
        edge = ey - h * (1 - 2 * blink) * (1 - xs ** 2) ** 0.5 + h * 0.2
        pts = np.concatenate([np.stack([ex + xs * r * 1.15, top - 1], 1), np.stack([ex - xs * r * 1.15, edge[::-1]], 1)])
        mask = np.zeros(roi.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        m = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.0)[..., None] * min(1.0, blink * 1.5)
        roi *= 1 - m
        roi += m * self.lid_color
        line = np.round(np.stack([ex + xs * r * 1.15, edge], 1) * 16).astype(np.int32)
        cv2.polylines(roi, [line], False, (self.lid_color * 0.35).tolist(), max(1, int(self.face / 80)), cv2.LINE_AA, 4)
