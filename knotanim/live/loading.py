"""Loading a model for live use: fall back (a smaller model on the GPU, then the CPU) instead of failing.

`load_for_live(load, device)` tries, in order: `load(gpu)`, then `smaller(gpu)` when given, then
`load("cpu")`. A GPU attempt counts as failed when loading it, or running one chunk of silence on
it (`probe`), raises CUDA out-of-memory; "auto" without a GPU, or "cuda" on a machine without one,
goes straight to the CPU. Every fallback is explained by a one-line note for the status line /
window, e.g. "GPU out of memory while loading the model: running on the CPU instead (slower)".
Other errors (a damaged model folder: CheckpointError) propagate unchanged.
"""
from __future__ import annotations

import gc
from typing import Any, Callable

import numpy as np


def is_out_of_memory(e: BaseException) -> bool:
    """True for torch.cuda.OutOfMemoryError and the RuntimeErrors CUDA / cuBLAS raise when memory runs out."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "cublas_status_alloc_failed" in text)


def probe_first_chunk(animator: Any) -> None:
    """Run one chunk of silence through a throwaway stream (allocates what streaming will need)."""
    cfg = animator.config
    stream = animator.stream(np.full((cfg.frame_size, cfg.frame_size, 3), 128, np.uint8), seed=0)
    stream.push_audio(np.zeros(cfg.stream.chunk * cfg.samples_per_frame, np.float32))


def _free_gpu() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_for_live(load: Callable[[str], Any], device: str | None = "auto", smaller: Callable[[str], Any] | None = None,
                  probe: Callable[[Any], None] | None = probe_first_chunk,
                  cuda_available: Callable[[], bool] | None = None) -> tuple[Any, list[str]]:
    """(animator, notes). load / smaller: device string -> KnotAnimator. probe: run on GPU attempts
    (None skips it). cuda_available: defaults to torch.cuda.is_available (tests inject one)."""
    import torch

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
            _free_gpu()
    notes.append("running on the CPU instead (slower; quality steps down automatically)")
    return load("cpu"), notes
