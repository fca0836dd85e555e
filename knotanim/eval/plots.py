"""KnotBench plots (matplotlib, Agg backend): metrics over time, per-clip series, sample strips."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

OVER_TIME = ("psnr", "ssim", "lipsync", "envelope_corr", "appearance_ssim", "flicker", "jump_ratio")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # never open a window; safe if a backend is already chosen
    import matplotlib.pyplot as plt

    return plt


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def plot_over_time(over_time: dict[str, dict[str, Any]], clip: str, path: Path) -> Path:
    """One panel per metric, one line per row, x = minutes from the start of the long stream."""
    plt = _pyplot()
    keys = [k for k in OVER_TIME if any(k in ot for ot in over_time.values())]
    colours = {row: plt.get_cmap("tab10")(i % 10) for i, row in enumerate(over_time)}
    span = max((ot["start_s"][-1] for ot in over_time.values() if ot["start_s"]), default=0.0)
    scale, unit = (60.0, "minutes") if span >= 120 else (1.0, "seconds")
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.2 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for row, ot in over_time.items():
            if key in ot:
                ax.plot(np.asarray(ot["start_s"]) / scale, ot[key], marker="o", ms=3, color=colours[row], label=row)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(f"window start ({unit})")
    handles = [plt.Line2D([], [], color=c, marker="o", ms=3) for c in colours.values()]
    fig.legend(handles, list(colours), fontsize=7, loc="upper right", ncol=min(3, len(colours)))
    fig.suptitle(f"KnotBench over time: {clip}", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_clip_series(scores: dict[str, Any], truth_open: np.ndarray | None, clip: str, path: Path) -> Path:
    """Per-frame measured openness (with the true mouth_open, rescaled) and appearance SSIM per row."""
    plt = _pyplot()
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for i, (row, s) in enumerate(scores.items()):
        colour = plt.get_cmap("tab10")(i % 10)
        a0.plot(s.series["openness"], lw=1, color=colour, label=row)
        a1.plot(s.series["appearance_ssim"], lw=1, color=colour, label=row)
    if truth_open is not None and len(truth_open):
        gt = scores["ground-truth"].series["openness"]
        lo, hi = float(np.nanmin(gt)), float(np.nanmax(gt))
        span = float(np.ptp(truth_open)) or 1.0
        a0.plot(lo + (truth_open - truth_open.min()) / span * (hi - lo), "k--", lw=1, label="true mouth_open (scaled)")
    a0.set_ylabel("measured openness")
    a1.set_ylabel("appearance SSIM")
    a1.set_xlabel("frame")
    a0.legend(fontsize=7, loc="upper right")
    a0.grid(alpha=0.3)
    a1.grid(alpha=0.3)
    fig.suptitle(f"KnotBench: {clip}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_strip(scores: dict[str, Any], clip: str, path: Path) -> Path:
    """Sample frames: one row per video (ground truth first), one column per sampled frame index."""
    plt = _pyplot()
    rows = [(r, s.samples) for r, s in scores.items() if s.samples]
    idx = sorted(rows[0][1]) if rows else []
    fig, axes = plt.subplots(len(rows), max(1, len(idx)), figsize=(1.4 * max(1, len(idx)) + 1.2, 1.5 * len(rows)),
                             squeeze=False)
    for i, (row, samples) in enumerate(rows):
        for j, t in enumerate(idx):
            ax = axes[i, j]
            if t in samples:
                ax.imshow(samples[t])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"frame {t}", fontsize=7)
        axes[i, 0].set_ylabel(row, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{clip}: ground truth vs outputs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], clips: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """All plots for a report; clips[clip][row] are `ClipScore`s. -> the PNG paths."""
    paths = []
    for clip, ot in report.get("over_time", {}).items():
        paths.append(plot_over_time(ot, clip, out_dir / f"over_time_{_slug(clip)}.png"))
    for clip, scores in clips.items():
        meta = report["clips"][clip]["meta"]
        truth_open = scores["ground-truth"].series.get("true_open") if "ground-truth" in scores else None
        if not meta.get("long"):
            paths.append(plot_clip_series(scores, truth_open, clip, out_dir / f"series_{_slug(clip)}.png"))
        paths.append(plot_strip(scores, clip, out_dir / f"strip_{_slug(clip)}.png"))
    return paths
