"""The soak's instruments: the speech-like feed, memory probes, the CSV log, the checks and the plots.

Plain numpy / matplotlib; the drivers (knotanim.soak.stream, knotanim.soak.live) read like a protocol.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from knotanim.profiles import assets_root


def example_speech() -> Path:
    """The bundled speech the soak loops (assets/examples/speech.wav)."""
    return assets_root() / "examples" / "speech.wav"

# --- input ---------------------------------------------------------------------------------------
class SpeechFeed:
    """An endless, deterministic speech-like signal: the bundled speech.wav looped from random
    offsets, with random gain (0.2-1.2), random silent gaps (0-1.5 s) and a little noise floor.
    take(n) returns the next n float32 samples; nothing longer than one loop is ever held."""

    def __init__(self, sample_rate: int, seed: int = 0, path: Path | None = None):
        self.speech = read_speech(path or example_speech(), sample_rate)
        self.sr, self.rng = sample_rate, np.random.default_rng(seed)
        self._buf = np.zeros(0, np.float32)
        self.produced = 0

    def _segment(self) -> np.ndarray:
        r = self.rng
        n = self.speech.size
        start = int(r.integers(0, max(1, n // 2)))
        length = int(r.integers(n // 4, n - start + 1)) if n - start > n // 4 else n - start
        gap = np.zeros(int(r.uniform(0.0, 1.5) * self.sr), np.float32)
        seg = self.speech[start:start + length] * np.float32(r.uniform(0.2, 1.2))
        out = np.concatenate((gap, seg))
        out += (r.standard_normal(out.size) * 1e-3).astype(np.float32)
        return np.clip(out, -1.0, 1.0)

    def take(self, n: int) -> np.ndarray:
        while self._buf.size < n:
            self._buf = np.concatenate((self._buf, self._segment()))
        out, self._buf = self._buf[:n], self._buf[n:]
        self.produced += n
        return out


def read_speech(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of `path` at `sample_rate`. A 16-bit PCM WAV already at that rate (the bundled
    speech.wav) is read with the standard library's `wave`, as PyAV would decode it (s16 / 32768, channels
    averaged): the accelerator machine has no PyAV. Anything else goes through knotanim's decoder (PyAV)."""
    import wave

    try:
        with wave.open(str(path)) as w:
            if w.getframerate() == sample_rate and w.getsampwidth() == 2:
                pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / np.float32(32768.0)
                return np.ascontiguousarray(pcm.reshape(-1, w.getnchannels()).mean(axis=1, dtype=np.float32))
    except (wave.Error, EOFError):
        pass
    from knotanim.frontends.audio_io import load_audio

    return load_audio(path, sample_rate).astype(np.float32)


