"""Webcam snapshot dialog: live view from an OpenCV camera, a 3-2-1 countdown, then a still.

Frames are read on a capture thread into a one-slot holder; a Qt timer paints the newest one, so
a slow camera never freezes the window.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QPixmap
from PyQt6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout

from .cropview import to_qimage


class CameraReader:
    """Reads frames from camera `index` on a thread; `latest` is the newest uint8 RGB frame."""

    def __init__(self, index: int = 0):
        self.capture = cv2.VideoCapture(index)
        self.ok = bool(self.capture.isOpened())
        self.latest: np.ndarray | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="knotanim-webcam", daemon=True)
        if self.ok:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, frame = self.capture.read()
            if not ok:
                self._stop.wait(0.05)
                continue
            self.latest = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.capture.release()


class WebcamDialog(QDialog):
    """Shows the camera; "Take photo" counts down `countdown` seconds, then accepts with `.snapshot`."""

    def __init__(self, parent=None, camera_index: int = 0, countdown: int = 3):
        super().__init__(parent)
        self.setWindowTitle("Webcam snapshot")
        self.snapshot: np.ndarray | None = None
        self.reader: CameraReader | None = None
        self.remaining = 0
        self.view = QLabel("Opening the camera…")
        self.view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.view.setMinimumSize(480, 360)
        self.camera_box = QSpinBox()
        self.camera_box.setRange(0, 9)
        self.camera_box.setValue(camera_index)
        self.camera_box.setPrefix("Camera ")
        self.countdown_box = QSpinBox()
        self.countdown_box.setRange(0, 10)
        self.countdown_box.setValue(countdown)
        self.countdown_box.setSuffix(" s countdown")
        self.take = QPushButton("Take photo")
        cancel = QPushButton("Cancel")
        row = QHBoxLayout()
        for w in (self.camera_box, self.countdown_box, self.take, cancel):
            row.addWidget(w)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(row)
        self.take.clicked.connect(self.start_countdown)
        cancel.clicked.connect(self.reject)
        self.camera_box.valueChanged.connect(self.open_camera)
        self.paint_timer = QTimer(self, interval=40, timeout=self._paint)
        self.count_timer = QTimer(self, interval=1000, timeout=self._tick)
        self.open_camera(camera_index)

    def open_camera(self, index: int) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = CameraReader(index)
        if not self.reader.ok:
            self.view.setText(f"Camera {index} could not be opened.\nIs a webcam connected, and not used by another program?")
            self.take.setEnabled(False)
            self.paint_timer.stop()
        else:
            self.take.setEnabled(True)
            self.paint_timer.start()

    def start_countdown(self) -> None:
        self.remaining = self.countdown_box.value()
        self.take.setEnabled(False)
        self._tick() if self.remaining == 0 else self.count_timer.start()

    def _tick(self) -> None:
        self.remaining -= 1
        if self.remaining > 0:
            return
        self.count_timer.stop()
        if self.reader is not None and self.reader.latest is not None:
            self.snapshot = self.reader.latest.copy()
            self.accept()
        else:
            self.view.setText("No picture arrived from the camera.")
            self.take.setEnabled(True)

    def _paint(self) -> None:
        frame = self.reader.latest if self.reader is not None else None
        if frame is None:
            return
        pix = QPixmap.fromImage(to_qimage(frame)).scaled(self.view.size(), Qt.AspectRatioMode.KeepAspectRatio)
        self.view.setPixmap(pix)
        if self.count_timer.isActive():
            self.setWindowTitle(f"Webcam snapshot — {self.remaining}…")

    def done(self, result: int) -> None:  # noqa: D401 - Qt API: always release the camera
        self.paint_timer.stop()
        self.count_timer.stop()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        super().done(result)
