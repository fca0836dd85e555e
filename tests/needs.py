"""Which Debian packages the tests can use here: `missing(name)` gives the skip reason naming the
packages to install, `require(name)` skips. Tests import it as `from needs import require` (a module of its
own: benchmarks/tests has a conftest too, and `conftest` names only one of them)."""
import functools
import importlib
import importlib.util
import shutil

import pytest


def _imports(*modules: str) -> bool:
    try:
        for m in modules:
            importlib.import_module(m)
    except (ImportError, OSError):  # OSError: sounddevice without PortAudio
        return False
    return True


def _espeak() -> bool:
    from knotanim.data.speech import espeak_available

    return espeak_available()


# name -> (the Debian packages that provide it, a probe that is True when it is there, the Python module
# that wraps it: when that is absent, the test extra is not installed and apt-get would not help)
DEBIAN_PACKAGES = {
    "espeak-ng": ("espeak-ng libespeak-ng1", _espeak, None),
    "portaudio": ("libportaudio2", lambda: _imports("sounddevice"), "sounddevice"),
    "pulseaudio": ("pulseaudio pulseaudio-utils libasound2-plugins",
                   lambda: all(shutil.which(t) for t in ("pulseaudio", "pactl", "paplay")), None),
    "qt": ("libegl1 libgl1 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3",
           lambda: _imports("PyQt6.QtGui", "PyQt6.QtWidgets", "PyQt6.QtTest"), "PyQt6"),
}


@functools.cache
def missing(name: str) -> str | None:
    """None when `name` (a DEBIAN_PACKAGES key) is usable here, else the skip reason naming its packages."""
    packages, present, module = DEBIAN_PACKAGES[name]
    if present():
        return None
    if module is not None and importlib.util.find_spec(module) is None:
        return f"needs {name}: pip install -e '.[test]' (the {module} package is not installed)"
    return f"needs {name}: apt-get install {packages}"


def require(name: str) -> None:
    """Skip the calling test, fixture or (at module level) module when `name` is missing."""
    reason = missing(name)
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)
