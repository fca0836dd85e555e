"""The right-hand control groups: audio, animation, recording, virtual camera. Widgets only: the
window connects them to the live session."""
from __future__ import annotations

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (QCheckBox, QColorDialog, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                             QPlainTextEdit, QProgressBar, QPushButton, QSlider, QVBoxLayout, QWidget)

EXAMPLE_SPEECH = "Example speech (built-in file)"  # the fake microphone entry of the input list
QUALITY = {"best": ("Best (model's steps)", None), "balanced": ("Balanced (half the steps)", "half"),
           "fast": ("Fast (1 step)", 1)}
VCAM_SIZES = ("1280x720", "1920x1080", "960x540", "640x480")


class AudioGroup(QGroupBox):
    """Microphone choice with a level meter, and the delayed copy for calls."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Audio", parent)
        self.mic = QComboBox()
        self.mic.setToolTip("The microphone that drives the animation")
        self.refresh = QPushButton("↻")
        self.refresh.setFixedWidth(32)
        self.refresh.setToolTip("Look for audio devices again")
        self.meter = QProgressBar()
        self.meter.setRange(-60, 0)
        self.meter.setTextVisible(False)
        self.meter.setFixedHeight(10)
        self.meter.setToolTip("Microphone level (dBFS)")
        self.delayed = QComboBox()
        self.delayed.setToolTip("Play the microphone, delayed by the video latency, on this device "
                                "(e.g. a PulseAudio null sink your call uses as its microphone) so lips stay in sync")
        row = QHBoxLayout()
        row.addWidget(self.mic, 1)
        row.addWidget(self.refresh)
        form = QFormLayout(self)
        form.addRow("Microphone", row)
        form.addRow("Level", self.meter)
        form.addRow("Delayed copy to", self.delayed)

    def set_devices(self, inputs: list[str], outputs: list[str], current_in: str, current_out: str) -> None:
        self.mic.blockSignals(True)
        self.mic.clear()
        self.mic.addItem("System default", "")
        for name in inputs:
            self.mic.addItem(name, name)
        self.mic.addItem(EXAMPLE_SPEECH, EXAMPLE_SPEECH)
        i = self.mic.findData(current_in)
        self.mic.setCurrentIndex(max(0, i))
        self.mic.blockSignals(False)
        self.delayed.blockSignals(True)
        self.delayed.clear()
        self.delayed.addItem("Off", "")
        for name in outputs:
            self.delayed.addItem(name, name)
        self.delayed.setCurrentIndex(max(0, self.delayed.findData(current_out)))
        self.delayed.blockSignals(False)

    def set_level(self, dbfs: float) -> None:
        self.meter.setValue(int(max(-60.0, min(0.0, dbfs))))


class AnimationGroup(QGroupBox):
    """Start/stop and the look: head motion, quality preset, mirror, background."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Animation", parent)
        self.start = QPushButton("Start  (F5)")
        self.start.setCheckable(True)
        self.start.setMinimumHeight(36)
        self.motion = QSlider(Qt.Orientation.Horizontal)
        self.motion.setRange(0, 100)
        self.motion.setToolTip("Head-motion intensity")
        self.quality = QComboBox()
        for key, (label, _) in QUALITY.items():
            self.quality.addItem(label, key)
        self.quality.setToolTip("Fewer sampler steps are faster; the app also steps down by itself when too slow")
        self.mirror = QCheckBox("Mirror preview")
        self.background = QComboBox()
        self.background.addItem("Keep", "keep")
        self.background.addItem("Flat colour", "colour")
        self.colour_button = QPushButton()
        self.colour_button.setFixedWidth(40)
        self.colour = QColor("#2d6a4f")
        self._paint_colour()
        self.colour_button.clicked.connect(self.pick_colour)
        bg = QHBoxLayout()
        bg.addWidget(self.background, 1)
        bg.addWidget(self.colour_button)
        form = QFormLayout(self)
        form.addRow(self.start)
        form.addRow("Head motion", self.motion)
        form.addRow("Quality", self.quality)
        form.addRow("Background", bg)
        form.addRow(self.mirror)

    def pick_colour(self) -> None:
        colour = QColorDialog.getColor(self.colour, self, "Background colour")
        if colour.isValid():
            self.colour = colour
            self._paint_colour()
            self.background.setCurrentIndex(1)
            self.background.currentIndexChanged.emit(1)

    def _paint_colour(self) -> None:
        self.colour_button.setStyleSheet(f"background-color: {self.colour.name()};")

    def background_value(self) -> tuple[int, int, int] | None:
        if self.background.currentData() != "colour":
            return None
        return (self.colour.red(), self.colour.green(), self.colour.blue())

    def background_setting(self) -> str:
        return "keep" if self.background.currentData() != "colour" else self.colour.name()

    def apply_background_setting(self, text: str) -> None:
        if text and text != "keep" and QColor(text).isValid():
            self.colour = QColor(text)
            self._paint_colour()
            self.background.setCurrentIndex(1)
        else:
            self.background.setCurrentIndex(0)


class RecordGroup(QGroupBox):
    """Record to mp4 (video + microphone), into a chosen folder."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Recording", parent)
        self.record = QPushButton("● Record  (Ctrl+R)")
        self.record.setCheckable(True)
        self.record.setEnabled(False)
        self.folder = QPushButton("Folder…")
        self.status = QLabel("Start the animation to record")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row = QHBoxLayout()
        row.addWidget(self.record, 1)
        row.addWidget(self.folder)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.status)


class VirtualCameraGroup(QGroupBox):
    """Virtual camera toggle, size, and the diagnostics that explain what is missing."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Virtual camera", parent)
        self.enable = QCheckBox("Send to virtual camera")
        self.size = QComboBox()
        for s in VCAM_SIZES:
            self.size.addItem(s.replace("x", " × "), s)
        self.check = QPushButton("Check setup")
        self.diagnostics = QPlainTextEdit()
        self.diagnostics.setReadOnly(True)
        self.diagnostics.setMaximumHeight(120)
        self.diagnostics.setPlaceholderText("Virtual camera diagnostics appear here")
        row = QHBoxLayout()
        row.addWidget(self.enable, 1)
        row.addWidget(self.size)
        row.addWidget(self.check)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.diagnostics)

    def size_value(self) -> tuple[int, int]:
        w, h = str(self.size.currentData()).split("x")
        return int(w), int(h)
