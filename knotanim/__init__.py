"""knotanim: real-time audio-driven portrait animation with Knot Forcing."""
from knotanim.config import KnotAnimConfig, tiny_config
from knotanim.errors import KnotAnimError

__version__ = "0.1.0"

__all__ = ["KnotAnimConfig", "KnotAnimError", "KnotAnimator", "tiny_config", "__version__"]


def __getattr__(name):  # lazy: importing knotanim stays cheap (no torch) until the animator is used
    if name == "KnotAnimator":
        from knotanim.animator import KnotAnimator

        return KnotAnimator
    raise AttributeError(name)
