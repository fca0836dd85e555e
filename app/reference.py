"""ReferencePanel: choose the portrait (file dialog, drag and drop, webcam, example gallery) and its crop.

Emits reference_changed(crop) with a uint8 (size, size, 3) RGB crop whenever the portrait or the
crop square changes, and error(message) for anything the user should read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import QSize, Qt, pyqtSignal
from PyQt6.QtGui import QIcon, QPixmap
from PyQt6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                             QVBoxLayout, QWidget)

from knotanim.config import CropConfig
from knotanim.errors import KnotAnimError
from knotanim.frontends.face import detect_faces
from knotanim.frontends.image import load_image

from .cropview import CropSquare, CropView, to_qimage
from .gallery import gallery_images

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff);;All files (*)"


class ReferencePanel(QWidget):
    reference_changed = pyqtSignal(object)  # np.ndarray crop
    error = pyqtSignal(str)
    info = pyqtSignal(str)

    def __init__(self, crop_config: CropConfig, crop_size: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.crop_config, self.crop_size = crop_config, crop_size
        self.path = ""
        self.setAcceptDrops(True)
        self.open_button = QPushButton("Open portrait…")
        self.open_button.setToolTip("Open an image file (Ctrl+O); you can also drop one on the window")
        self.webcam_button = QPushButton("Webcam photo…")
        self.view = CropView()
        self.thumb = QLabel()
        self.thumb.setFixedSize(96, 96)
        self.thumb.setToolTip("What the model sees")
        self.face_label = QLabel("")
        self.face_label.setWordWrap(True)
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(64, 64))
        self.gallery.setFixedHeight(96)
        self.gallery.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.gallery.setFlow(QListWidget.Flow.LeftToRight)
        self.gallery.setWrapping(False)
        self.gallery.setToolTip("Example portraits (generated avatars)")
        for path in gallery_images():
            item = QListWidgetItem(QIcon(QPixmap(str(path))), "")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(path.stem)
            self.gallery.addItem(item)

        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.webcam_button)
        under = QHBoxLayout()
        under.addWidget(self.thumb)
        under.addWidget(self.face_label, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.view, 1)
        layout.addLayout(under)
        layout.addWidget(QLabel("Examples:"))
        layout.addWidget(self.gallery)

        self.open_button.clicked.connect(self.open_dialog)
        self.webcam_button.clicked.connect(self.open_webcam)
        self.gallery.itemClicked.connect(lambda item: self.load_path(item.data(Qt.ItemDataRole.UserRole)))
        self.view.crop_changed.connect(lambda _sq: self._emit_crop())

    # --- sources ---------------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = str(Path(self.path).parent) if self.path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open a portrait", start, IMAGE_FILTER)
        if path:
            self.load_path(path)

    def open_webcam(self) -> None:
        from .webcam import WebcamDialog

        dialog = WebcamDialog(self)
        if dialog.exec() and dialog.snapshot is not None:
            self.set_image(dialog.snapshot, "webcam photo")

    def load_path(self, path: str) -> bool:
        """Load an image file; False (and an error signal) if it cannot be used."""
        try:
            image = load_image(path)
        except KnotAnimError as e:
            self.error.emit(str(e))
            return False
        self.path = str(path)
        self.set_image(image, Path(path).name)
        return True

    def set_image(self, image: np.ndarray, name: str) -> None:
        """Detect the face, place the crop square around it (or the centre) and emit the crop."""
        try:
            faces = detect_faces(image)
        except KnotAnimError as e:
            faces = []
            self.error.emit(str(e))
        big = [f for f in faces if min(f.w, f.h) >= self.crop_config.min_face_pixels]
        if big:
            face = big[0]
            square = CropSquare.from_face(face, self.crop_config)
            note = f"{name}: face found ({face.w:.0f} px){'; ' + str(len(faces)) + ' faces, using the largest' if len(faces) > 1 else ''}."
        else:
            face, square = None, CropSquare.centre(image.shape)
            note = f"{name}: no face found — move the square onto the face (drag; scroll to resize)."
            self.info.emit(note)
        self.face_label.setText(note + " Drag or scroll to adjust.")
        self.view.set_image(image, face, square)
        self._emit_crop()

    def _emit_crop(self) -> None:
        crop = self.view.crop(self.crop_size)
        if crop is None:
            return
        self.thumb.setPixmap(QPixmap.fromImage(to_qimage(crop)).scaled(
            self.thumb.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
        self.reference_changed.emit(crop)

    def current_crop(self) -> np.ndarray | None:
        return self.view.crop(self.crop_size)

    # --- drag and drop ---------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        mime = event.mimeData()
        for url in mime.urls():
            if url.isLocalFile():
                self.load_path(url.toLocalFile())
                event.acceptProposedAction()
                return
        if mime.hasImage():
            qimage = mime.imageData().convertToFormat(to_qimage(np.zeros((1, 1, 3), np.uint8)).format())
            w, h = qimage.width(), qimage.height()
            ptr = qimage.constBits()
            ptr.setsize(qimage.sizeInBytes())
            rows = np.frombuffer(ptr, np.uint8).reshape(h, qimage.bytesPerLine())
            self.set_image(rows[:, : w * 3].reshape(h, w, 3).copy(), "dropped image")
            event.acceptProposedAction()
