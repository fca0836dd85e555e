"""Persistent settings (QSettings): one typed accessor per setting, defaults in one place."""
from __future__ import annotations

from typing import Any

from PyQt6.QtCore import QSettings

DEFAULTS: dict[str, Any] = {
    "reference/path": "",  # last portrait file ("" or gallery:<name>)
    "audio/input": "",  # microphone name ("" = system default)
    "audio/delayed_output": "",  # output device for the delayed microphone copy ("" = off)
    "live/head_motion": 50,  # percent, 0..100
    "live/quality": "balanced",  # "best" | "balanced" | "fast"
    "live/mirror": True,  # mirror the preview (not the outputs)
    "live/background": "keep",  # "keep" or "#rrggbb"
    "record/folder": "",  # where recordings go ("" = the user's Videos or home folder)
    "vcam/size": "1280x720",  # virtual camera frame size, pixels
    "window/geometry": None,  # QByteArray from saveGeometry()
}


class Settings:
    """Typed wrapper around a QSettings (pass your own, e.g. an INI file, in tests)."""

    def __init__(self, qsettings: QSettings | None = None):
        self.q = qsettings if qsettings is not None else QSettings("knotanim", "knotanim-gui")

    def get(self, key: str) -> Any:
        default = DEFAULTS[key]
        value = self.q.value(key, default)
        if value is None:
            return default
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            try:
                return int(value)
            except (TypeError, ValueError):
                return default
        return value

    def set(self, key: str, value: Any) -> None:
        if key not in DEFAULTS:
            raise KeyError(key)
        self.q.setValue(key, value)

    def sync(self) -> None:
        self.q.sync()
