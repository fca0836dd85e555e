"""Reports of the real-photo set: report.json, report.md (the table), identity and sharpness over time,
and a strip of frames (the photo, then 1 s, 10 s and 60 s into each stream) per photo."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from knotanim.eval.photo_set import RealPhoto

COLUMNS = ["photo", "row", "identity median", "identity max", "sharpness", "face found", "mouth/env r (lag)",
           "r, audio zeroed", "lip range", "jitter %", "identity first→last", "sharpness first→last"]
STRIP_HEIGHT = 160  # pixels of each strip cell


def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _row_label(r) -> str:
    return r.row if not r.model else r.model


def table_rows(results: list, photos: tuple[RealPhoto, ...]) -> list[list[str]]:
    """One line per photo and row: the two reference rows, then each model's speech stream, with the
    mouth score of its audio-zeroed stream beside it."""
    zeroed = {(r.model, r.photo): r for r in results if r.row == "audio zeroed"}
    lines = []
    for p in photos:
        for r in results:
            if r.photo != p.name or r.row == "audio zeroed":
                continue
            s = r.summary
            z = zeroed.get((r.model, r.photo))
            first, last = s["first_window"], s["last_window"]
            lines.append([
                f"{p.name} ({p.split})", _row_label(r), _f(s["identity_median"]), _f(s["identity_max"]), _f(s["sharpness"]),
                f"{100 * s['found']:.0f} %",
                "–" if s["mouth_r"] is None else f"{s['mouth_r']:.2f} ({s['mouth_lag']:+d})",
                "–" if z is None or z.summary["mouth_r"] is None else f"{z.summary['mouth_r']:.2f}",
                _f(s["lip_range"], 3), _f(s["jitter_pct"], 2),
                f"{_f(first['identity'])} → {_f(last['identity'])}", f"{_f(first['sharpness'])} → {_f(last['sharpness'])}",
            ])
    return lines


def summary_rows(results: list, photos: tuple[RealPhoto, ...]) -> list[list[str]]:
    """Per row kind (reference rows, each model): medians over the held-out photos."""
    held = {p.name for p in photos if p.split == "held-out"}
    kinds: dict[str, list] = {}
    for r in results:
        if r.photo in held and r.row != "audio zeroed":
            kinds.setdefault(_row_label(r), []).append(r)
    zeroed = {(r.model, r.photo): r for r in results if r.row == "audio zeroed"}
    out = []
    for label, rs in kinds.items():
        def med(key, rows=rs):
            vals = [x.summary[key] for x in rows if x.summary.get(key) is not None and math.isfinite(x.summary[key])]
            return float(np.median(vals)) if vals else None
        zs = [zeroed[(r.model, r.photo)] for r in rs if (r.model, r.photo) in zeroed]
        out.append([label, str(len(rs)), _f(med("identity_median")), _f(med("identity_max")), _f(med("sharpness")),
                    "–" if med("found") is None else f"{100 * med('found'):.0f} %", _f(med("mouth_r")),
                    _f(med("mouth_r", zs)) if zs else "–", _f(med("jitter_pct"), 2)])
    return out


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in lines])


def plot_over_time(results: list, photo: str, path: Path) -> Path:
    """Identity distance and sharpness (1-s medians) against time, one line per stream of `photo`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for r in results:
        if r.photo != photo:
            continue
        label = _row_label(r) + (", audio zeroed" if r.row == "audio zeroed" else "")
        for ax, key in zip(axes, ("identity", "sharpness")):
            y = np.asarray(r.per_second[key], np.float64)
            if r.row == "photo copy":  # the same frame throughout: a level, whatever the streams' length
                ax.axhline(float(np.nanmedian(y)), label=label, lw=1.0, color="black")
                continue
            ax.plot(np.arange(len(y)) + 0.5, y, label=label, lw=1.2, ls="--" if r.row == "audio zeroed" else "-")
    axes[0].axhline(0.6, color="grey", lw=0.8, ls=":")
    axes[0].set(title=f"{photo}: identity distance to the photo (0.6 = another person)", xlabel="s")
    axes[1].set(title="face sharpness / the photo's", xlabel="s")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _cell(frame: np.ndarray, region) -> np.ndarray:
    h, w = frame.shape[:2]
    if region is not None:
        x0, y0, x1, y1 = (int(max(region[0], 0)), int(max(region[1], 0)), int(min(region[2], w)), int(min(region[3], h)))
        frame = frame[y0:y1, x0:x1]
    k = STRIP_HEIGHT / frame.shape[0]
    return cv2.resize(frame, (max(1, int(frame.shape[1] * k)), STRIP_HEIGHT), interpolation=cv2.INTER_AREA)


def plot_strip(results: list, photo_image: np.ndarray, region, photo: str, path: Path) -> Path:
    """PNG: per stream of `photo` (speech rows), the photo then its frames at 1, 10 and 60 s, cropped to
    the face's search region (3x the face box; a 256 x 256 generator frame whole)."""
    rows = []
    for r in results:
        if r.photo != photo or r.row == "audio zeroed" or not r.strip:
            continue
        same = lambda f: f.shape == photo_image.shape  # noqa: E731
        cells = [_cell(photo_image, region)] + [_cell(f, region if same(f) else None) for _, f in sorted(r.strip.items())]
        labels = ["photo"] + [f"{s:g} s" for s in sorted(r.strip)]
        line = np.concatenate([np.pad(c, ((22, 4), (2, 2), (0, 0)), constant_values=255) for c in cells], 1)
        x = 2
        for c, text in zip(cells, labels):
            cv2.putText(line, f"{_row_label(r)}: {text}" if text == "photo" else text, (x + 2, 16), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (0, 0, 0), 1, cv2.LINE_AA)
            x += c.shape[1] + 4
        rows.append(line)
    if not rows:
        return path
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows], 0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def write_real_photo_report(results: list, photos: tuple[RealPhoto, ...], out: Path, plots: bool = True,
                            faces: dict | None = None, info: dict | None = None) -> dict:
    """Write out/report.json, out/report.md and (plots) over_time_<photo>.png, strip_<photo>.png; return the report."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"info": info or {},
              "photos": [{"name": p.name, "split": p.split, "source": p.source, "hard": p.hard,
                          "derivation": p.derivation} for p in photos],
              "streams": [{"model": r.model, "photo": r.photo, "row": r.row, **r.summary, "per_second": r.per_second}
                          for r in results]}
    images = []
    if plots:
        for p in photos:
            images.append(plot_over_time(results, p.name, out / f"over_time_{p.name}.png").name)
            if faces and p.name in faces:
                face = faces[p.name]
                images.append(plot_strip(results, face.image, face.region, p.name, out / f"strip_{p.name}.png").name)
    lines = table_rows(results, photos)
    about = [f"- {k}: {json.dumps(v, default=str) if not isinstance(v, str) else v}" for k, v in report["info"].items()]
    md = ["# KnotBench real-photo set", "", *about, "", markdown_table(COLUMNS, lines), "",
          "Medians over the held-out photos:", "",
          markdown_table(["row", "photos", "identity median", "identity max", "sharpness", "face found", "mouth/env r",
                          "r, audio zeroed", "jitter %"], summary_rows(results, photos)), ""]
    md += [f"![{name}]({name})" for name in images if (out / name).exists()]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float, allow_nan=True))
    report["table"] = markdown_table(COLUMNS, lines)
    return report
