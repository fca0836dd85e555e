"""GPU out of memory mid-stream: switch to the first fallback that can take over.

The pipeline asks `knotanim.loading.gpu_memory_fallbacks` (or LiveOptions.memory_fallbacks) for the
candidates, in order (smaller installed profiles on the same GPU, then the model on the CPU), and
`switch_after_out_of_memory` tries each: it loads it, checks that its timing matches the stream's, and
makes the new stream. A candidate that runs out of memory too, cannot be loaded or has other timing is
skipped with a reason; the note (or the error, when none is left) names every one tried.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from knotanim.errors import BackendUnavailable, KnotAnimError
from knotanim.loading import MemoryFallback, first_line, free_gpu_memory, is_out_of_memory


@dataclass
class Switched:
    animator: Any  # the fallback's KnotAnimator
    stream: Any  # its new stream
    model_name: str
    profile: str | None
    note: str  # one line for the user, e.g. "GPU out of memory with default on cuda:0: switched to lite on cuda:0"


def try_fallback(fallback: MemoryFallback, make_stream: Callable[[Any], Any],
                 timing: tuple[int, int, int]) -> tuple[Any, Any] | str:
    """(animator, stream) on `fallback`, or why it cannot be used (it ran out of memory too, its timing
    (fps, sample rate, samples per frame) differs from `timing`, or its model folder cannot be loaded).
    Other errors propagate."""
    try:
        animator = fallback.load()
        cfg = animator.config
        if (cfg.fps, cfg.audio.sample_rate, cfg.samples_per_frame) != tuple(timing):
            return f"{fallback.model_name} cannot take over ({cfg.fps} fps, {cfg.audio.sample_rate} Hz audio)"
        stream = make_stream(animator)
    except KnotAnimError as e:  # e.g. a damaged smaller profile: the next fallback may still work
        return f"{fallback.model_name} cannot be loaded ({first_line(e)})"
    except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; the rest propagates
        if not is_out_of_memory(e):
            raise
        return f"{fallback.model_name} ran out of memory too"
    return animator, stream


def switch_after_out_of_memory(fallbacks: Iterable[MemoryFallback], make_stream: Callable[[Any], Any],
                               timing: tuple[int, int, int], failed: str, reason: str) -> Switched:
    """The first of `fallbacks` that works, with the note saying what happened; BackendUnavailable (one
    line) when none does. failed: what ran out of memory ("default on cuda:0"); reason: torch's message."""
    problems: list[str] = []
    for fallback in fallbacks:
        result = try_fallback(fallback, make_stream, timing)
        if isinstance(result, str):
            problems.append(result)
            free_gpu_memory()
            continue
        animator, stream = result
        where = "the CPU (slower)" if str(animator.device) == "cpu" else str(animator.device)
        tried = "".join(f"; {p}" for p in problems)
        note = f"GPU out of memory with {failed}{tried}: switched to {fallback.model_name} on {where}"
        return Switched(animator, stream, fallback.model_name, fallback.profile, note)
    tried = "".join(f"; {p}" for p in problems)
    raise BackendUnavailable(f"GPU out of memory with {failed}{tried}; nothing left to fall back to ({reason})")
