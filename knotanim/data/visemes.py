"""Phonemes to mouth shapes, with coarticulation.

espeak-ng names phonemes with ASCII mnemonics that differ between languages ("oU", "a#", "r/",
"tS", ...). `phoneme_id` folds each mnemonic onto one fixed inventory, `PHONEMES`, so ids mean the
same in every clip and corpus. Each inventory entry has a viseme: target jaw opening (0..1),
lip width (-1 rounded .. +1 spread) and flags for what shows inside the mouth.

`viseme_track` turns timed phoneme events into smooth per-frame mouth parameters with a
dominance-weighted blend (Cohen-Massaro style): every phoneme pulls the mouth towards its target
with a weight that decays away from the phoneme's centre; lip closures (p, b, m) and labiodentals
dominate strongly so they are reached even when short, vowels blend with their neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# id 0 is silence (mouth closed), id 1 an unknown mnemonic. The rest is consonants, then vowels.
PHONEMES: tuple[str, ...] = (
    "_", "?",
    "p", "b", "m", "f", "v", "T", "D", "t", "d", "n", "s", "z", "S", "Z", "tS", "dZ",
    "k", "g", "N", "h", "l", "r", "j", "w", "x", "c", "J", "L", "ts", "dz", "C", "Q",
    "a", "A", "e", "E", "i", "I", "o", "O", "u", "U", "@", "3", "V", "y", "Y", "W", "0",
    "aI", "aU", "eI", "oU", "OI",
)
_INDEX = {p: i for i, p in enumerate(PHONEMES)}

# viseme targets: (open 0..1, width -1..1, dominance, teeth visible, tongue visible)
_CONS = {
    "p": (0.0, 0.0, 6.0, 0, 0), "b": (0.0, 0.0, 6.0, 0, 0), "m": (0.0, 0.0, 6.0, 0, 0),
    "f": (0.08, 0.1, 4.0, 1, 0), "v": (0.08, 0.1, 4.0, 1, 0),
    "T": (0.18, 0.2, 2.0, 1, 1), "D": (0.18, 0.2, 2.0, 1, 1),
    "t": (0.2, 0.2, 1.2, 1, 1), "d": (0.2, 0.2, 1.2, 1, 1), "n": (0.18, 0.15, 1.0, 1, 1),
    "s": (0.12, 0.45, 2.0, 1, 0), "z": (0.12, 0.45, 2.0, 1, 0),
    "S": (0.2, -0.5, 2.5, 1, 0), "Z": (0.2, -0.5, 2.5, 1, 0), "tS": (0.2, -0.45, 2.5, 1, 0),
    "dZ": (0.2, -0.45, 2.5, 1, 0), "k": (0.3, 0.1, 0.8, 1, 0), "g": (0.3, 0.1, 0.8, 1, 0),
    "N": (0.25, 0.1, 0.8, 1, 0), "h": (0.35, 0.0, 0.3, 1, 0), "l": (0.3, 0.1, 1.0, 1, 1),
    "r": (0.25, -0.3, 1.2, 1, 0), "j": (0.2, 0.45, 1.0, 1, 0), "w": (0.12, -0.9, 3.0, 0, 0),
    "x": (0.3, 0.0, 0.6, 1, 0), "c": (0.25, 0.2, 0.8, 1, 0), "J": (0.2, 0.2, 1.0, 1, 1),
    "L": (0.28, 0.1, 1.0, 1, 1), "ts": (0.15, 0.35, 2.0, 1, 0), "dz": (0.15, 0.35, 2.0, 1, 0),
    "C": (0.2, 0.4, 1.2, 1, 0), "Q": (0.3, 0.0, 0.5, 1, 0),
}
_VOW = {
    "a": (0.9, 0.3), "A": (1.0, 0.1), "e": (0.55, 0.6), "E": (0.65, 0.5), "i": (0.3, 0.9),
    "I": (0.35, 0.7), "o": (0.55, -0.7), "O": (0.7, -0.5), "u": (0.25, -1.0), "U": (0.3, -0.7),
    "@": (0.4, 0.0), "3": (0.45, -0.1), "V": (0.6, 0.1), "y": (0.25, -0.9), "Y": (0.35, -0.7),
    "W": (0.5, -0.5), "0": (0.7, -0.4), "aI": (0.8, 0.4), "aU": (0.8, -0.2), "eI": (0.5, 0.6),
    "oU": (0.55, -0.7), "OI": (0.65, -0.4),
}


@dataclass(frozen=True)
class Viseme:
    """Target mouth shape of one phoneme."""

    open: float  # jaw opening, 0 closed .. 1 wide open
    width: float  # lip width, -1 rounded .. +1 spread
    dominance: float  # weight in the coarticulation blend
    teeth: bool
    tongue: bool


def _build_table() -> tuple[Viseme, ...]:
    table = []
    for p in PHONEMES:
        if p in ("_", "?"):
            table.append(Viseme(0.0 if p == "_" else 0.3, 0.0, 0.8 if p == "_" else 0.3, False, False))
        elif p in _CONS:
            o, w, dom, te, to = _CONS[p]
            table.append(Viseme(o, w, dom, bool(te), bool(to)))
        else:
            o, w = _VOW[p]
            table.append(Viseme(o, w, 1.0, o > 0.4, o > 0.6))
    return tuple(table)


VISEMES: tuple[Viseme, ...] = _build_table()
_OPEN = np.array([v.open for v in VISEMES], np.float32)
_WIDTH = np.array([v.width for v in VISEMES], np.float32)
_DOM = np.array([v.dominance for v in VISEMES], np.float32)


def is_modifier(mnemonic: str) -> bool:
    """True for espeak-ng events that only modify the previous phoneme (";" palatalisation, stress)."""
    return bool(mnemonic) and all(ch in "'\",:;%=!#/-^<>|~+." for ch in mnemonic)


def phoneme_id(mnemonic: str) -> int:
    """Fold an espeak-ng phoneme mnemonic onto an index of `PHONEMES` (1 when unknown)."""
    if mnemonic.startswith("_"):
        return 0
    m = "".join(ch for i, ch in enumerate(mnemonic) if ch not in "'\",:;%=!#/-_^<>|~+." and not (i and ch.isdigit()))
    if not m:
        return 1
    for cand in (m, m[:2], m[:1], m[:1].lower()):
        if cand in _INDEX:
            return _INDEX[cand]
    if m[:1].lower() in "aeiouy":
        return _INDEX["@"]
    return 1


def viseme_track(times: np.ndarray, ids: np.ndarray, n_frames: int, fps: int, speech_end: float | None = None,
                 loudness: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-frame mouth parameters from timed phoneme events.

    times: float [N] seconds, event onsets, ascending; ids: int [N] indices into PHONEMES.
    speech_end: seconds after which the mouth is silent (closed); None = after the last event + 0.12 s.
    loudness: optional float [n_frames] in 0..1 that scales the opening (quiet speech opens less).
    Returns float32 arrays [n_frames]: mouth_open (0..1), mouth_width (-1..1), and int32 phoneme
    (the event active at each frame's centre, 0 where silent).
    """
    t_frame = (np.arange(n_frames, dtype=np.float64) + 0.5) / fps
    times = np.asarray(times, np.float64)
    ids = np.asarray(ids, np.int64)
    if len(times) == 0:
        z = np.zeros(n_frames, np.float32)
        return {"mouth_open": z, "mouth_width": z.copy(), "phoneme": np.zeros(n_frames, np.int32)}
    end = float(speech_end) if speech_end is not None else float(times[-1]) + 0.12
    # append a silence event at the end of speech, so the last phoneme has a duration
    times = np.append(times, max(end, times[-1] + 0.03))
    ids = np.append(ids, 0)
    starts, stops = times[:-1], times[1:]
    dur = np.maximum(stops - starts, 0.02)
    centres = (starts + stops) / 2
    # Sub-sample each frame (4 points) so short phonemes are not missed between frame centres.
    sub = (np.arange(n_frames * 4, dtype=np.float64) + 0.5) / (fps * 4)
    # events: all phonemes plus leading/trailing silence anchors
    c = np.concatenate([[starts[0] - 0.15], centres, [times[-1] + 0.15]])
    d = np.concatenate([[0.2], dur, [0.2]])
    k = np.concatenate([[0], ids[:-1], [0]])
    # tau: how far a phoneme's influence reaches (seconds): a fraction of its length plus a floor
    tau = 0.35 * d + 0.025
    dist = np.abs(sub[:, None] - c[None, :])
    inside = dist <= d[None, :] / 2
    w = _DOM[k][None, :] * np.exp(-np.maximum(dist - d[None, :] / 2, 0) / tau[None, :])
    w = np.where(inside, w * 4.0, w) + 1e-9
    # far outside the speech, silence wins (mouth closes in pauses and padding)
    sil = np.where((sub < starts[0] - 0.08) | (sub > times[-1] + 0.08), 50.0, 0.0)
    wsum = w.sum(1) + sil
    open_ = (w * _OPEN[k][None, :]).sum(1) / wsum
    width = (w * _WIDTH[k][None, :]).sum(1) / wsum
    open_ = open_.reshape(n_frames, 4).mean(1)
    width = width.reshape(n_frames, 4).mean(1)
    if loudness is not None:
        open_ = open_ * (0.55 + 0.45 * np.clip(loudness, 0, 1))
    idx = np.searchsorted(starts, t_frame, side="right") - 1
    active = (idx >= 0) & (t_frame < times[-1])
    phon = np.where(active, ids[np.clip(idx, 0, len(ids) - 2)], 0).astype(np.int32)
    return {"mouth_open": np.clip(open_, 0, 1).astype(np.float32),
            "mouth_width": np.clip(width, -1, 1).astype(np.float32), "phoneme": phon}
