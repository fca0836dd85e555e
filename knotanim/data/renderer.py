"""A synthetic portrait ready to animate: identity + static layers + per-clip look, one frame per call."""
from __future__ import annotations

import numpy as np

from knotanim.config import CropConfig
from knotanim.data.compose import Pose, composite, pose_homography, warp_box
from knotanim.data.features import FeatureDrawer
from knotanim.data.portrait import render_static, sample_face
from knotanim.data.randomize import background, color_transform, finish


class SyntheticRenderer:
    """Renders frames of one synthetic identity under one clip's domain randomisation.

    frame(pose, mouth_open, mouth_width, blink, gaze, brow) -> (uint8 [S, S, 3] RGB, mouth_box float32 [4]).
    """

    def __init__(self, identity_rng: np.random.Generator, look_rng: np.random.Generator, size: int,
                 crop: CropConfig = CropConfig()) -> None:
        self.size = size
        self.spec = sample_face(identity_rng, size, crop.face_scale, crop.face_center_y)
        layers = render_static(self.spec, identity_rng, background(identity_rng, size))
        ct = color_transform(look_rng, strength=float(look_rng.uniform(0.3, 1.2)))
        self.plate = np.ascontiguousarray(ct.image(layers["plate"]), np.float32)
        head = np.clip(ct.image(layers["head"]), 0, 255)
        alpha = layers["head_alpha"]
        self.head = np.concatenate([head, alpha[..., None] * 255], -1).round().astype(np.uint8)
        self.features = FeatureDrawer(self.spec, self.head, np.clip(ct.image(layers["overlay"]), 0, 255),
                                      layers["overlay_alpha"], ct)
        self.finish = finish(look_rng, size, strength=float(look_rng.uniform(0.3, 1.2)))
        self.focal = size * 2.5
        pad = int(np.ceil(3 * self.finish.blur_sigma)) + 1
        x0, y0, x1, y1 = self.features.mouth_box
        self._mouth_box = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        self._work = self.head.copy()

    def frame(self, pose: Pose, mouth_open: float, mouth_width: float, blink: float = 0.0,
              gaze: tuple[float, float] = (0.0, 0.0), brow: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        work = self._work
        self.features.draw(work, mouth_open, mouth_width, blink, gaze, brow)
        h = pose_homography(pose, self.spec.centre, self.focal)
        img = self.finish.apply(composite(self.plate, work, h))
        return img, warp_box(h, self._mouth_box, self.size)
