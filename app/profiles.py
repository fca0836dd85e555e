"""The Profile box: which installed model profile to use, and the rate it was measured at.

"Auto" picks the best-quality profile that holds 25 fps on this machine, with the fastest backend
for it (knotanim.profiles.choose_profile; the backend is built for every quality step there too); a
named profile is used as asked and still measured, so the box can say the rate.
The choice (on a CPU with no rates cached: by the models' size, at once; otherwise measured, a few
seconds, then cached) runs on a worker thread, never on the UI thread; its result arrives through a
queued signal, and a Start pressed meanwhile waits for it (MainWindow). A profile that is not installed (today:
lite) is listed but disabled, with where to read about it.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel, QWidget

from knotanim.profiles import DESCRIPTIONS, PROFILE_NAMES, Choice

Chooser = Callable[[str], Choice]  # requested ("auto" | profile name) -> Choice; runs on the worker thread


def make_chooser(animator: Any, model_path: str | Path | None, *, remeasure: bool = False,
                 backend: str = "auto") -> Chooser:
    """A chooser on `animator`'s device that reuses `animator` for the profile it was loaded from.
    backend: "auto" measures the live candidates (ONNX Runtime / torch on a CPU, ...) per profile, or a
    name; the chosen backend is built for the quality ladder on the worker thread (Choice.backends)."""
    from knotanim.profiles import _load, choose_profile

    loaded = Path(model_path).resolve() if model_path is not None else None
    device = str(animator.device)
    first = {"remeasure": remeasure}  # --remeasure applies to the first measurement only

    def load(profile, dev, dtype=None):
        same = loaded is not None and profile.path.resolve() == loaded and dtype in (None, animator.dtype)
        return animator if same else _load(profile, dev, dtype)

    def choose(requested: str) -> Choice:
        again, first["remeasure"] = first["remeasure"], False
        return choose_profile(device, requested, backend=backend, remeasure=again, load=load, quick=True)
    return choose


class ProfileGroup(QGroupBox):
    """Combo box (Auto, then each profile) and the measured rate; emits `chosen(Choice)` or `failed(reason)`."""

    chosen = pyqtSignal(object)  # Choice, on the UI thread
    failed = pyqtSignal(str)  # the one-line reason a request could not be served, on the UI thread
    _finished = pyqtSignal(int, object)  # (request number, Choice or error text), from the worker

    def __init__(self, chooser: Chooser, installed: list[str], requested: str = "auto", parent: QWidget | None = None):
        super().__init__("Model profile", parent)
        self.chooser = chooser
        self.combo = QComboBox()
        self.combo.addItem("Auto (best that holds 25 fps)", "auto")
        for name in PROFILE_NAMES:
            if name in installed:
                self.combo.addItem(name, name)
                self.combo.setItemData(self.combo.count() - 1, DESCRIPTIONS[name], 3)  # Qt.ToolTipRole
            else:
                self.combo.addItem(f"{name} (not installed: docs/lite.md)" if name == "lite" else f"{name} (not installed)", name)
                self.combo.model().item(self.combo.count() - 1).setEnabled(False)
        self.rate = QLabel("")
        self.rate.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Profile", self.combo)
        form.addRow(self.rate)
        self._request = 0
        self.busy = False
        self.choice: Choice | None = None
        self._finished.connect(self._done)
        index = self.combo.findData(requested)
        self.combo.setCurrentIndex(max(0, index))
        self.combo.currentIndexChanged.connect(lambda _i: self.request(self.combo.currentData()))

    def request(self, requested: str) -> None:
        """Measure / choose on a worker thread; the newest request wins."""
        self._request += 1
        number, self.busy = self._request, True
        self.rate.setText("Measuring this machine's speed…" if requested == "auto" else f"Loading {requested}…")

        def work() -> None:
            try:
                result: Any = self.chooser(requested)
            except Exception as e:  # noqa: BLE001 - shown in the box
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                result = f"Cannot use profile {requested!r}: {text}"
            self._finished.emit(number, result)
        threading.Thread(target=work, name="knotanim-profile", daemon=True).start()

    def _done(self, number: int, result: Any) -> None:
        if number != self._request:
            return  # a newer request is running
        self.busy = False
        if isinstance(result, str):
            self.rate.setText(result)
            self.failed.emit(result)
            return
        self.choice = result
        rate = f"{result.measured_fps:.1f} frames/s" if result.measured_fps is not None else "not measured"
        notes = "".join(f"\n{n}" for n in getattr(result, "notes", []))
        self.rate.setText(f"{result.profile.name} with {result.backend_name}: {rate}\n{result.message}{notes}")
        self.chosen.emit(result)
