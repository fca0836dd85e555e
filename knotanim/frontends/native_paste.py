"""Paste a warp-codec frame back at the photo's own resolution.

A warp codec makes each frame as  visibility * reference(p + flow(p)) + (1 - visibility) * fill(p)
in the model's crop. The reference crop is the photo seen through the crop's affine map M, so the
same frame can be made from the photo itself: photo pixel x lies at crop pixel p = M x, and
reference(p + d) = photo(M^-1 (p + d)) = photo(x + A^-1 d) with A the linear part of M. The flow
and visibility are smooth, so they are sampled at every photo pixel from their low-resolution grid;
only the fill (mouth interior, teeth) comes at the model's resolution, upsampled. A 2-megapixel photo
keeps its own sharpness wherever the warp shows it.
"""
from __future__ import annotations

import cv2
import numpy as np

from knotanim.frontends.face import FaceCrop, Paster
from knotanim.model.warp import FrameMotion


class NativePaster:
    """original uint8 (H, W, 3) RGB and its FaceCrop -> callable(image, motion) -> uint8 (H, W, 3).

    With a FrameMotion the face region is warped from the original's own pixels; without one (a codec
    that is not a warp codec) the model-resolution crop is pasted as `Paster` does. Outside the crop
    the original is unchanged; the crop's edge is feathered (`mask`, `feather` as Paster's)."""

    def __init__(self, original: np.ndarray, face_crop: FaceCrop, mask: str = "rect", feather: float = 0.12):
        self.paster = p = Paster(original, face_crop, mask=mask, feather=feather, colour_match=False)
        self.original, self.size = p.original, face_crop.size
        ys, xs = np.mgrid[p.y0:p.y1, p.x0:p.x1].astype(np.float32)
        self.xs, self.ys = xs, ys
        self.inverse_linear = np.linalg.inv(face_crop.matrix[:, :2]).astype(np.float32)  # crop -> photo offsets
        self.mask = p.mask[:, :, None]
        self._grid: tuple[int, np.ndarray, np.ndarray] | None = None  # flow grid side and the ROI's coordinates in it

    def _grid_maps(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """The ROI pixels' coordinates in a side x side grid over the crop (pixel-centre convention)."""
        if self._grid is None or self._grid[0] != side:
            k = side / self.size
            self._grid = (side, (self.paster.map_x + 0.5) * k - 0.5, (self.paster.map_y + 0.5) * k - 0.5)
        return self._grid[1], self._grid[2]

    def __call__(self, image: np.ndarray, motion: FrameMotion | None = None) -> np.ndarray:
        if motion is None:
            return self.paster(image)
        gx, gy = self._grid_maps(motion.flow.shape[-1])
        sample = lambda a: cv2.remap(a, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # noqa: E731
        fx, fy, vis = sample(motion.flow[0]), sample(motion.flow[1]), sample(motion.visibility)
        inv = self.inverse_linear
        map_x = self.xs + inv[0, 0] * fx + inv[0, 1] * fy
        map_y = self.ys + inv[1, 0] * fx + inv[1, 1] * fy
        warped = cv2.remap(self.original, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fill = cv2.remap(motion.fill, self.paster.map1, self.paster.map2, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
        vis = vis[:, :, None]
        face = vis * warped.astype(np.float32) + (1 - vis) * fill.astype(np.float32)
        p = self.paster
        out = self.original.copy()
        roi = out[p.y0:p.y1, p.x0:p.x1].astype(np.float32)
        out[p.y0:p.y1, p.x0:p.x1] = np.clip(self.mask * face + (1 - self.mask) * roi + 0.5, 0, 255).astype(np.uint8)
        return out
