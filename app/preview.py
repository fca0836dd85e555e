"""PreviewWidget: paints the newest live frame (optionally mirrored) and the live figures under it."""
from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QColor, QImage, QPainter
from PyQt6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from knotanim.live.pipeline import LiveStats

from .cropview import to_qimage


class FrameView(QWidget):
    """The animated portrait, scaled to fit; `frames_painted` counts paints of new frames."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumSize(320, 320)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.mirror = True
        self.placeholder = "Press Start (F5) to animate"
        self._image: QImage | None = None
        self.frames_painted = 0
        self.last_array: np.ndarray | None = None

    def show_frame(self, image: np.ndarray) -> None:
        self.last_array = image
        q = to_qimage(image)
        self._image = q.mirrored(True, False) if self.mirror else q
        self.frames_painted += 1
        self.update()

    def clear(self, placeholder: str | None = None) -> None:
        self._image = None
        if placeholder is not None:
            self.placeholder = placeholder
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(20, 20, 24))
        if self._image is None:
            p.setPen(QColor(170, 170, 170))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            return
        w, h = self._image.width(), self._image.height()
        s = min(self.width() / w, self.height() / h)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawImage(QRectF((self.width() - w * s) / 2, (self.height() - h * s) / 2, w * s, h * s), self._image)


def stats_text(stats: LiveStats | None, recording: str = "") -> str:
    """The one-line figures under the preview."""
    if stats is None:
        return "Not streaming"
    lat = f"{stats.latency * 1000:.0f} ms" if stats.latency is not None else "—"
    parts = [f"{stats.fps_shown:.1f} frames/s shown ({stats.fps_generated:.1f} generated)",
             f"latency {lat}", f"{stats.profile} on {stats.device}" + (f" ({stats.backend})" if stats.backend != "torch" else ""),
             f"dropped {stats.dropped}", f"repeated {stats.repeated}"]
    if recording:
        parts.append(recording)
    return "  ·  ".join(parts)


class PreviewPanel(QWidget):
    """FrameView + figures line + degradation note."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = FrameView()
        self.figures = QLabel("Not streaming")
        self.figures.setWordWrap(True)
        self.figures.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #d08000;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.figures)
        layout.addWidget(self.note)

    def show_stats(self, stats: LiveStats | None, recording: str = "") -> None:
        self.figures.setText(stats_text(stats, recording))
        self.note.setText(stats.message if stats is not None else "")
