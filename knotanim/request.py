"""One model request: what `--model --profile --device --dtype --backend --steps` ask for, the same on every
command (render, live, the app, eval, bench, soak).

`add_model_arguments(parser, ...)` adds the flags with one set of choices and meanings; `ModelRequest.from_args`
reads them back as a typed, checked object. A command that has no use for a flag leaves it out (`flags=`),
so nothing is accepted and then ignored. Nothing here imports torch: `--help` stays fast.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from knotanim.config import BACKENDS
from knotanim.errors import InputError

PROFILES = ("auto", "default", "lite")
DTYPES = ("auto", "float32", "bfloat16", "float16")
FLAGS = ("model", "profile", "device", "dtype", "backend", "steps", "engine-dir", "tiny")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

_BACKEND_HELP = {
    "offline": "auto: the fastest already exported/built, else torch; compiled: torch.compile, CUDA graphs on a GPU; "
               "onnxruntime/tensorrt/aoti export on first use, see knotanim export",
    "live": "auto: the fastest measured at start, with the profile: torch.compile / TensorRT on a GPU; on a CPU eager "
            "torch, or an ONNX graph already exported; --tiny: torch. A named one is built for every quality step at "
            "start; one that cannot be built falls back to torch with a note",
}
_DTYPE_HELP = {
    "offline": "model weights' dtype (auto: float32 on a CPU, bf16 on a GPU; bfloat16 on a CPU is fast only with "
               "native bf16, AVX512-BF16 / AMX)",
    "live": "model weights' dtype (auto: float32 on a CPU, bf16 on a GPU; on a CPU with native bf16 (AVX512-BF16 / "
            "AMX) the lite profile is measured in bf16 too and the faster kept)",
}
_PROFILE_HELP = {
    "offline": "installed model profile (auto: the best-quality one installed: an offline job need not hold 25 fps; "
               "lite: docs/lite.md)",
    "live": "installed model profile (auto: the best quality that holds 25 fps here: measured at start on a GPU, "
            "chosen by size on a CPU until --remeasure, cached; lite: docs/lite.md)",
}


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not > 0")
    return value


@dataclass(frozen=True)
class ModelRequest:
    """A checked request for a model and how to run it.

    model: checkpoint folders (several for eval; empty: the profile's). profile: auto | default | lite.
    device: auto | cpu | cuda | cuda:N. dtype: auto (bf16 on a GPU, float32 on a CPU) | float32 | bfloat16 |
    float16. backend: one of knotanim.config.BACKENDS. steps: sampler steps (None: the model's). engine_dir:
    where exported graphs and engines live (None: the knotanim cache). tiny: the tiny random test model."""

    model: tuple[str, ...] = ()
    profile: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    steps: int | None = None
    engine_dir: str | None = None
    tiny: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.profile not in PROFILES:
            problems.append(f"profile must be one of {', '.join(PROFILES)}, not {self.profile!r}")
        if not _DEVICE.match(self.device):
            problems.append(f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.steps is not None and self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if problems:
            raise InputError("; ".join(problems))

    @property
    def first_model(self) -> str | None:
        return self.model[0] if self.model else None

    def torch_dtype(self):
        """The torch dtype asked for, or None for auto (the animator's default for its device)."""
        if self.dtype == "auto":
            return None
        import torch

        return getattr(torch, self.dtype)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ModelRequest":
        """Read the flags `add_model_arguments` added (missing ones keep the defaults)."""
        model = getattr(args, "model", None)
        models = tuple(model) if isinstance(model, list) else (model,) if model else ()
        dtype = getattr(args, "dtype", None) or "auto"
        backend = getattr(args, "backend", None) or "auto"
        backend = backend[0] if isinstance(backend, list) else backend  # bench: the first of those compared
        return cls(model=models, profile=getattr(args, "profile", "auto"), device=getattr(args, "device", "auto"),
                   dtype=dtype, backend=backend, steps=getattr(args, "steps", None),
                   engine_dir=getattr(args, "engine_dir", None), tiny=bool(getattr(args, "tiny", False)))


def add_model_arguments(parser, *, flags: tuple[str, ...] = FLAGS, purpose: str = "offline", backend_default: str = "auto",
                        several_models: bool = False, several_backends: bool = False,
                        steps_help: str = "sampler steps per chunk (default: the model's)"):
    """Add the model flags in `flags` to `parser` (or an argument group), with the same choices everywhere.
    purpose: "offline" or "live" (what --profile auto optimises). several_models: --model may repeat (eval).
    several_backends: --backend may repeat, default torch (bench compares them)."""
    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown model flags: {sorted(unknown)}")
    if "model" in flags:
        if several_models:
            parser.add_argument("--model", action="append", default=None, metavar="PATH",
                                help="checkpoint folder; repeat to compare models (default: the embedded default model)")
        else:
            parser.add_argument("--model", metavar="PATH", help="checkpoint folder (overrides --profile)")
    if "profile" in flags:
        parser.add_argument("--profile", choices=PROFILES, default="auto", help=_PROFILE_HELP[purpose])
    if "device" in flags:
        parser.add_argument("--device", default="auto", metavar="{auto,cpu,cuda,cuda:N}",  # checked when the model
                            help="where the model runs (auto: a CUDA GPU when there is one)")   # opens: one line
    if "dtype" in flags:
        parser.add_argument("--dtype", choices=DTYPES, default="auto", help=_DTYPE_HELP[purpose])
    if "backend" in flags and several_backends:
        parser.add_argument("--backend", choices=BACKENDS, action="append", metavar="NAME",
                            help=f"inference backend ({', '.join(BACKENDS)}; default torch, eager; {_BACKEND_HELP[purpose]}); "
                            "repeat it to compare several, each in its own process")
    elif "backend" in flags:
        parser.add_argument("--backend", choices=BACKENDS, default=backend_default,
                            help=f"inference backend (default {backend_default}; {_BACKEND_HELP[purpose]})")
    if "engine-dir" in flags:
        parser.add_argument("--engine-dir", metavar="DIR",
                            help="where exported graphs/engines live (default: the knotanim cache)")
    if "steps" in flags:
        parser.add_argument("--steps", type=positive_int, help=steps_help)
    if "tiny" in flags:
        parser.add_argument("--tiny", action="store_true", help="the tiny random test model (fast, meaningless pictures)")
    return parser
