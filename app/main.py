"""`knotanim-gui`: the desktop app. Loads the model, then opens the window."""
from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="knotanim-gui", description="Animate a portrait from your microphone, live.")
    p.add_argument("--model", help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--tiny", action="store_true", help="use the tiny random test model (fast, meaningless pictures)")
    p.add_argument("--image", help="portrait to open at start")
    return p.parse_args(argv)


def load_animator(args: argparse.Namespace):
    """(animator, name) from the command line; raises KnotAnimError with a one-line reason."""
    from knotanim.animator import KnotAnimator
    from knotanim.config import tiny_config

    if args.tiny:
        return KnotAnimator.from_config(tiny_config(), device=args.device), "tiny test model"
    return KnotAnimator.from_pretrained(args.model, device=args.device), (args.model or "default model")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from PyQt6.QtWidgets import QApplication, QMessageBox
    except ImportError as e:
        print(f"knotanim-gui needs PyQt6 ({e}): pip install \"knotanim[gui]\"", file=sys.stderr)
        return 2
    app = QApplication(sys.argv[:1])
    app.setApplicationName("knotanim")
    from knotanim.errors import KnotAnimError

    try:
        animator, name = load_animator(args)
    except KnotAnimError as e:
        QMessageBox.critical(None, "knotanim", f"Cannot load the model: {e}")
        return 2
    from .window import MainWindow

    window = MainWindow(animator, model_name=name)
    if args.image:
        window.reference.load_path(args.image)
    window.resize(1280, 800)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
