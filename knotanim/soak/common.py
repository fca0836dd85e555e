"""What both soak modes share: the stop request, the model and portrait they stream, the run's metadata."""
from __future__ import annotations

import platform
import signal
import sys
import time

import numpy as np
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator, resolve_device
from knotanim.profiles import assets_root, cpu_name, parse_dtype


class StopRequest:
    """Why the soak was asked to stop early (a signal's name, or the wall-clock limit); None: it was not."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def on_signal(self, signum, _frame) -> None:
        self.reason = signal.Signals(signum).name


def load_animator(args) -> KnotAnimator:
    dev = resolve_device(args.device)
    if args.tiny:
        anim = KnotAnimator.from_config(tiny_config(), device=dev, seed=0)
        anim.model.randomize_zero_init(seed=1)  # outputs then depend on the inputs
        return anim
    return KnotAnimator.from_pretrained(args.model, device=dev, dtype=parse_dtype(args.dtype))


def load_reference(size: int) -> np.ndarray:
    from knotanim.frontends.image import load_image

    img = load_image(assets_root() / "examples" / "avatar.png")
    h, w = img.shape[:2]
    s = min(h, w)
    return np.ascontiguousarray(img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def say(msg: str) -> None:
    print(f"backend: {msg}", file=sys.stderr, flush=True)


def meta(args, anim: KnotAnimator) -> dict:
    cpu = cpu_name()
    info = {"command": args.command_line, "mode": args.mode,
            "model": "tiny (random, randomize_zero_init)" if args.tiny else str(args.model or "embedded default"),
            "device": str(anim.device), "dtype": str(anim.dtype).replace("torch.", ""), "torch": torch.__version__,
            "python": platform.python_version(), "machine": f"{platform.system()} {cpu}, {torch.get_num_threads()} torch threads",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if anim.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(anim.device)
    return info


