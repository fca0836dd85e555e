"""Open the desktop app offscreen, stream the example speech through a fake microphone and save a
screenshot (docs/img/app.png).

    python scripts/screenshot_app.py [--seconds 12] [--tiny] [--out docs/img/app.png]

Uses the embedded default model (assets/default) unless --tiny; settings go to a temporary file.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="seconds of streaming before the screenshot")
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of the default")
    ap.add_argument("--image", default=str(ROOT / "assets/examples/avatar.png"), help="portrait")
    ap.add_argument("--out", default=str(ROOT / "docs/img/app.png"))
    args = ap.parse_args()

    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication

    from knotanim.animator import KnotAnimator
    from knotanim.config import tiny_config
    from knotanim.frontends.audio_io import load_audio
    from knotanim.live.sources import ArraySource
    from knotanim.app.settings import Settings
    from knotanim.app.controls import EXAMPLE_SPEECH
    from knotanim.app.window import MainWindow

    app = QApplication(sys.argv[:1])
    animator = (KnotAnimator.from_config(tiny_config()) if args.tiny else KnotAnimator.from_pretrained(device="cpu"))
    speech = load_audio(ROOT / "assets/examples/speech.wav", animator.config.audio.sample_rate)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat))
        window = MainWindow(animator, settings=settings, monitor_level=False,
                            source_factory=lambda _name: ArraySource(speech, loop=True, name="speech.wav"),
                            model_name="tiny test model" if args.tiny else "default model")
        window.resize(1280, 800)
        window.show()
        window.reference.load_path(args.image)
        window.audio.mic.setCurrentIndex(window.audio.mic.findData(EXAMPLE_SPEECH))
        window.animation.start.setChecked(True)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(args.out)
        print(f"{'saved' if ok else 'FAILED to save'} {args.out}; frames painted: {window.preview.view.frames_painted}; "
              f"{window.preview.figures.text()}; {window.preview.note.text()}")
        window.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
