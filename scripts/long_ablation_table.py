"""Merge KnotBench reports that each scored some rows of the same long stream (`knotanim eval
--reference-rows`, scripts/device_long_ablation.sh) into one Markdown table: the whole stream per row,
then each row's first window against its last (drift).

    python scripts/long_ablation_table.py /tmp/long_ablation/*/report.json [--plot over_time.png]

--plot also draws every row's long-stream metrics over time in one figure (knotanim.eval.plots).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from knotanim.eval.report import clip_table, drift_table


def merge(reports: list[dict]) -> dict:
    """One report-shaped dict holding every row of `clip` from all reports (the first report wins a repeat)."""
    specs = {json.dumps(r["spec"], sort_keys=True) for r in reports}
    if len(specs) != 1:
        raise SystemExit("long_ablation_table: the reports were made with different KnotBench specs")
    clips: dict[str, dict] = {}
    drift: dict[str, dict] = {}
    over_time: dict[str, dict] = {}
    for r in reports:
        for cn, per_row in r.get("over_time", {}).items():
            for name, ot in per_row.items():
                over_time.setdefault(cn, {}).setdefault(name, ot)
        for cn, c in r["clips"].items():
            rows = clips.setdefault(cn, {"rows": {}})["rows"]
            for name, scalars in c["rows"].items():
                rows.setdefault(name, scalars)
        for name, d in r.get("drift", {}).items():
            drift.setdefault(name, d)
    return {"clips": clips, "drift": drift, "over_time": over_time}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path)
    p.add_argument("--plot", type=Path, help="PNG of every row's long-stream metrics over time")
    args = p.parse_args(argv)
    reports = [json.loads(path.read_text(encoding="utf-8")) for path in args.reports]
    merged = merge(reports)
    for path, r in zip(args.reports, reports):
        info = r.get("info", {})
        print(f"- {path.parent.name}: rows {', '.join(x['name'] for x in r['rows'])}; backend "
              f"{info.get('backend', '?')}, device {info.get('device', '?')}")
    for cn in merged["clips"]:
        print(f"\nclip {cn}, whole stream:\n")
        print(clip_table(merged, cn, markdown=True))
    if merged["drift"]:
        print("\nfirst window -> last window (change %):\n")
        print(drift_table(merged, markdown=True))
    if args.plot:
        from knotanim.eval.plots import plot_over_time

        for cn, per_row in merged["over_time"].items():
            plot_over_time(per_row, cn, args.plot)
            print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
