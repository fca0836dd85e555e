"""The summary of scripts/device_ddp_scaling.sh (issue #6): one table and one loss plot over every arm found.

    python scripts/scaling_summary.py --runs runs --out $OUT [--warm-steps N] [--print]

--runs holds what the scaling script writes per arm: scaling_<arm>.json (nproc, global_batch, steps,
compile, rc, wall_s), <arm>/log.csv (the trainer's log: step, elapsed_s, loss, steps_per_s, ...) and
scaling_<arm>.gpumem.csv (nvidia-smi's `index, MiB` samples, optional). Writes --out/ddp_summary.md and
--out/ddp_loss.png; --print prints the summary too.

Rates. Each logged row closes one interval of log_every steps and carries its rate (steps_per_s).
torch.compile makes some intervals far slower than the rest: the first compile (the first tens of
steps), and a recompile whenever a new layout (knot, running ahead, lead phase) or grad mode (the
listening gap's no-grad pass) first turns up, at any step. So per arm:
- warm-up: --warm-steps N if given, else the later of the first 20% of the arm's planned steps and the
  end of the first compile (the start of the first interval at least half as fast as the arm's upper
  quartile rate); only intervals starting at or after it count;
- recompile intervals: those after the warm-up slower than half the median of the intervals after it;
- steady steps/s: the median of the other intervals after the warm-up; "(n=k)" marks a median of fewer
  than 5 intervals; the window mean (steps / seconds, recompiles included) stands beside it.
clips/s = steady steps/s x global batch; scaling efficiency = clips/s / (GPUs x the 1-GPU arm's clips/s).

Loss. Each logged loss is rank 0's mean over the interval's steps (a 2-GPU arm: rank 0's half of the
global batch). Every arm is compared with the first arm (ddp1 when it ran) over the logged steps both
share after both warm-ups: the mean of the logged losses of each, its standard error (stdev / sqrt(n),
logs taken as independent), the difference and its standard error sqrt(se1^2 + se2^2).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

NAMES = {"ddp1": "1 GPU", "ddp2": "2 GPUs, DDP", "fsdp2": "2 GPUs, FSDP2"}
WARM_FRACTION = 0.2  # of the planned steps, the least warm-up
MIN_INTERVALS = 5  # a median of fewer intervals is marked (n=...)


@dataclass
class Interval:
    start: int  # step at the previous log row
    end: int  # step at this log row
    seconds: float  # elapsed between the two rows
    rate: float  # the row's logged steps_per_s


@dataclass
class Rates:
    warm: int  # the warm-up used: intervals starting at or after this step count
    steady: float | None  # median of the intervals after the warm-up, recompile intervals left out
    mean: float | None  # window mean: steps / seconds over every interval after the warm-up
    used: int  # intervals the steady median is taken over
    recompiles: list[Interval] = field(default_factory=list)

    def steady_text(self) -> str:
        if self.steady is None:
            return "-"
        return f"{self.steady:.3f}" + (f" (n={self.used})" if self.used < MIN_INTERVALS else "")



def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

def read_arms(runs: Path) -> dict[str, tuple[dict, list[dict]]]:
    """Every arm with a scaling_<arm>.json in `runs`, in NAMES' order: (its settings, its log rows)."""
    arms = {}
    for arm in NAMES:
        meta, log = runs / f"scaling_{arm}.json", runs / arm / "log.csv"
        if meta.exists():
            rows = _read_csv(log) if log.exists() else []
            arms[arm] = (json.loads(meta.read_text()), rows)
    return arms


def intervals(rows: list[dict]) -> list[Interval]:
    """The logged intervals: each row after the first closes one (the first row, step 1, has no rate)."""
    out = []
    for before, row in zip(rows, rows[1:]):
        rate = float(row["steps_per_s"])
        if rate > 0:
            out.append(Interval(int(before["step"]), int(row["step"]),
                                float(row["elapsed_s"]) - float(before["elapsed_s"]), rate))
    return out


