"""`knotanim-gui`: the desktop app. Loads the model (falling back to the CPU when the GPU is missing or
out of memory), then opens the window. A model that cannot be loaded (missing, truncated or altered
files) is reported in one line in a dialog, never as a traceback. SIGTERM / SIGINT close the window
like the close button, so a recording in progress is finalised."""
from __future__ import annotations

import argparse
import signal
import sys

from knotanim.request import add_model_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="knotanim-gui", description="Animate a portrait from your microphone, live.")
    add_model_arguments(p, flags=("model", "profile", "backend", "device", "tiny"), purpose="live")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the profiles' speed at start (ignore the cache; on a CPU the rates are used from then on)")
    p.add_argument("--image", help="portrait to open at start")
    return p.parse_args(argv)


def profile_path(args: argparse.Namespace):
    """--model, else the --profile's folder (auto: the best-quality installed; the window then measures)."""
    from knotanim.profiles import find_profile

    return args.model or find_profile(args.profile).path


def profile_name(args: argparse.Namespace) -> str | None:
    """The installed profile the model is loaded from (None with --model / --tiny: not a profile)."""
    if args.model or args.tiny:
        return None
    from knotanim.profiles import find_profile

    return find_profile(args.profile).name


def profile_group(args: argparse.Namespace, animator):
    """The window's Profile box (None with --model / --tiny: the model is fixed)."""
    if args.model or args.tiny:
        return None
    from knotanim.profiles import installed_profiles

    from .profiles import ProfileGroup, make_chooser

    chooser = make_chooser(animator, profile_path(args), remeasure=args.remeasure, backend=args.backend)
    return ProfileGroup(chooser, [p.name for p in installed_profiles()], args.profile)


def model_backends(args: argparse.Namespace, animator) -> tuple[object, list[str]]:
    """(StepBackends or None for eager torch, notes) for --model / --tiny, built before the window opens
    (a profile's backend comes with the Profile box's choice). --tiny with auto: torch, not measured."""
    if not (args.model or args.tiny) or args.backend == "torch" or (args.tiny and args.backend == "auto"):
        return None, []
    from knotanim.profiles import backend_for_model

    bc = backend_for_model(animator, args.backend, model=args.model, tiny=args.tiny, remeasure=args.remeasure,
                           progress=lambda m: print(m, file=sys.stderr, flush=True))
    return bc.backends, bc.notes + [f"backend {bc.backend.name}: {bc.fps:.1f} frames/s"]


def load_animator_with_notes(args: argparse.Namespace):
    """(animator, name, notes) from the command line; notes explain a device fallback. Raises
    KnotAnimError with a one-line reason."""
    from knotanim.animator import KnotAnimator
    from knotanim.config import tiny_config
    from knotanim.loading import load_for_live

    if args.tiny:
        anim, notes = load_for_live(lambda d: KnotAnimator.from_config(tiny_config(), device=d), args.device)
        return anim, "tiny test model", notes
    path = profile_path(args)
    anim, notes = load_for_live(lambda d: KnotAnimator.from_pretrained(path, device=d), args.device)
    return anim, (args.model or f"{path.name} profile"), notes


def load_animator(args: argparse.Namespace):
    """(animator, name) from the command line; raises KnotAnimError with a one-line reason."""
    anim, name, _ = load_animator_with_notes(args)
    return anim, name


def show_load_error(message: str) -> None:
    """The model could not be loaded: say why in a dialog (tests replace QMessageBox.critical)."""
    from PyQt6.QtWidgets import QMessageBox

    QMessageBox.critical(None, "knotanim", message)


def refuse_to_start(message: str) -> int:
    """The app cannot open: say why in one line (stderr and a dialog); returns the exit code."""
    print(f"knotanim-gui: error: {message}", file=sys.stderr)
    show_load_error(message)
    return 2


def close_on_signals(window) -> None:
    """SIGTERM / SIGINT close `window` (finalising a recording); a timer lets Python see the signal."""
    from PyQt6.QtCore import QTimer

    def handler(signum, frame):
        window.close()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            return
    timer = QTimer(window, interval=200)
    timer.timeout.connect(lambda: None)  # returns to the interpreter so the handler runs
    timer.start()


def create_window(argv: list[str] | None = None):
    """The app's window, shown, for these arguments; or an exit code (int) when it cannot open."""
    args = parse_args(argv)
    try:
        from PyQt6.QtWidgets import QApplication
    except ImportError as e:
        print(f"knotanim-gui needs PyQt6 ({e}): pip install \"knotanim[gui]\"", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("knotanim")
    from knotanim.errors import InputError, KnotAnimError
    from knotanim.loading import check_device, first_line

    try:
        check_device(args.device)
    except InputError as e:  # not a model problem: say what is wrong with the device
        reason = first_line(e)
        return refuse_to_start(reason[:1].upper() + reason[1:])  # "Unknown device 'gpu0': use auto, cpu or cuda"
    try:
        animator, name, notes = load_animator_with_notes(args)
    except KnotAnimError as e:
        return refuse_to_start(f"Cannot load the model: {first_line(e)}")
    try:
        backends, backend_notes = model_backends(args, animator)
    except KnotAnimError as e:
        return refuse_to_start(f"Cannot prepare the backend: {first_line(e)}")
    notes = notes + backend_notes
    from .window import MainWindow

    window = MainWindow(animator, model_name=name, profile=profile_name(args), profiles=profile_group(args, animator),
                        backends=backends)
    window.application = app  # a QApplication made here would be collected on return, deleting every widget
    if window.profiles is not None:
        window.profiles.request(args.profile)  # measured on a worker thread
    if notes:
        window.show_error("; ".join(notes), dialog=False)
    if args.image:
        window.reference.load_path(args.image)
    window.resize(1280, 800)
    window.show()
    return window


def main(argv: list[str] | None = None) -> int:
    window = create_window(argv)
    if isinstance(window, int):
        return window
    from PyQt6.QtWidgets import QApplication

    close_on_signals(window)
    return QApplication.instance().exec()


if __name__ == "__main__":
    sys.exit(main())
