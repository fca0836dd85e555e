"""User-facing errors: each carries a one-line message the CLI prints without a traceback."""
from __future__ import annotations


class KnotAnimError(Exception):
    """Base class of every error caused by the user's input or environment, not by a bug.

    The CLI prints `str(error)` on one line and exits with `exit_code`; `--debug` shows the traceback.
    """

    exit_code = 2


class ConfigError(KnotAnimError):
    """A config file or value is invalid."""


class CheckpointError(KnotAnimError):
    """A model folder is missing, incomplete, altered or not a knotanim checkpoint."""


class InputError(KnotAnimError):
    """An input image or audio file cannot be used (unreadable, empty, too small, too large, ...)."""


class OutputError(KnotAnimError):
    """An output path cannot be written (missing folder, permission, disk full)."""


class BackendUnavailable(KnotAnimError):
    """A requested inference backend or device is not available on this machine."""
