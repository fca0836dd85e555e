"""The bundled example portraits (generated avatars in assets/examples/gallery/)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def gallery_folder() -> Path:
    return Path(str(files("knotanim.assets"))) / "examples" / "gallery"


def gallery_images() -> list[Path]:
    """The example portraits, sorted by name (empty if the folder is missing)."""
    folder = gallery_folder()
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []
