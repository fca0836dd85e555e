"""The KnotBench evaluation set: a small, seeded spec; the clips are generated on demand.

Every clip comes from `knotanim.data.make_clip(..., split="eval")`: identities, voices and
languages that training never sees. Nothing bulky is stored: a spec is a few seeds and lengths,
and round-trips through JSON (`BenchSpec.save` / `BenchSpec.load`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from knotanim.errors import ConfigError

SOURCES = ("synthetic", "photo", "mixed")


@dataclass(frozen=True)
class ClipSpec:
    """One evaluation clip.

    name: row label in reports. seed: `make_clip` seed (fixes identity, voice, text, motion).
    n_frames: clip length in frames (seconds = n_frames / fps). head_motion: 0 = still head
    (the still-head subset scored with PSNR/SSIM), up to 1. source: "synthetic" | "mixed"
    (rendered faces with exact ground truth) or "photo" (the held-out real portrait: scored without
    ground truth). long: a long-horizon stream, also reported per time window (drift).
    """

    name: str
    seed: int
    n_frames: int
    head_motion: float = 0.0
    source: str = "synthetic"
    split: str = "eval"
    long: bool = False

    @property
    def has_ground_truth(self) -> bool:
        """Whether the clip's frames and params are exact targets (not a real photo)."""
        return self.source != "photo"

    @property
    def still(self) -> bool:
        """In the still-head subset: ground truth is a function of the audio alone."""
        return self.head_motion == 0.0


@dataclass(frozen=True)
class BenchSpec:
    """A whole evaluation set.

    drift_window_s: seconds per window when a long stream is reported over time (minute 1 vs the
    last minute by default; shorter streams use half their length). strip_frames: frames shown in
    each sample strip. mouth_margin: growth of the mouth box on each side (fraction of its size)
    for the openness measurement (0: the largest box; growing it hurts on moving heads).
    """

    name: str
    clips: tuple[ClipSpec, ...]
    drift_window_s: float = 60.0
    strip_frames: int = 8
    mouth_margin: float = 0.0

    def __post_init__(self) -> None:
        names = [c.name for c in self.clips]
        problems = []
        if not self.clips:
            problems.append("no clips")
        if len(set(names)) != len(names):
            problems.append("clip names repeat")
        for c in self.clips:
            if c.source not in SOURCES:
                problems.append(f"clip {c.name!r}: source must be one of {SOURCES}, not {c.source!r}")
            if c.n_frames < 3:
                problems.append(f"clip {c.name!r}: n_frames must be >= 3")
            if not 0.0 <= c.head_motion <= 1.0:
                problems.append(f"clip {c.name!r}: head_motion must be in [0, 1]")
        if self.drift_window_s <= 0 or self.strip_frames < 1:
            problems.append("drift_window_s must be > 0 and strip_frames >= 1")
        if problems:
            raise ConfigError(f"invalid KnotBench spec {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchSpec":
        if not isinstance(data, dict) or not isinstance(data.get("clips"), list):
            raise ConfigError("a KnotBench spec must be a mapping with a 'clips' list")
        try:
            clips = tuple(ClipSpec(**c) for c in data["clips"])
            rest = {k: v for k, v in data.items() if k != "clips"}
            return cls(clips=clips, **{"name": "custom", **rest})
        except TypeError as e:
            raise ConfigError(f"invalid KnotBench spec: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "BenchSpec":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read KnotBench spec {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"cannot parse KnotBench spec {path}: {e}") from None
        return cls.from_dict(data)

    def with_long(self, minutes: float, fps: int = 25) -> "BenchSpec":
        """Copy with the long-horizon stream set to `minutes` (0 removes it)."""
        clips = tuple(c for c in self.clips if not c.long)
        if minutes > 0:
            clips += (long_clip(minutes, fps),)
        return replace(self, clips=clips)


def long_clip(minutes: float, fps: int = 25) -> ClipSpec:
    """The long-horizon stream: a still head (so PSNR/SSIM stay meaningful) speaking for `minutes`."""
    return ClipSpec(name="long", seed=90001, n_frames=max(3, round(minutes * 60 * fps)), head_motion=0.0,
                    source="synthetic", long=True)


def quick_spec(n_frames: int = 50) -> BenchSpec:
    """A few short clips for CI and CPU: still head, moving head, the held-out photo (2 s each at 25 fps)."""
    return BenchSpec(
        name="knotbench-quick",
        clips=(
            ClipSpec("still-a", seed=70001, n_frames=n_frames, head_motion=0.0),
            ClipSpec("moving-a", seed=70002, n_frames=n_frames, head_motion=0.5),
            ClipSpec("grace_hopper", seed=70003, n_frames=n_frames, head_motion=0.0, source="photo"),
        ),
        drift_window_s=60.0,
        strip_frames=6,
    )


def full_spec(long_minutes: float = 10.0, clip_seconds: float = 10.0, fps: int = 25) -> BenchSpec:
    """The full set: 8 clips of `clip_seconds` (4 still-head, incl. a photo-textured face; 3 moving;
    the held-out photo) plus the long-horizon stream of `long_minutes` (0 leaves it out)."""
    n = max(3, round(clip_seconds * fps))
    clips = (
        ClipSpec("still-a", seed=70001, n_frames=n, head_motion=0.0),
        ClipSpec("still-b", seed=70011, n_frames=n, head_motion=0.0),
        ClipSpec("still-c", seed=70021, n_frames=n, head_motion=0.0),
        ClipSpec("still-mixed", seed=70031, n_frames=n, head_motion=0.0, source="mixed"),
        ClipSpec("moving-a", seed=70002, n_frames=n, head_motion=0.3),
        ClipSpec("moving-b", seed=70012, n_frames=n, head_motion=0.6),
        ClipSpec("moving-mixed", seed=70032, n_frames=n, head_motion=0.5, source="mixed"),
        ClipSpec("grace_hopper", seed=70003, n_frames=n, head_motion=0.0, source="photo"),
    )
    return BenchSpec(name="knotbench-full", clips=clips).with_long(long_minutes, fps)


def tiny_spec(n_frames: int = 20) -> BenchSpec:
    """Two very short clips (a still head and the photo) for unit tests."""
    return BenchSpec(
        name="knotbench-tiny",
        clips=(
            ClipSpec("still-a", seed=70001, n_frames=n_frames, head_motion=0.0),
            ClipSpec("grace_hopper", seed=70003, n_frames=n_frames, source="photo"),
        ),
        strip_frames=4,
    )

