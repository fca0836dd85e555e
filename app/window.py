"""MainWindow: reference on the left, live preview in the middle, controls on the right.

Everything heavy is injectable so tests and scripts can drive the real window: the animator
(e.g. a tiny model), the audio source factory (e.g. a fake microphone), the virtual camera backend
and the QSettings store.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import QStandardPaths, Qt
from PyQt6.QtGui import QAction, QKeySequence, QShortcut
from PyQt6.QtWidgets import QFileDialog, QHBoxLayout, QMainWindow, QMessageBox, QScrollArea, QVBoxLayout, QWidget

from knotanim.live.compose import parse_colour
from knotanim.live.pipeline import LiveOptions
from knotanim.live.vcam import diagnose

from .controls import QUALITY, AnimationGroup, AudioGroup, RecordGroup, VirtualCameraGroup
from .preview import PreviewPanel
from .reference import ReferencePanel
from .session import LiveSession, SourceFactory, describe
from .settings import Settings


class MainWindow(QMainWindow):
    def __init__(self, animator: Any, settings: Settings | None = None, source_factory: SourceFactory | None = None,
                 vcam_backend: str | None = None, model_name: str = "default model", monitor_level: bool = True,
                 profiles: Any = None, profile: str | None = None, backends: Any = None):
        super().__init__()
        # engines.select.StepBackends the live pipeline streams on (None: eager torch); the Profile box's
        # choice brings its own, built for every quality step on its worker thread.
        self.backends = backends
        self.animator, self.model_name = animator, model_name
        self.profiles = profiles  # app.profiles.ProfileGroup (None: the model is fixed, e.g. --model / --tiny)
        # The installed profile `animator` was loaded from (None: not a profile, e.g. --model / --tiny); the
        # Profile box changes it. The live pipeline tries the smaller installed profiles first when the GPU
        # runs out of memory (LiveOptions.profile).
        self.profile = profile
        self._start_when_chosen = False  # Start was pressed while the Profile box was still choosing
        self.settings = settings or Settings()
        self.monitor_level = monitor_level
        self.setWindowTitle("knotanim — live portrait")
        self.setMinimumSize(1024, 640)
        self.session = LiveSession(animator, source_factory, vcam_backend, self)
        cfg = animator.config
        self.reference = ReferencePanel(cfg.crop, max(cfg.frame_size, 256))
        self.preview = PreviewPanel()
        self.audio, self.animation = AudioGroup(), AnimationGroup()
        self.recording, self.vcam = RecordGroup(), VirtualCameraGroup()
        self.last_recording: Path | None = None
        self._build_layout()
        self._connect()
        self._shortcuts()
        self._load_settings()
        self.statusBar().showMessage(f"{model_name} on {animator.device} · {cfg.frame_size}² frames at {cfg.fps} fps")

    # --- construction ---------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        right = QWidget()
        col = QVBoxLayout(right)
        for group in ((self.profiles,) if self.profiles is not None else ()) + (self.audio, self.animation,
                                                                               self.recording, self.vcam):
            col.addWidget(group)
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(right)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(right.sizeHint().width() + 24)
        scroll.setMaximumWidth(460)
        self.reference.setMinimumWidth(260)
        self.reference.setMaximumWidth(380)
        central = QWidget()
        row = QHBoxLayout(central)
        row.addWidget(self.reference, 3)
        row.addWidget(self.preview, 5)
        row.addWidget(scroll, 3)
        self.setCentralWidget(central)
        menu = self.menuBar().addMenu("&File")
        for text, key, slot in (("Open portrait…", "Ctrl+O", self.reference.open_dialog),
                                ("Quit", "Ctrl+Q", self.close)):
            action = QAction(text, self)
            action.setShortcut(QKeySequence(key))
            action.triggered.connect(slot)
            menu.addAction(action)

    def _connect(self) -> None:
        r, a, s = self.reference, self.animation, self.session
        r.reference_changed.connect(self._reference_changed)
        r.error.connect(lambda m: self.show_error(m, dialog=True))
        r.info.connect(lambda m: self.statusBar().showMessage(m, 8000))
        a.start.toggled.connect(self._start_toggled)
        a.motion.valueChanged.connect(self._motion_changed)
        a.quality.currentIndexChanged.connect(self._quality_changed)
        a.mirror.toggled.connect(self._mirror_changed)
        a.background.currentIndexChanged.connect(self._background_changed)
        self.audio.mic.currentIndexChanged.connect(self._mic_changed)
        self.audio.refresh.clicked.connect(self.refresh_devices)
        self.audio.delayed.currentIndexChanged.connect(self._delayed_changed)
        self.recording.record.toggled.connect(self._record_toggled)
        self.recording.folder.clicked.connect(self._choose_folder)
        self.vcam.enable.toggled.connect(self._vcam_toggled)
        self.vcam.check.clicked.connect(lambda: self.vcam.diagnostics.setPlainText(diagnose().text))
        s.frame.connect(self.preview.view.show_frame)
        s.stats.connect(self._stats)
        s.level.connect(self.audio.set_level)
        s.error.connect(lambda m: self.show_error(m, dialog=False))
        s.stopped.connect(self._stopped)
        if self.profiles is not None:
            self.profiles.chosen.connect(self.use_choice)
            self.profiles.failed.connect(lambda _message: self._start_pending())
        s.recording_failed.connect(self._recording_failed)
        s.vcam_failed.connect(self._vcam_failed)

    def _shortcuts(self) -> None:
        QShortcut(QKeySequence("F5"), self, activated=self.animation.start.toggle)
        QShortcut(QKeySequence("Ctrl+R"), self, activated=self._record_shortcut)
        QShortcut(QKeySequence("Ctrl+Shift+V"), self, activated=self.vcam.enable.toggle)

    def _load_settings(self) -> None:
        st = self.settings
        self.animation.motion.setValue(st.get("live/head_motion"))
        self.animation.quality.setCurrentIndex(max(0, self.animation.quality.findData(st.get("live/quality"))))
        self.animation.mirror.setChecked(st.get("live/mirror"))
        self.preview.view.mirror = st.get("live/mirror")
        self.animation.apply_background_setting(st.get("live/background"))
        self.vcam.size.setCurrentIndex(max(0, self.vcam.size.findData(st.get("vcam/size"))))
        geometry = st.get("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.refresh_devices()
        path = st.get("reference/path")
        if path and Path(path).is_file():
            self.reference.load_path(path)

    def refresh_devices(self) -> None:
        from knotanim.live.sources import list_devices

        try:
            inputs = [d.name for d in list_devices("input")]
            outputs = [d.name for d in list_devices("output")]
        except Exception as e:  # noqa: BLE001 - no PortAudio: the example speech still works
            inputs, outputs = [], []
            self.statusBar().showMessage(f"No microphones: {describe(e)}", 10000)
        self.audio.set_devices(inputs, outputs, self.settings.get("audio/input"), self.settings.get("audio/delayed_output"))
        if self.monitor_level and not self.session.running:
            self.session.start_monitor(self.audio.mic.currentData() or "")

    # --- helpers ------------------------------------------------------------------------------------------
    def show_error(self, message: str, dialog: bool = False) -> None:
        """Errors always reach the window: the status bar, and a (non-blocking) dialog if asked."""
        self.statusBar().showMessage(message.splitlines()[0], 15000)
        if dialog:
            box = QMessageBox(QMessageBox.Icon.Warning, "knotanim", message, parent=self)
            box.open()

    def live_options(self) -> LiveOptions:
        return LiveOptions(head_motion=self.animation.motion.value() / 100, steps=self._steps(),
                           background=self.animation.background_value(), model_name=self.model_name,
                           profile=self.profile, output_size=max(self.animator.config.frame_size, 256),
                           backend=self.backends)

    def _steps(self) -> int | None:
        value = QUALITY[self.animation.quality.currentData()][1]
        return max(1, self.animator.config.sampler.steps // 2) if value == "half" else value

    # --- slots --------------------------------------------------------------------------------------------------
    def _reference_changed(self, crop: np.ndarray) -> None:
        self.settings.set("reference/path", self.reference.path)
        if self.session.pipeline is not None:
            self.session.pipeline.set_reference(crop)  # swapped while streaming, no restart

    def _start_toggled(self, on: bool) -> None:
        if not on:
            self._start_when_chosen = False
            self.session.stop()
            return
        crop = self.reference.current_crop()
        if crop is None:
            self.show_error("Choose a portrait first (Open portrait…, drop an image, or pick an example).", dialog=True)
            self.animation.start.setChecked(False)
            return
        if self.profiles is not None and self.profiles.busy:
            # The model loaded at start may be one the choice is about to rule out (the default model on a CPU,
            # ~1 frame/s): stream the chosen one, which takes a few seconds to pick.
            self._start_when_chosen = True
            self.preview.view.clear("Starting… (choosing the model profile)")
            return
        self.preview.view.clear("Starting…")
        if not self.session.start(crop, self.audio.mic.currentData() or "", self.live_options()):
            self.animation.start.setChecked(False)
            return
        self.animation.start.setText("Stop  (F5)")
        self.recording.record.setEnabled(True)
        self.recording.status.setText("Ready to record")
        self.statusBar().showMessage(f"Streaming from {self.audio.mic.currentText()}", 5000)
        if self.audio.delayed.currentData():
            self.session.set_delayed_output(self.audio.delayed.currentData())
        if self.vcam.enable.isChecked():
            self._vcam_toggled(True)

    def _stopped(self) -> None:
        self.animation.start.blockSignals(True)
        self.animation.start.setChecked(False)
        self.animation.start.blockSignals(False)
        self.animation.start.setText("Start  (F5)")
        self._finish_recording_ui()
        self.recording.record.setEnabled(False)
        self.preview.view.clear("Press Start (F5) to animate")
        if self.monitor_level:
            self.session.start_monitor(self.audio.mic.currentData() or "")

    def use_choice(self, choice) -> None:
        """Use a profile choice (knotanim.profiles.Choice) from the next Start on."""
        self.animator = self.session.animator = choice.animator
        self.model_name = self.profile = choice.profile.name
        self.backends = getattr(choice, "backends", None)
        when = "from the next Start" if self.session.running else "now"
        self.statusBar().showMessage(f"Profile {choice.profile.name} on {choice.animator.device} ({when}): "
                                     f"{choice.message}", 15000)
        self._start_pending()

    def _start_pending(self) -> None:
        """Start now if Start was pressed while the Profile box was choosing (and is still pressed)."""
        if self._start_when_chosen:
            self._start_when_chosen = False
            if self.animation.start.isChecked() and not self.session.running:
                self._start_toggled(True)

    def _stats(self, stats) -> None:
        rec = ""
        if self.session.recorder is not None:
            rec = f"● REC {self.session.recorder.seconds:.0f} s"
        self.preview.show_stats(stats, rec)

    def _motion_changed(self, value: int) -> None:
        self.settings.set("live/head_motion", value)
        if self.session.pipeline is not None:
            self.session.pipeline.set_head_motion(value / 100)

    def _quality_changed(self, _index: int) -> None:
        self.settings.set("live/quality", self.animation.quality.currentData())
        if self.session.pipeline is not None:
            self.session.pipeline.set_steps(self._steps())

    def _mirror_changed(self, on: bool) -> None:
        self.settings.set("live/mirror", on)
        self.preview.view.mirror = on

    def _background_changed(self, _index: int) -> None:
        self.settings.set("live/background", self.animation.background_setting())
        if self.session.pipeline is not None:
            self.session.pipeline.set_background(parse_colour(self.animation.background_value()))

    def _mic_changed(self, _index: int) -> None:
        name = self.audio.mic.currentData() or ""
        self.settings.set("audio/input", name)
        if self.session.running:
            self.statusBar().showMessage("The new microphone is used from the next Start", 6000)
        elif self.monitor_level:
            self.session.start_monitor(name)

    def _delayed_changed(self, _index: int) -> None:
        device = self.audio.delayed.currentData() or ""
        self.settings.set("audio/delayed_output", device)
        if self.session.running:
            self.session.set_delayed_output(device)

    def record_folder(self) -> Path:
        folder = self.settings.get("record/folder")
        if folder and Path(folder).is_dir():
            return Path(folder)
        videos = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.MoviesLocation)
        return Path(videos) if videos and Path(videos).is_dir() else Path.home()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Recordings folder", str(self.record_folder()))
        if folder:
            self.settings.set("record/folder", folder)

    def _record_shortcut(self) -> None:
        if self.recording.record.isEnabled():
            self.recording.record.toggle()

    def _record_toggled(self, on: bool) -> None:
        if on:
            path = self.record_folder() / time.strftime("knotanim-%Y%m%d-%H%M%S.mp4")
            if not self.session.start_recording(path):
                self.recording.record.setChecked(False)
                return
            self.recording.record.setText("■ Stop recording  (Ctrl+R)")
            self.recording.status.setText(f"Recording to {path}")
        else:
            self._finish_recording_ui()

    def _finish_recording_ui(self) -> None:
        if self.session.recorder is not None:
            rec = self.session.stop_recording()
        else:  # the stream stopped first, which finalised the recording
            rec, self.session.finished_recorder = self.session.finished_recorder, None
        self.recording.record.blockSignals(True)
        self.recording.record.setChecked(False)
        self.recording.record.blockSignals(False)
        self.recording.record.setText("● Record  (Ctrl+R)")
        if rec is not None:
            self.last_recording = rec.path
            self.recording.status.setText(f"Saved {rec.seconds:.1f} s to {rec.path}")
            self.statusBar().showMessage(f"Recording saved: {rec.path}", 10000)

    def _recording_failed(self, message: str) -> None:
        """The recording stopped by itself (e.g. disk full): the stream goes on, the file is kept."""
        self._finish_recording_ui()
        if self.session.pipeline is not None:
            self.session.pipeline.wait_closed(5.0)  # finalised before we say so
        path = self.last_recording
        self.recording.status.setText(f"Recording stopped: {message}. What was recorded is kept in {path}")
        self.show_error(f"Recording stopped: {message}", dialog=False)

    def _vcam_failed(self, message: str) -> None:
        """The virtual camera went away: stop sending, explain; preview and recording go on."""
        self.vcam.enable.blockSignals(True)
        self.vcam.enable.setChecked(False)
        self.vcam.enable.blockSignals(False)
        self.vcam.diagnostics.setPlainText(f"Virtual camera stopped: {message}\nTick the box to try again.")
        self.show_error(f"Virtual camera stopped: {message}", dialog=False)

    def _vcam_toggled(self, on: bool) -> None:
        if not on:
            self.session.stop_virtual_camera()
            return
        self.settings.set("vcam/size", self.vcam.size.currentData())
        if not self.session.running:
            self.statusBar().showMessage("The virtual camera starts with the animation", 6000)
            return
        problem = self.session.start_virtual_camera(*self.vcam.size_value())
        if problem is None:
            self.vcam.diagnostics.setPlainText(f"Sending {self.vcam.size.currentText()} to {self.session.vcam.device}")
            return
        self.vcam.diagnostics.setPlainText(problem)
        self.show_error("No virtual camera: see the diagnostics in the Virtual camera panel")
        self.vcam.enable.blockSignals(True)
        self.vcam.enable.setChecked(False)
        self.vcam.enable.blockSignals(False)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.settings.set("window/geometry", self.saveGeometry())
        self.session.shutdown()  # finalises a recording in progress
        self.settings.sync()
        super().closeEvent(event)
