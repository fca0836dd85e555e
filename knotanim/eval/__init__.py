"""KnotBench: knotanim's benchmark (lip sync, fidelity, seams, flicker, long-horizon drift).

    from knotanim.eval import run_knotbench, quick_spec
    report = run_knotbench(["path/to/model"], quick_spec(), "bench-out", variants="default,no-knot")

`knotanim.eval.metrics` holds the pure numpy metric functions; `spec` the seeded eval set;
`runner` streams models over it; `report` / `plots` write JSON, Markdown and PNGs.
"""
from knotanim.eval import metrics
from knotanim.eval.report import summary_table
from knotanim.eval.runner import VARIANTS, run_knotbench
from knotanim.eval.spec import BenchSpec, ClipSpec, full_spec, quick_spec, tiny_spec

__all__ = ["BenchSpec", "ClipSpec", "VARIANTS", "full_spec", "metrics", "quick_spec", "run_knotbench",
           "summary_table", "tiny_spec"]
