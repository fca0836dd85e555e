"""CropView: the portrait with the detected face box and the model's crop square, adjustable.

Drag inside the square to move it, scroll (or drag a corner) to resize it. The square is kept in
image pixels (`CropSquare`); `crop()` samples it at the model's frame size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QPainter, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

from knotanim.config import CropConfig
from knotanim.frontends.face import FaceBox, FaceCrop, warp_to_crop

import cv2


@dataclass(frozen=True)
class CropSquare:
    """A square in image pixels: centre (cx, cy) and side, all in original-image pixels."""

    cx: float
    cy: float
    side: float

    @classmethod
    def from_face(cls, box: FaceBox, crop: CropConfig) -> "CropSquare":
        """The square CropConfig puts around a face box (as knotanim.frontends.face does)."""
        side = max(box.w, box.h) * crop.face_scale
        cx, cy = box.center
        return cls(cx, cy + (0.5 - crop.face_center_y) * side, side)

    @classmethod
    def centre(cls, shape: tuple[int, ...]) -> "CropSquare":
        h, w = shape[:2]
        return cls(w / 2, h / 2, float(min(w, h)))

    def face_crop(self, shape: tuple[int, ...], size: int) -> FaceCrop:
        s = size / self.side
        m = np.array([[s, 0.0, size / 2 - s * self.cx], [0.0, s, size / 2 - s * self.cy]])
        return FaceCrop(m, cv2.invertAffineTransform(m), size, tuple(shape[:2]))


def to_qimage(image: np.ndarray) -> QImage:
    """uint8 (H, W, 3) RGB -> QImage (a deep copy, so the array may change afterwards)."""
    a = np.ascontiguousarray(image)
    h, w = a.shape[:2]
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class CropView(QWidget):
    """Shows an image with its face box (thin) and crop square (bold); emits crop_changed(CropSquare)."""

    crop_changed = pyqtSignal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.image: np.ndarray | None = None
        self._qimage: QImage | None = None
        self.face: FaceBox | None = None
        self.square: CropSquare | None = None
        self._drag: tuple[QPointF, CropSquare] | None = None
        self.setToolTip("Drag the square to move the crop; scroll to make it larger or smaller")

    def set_image(self, image: np.ndarray, face: FaceBox | None, square: CropSquare) -> None:
        self.image, self.face, self.square = image, face, square
        self._qimage = to_qimage(image)
        self.update()

    def crop(self, size: int) -> np.ndarray | None:
        """The crop at size x size pixels (uint8 RGB), or None without an image."""
        if self.image is None or self.square is None:
            return None
        return warp_to_crop(self.image, self.square.face_crop(self.image.shape, size))

    # --- geometry ----------------------------------------------------------------------------------
    def _scale_offset(self) -> tuple[float, float, float]:
        h, w = self.image.shape[:2]
        s = min(self.width() / w, self.height() / h)
        return s, (self.width() - w * s) / 2, (self.height() - h * s) / 2

    def _to_image(self, p: QPointF) -> QPointF:
        s, ox, oy = self._scale_offset()
        return QPointF((p.x() - ox) / s, (p.y() - oy) / s)

    def _set_square(self, sq: CropSquare) -> None:
        h, w = self.image.shape[:2]
        side = float(np.clip(sq.side, 48, 2.5 * max(w, h)))
        self.square = CropSquare(float(np.clip(sq.cx, 0, w)), float(np.clip(sq.cy, 0, h)), side)
        self.update()
        self.crop_changed.emit(self.square)

    # --- events ------------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(32, 32, 36))
        if self._qimage is None:
            p.setPen(QColor(180, 180, 180))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Open a portrait, drop one here,\nor pick an example")
            return
        s, ox, oy = self._scale_offset()
        h, w = self.image.shape[:2]
        p.drawImage(QRectF(ox, oy, w * s, h * s), self._qimage)
        if self.face is not None:
            p.setPen(QPen(QColor(80, 200, 255), 1, Qt.PenStyle.DashLine))
            f = self.face
            p.drawRect(QRectF(ox + f.x * s, oy + f.y * s, f.w * s, f.h * s))
        if self.square is not None:
            q = self.square
            p.setPen(QPen(QColor(255, 190, 40), 2))
            p.drawRect(QRectF(ox + (q.cx - q.side / 2) * s, oy + (q.cy - q.side / 2) * s, q.side * s, q.side * s))

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self.square is not None and event.button() == Qt.MouseButton.LeftButton:
            self._drag = (self._to_image(event.position()), self.square)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._drag is None:
            return
        start, sq = self._drag
        now = self._to_image(event.position())
        self._set_square(CropSquare(sq.cx + now.x() - start.x(), sq.cy + now.y() - start.y(), sq.side))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        self._drag = None

    def wheelEvent(self, event) -> None:  # noqa: N802
        if self.square is None:
            return
        factor = 0.9 if event.angleDelta().y() > 0 else 1.1
        q = self.square
        self._set_square(CropSquare(q.cx, q.cy, q.side * factor))
