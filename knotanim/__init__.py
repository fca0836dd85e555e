"""knotanim: real-time audio-driven portrait animation with Knot Forcing."""
from knotanim.config import KnotAnimConfig, tiny_config
from knotanim.errors import KnotAnimError

__version__ = "0.1.0"


def _find_source_checkout_subpackages() -> None:
    """Run from a source checkout without installing (PYTHONPATH=<repository>, as on the
    accelerator machine), knotanim.app, knotanim.engines and knotanim.assets would not exist:
    pyproject.toml installs the top-level app/, engines/ and assets/ folders under those names.
    Here the repository root joins this package's search path, so the names resolve to the same
    folders. An installed copy (no pyproject.toml beside it) is left as it is."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "engines" / "__init__.py").is_file() \
            and str(root) not in __path__:
        __path__.append(str(root))


_find_source_checkout_subpackages()

__all__ = ["KnotAnimConfig", "KnotAnimError", "KnotAnimator", "tiny_config", "__version__"]


def __getattr__(name):  # lazy: importing knotanim stays cheap (no torch) until the animator is used
    if name == "KnotAnimator":
        from knotanim.animator import KnotAnimator

        return KnotAnimator
    raise AttributeError(name)
