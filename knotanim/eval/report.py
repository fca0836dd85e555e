"""KnotBench reports: aggregate per-clip scores into rows, and write JSON + Markdown (+ plots).

Report dict (also report.json; NaN/inf become null there):
  benchmark, version, created, spec, info (frame_size, fps, chunk, device, seed, variants, models,
        backend: the chunk backend actually used, e.g. "torch", "compiled", "compiled->torch" (compiling
        failed: eager), "onnxruntime[CPU] (requested auto)"; backend_requested; backend_prepare_s:
        compile/export/warm-up time, not in frames/s;
        backends: one entry per (model, knot/steps variant) built),
  metrics: {key: one-line definition} (fps: names the backend),
  rows: [{name, kind, model, variant, backend, overall: {column: value}}]   kind: ground-truth |
        copy-reference | audio-zeroed | model; backend: what the row's streams ran on (model rows),
  clips: {clip: {meta: {...}, rows: {row: {metric: value}}}},
  over_time: {long clip: {row: {metric: [value per window], start_s: [...]}}},
  drift: {row: {metric: {first, last, ratio, change_pct}}}   (first vs last window of the long stream).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from knotanim.errors import OutputError
from knotanim.eval import metrics as M
from knotanim.eval.spec import BenchSpec

METRICS: dict[str, str] = {
    "lipsync": "Pearson r between mouth openness measured in the frames and ground-truth mouth_open "
               "(generated clips; 0 when undefined)",
    "lipsync_ceiling": "the same lip-sync measurement on the ground-truth frames: the best a model can score",
    "envelope_corr": "Pearson r between measured mouth openness and the audio envelope (RMS per frame)",
    "psnr": "PSNR (dB, capped at 100) of the whole frame vs ground truth, still-head clips",
    "ssim": "SSIM (luma, 11x11 Gaussian window, sigma 1.5) of the whole frame vs ground truth, still-head clips",
    "psnr_mouth": "PSNR (dB) of the mouth region (union of the clip's mouth boxes) vs ground truth, still-head clips",
    "ssim_mouth": "SSIM of the mouth region vs ground truth, still-head clips",
    "jump_ratio": "mean frame-difference energy across chunk boundaries / within chunks (1.0 = seamless)",
    "flicker": "mean |L[t+1] - 2L[t] + L[t-1]| of luma (levels) outside the mouth: temporal jitter",
    "appearance_ssim": "SSIM of the face outside the mouth box vs the reference image (identity/appearance kept)",
    "appearance_drift_pct": "change of appearance_ssim from the first to the last time window, percent",
    "fps": "frames generated per second of wall time (push_audio + finish)",
    "openness": "mean |frame - reference| / 255 over the mouth box (RGB): distance from the reference's closed mouth",
}

# Summary table: (column, header, clip filter, source scalar). Filters: gt = clips with ground
# truth, still = still-head clips with ground truth, photo = photo clips, all = every clip.
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("lipsync", "lip-sync r", "gt", "lipsync"),
    ("lipsync_ceiling", "(ceiling)", "gt", "lipsync"),
    ("envelope_corr", "env r", "all", "envelope_corr"),
    ("psnr", "PSNR", "still", "psnr"),
    ("ssim", "SSIM", "still", "ssim"),
    ("psnr_mouth", "PSNR mouth", "still", "psnr_mouth"),
    ("ssim_mouth", "SSIM mouth", "still", "ssim_mouth"),
    ("jump_ratio", "jump ratio", "all", "jump_ratio"),
    ("flicker", "flicker", "all", "flicker"),
    ("photo_envelope_corr", "photo env r", "photo", "envelope_corr"),
    ("photo_appearance_ssim", "photo app. SSIM", "photo", "appearance_ssim"),
    ("photo_appearance_drift_pct", "photo app. drift %", "photo", "appearance_drift_pct"),
    ("fps", "frames/s", "any", "fps"),
)
DRIFT_METRICS = ("psnr", "ssim", "lipsync", "envelope_corr", "appearance_ssim", "flicker", "jump_ratio")


def fps_meaning(info: dict[str, Any]) -> str:
    """The frames/s column's definition for a run: the device and the backend the streams ran on."""
    backend = info.get("backend")
    if not backend:
        return METRICS["fps"]
    text = f"{METRICS['fps']}, batch 1, on {info.get('device', '?')} with the {backend} backend"
    if info.get("backend_requested", "torch") != "torch":
        text += (f"; its compile/export/warm-up ({info.get('backend_prepare_s', 0.0):.1f} s, before the first "
                 "clip) is not included")
    return text


def _keep(meta: dict[str, Any], which: str) -> bool:
    if meta.get("long") and which != "any":
        return False  # the long stream is reported over time, not averaged into the summary
    photo = meta.get("source") == "photo"
    return {"gt": not photo, "still": not photo and meta.get("head_motion") == 0.0, "photo": photo,
            "all": True, "any": True}[which]


