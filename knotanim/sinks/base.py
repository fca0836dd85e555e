"""The FrameSink protocol shared by file writers (and, later, the app's recorder / virtual camera).

A sink is opened once, takes frames one at a time (uint8 HxWx3 RGB arrays, or anything with an
`.image` attribute such as `knotanim.stream.Frame`), optionally audio, and is closed once. Closing
finalises the output, also after an error or an interrupt, so whatever was written stays usable.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from knotanim.errors import OutputError


@runtime_checkable
class FrameSink(Protocol):
    """open() -> write(frame)* [+ write_audio(samples)*] -> close(); also a context manager."""

    frames_written: int

    def open(self) -> None: ...

    def write(self, frame: Any) -> None: ...

    def write_audio(self, samples: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "FrameSink": ...

    def __exit__(self, *exc: Any) -> None: ...


class SinkBase:
    """Context-manager plumbing: __enter__ opens, __exit__ closes (finalising even on errors)."""

    frames_written = 0

    def open(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def write_audio(self, samples: np.ndarray) -> None:
        """Sinks without an audio track ignore audio."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def frame_image(frame: Any) -> np.ndarray:
    """The uint8 (H, W, 3) RGB array of a frame (an array, or an object with `.image`)."""
    image = getattr(frame, "image", frame)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a frame must be uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    return image


def output_error(e: OSError, path: str | os.PathLike, action: str = "write") -> OutputError:
    """Translate an OSError raised while writing `path` into a one-line OutputError."""
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC:
        return OutputError(f"disk full while writing {path}")
    if code in (errno.EACCES, errno.EPERM):
        return OutputError(f"permission denied: cannot {action} {path}")
    if code == errno.EROFS:
        return OutputError(f"cannot {action} {path}: read-only file system")
    if code == errno.ENOENT:
        return OutputError(f"cannot {action} {path}: its folder does not exist")
    if code == errno.ENOTDIR:
        return OutputError(f"cannot {action} {path}: a part of the path is a file, not a folder")
    if code == errno.EISDIR:
        return OutputError(f"cannot {action} {path}: it is a folder")
    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return OutputError(f"cannot {action} {path}: {str(reason).splitlines()[0]}")


def check_output_file(path: str | os.PathLike) -> Path:
    """Validate that a file can be created at `path` (folder exists, is a folder, writable)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name (or use --format png for frames)")
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"permission denied: cannot write into {parent}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"permission denied: {path} exists and is read-only")
    return path


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Validate that `folder` exists or can be created (its parent exists and is writable)."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise OutputError(f"output {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"permission denied: cannot write into {folder}")
        return folder
    check_output_file(folder)  # the folder will be created like a file would be
    return folder
