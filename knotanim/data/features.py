"""Per-frame facial features of a synthetic portrait: eyes (lids, iris, pupil, highlight), brows, mouth.

Each frame redraws only small regions of interest (two eye+brow boxes, one mouth box) of the
head layer from their static copies, with anti-aliased sub-pixel polygons (cv2 shift=4), so
motion is smooth and cheap. Mouth shape: jaw opening lowers the lower lip (75%) and lifts the
upper (25%); lip width spreads or rounds (rounding thickens the lips); the mouth interior is dark
with upper teeth, lower teeth and tongue clipped to it.
"""
from __future__ import annotations

import cv2
import numpy as np

from knotanim.data.portrait import FaceSpec
from knotanim.data.randomize import ColorTransform

_SHIFT = 16.0


def _poly_mask(shape, pts: np.ndarray, blur: float = 0.0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts * _SHIFT).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    mf = m.astype(np.float32) * (1 / 255)
    return cv2.GaussianBlur(mf, (0, 0), blur) if blur > 0.25 else mf


def _paint(roi: np.ndarray, color, mask: np.ndarray) -> None:
    m = mask[..., None]
    roi *= 1 - m
    roi += m * np.asarray(color, np.float32)


class FeatureDrawer:
    """Draws eyes, brows and mouth of one identity into the uint8 RGBA head layer.

    head_rgba: uint8 [S, S, 4] static head (colour-transformed); overlay (glasses) is re-blended
    on top of the eye boxes. Boxes are (x0, y0, x1, y1) ints in head-canvas pixels.
    """

    def __init__(self, spec: FaceSpec, head_rgba: np.ndarray, overlay: np.ndarray, overlay_alpha: np.ndarray,
                 ct: ColorTransform) -> None:
        self.spec = spec
        s = spec.size
        self.c = {k: np.array(ct.color(getattr(spec, k)), np.float32) for k in ("iris", "sclera", "lip", "brow", "skin")}
        self.c["dark"] = np.array(ct.color((45, 14, 16)), np.float32)
        self.c["teeth"] = np.array(ct.color((228, 222, 205)), np.float32)
        self.c["tongue"] = np.array(ct.color((175, 75, 78)), np.float32)
        self.c["pupil"] = np.array(ct.color((12, 10, 10)), np.float32)
        self.c["lash"] = np.array(ct.color(np.asarray(spec.brow) * 0.5), np.float32)
        self.c["white"] = np.array(ct.color((255, 255, 255)), np.float32)

        def box(u0, v0, u1, v1):
            x0, y0 = spec.px(u0, v0)
            x1, y1 = spec.px(u1, v1)
            return (max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0), min(int(np.ceil(x1)), s), min(int(np.ceil(y1)), s))

        top = spec.eye_y - spec.brow_gap - spec.brow_thick - 0.1
        self.eye_boxes = [box(side * spec.eye_dx - spec.eye_w * 1.9, top, side * spec.eye_dx + spec.eye_w * 1.9,
                              spec.eye_y + spec.eye_h * 3.5) for side in (-1, 1)]
        hw = spec.mouth_hw * 1.45
        self.mouth_box = box(-hw, spec.mouth_y - spec.lip_u * 1.5 - 0.07, hw, spec.mouth_y + 0.24 + spec.lip_l * 1.5)
        self.base = {b: head_rgba[b[1]:b[3], b[0]:b[2], :3].astype(np.float32) for b in self.eye_boxes + [self.mouth_box]}
        self.over = {b: (overlay[b[1]:b[3], b[0]:b[2]], overlay_alpha[b[1]:b[3], b[0]:b[2], None]) for b in self.eye_boxes}
        self.has_overlay = bool(overlay_alpha.max() > 0)
        self.grids = {b: np.mgrid[0:b[3] - b[1], 0:b[2] - b[0]].astype(np.float32) for b in self.eye_boxes}
        self._last: dict = {}  # box -> (args, uint8 roi): skip redrawing unchanged features

    def draw(self, head_rgba: np.ndarray, mouth_open: float, mouth_width: float, blink: float,
             gaze: tuple[float, float], brow: float) -> None:
        """Redraw features in place. blink 0 (open)..1 (closed); gaze -1..1 (x right, y down); brow -1..1 (raise)."""
        for side, b in zip((-1, 1), self.eye_boxes):
            key = (round(blink, 4), round(gaze[0], 4), round(gaze[1], 4), round(brow, 4))
            if self._last.get(b, (None,))[0] == key:
                head_rgba[b[1]:b[3], b[0]:b[2], :3] = self._last[b][1]
                continue
            roi = self.base[b].copy()
            self._eye(roi, b, side, blink, gaze, brow)
            if self.has_overlay:
                ov, oa = self.over[b]
                roi = roi * (1 - oa) + ov * oa
            u8 = np.clip(roi, 0, 255).astype(np.uint8)
            head_rgba[b[1]:b[3], b[0]:b[2], :3] = u8
            self._last[b] = (key, u8)
        b = self.mouth_box
        key = (round(mouth_open, 4), round(mouth_width, 4))
        if self._last.get(b, (None,))[0] == key:
            head_rgba[b[1]:b[3], b[0]:b[2], :3] = self._last[b][1]
            return
        roi = self.base[b].copy()
        self._mouth(roi, b, mouth_open, mouth_width)
        u8 = np.clip(roi, 0, 255).astype(np.uint8)
        head_rgba[b[1]:b[3], b[0]:b[2], :3] = u8
        self._last[b] = (key, u8)

    def _eye(self, roi: np.ndarray, b, side: int, blink: float, gaze, brow: float) -> None:
        sp, f = self.spec, self.spec.face_px
        ex, ey = sp.px(side * sp.eye_dx, sp.eye_y)
        ex, ey = ex - b[0], ey - b[1]
        w, h = sp.eye_w * f, sp.eye_h * f
        xs = np.linspace(-1, 1, 17)
        prof = (1 - xs ** 2) ** 0.7
        tilt = 0.12 * h * xs * side  # outer corner slightly higher
        open_ = max(0.0, 1.0 - blink)
        up = ey - tilt - h * (0.15 + 0.95 * open_) * prof + h * 0.15
        lo = ey - tilt + h * (0.55 - 0.15 * (1 - open_)) * prof
        up = np.minimum(up, lo)
        px = ex + xs * w
        shape = roi.shape[:2]
        if open_ > 0.04:
            opening = _poly_mask(shape, np.concatenate([np.stack([px, up], 1), np.stack([px[::-1], lo[::-1]], 1)]))
            yy, xx = self.grids[b]
            corner = np.exp(-((xx - ex) / (w * 1.1)) ** 2)[..., None]
            eye = self.c["sclera"] * (0.72 + 0.28 * corner)
            gx, gy = ex + gaze[0] * w * 0.42, ey + gaze[1] * h * 0.25
            r = sp.iris_r * h * 1.35
            d = np.sqrt((xx - gx) ** 2 + (yy - gy) ** 2)
            iris = np.clip((r - d) + 0.5, 0, 1)[..., None]
            eye = eye * (1 - iris) + iris * self.c["iris"] * (0.55 + 0.6 * np.clip(d / r, 0, 1))[..., None]
            pupil = np.clip((0.45 * r - d) + 0.5, 0, 1)[..., None]
            eye = eye * (1 - pupil) + pupil * self.c["pupil"]
            hl = np.clip((0.22 * r - np.sqrt((xx - gx + 0.35 * r) ** 2 + (yy - gy + 0.35 * r) ** 2)) + 0.5, 0, 1)[..., None]
            eye = eye * (1 - hl * 0.9) + hl * 0.9 * self.c["white"]
            # shadow of the upper lid on the eyeball
            eye = eye * (1 - 0.35 * np.clip(1 - (yy - np.interp(xx, px, up)) / (h * 0.6 + 1e-3), 0, 1))[..., None]
            m = opening[..., None]
            roi *= 1 - m
            roi += m * eye
        lash = np.round(np.stack([px, up], 1) * _SHIFT).astype(np.int32)
        cv2.polylines(roi, [lash], False, self.c["lash"].tolist(), max(1, int(round(f / 90))), cv2.LINE_AA, 4)
        crease = np.round(np.stack([px * 0.9 + ex * 0.1, up - h * 0.55 * (0.4 + 0.6 * open_) * prof - 1], 1) * _SHIFT).astype(np.int32)
        cv2.polylines(roi, [crease], False, (self.c["skin"] * 0.72).tolist(), 1, cv2.LINE_AA, 4)
        # brow: a tapered arch above the eye, raised by `brow`
        bw = w * 1.3
        bx = ex + xs * bw + side * 0.1 * w
        by = ey - (sp.brow_gap * f + brow * 0.03 * f) - sp.brow_arch * f * (1 - xs ** 2) - tilt * 0.5
        thick = sp.brow_thick * f * (1.1 - 0.55 * ((xs * side + 1) / 2))
        pts = np.concatenate([np.stack([bx, by - thick / 2], 1), np.stack([bx[::-1], (by + thick / 2)[::-1]], 1)])
        _paint(roi, self.c["brow"], _poly_mask(shape, pts, 0.6) * 0.88)

    def _mouth(self, roi: np.ndarray, b, o: float, wdt: float) -> None:
        sp, f = self.spec, self.spec.face_px
        mx, my = sp.px(0, sp.mouth_y)
        mx, my = mx - b[0], my - b[1]
        rnd = max(0.0, -wdt)
        hw = sp.mouth_hw * f * (1 + 0.16 * wdt) * (1 - 0.08 * o)
        gap = o * 0.2 * f
        xs = np.linspace(-1, 1, 25)
        x = mx + xs * hw
        bulge = (1 - np.abs(xs) ** (2.0 - 0.6 * rnd)) ** 0.5
        curve = -sp.smile * f * xs ** 2 * (1 - 0.5 * o)
        in_up = my + curve - 0.25 * gap * bulge
        in_lo = my + curve + 0.75 * gap * bulge
        thick = (1 - xs ** 2) ** 0.6 * (1 + 0.45 * rnd)
        cupid = 1 - 0.22 * np.exp(-(xs / 0.12) ** 2) + 0.08 * np.exp(-((np.abs(xs) - 0.25) / 0.12) ** 2)
        out_up = in_up - sp.lip_u * f * thick * cupid
        out_lo = in_lo + sp.lip_l * f * thick
        shape = roi.shape[:2]
        yy = np.arange(shape[0], dtype=np.float32)[:, None]
        if gap > 0.3:
            inner = _poly_mask(shape, np.concatenate([np.stack([x, in_up], 1), np.stack([x[::-1], in_lo[::-1]], 1)]))
            mid_up, mid_lo = in_up[12], in_lo[12]
            depth = np.clip((yy - mid_up) / max(mid_lo - mid_up, 1), 0, 1)
            dark = self.c["dark"] * (0.55 + 0.45 * depth)[..., None]
            _paint(roi, dark, inner)
            teeth_h = 0.05 * f
            upper = np.clip((mid_up + teeth_h - yy) + 0.5, 0, 1) * np.ones(shape[1], np.float32)
            tx = np.clip(1 - (np.abs(np.arange(shape[1]) - mx) / (hw * 0.78)) ** 4, 0, 1)
            _paint(roi, self.c["teeth"] * 0.95, inner * upper * tx)
            lower = np.clip((yy - (mid_lo - 0.03 * f)) + 0.5, 0, 1) * np.ones(shape[1], np.float32)
            _paint(roi, self.c["teeth"] * 0.8, inner * lower * tx * 0.9)
            tongue = np.zeros(shape, np.uint8)
            cv2.ellipse(tongue, (int(mx * 16), int((mid_lo - 0.01 * f) * 16)), (int(hw * 0.6 * 16), int(max(gap * 0.35, 1) * 16)),
                        0, 0, 360, 255, -1, cv2.LINE_AA, 4)
            _paint(roi, self.c["tongue"], inner * (1 - lower) * tongue.astype(np.float32) / 255 * min(1.0, o * 2))
        lip = self.c["lip"]
        upper_lip = _poly_mask(shape, np.concatenate([np.stack([x, out_up], 1), np.stack([x[::-1], in_up[::-1]], 1)]), 0.5)
        _paint(roi, lip * 0.82, upper_lip)
        lower_lip = _poly_mask(shape, np.concatenate([np.stack([x, in_lo], 1), np.stack([x[::-1], out_lo[::-1]], 1)]), 0.5)
        hi = np.exp(-((yy - (in_lo[12] + sp.lip_l * f * 0.4)) / (sp.lip_l * f * 0.35 + 0.5)) ** 2)
        _paint(roi, lip * (1.0 + 0.18 * hi)[..., None], lower_lip)
        seam = np.round(np.stack([x, in_up], 1) * _SHIFT).astype(np.int32)
        cv2.polylines(roi, [seam], False, (lip * 0.45).tolist(), 1, cv2.LINE_AA, 4)