def _mean(values: list[float]) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def aggregate(spec: BenchSpec, rows: list[dict[str, Any]], clips: dict[str, dict[str, Any]],
              meta: dict[str, dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Build the report dict from per-clip `ClipScore`s: clips[clip][row] (see module doc)."""
    out_rows = []
    for row in rows:
        name, overall = row["name"], {}
        for col, _, which, key in COLUMNS:
            if col == "fps":
                frames = sum(c[name].scalars["frames"] for c in clips.values() if name in c and "fps" in c[name].scalars)
                secs = sum(c[name].scalars["frames"] / c[name].scalars["fps"]
                           for c in clips.values() if name in c and "fps" in c[name].scalars)
                overall[col] = frames / secs if secs > 0 else math.nan
                continue
            src = "ground-truth" if col == "lipsync_ceiling" else name
            vals = [c[src].scalars.get(key, math.nan) for cn, c in clips.items()
                    if _keep(meta[cn], which) and name in c and src in c]
            overall[col] = _mean(vals)
        out_rows.append({**row, "overall": overall})
    over_time = {cn: {r: s.over_time for r, s in c.items()} for cn, c in clips.items() if meta[cn].get("long")}
    drift: dict[str, dict[str, Any]] = {}
    for cn, per_row in over_time.items():
        for r, ot in per_row.items():
            drift[r] = {k: M.drift_ratio(ot[k][0], ot[k][-1]) for k in DRIFT_METRICS if len(ot.get(k, [])) >= 2}
            drift[r]["window_s"] = spec.drift_window_s if not ot["start_s"][1:] else ot["start_s"][1]
            drift[r]["clip"] = cn
    return {
        "benchmark": "KnotBench",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "spec": spec.to_dict(),
        "info": info,
        "metrics": {**METRICS, "fps": fps_meaning(info)},
        "rows": out_rows,
        "clips": {cn: {"meta": meta[cn], "rows": {r: dict(s.scalars) for r, s in c.items()}} for cn, c in clips.items()},
        "over_time": over_time,
        "drift": drift,
    }


def _fmt(v: Any, col: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-" if v is None or math.isnan(v) else ("inf" if v > 0 else "-inf")
    if col.startswith("psnr") or col.endswith("pct") or col == "fps":
        return f"{v:.1f}" if col != "fps" or v < 1000 else f"{v:.0f}"
    return f"{v:.3f}"


def _table(header: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    def fmt(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])


def summary_table(report: dict[str, Any], markdown: bool = False) -> str:
    """The overall table: one line per row, one column per `COLUMNS` entry that has any value."""
    cols = [c for c in COLUMNS if any(math.isfinite(r["overall"].get(c[0], math.nan)) for r in report["rows"])]
    header = ["row"] + [h for _, h, _, _ in cols]
    body = [[r["name"]] + [_fmt(r["overall"].get(c), c) for c, _, _, _ in cols] for r in report["rows"]]
    return _table(header, body, markdown)


def drift_table(report: dict[str, Any], markdown: bool = False) -> str:
    """Long-horizon drift: per row and metric, "first->last (change%)" between the first and last window."""
    if not report.get("drift"):
        return ""
    keys = [k for k in DRIFT_METRICS if any(k in d for d in report["drift"].values())]
    header = ["row"] + list(keys)
    body = []
    for r, d in report["drift"].items():
        cells = [f"{_fmt(d[k]['first'], k)}->{_fmt(d[k]['last'], k)} ({_fmt(d[k]['change_pct'], 'pct')}%)"
                 if k in d else "-" for k in keys]
        body.append([r] + cells)
    return _table(header, body, markdown)


def clip_table(report: dict[str, Any], clip: str, markdown: bool = False) -> str:
    rows = report["clips"][clip]["rows"]
    keys = [k for k in ("lipsync", "envelope_corr", "psnr", "ssim", "psnr_mouth", "ssim_mouth", "jump_ratio",
                        "flicker", "appearance_ssim", "appearance_drift_pct", "fps") if any(k in s for s in rows.values())]
    body = [[r] + [_fmt(s.get(k), k) for k in keys] for r, s in rows.items()]
    return _table(["row"] + keys, body, markdown)


def to_json_safe(x: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars/arrays by Python values (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): to_json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def markdown_report(report: dict[str, Any], images: list[str]) -> str:
    info = report["info"]
    parts = [
        f"# KnotBench: {report['spec']['name']}",
        f"{report['created']} · models: {', '.join(info['models'])} · variants: {', '.join(info['variants'])} · "
        f"{info['frame_size']} px, {info['fps']} fps, chunk {info['chunk']} · device {info['device']}"
        + (f" · backend {info['backend']}" if info.get("backend") else ""),
        "Read every number against the two reference rows: **copy-reference** (the reference image on "
        "every frame) and **audio-zeroed** (the model with silent audio). The ground-truth row is each "
        "measurement's ceiling, not a competitor.",
        "## Summary", summary_table(report, markdown=True),
    ]
    if "fps" in report["metrics"]:
        parts.append(f"frames/s: {report['metrics']['fps']}.")
    if report["drift"]:
        parts += ["## Long-horizon drift (first vs last window)", drift_table(report, markdown=True)]
    parts.append("## Per clip")
    for cn, c in report["clips"].items():
        m = c["meta"]
        parts += [f"### {cn}", f"seed {m['seed']}, {m['n_frames']} frames, {m['source']}, head_motion "
                  f"{m['head_motion']}, identity {m.get('identity') or '-'}", clip_table(report, cn, markdown=True)]
    if images:
        parts.append("## Plots")
        parts += [f"![{Path(p).stem}]({Path(p).name})" for p in images]
    parts.append("## Metric definitions")
    parts += [f"- **{k}**: {v}" for k, v in report["metrics"].items()]
    return "\n\n".join(parts) + "\n"


def write_reports(report: dict[str, Any], clips: dict[str, dict[str, Any]], out_dir: Path,
                  plots: bool = True) -> list[Path]:
    """Write report.json, report.md and (plots=True) PNGs into out_dir; -> the paths written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        images: list[Path] = []
        if plots:
            from knotanim.eval.plots import write_plots

            images = write_plots(report, clips, out_dir)
        (out_dir / "report.json").write_text(json.dumps(to_json_safe(report), indent=1), encoding="utf-8")
        (out_dir / "report.md").write_text(markdown_report(report, [p.name for p in images]), encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot write KnotBench reports to {out_dir}: {e.strerror or e}") from None
    return [out_dir / "report.json", out_dir / "report.md", *images]
