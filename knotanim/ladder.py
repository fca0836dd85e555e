"""The quality ladder: what a live stream may step down through when the machine is too slow.

A ladder is a list of `Rung`s, best first: the chosen model at its steps, then fewer sampler
steps, then (optionally) a smaller fallback model. knotanim.live.degrade walks it while streaming;
knotanim.profiles builds every rung's backend before the stream starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rung:
    """One rung: which animator to use and with how many sampler steps."""

    name: str  # shown to the user, e.g. "default, 2 steps"
    animator: Any  # KnotAnimator
    steps: int


def build_ladder(animator: Any, steps: int | None = None, fallback: Any = None, name: str = "model") -> list[Rung]:
    """Rungs for `animator` from `steps` (default: its config's) halving down to 1, then `fallback`."""
    start = int(steps or animator.config.sampler.steps)
    ladder, s = [], start
    while True:
        ladder.append(Rung(f"{name}, {s} step{'s' if s != 1 else ''}", animator, s))
        if s == 1:
            break
        s = max(1, s // 2)
    if fallback is not None:
        fb_steps = min(start, int(fallback.config.sampler.steps))
        ladder.append(Rung(f"fallback {fallback.config.name}, {fb_steps} step{'s' if fb_steps != 1 else ''}",
                              fallback, fb_steps))
    return ladder


def ladder_steps(animator: Any, steps: int | None = None) -> list[int]:
    """Every sampler step count a live stream of `animator` may use, most first: the ladder from
    `steps` and the ladder from the model's own steps (the app's quality menu starts from either:
    the model's steps, half of them, or 1). Backends are built for these at start."""
    counts = {p.steps for p in build_ladder(animator, steps)} | {p.steps for p in build_ladder(animator)}
    return sorted(counts, reverse=True)
