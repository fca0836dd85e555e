#!/usr/bin/env python
"""A few lines per benchmark from the JSONs benchmarks/device_benchmarks.sh leaves in $OUT (for summary.txt).

  python benchmarks/device_benchmarks_digest.py $OUT

Standard library only; a missing or unreadable file is one line saying so, never an error. A wan run that
started with a 1-minute load above half the CPU count (as bench_wan_shape.py recorded them) is marked
'CONTENDED: load X on N cores at start'.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, f"{path.name}: not written"
    except (OSError, ValueError) as e:
        return None, f"{path.name}: unreadable ({type(e).__name__}: {e})"


def backends(out: Path) -> list[str]:
    data, why = _load(out / "backends.json")
    if data is None:
        return [f"backends: {why}"]
    lines = []
    for r in data.get("results", []):
        if r.get("status") == "ok":
            lines.append(f"backends: {r['name']}: {r['fps']:.2f} frames/s, chunk latency median {r['median_ms']:.1f} ms"
                         f" / p95 {r['p95_ms']:.1f} ms, first frame {r['first_ms']:.0f} ms, peak {r['peak']}, "
                         f"build {r['build_s']:.1f} s ({r['device']}, {r['dtype']})")
        else:
            lines.append(f"backends: {r.get('backend')}: {r.get('status')}: {r.get('reason')}")
    return lines or ["backends: no backend finished"]


def scaling(out: Path) -> list[str]:
    data, why = _load(out / "scaling.json")
    if data is None:
        return [f"scaling: {why}"]
    points = data.get("points", [])
    count = {s: sum(p.get("status") == s for p in points) for s in ("ok", "skipped", "failed")}
    lines = [f"scaling: {len(points)} sweep points: {count['ok']} ok, {count['skipped']} skipped, {count['failed']} failed",
             f"scaling: backend {data.get('settings', {}).get('backend', '?')}"]
    for p in points:
        if p.get("status") == "ok" and p.get("step_ms"):
            c = p["config"]
            gpu = f", GPU replay median {p['gpu_step_ms']['median']:.3f} ms" if p.get("gpu_step_ms") else ""
            fell = f" ({p.get('backend')}: {p['backend_fallback']})" if p.get("backend_fallback") else ""
            lines.append(f"scaling: {p['sweep']} {p['value']}: L {c['window']}, C {c['chunk']}, {c['frame_size']} px: "
                         f"step median {p['step_ms']['median']:.2f} ms{gpu}{fell}")
        elif p.get("status") != "ok":
            lines.append(f"scaling: {p['sweep']} {p['value']}: {p.get('status')}: {p.get('reason')}")
    long = data.get("long")
    if long is None:
        lines.append("scaling: long stream: not run (or not finished)")
    elif long.get("status") != "ok":
        lines.append(f"scaling: long stream: {long.get('status')}: {long.get('reason')}")
    else:
        flat = (long.get("flat") or {}).get("step")
        slope = f", {flat['relative_change_per_1000_chunks'] * 100:+.2f}% per 1,000 chunks" if flat and \
            flat.get("relative_change_per_1000_chunks") is not None else ""
        lines.append(f"scaling: long stream: {long['chunks_run']} chunks, stopped early: {long['stopped_early']}{slope}")
    if "figure" in data:
        lines.append(f"scaling: figure: {'written' if data['figure'] else data.get('figure_missing')}")
    return lines


def wan(out: Path) -> list[str]:
    data, why = _load(out / "wan.json")
    if data is None:
        return [f"wan: {why}"]
    lines = [f"wan: {data.get('device')}, {data.get('dtype')}, matmul {data.get('matmul_tflops', 0):.0f} TFLOP/s"]
    if "cudnn_attention" in data:
        lines.append(f"wan: cuDNN attention: {data['cudnn_attention']}")
    cores = data.get("cpu_count")
    for r in data.get("runs", []):
        err, load = r.get("rel_err_vs_eager"), r.get("load1_at_start")
        lines.append(f"wan: {r['variant']}/{r['workload']}: {r['fps']:.1f} FPS, {r['ms_per_chunk']:.1f} ms/chunk, "
                     f"{r['tflops']:.0f} TFLOP/s, {r['pct_floor_measured']:.0f}% of floor"
                     + (f", rel err vs eager {err:.1e}" if err is not None else "")
                     + (f", load1 {load:.2f} at start" if load is not None else "")
                     + (f"  CONTENDED: load {load:.2f} on {cores} cores at start"
                        if load is not None and cores and load > cores / 2 else ""))
    for s in data.get("skipped", []):
        lines.append(f"wan: {s.get('variant')}/{s.get('workload', 'all')}: skipped: {str(s.get('reason'))[:200]}")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "out")
    for part in (backends, scaling, wan):
        try:
            lines = part(out)
        except Exception as e:  # noqa: BLE001 - a digest never fails the summary
            lines = [f"{part.__name__}: digest failed ({type(e).__name__}: {e})"]
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