# --- probes --------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident set size of this process in MB (psutil if installed, else /proc/self/statm)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cuda_extra_mb(device) -> tuple[float, float]:
    """(torch.cuda.memory_reserved: the caching allocator's pool, CUDA graph pools included; device memory in use
    by every process: total - free from cudaMemGetInfo, i.e. what nvidia-smi shows, with the CUDA context,
    cuBLAS/cuDNN workspaces and anything allocated outside torch), in MB; zeros off CUDA. Neither call waits for
    the GPU, and neither needs nvidia-smi."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return 0.0, 0.0
    free, total = torch.cuda.mem_get_info(device)
    return torch.cuda.memory_reserved(device) / 2**20, (total - free) / 2**20


def cuda_mb(device) -> tuple[float, float]:
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return 0.0, 0.0
    return torch.cuda.memory_allocated(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20


# --- CSV -----------------------------------------------------------------------------------------
class CsvLog:
    """Rows appended and flushed as they come (a killed run still leaves its curves). Rows are not
    kept in memory (720 rows of dicts are ~0.6 MB, which the RSS curve would show as a creep); the
    columns are read back from the file."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields, self.count, self.last = path, fields, 0, None
        self._f = open(path, "w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=fields)
        self._w.writeheader()

    def add(self, row: dict[str, Any]) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.last = row
        self.count += 1
        self._w.writerow(row)
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def col(self, name: str) -> np.ndarray:
        with open(self.path, newline="") as f:
            return np.array([float(r[name]) for r in csv.DictReader(f)], dtype=np.float64)


# --- checks --------------------------------------------------------------------------------------
def _window(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    n = x.size
    a, b = int(n * lo), max(int(n * lo) + 1, int(n * hi))
    return x[a:b]


def memory_check(name: str, t: np.ndarray, mb: np.ndarray, warmup: float = 0.1, rel: float = 0.02,
                 abs_mb: float = 20.0) -> dict:
    """Growth after warm-up: median of the last 10% minus the median of the 10%-20% window (the
    first 10% of the run is warm-up). Pass when the growth is < rel of the baseline or < abs_mb."""
    base = float(np.median(_window(mb, warmup, warmup + 0.1)))
    last = float(np.median(_window(mb, 0.9, 1.0)))
    after = mb[int(mb.size * warmup):]
    growth = last - base
    ok = growth < max(rel * base, abs_mb) or base == 0.0 and last == 0.0
    return {"check": f"{name} growth after warm-up", "baseline_mb": round(base, 2), "final_mb": round(last, 2),
            "max_after_warmup_mb": round(float(after.max()), 2), "growth_mb": round(growth, 2),
            "growth_pct": round(100 * growth / base, 3) if base else 0.0,
            "limit": f"< {100 * rel:g}% or < {abs_mb:g} MB", "pass": bool(ok)}


def slope_check(name: str, hours: np.ndarray, y: np.ndarray, warmup: float = 0.1, limit_pct_per_h: float = 1.0) -> dict:
    """Linear fit of y (per-chunk time) against stream hours after warm-up; slope as % of the median per hour.
    Runs shorter than an hour are extrapolated (the slope is per hour of stream either way)."""
    k = int(y.size * warmup)
    h, v = hours[k:], y[k:]
    if h.size < 3 or np.ptp(h) <= 0:
        return {"check": f"{name} slope", "pass": False, "note": "too few samples"}
    slope, icpt = np.polyfit(h, v, 1)
    med = float(np.median(v))
    pct = 100 * slope / med
    return {"check": f"{name} slope", "median_ms": round(med, 4), "slope_ms_per_hour": round(float(slope), 5),
            "slope_pct_per_hour": round(float(pct), 3), "intercept_ms": round(float(icpt), 4),
            "limit": f"< {limit_pct_per_h:g}% per hour", "pass": bool(pct < limit_pct_per_h)}


def bounded_check(name: str, y: np.ndarray, warmup: float = 0.1, hard_max: float | None = None,
                  slack: float = 0.0) -> dict:
    """A queue/buffer size is bounded: its max over the run after warm-up equals its max over the
    first half after warm-up (the steady max), i.e. the second half never exceeds what was already
    seen (+ `slack`, for queues sampled at random moments), and never exceeds `hard_max`."""
    k = int(y.size * warmup)
    after = y[k:]
    half = after[: max(1, after.size // 2)]
    mx, steady = float(after.max()), float(half.max())
    ok = mx <= steady + slack and (hard_max is None or mx <= hard_max)
    out = {"check": f"{name} bounded", "max": mx, "steady_max": steady, "pass": bool(ok)}
    if slack:
        out["slack"] = slack
    if hard_max is not None:
        out["hard_max"] = hard_max
    return out


def drift_check(name: str, y: np.ndarray, factor: float = 1.5, upper_only: bool = False) -> dict:
    """Mean of the last 10% of the run vs the mean of the 10%-20% window: within `factor` either way
    (upper_only: only growth counts, e.g. latency that falls is no creep)."""
    y = y[np.isfinite(y)]
    early, late = float(np.mean(_window(y, 0.1, 0.2))), float(np.mean(_window(y, 0.9, 1.0)))
    ratio = late / early if early > 0 else float("inf") if late > 0 else 1.0
    return {"check": f"{name} drift", "mean_10_20pct": round(early, 5), "mean_last_10pct": round(late, 5),
            "ratio": round(ratio, 4), "limit": f"<= x{factor:g}" if upper_only else f"within x{factor:g}",
            "pass": bool((upper_only or 1 / factor <= ratio) and ratio <= factor)}


def write_summary(path: Path, meta: dict, checks: Iterable[dict]) -> dict:
    checks = list(checks)
    summary = {**meta, "checks": checks, "all_pass": all(c["pass"] for c in checks)}
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# --- plots ---------------------------------------------------------------------------------------
def rolling_median(y: np.ndarray, n: int) -> np.ndarray:
    n = max(1, min(n, y.size))
    pad = np.pad(y, (n // 2, n - 1 - n // 2), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(pad, n), axis=1)


def plot(path: Path, x: np.ndarray, series: list[tuple[str, np.ndarray]], xlabel: str, ylabel: str, title: str,
         fit: tuple[float, float] | None = None, roll: int | None = None, secondary: list[tuple[str, np.ndarray]] | None = None,
         ylim: tuple[float, float] | None = None, fit_unit: str = "per unit of x") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=90)
    if ylim is not None:
        ax.set_ylim(*ylim)
    for label, y in series:
        ax.plot(x, y, lw=0.7, alpha=0.6 if roll else 1.0, label=label)
        if roll:
            ax.plot(x, rolling_median(y, roll), lw=1.4, label=f"{label} (rolling median, {roll})")
    if fit is not None:
        slope, icpt = fit
        ax.plot(x, icpt + slope * x, "k--", lw=1.0, label=f"linear fit: {slope:+.4g} {fit_unit}")
    if secondary:
        ax2 = ax.twinx()
        for i, (label, y) in enumerate(secondary):
            ax2.plot(x, y, lw=0.8, ls="--", color=f"C{len(series) * (2 if roll else 1) + i}", label=label)
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