def first_compile_end(iv: list[Interval]) -> int:
    """The step where the first compile's slow intervals end: the start of the first interval at least
    half as fast as the upper quartile of all the arm's rates (0 when there are none)."""
    if not iv:
        return 0
    rates = sorted(i.rate for i in iv)
    upper = rates[min(len(rates) - 1, (3 * len(rates)) // 4)]
    return next(i.start for i in iv if i.rate >= upper / 2)


def default_warm(planned_steps: int, iv: list[Interval]) -> int:
    return max(math.ceil(WARM_FRACTION * planned_steps), first_compile_end(iv))


def measure(rows: list[dict], planned_steps: int, warm: int | None = None) -> Rates:
    """Steady rate, window mean and recompile intervals after the warm-up (see the module's text). A run
    that ended inside the warm-up is measured after the first compile, or else over all its intervals."""
    iv = intervals(rows)
    warm = default_warm(planned_steps, iv) if warm is None else warm
    for w in (warm, first_compile_end(iv), 0):
        window = [i for i in iv if i.start >= w]
        if window:
            warm = w
            break
    else:
        return Rates(warm, None, None, 0)
    half = statistics.median(i.rate for i in window) / 2
    recompiles = [i for i in window if i.rate < half]
    steady = [i.rate for i in window if i.rate >= half]
    seconds = sum(i.seconds for i in window)
    mean = (window[-1].end - window[0].start) / seconds if seconds > 0 else float("nan")
    return Rates(warm, statistics.median(steady), mean, len(steady), recompiles)


@dataclass
class LossComparison:
    first: int  # first and last shared logged step compared
    last: int
    n: int  # logs compared per arm
    ref_mean: float
    ref_se: float
    mean: float
    se: float

    @property
    def diff(self) -> float:
        return self.mean - self.ref_mean

    @property
    def diff_se(self) -> float:
        return math.hypot(self.ref_se, self.se)


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.mean(values)
    return m, statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def compare_loss(ref_rows: list[dict], rows: list[dict], warm: int) -> LossComparison | None:
    """Mean logged loss of both arms over the logged steps after `warm` that both have."""
    ref = {int(r["step"]): float(r["loss"]) for r in ref_rows}
    own = {int(r["step"]): float(r["loss"]) for r in rows}
    steps = sorted(s for s in ref.keys() & own.keys() if s > warm)
    if not steps:
        return None
    (rm, rse), (m, se) = mean_se([ref[s] for s in steps]), mean_se([own[s] for s in steps])
    return LossComparison(steps[0], steps[-1], len(steps), rm, rse, m, se)


def peak_mem(runs: Path, arm: str) -> str:
    """Peak GPU memory in use per GPU (GiB), from nvidia-smi's samples (MiB)."""
    path, peak = runs / f"scaling_{arm}.gpumem.csv", {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            i, mib = (int(x) for x in line.split(","))
        except ValueError:
            continue
        peak[i] = max(peak.get(i, 0), mib)
    return " / ".join(f"{peak[i] / 1024:.1f}" for i in sorted(peak)) or "-"


def summarise(runs: Path, warm_steps: int | None = None, init: str = ".cache/carry/model") -> list[str]:
    arms = read_arms(runs)
    rates = {arm: measure(rows, int(meta["steps"]), warm_steps) for arm, (meta, rows) in arms.items()}
    how = (f"after step {warm_steps}" if warm_steps is not None else
           f"after a warm-up of the first {WARM_FRACTION:.0%} of the planned steps or the first compile, "
           "whichever is later")
    lines = [f"stage 2 from {init}, same global batch and seed in every arm. steps/s: the median of the logged "
             f"intervals {how}, recompile intervals (slower than half the median) left out; (n=k) marks a median "
             f"of fewer than {MIN_INTERVALS} intervals; the window mean counts every step and second after the "
             "warm-up", "",
             "| arm | GPUs | batch per rank | steps/s | window mean | warm-up (steps) | intervals used | "
             "recompile intervals (s each) | clips/s | clips/s per GPU | scaling efficiency | "
             "peak GPU memory (GiB, per GPU) | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = None
    for arm, (meta, rows) in arms.items():
        n, gb, r = meta["nproc"], meta["global_batch"], rates[arm]
        if r.steady is None:
            lines.append(f"| {NAMES[arm]} | {n} | {gb // n} | failed (exit {meta['rc']}, {len(rows)} log rows) "
                         f"| | | | | | | | {peak_mem(runs, arm)} | {meta['wall_s']} |")
            continue
        name = NAMES[arm] + (f" (exit {meta['rc']} after {rows[-1]['step']} steps)" if meta["rc"] != 0 else "")
        clips = r.steady * gb
        if arm == "ddp1":
            base = clips
        eff = f"{clips / (n * base):.3f}" if base else "-"
        slow = f"{len(r.recompiles)}" + (f" ({', '.join(f'{i.seconds:.1f}' for i in r.recompiles)})"
                                         if r.recompiles else "")
        lines.append(f"| {name} | {n} | {gb // n} | {r.steady_text()} | {r.mean:.3f} | {r.warm} | {r.used} | {slow} "
                     f"| {clips:.1f} | {clips / n:.1f} | {eff} | {peak_mem(runs, arm)} | {meta['wall_s']} |")
    logged = [a for a, (_, rows) in arms.items() if rows]
    if len(logged) > 1:
        ref = logged[0]
        lines += ["", f"Loss against {NAMES[ref]}, over the logged steps both arms share after both warm-ups "
                  "(each log: rank 0's mean loss over its interval; mean ± standard error of the logs):", "",
                  f"| arm | steps compared | logs | {NAMES[ref]} loss | this arm's loss | difference | "
                  "difference / its s.e. |", "|---|---|---|---|---|---|---|"]
        for arm in logged[1:]:
            c = compare_loss(arms[ref][1], arms[arm][1], max(rates[ref].warm, rates[arm].warm))
            if c is None:
                lines.append(f"| {NAMES[arm]} | none shared | 0 | | | | |")
                continue
            lines.append(f"| {NAMES[arm]} | {c.first}-{c.last} | {c.n} | {c.ref_mean:.4f} ± {c.ref_se:.4f} | "
                         f"{c.mean:.4f} ± {c.se:.4f} | {c.diff:+.4f} ± {c.diff_se:.4f} | "
                         f"{c.diff / c.diff_se if c.diff_se > 0 else float('nan'):+.2f} |")
    settings = {a: {k: m[k] for k in ("global_batch", "steps", "compile")} for a, (m, _) in arms.items()}
    if len({json.dumps(s, sort_keys=True) for s in settings.values()}) > 1:
        lines += ["", f"note: the arms ran with different settings: {settings}"]
    lines += ["", "scaling efficiency = clips/s / (GPUs x 1-GPU clips/s); clips/s = steps/s x global batch; "
              "the 2-GPU losses are rank 0's half of the batch"]
    return lines


def plot(runs: Path, path: Path, warm_steps: int | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    warms = []
    for arm, (meta, rows) in read_arms(runs).items():
        if rows:
            ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=NAMES[arm],
                    ls="--" if arm == "fsdp2" else "-")  # FSDP's curve lies on DDP's (same data, same sums)
            warms.append(measure(rows, int(meta["steps"]), warm_steps).warm)
    if warms:
        ax.axvline(max(warms), color="grey", lw=0.8, ls=":", label="end of warm-up")
    ax.set_xlabel("step (same global batch)")
    ax.set_ylabel("loss (rank 0)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs"), help="holds scaling_<arm>.json and <arm>/log.csv")
    p.add_argument("--out", type=Path, required=True, help="where ddp_summary.md and ddp_loss.png go")
    p.add_argument("--warm-steps", type=int, default=None,
                   help="measure after this step (default: 20%% of the planned steps or the first compile)")
    p.add_argument("--init", default=os.environ.get("INIT", ".cache/carry/model"), help="for the header line")
    p.add_argument("--print", action="store_true", help="print the summary as well")
    a = p.parse_args(argv)
    if not any((a.runs / f"scaling_{arm}.json").exists() for arm in NAMES):
        print(f"scaling_summary: no scaling_<arm>.json in {a.runs} (arms: {', '.join(NAMES)})", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    lines = summarise(a.runs, a.warm_steps, a.init)
    (a.out / "ddp_summary.md").write_text("\n".join(lines) + "\n")
    if a.print:
        print("\n".join(lines))
    plot(a.runs, a.out / "ddp_loss.png", a.warm_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
