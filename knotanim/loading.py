"""Loading a model for use (live, render, the app): fall back (a smaller model on the GPU, then the CPU)
instead of failing.

`load_for_live(load, device)` tries, in order: `load(gpu)`, then `smaller(gpu)` when given, then
`load("cpu")`. A GPU attempt counts as failed when loading it, or running one chunk of silence on
it (`probe`), raises CUDA out-of-memory; "auto" without a GPU, or "cuda" on a machine without one,
goes straight to the CPU. Every fallback is explained by a one-line note for the status line /
window, e.g. "GPU out of memory while loading the model: running on the CPU instead (slower)".
Other errors (a damaged model folder: CheckpointError) propagate unchanged; a device string torch
does not know is an InputError (one line).

Mid-stream (after the first chunk) the live pipeline handles out-of-memory itself: it asks
`gpu_memory_fallbacks` (or LiveOptions.memory_fallbacks) what to switch to, in order, and rebuilds
its stream on the first that works (knotanim/live/pipeline.py, LivePipeline._fall_back).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    """The exception classes torch raises when an accelerator runs out of memory: torch.OutOfMemoryError
    and torch.cuda.OutOfMemoryError (one class on recent torch, either name may be missing on others)."""
    import torch

    found = (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
    return tuple(dict.fromkeys(c for c in found if isinstance(c, type) and issubclass(c, BaseException)))


def is_out_of_memory(e: BaseException) -> bool:
    """True for torch.(cuda.)OutOfMemoryError and the RuntimeErrors CUDA / cuBLAS raise when memory runs out."""
    if isinstance(e, out_of_memory_errors()):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "cublas_status_alloc_failed" in text)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def probe_first_chunk(animator: Any) -> None:
    """Run one chunk of silence through a throwaway stream (allocates what streaming will need)."""
    cfg = animator.config
    stream = animator.stream(np.full((cfg.frame_size, cfg.frame_size, 3), 128, np.uint8), seed=0)
    stream.push_audio(np.zeros(cfg.stream.chunk * cfg.samples_per_frame, np.float32))


def free_gpu_memory() -> None:
    """Collect garbage, then hand cached CUDA blocks back to the driver (when there is a GPU)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_device(device: str) -> None:
    """InputError (one line) for a device string torch does not know ("gpu0"); "auto" is accepted."""
    import torch

    from knotanim.errors import InputError

    if device == "auto":
        return
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda") from None


def load_for_live(load: Callable[[str], Any], device: str | None = "auto", smaller: Callable[[str], Any] | None = None,
                  probe: Callable[[Any], None] | None = probe_first_chunk,
                  cuda_available: Callable[[], bool] | None = None) -> tuple[Any, list[str]]:
    """(animator, notes). load / smaller: device string -> KnotAnimator. probe: run on GPU attempts
    (None skips it). cuda_available: defaults to torch.cuda.is_available (tests inject one)."""
    import torch

    if device not in (None, "auto"):
        check_device(str(device))
    has_gpu = (cuda_available or torch.cuda.is_available)()
    notes: list[str] = []
    wanted = "cuda" if device in (None, "auto") and has_gpu else str(device or "cpu")
    if device in (None, "auto") and not has_gpu:
        wanted = "cpu"
    if wanted.startswith("cuda") and not has_gpu:
        notes.append("no CUDA GPU available: running on the CPU instead (slower)")
        wanted = "cpu"
    if wanted == "cpu" or not wanted.startswith("cuda"):
        return load(wanted), notes
    attempts = [("the model", load)] + ([("the smaller model", smaller)] if smaller is not None else [])
    for label, loader in attempts:
        stage = "loading"
        anim = None
        try:
            anim = loader(wanted)
            stage = "running the first chunk of"
            if probe is not None:
                probe(anim)
            if notes:
                notes.append(f"using {label} on the GPU")
            return anim, notes
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; the rest propagates
            if not is_out_of_memory(e):
                raise
            notes.append(f"GPU out of memory while {stage} {label}")
            del anim
            free_gpu_memory()
    notes.append("running on the CPU instead (slower; quality steps down automatically)")
    return load("cpu"), notes


# --- out of memory mid-stream -------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryFallback:
    """What a live stream switches to when its GPU runs out of memory mid-stream."""

    model_name: str  # the model as messages and the quality ladder name it ("lite", "default", ...)
    profile: str | None  # the installed profile it is (None: not a profile, e.g. --model / --tiny)
    load: Callable[[], Any]  # -> KnotAnimator; called on the inference thread when it is needed


def animator_on_cpu(animator: Any) -> Any:
    """A float32 CPU copy of `animator` (same config and weights). The weights are copied tensor by
    tensor to host memory, so nothing more is allocated on the GPU that just ran out of memory."""
    import torch

    from knotanim.animator import KnotAnimator
    from knotanim.model.codec import build_autoencoder
    from knotanim.model.dit import KnotDiT

    cfg = animator.config
    with torch.random.fork_rng(devices=[]):  # building initialises random weights: leave the caller's RNG alone
        model, autoencoder = KnotDiT(cfg), build_autoencoder(cfg.autoencoder)
    for target, source in ((model, animator.model), (autoencoder, animator.autoencoder)):
        target.load_state_dict({k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                                for k, v in source.state_dict().items()})
    cpu = torch.device("cpu")
    return KnotAnimator(cfg, model.to(cpu, torch.float32), autoencoder.to(cpu), cpu, torch.float32)


def _load_profile(path: Any, device: Any) -> Any:
    from knotanim.animator import KnotAnimator

    return KnotAnimator.from_pretrained(path, device=device)


def gpu_memory_fallbacks(animator: Any, model_name: str, profile: str | None, *, profiles: list | None = None,
                         load_profile: Callable[[Any, Any], Any] = _load_profile) -> list[MemoryFallback]:
    """In order: every installed profile smaller than `profile` on `animator`'s GPU, then the model
    that ran out of memory on the CPU. Nothing for an animator that is not on a CUDA GPU.
    profiles: knotanim.profiles.installed_profiles() unless given; load_profile(path, device) loads one."""
    import torch

    from knotanim.profiles import installed_profiles

    device = torch.device(getattr(animator, "device", "cpu"))
    if device.type != "cuda":
        return []
    installed = installed_profiles() if profiles is None else profiles
    names = [p.name for p in installed]
    smaller = installed[names.index(profile) + 1:] if profile in names else []
    fallbacks = [MemoryFallback(p.name, p.name, lambda p=p: load_profile(p.path, device)) for p in smaller]
    fallbacks.append(MemoryFallback(model_name, profile, lambda: animator_on_cpu(animator)))
    return fallbacks
