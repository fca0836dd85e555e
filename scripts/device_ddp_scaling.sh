#!/usr/bin/env bash
# Issue #6: multi-GPU scaling (DDP and FSDP2) on a two-GPU machine (kind nvidia-h200-x2), one device call.
#
#   OUT=$OUT STEPS=300 GLOBAL_BATCH=24 bash scripts/device_ddp_scaling.sh
#
# Runs the default recipe's main stage (stage 2) from the same carried checkpoint and seed, the same
# global batch in every arm (ARMS, default all three, in this order):
#   ddp1   one GPU, the whole batch (plain python, no torchrun)
#   ddp2   two GPUs through torchrun, DDP (replicated weights), half the batch per rank
#   fsdp2  two GPUs through torchrun, FSDP2 (`--set parallel=fsdp`: sharded weights, EMA and AdamW
#          moments), half the batch per rank
# Writes to $OUT (6 files): ddp_summary.md (per arm: steps/s, clips/s, clips/s per GPU, scaling
# efficiency = throughput / (GPUs x 1-GPU throughput), peak GPU memory from nvidia-smi, final loss),
# ddp_loss.png (the arms' loss curves), <arm>_log.csv, and scaling_logs.tar.gz (each arm's console
# output, settings and memory samples). They are rewritten after every arm, so an arm that hangs (or is
# stopped by ARM_TIMEOUT seconds, default none) loses nothing of the earlier ones; a failed arm is marked
# in the table, the next one still runs, and the script exits 1 at the end. The summary covers every arm
# found in runs/: on a warm machine, a second call with ARMS=fsdp2 completes a first one's ARMS="ddp1 ddp2".
#
# COMPILE=1 (default on cuda; 0 on cpu) trains with `--set compile=true`, as every GPU run now does.
# Its warm-up is kept out of the rate explicitly: the first step compiles the blocks, and every layout
# (knot, running ahead, lead phase) or grad mode (the listening gap's no-grad pass) met later compiles
# them again; session 3's compiled 1-GPU stage 2 logged 2.7, 3.5, 3.6 steps/s over steps 2-150, then
# 3.8-3.9. steps/s is the median of the logged per-interval rates over the steps after WARM_STEPS
# (default STEPS/2; log_every 10), with the window mean (steps / seconds over the same steps) beside it.
#
# NVLink multicast stays off, as the machine's notes require. Knobs for the rehearsal on a CPU
# (tests/test_device_scripts.py): DEVICE=cpu (default cuda; torchrun's ranks then talk over gloo),
# PYTHON (default python3; torchrun starts its ranks with it too), WORKERS (data.workers per rank,
# default 14), EXTRA_SET (more --set overrides, last), WARM_STEPS. runs/, .cache/ and $OUT are taken
# relative to the working directory; the code (PYTHONPATH) and configs/ come from this script's checkout.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHON_EXEC=$PY  # the interpreter torchrun starts each rank with
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-out}; STEPS=${STEPS:-300}; GB=${GLOBAL_BATCH:-24}; WORKERS=${WORKERS:-14}
export INIT=${INIT:-.cache/carry/model}
ARMS=${ARMS:-ddp1 ddp2 fsdp2}
COMPILE=${COMPILE:-$([ "$DEVICE" = cuda ] && echo 1 || echo 0)}
export WARM_STEPS=${WARM_STEPS:-$((STEPS / 2))}
for arm in $ARMS; do
  case $arm in ddp1|ddp2|fsdp2) ;; *) echo "unknown arm $arm (ARMS: ddp1, ddp2, fsdp2)"; exit 2 ;; esac
done
mkdir -p "$OUT" runs
"$PY" -c "import torch; n = torch.cuda.device_count(); print('torch', torch.__version__, 'GPUs:', n, torch.cuda.get_device_name(0) if n else '')" || exit 1
common=("$ROOT"/configs/train/stage2_teacher_forcing.yaml --set steps="$STEPS" --set init_from="$INIT" --set log_every=10
        --set save_every=100000 --set warmup=50 --set seed=7 --set data.workers="$WORKERS")
[ "$COMPILE" = 1 ] && common+=(--set compile=true)
summarise() {  # the table, the plot and the logs of every arm so far: a later hang loses nothing
"$PY" - "$OUT" "$1" <<'PY' || return 1
import csv, json, os, statistics, sys
from pathlib import Path
out, warm = Path(sys.argv[1]), int(os.environ["WARM_STEPS"])
names = {"ddp1": "1 GPU", "ddp2": "2 GPUs, DDP", "fsdp2": "2 GPUs, FSDP2"}
arms = {}
for arm in names:
    meta, log = Path(f"runs/scaling_{arm}.json"), Path(f"runs/{arm}/log.csv")
    if meta.exists():
        arms[arm] = (json.loads(meta.read_text()), list(csv.DictReader(open(log))) if log.exists() else [])

def rates(rows):
    """(median of the per-interval rates, window mean) over the logged steps after WARM_STEPS; a run
    no longer than that is measured after its first logged interval (which holds the first compile)."""
    start = next((i for i, r in enumerate(rows) if int(r["step"]) > warm), min(2, len(rows) - 1))
    start = max(start, 1)  # row 0 (step 1) has no rate; it starts the first interval
    v = [float(r["steps_per_s"]) for r in rows[start:] if float(r["steps_per_s"]) > 0]
    if not v:
        return None, None
    before, last = rows[start - 1], rows[-1]
    dt = float(last["elapsed_s"]) - float(before["elapsed_s"])
    return statistics.median(v), (int(last["step"]) - int(before["step"])) / dt if dt > 0 else float("nan")

def peak_mem(arm):  # GiB per GPU, from nvidia-smi's samples (MiB)
    path, peak = Path(f"runs/scaling_{arm}.gpumem.csv"), {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            i, mib = (int(x) for x in line.split(","))
        except ValueError:
            continue
        peak[i] = max(peak.get(i, 0), mib)
    return " / ".join(f"{peak[i] / 1024:.1f}" for i in sorted(peak)) or "-"

base = None
lines = [f"stage 2 from {os.environ.get('INIT', '.cache/carry/model')}, same global batch and seed in every arm; "
         f"rates over the steps after {warm} (median of the logged intervals; window mean beside it)", "",
         "| arm | GPUs | batch per rank | steps/s | window mean | clips/s | clips/s per GPU | scaling efficiency "
         "| peak GPU memory (GiB, per GPU) | loss (last 5 logs) | wall s |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for arm, (meta, rows) in arms.items():
    n, gb = meta["nproc"], meta["global_batch"]
    med, mean = rates(rows) if rows else (None, None)
    if med is None:
        lines.append(f"| {names[arm]} | {n} | {gb // n} | failed (exit {meta['rc']}, {len(rows)} log rows) | | | | | "
                     f"{peak_mem(arm)} | | {meta['wall_s']} |")
        continue
    name = names[arm] + (f" (exit {meta['rc']} after {rows[-1]['step']} steps)" if meta["rc"] != 0 else "")
    clips = med * gb
    if arm == "ddp1":
        base = clips
    eff = f"{clips / (n * base):.3f}" if base else "-"
    loss = statistics.mean(float(r["loss"]) for r in rows[-5:])
    lines.append(f"| {name} | {n} | {gb // n} | {med:.3f} | {mean:.3f} | {clips:.1f} | {clips / n:.1f} | {eff} "
                 f"| {peak_mem(arm)} | {loss:.4f} | {meta['wall_s']} |")
settings = {a: {k: m[k] for k in ("global_batch", "steps", "compile")} for a, (m, _) in arms.items()}
if len({json.dumps(s, sort_keys=True) for s in settings.values()}) > 1:
    lines += ["", f"note: the arms ran with different settings: {settings}"]
lines += ["", "scaling efficiency = clips/s / (GPUs x 1-GPU clips/s); clips/s = steps/s x global batch; "
          "the 2-GPU losses are rank 0's half of the batch"]
(out / "ddp_summary.md").write_text("\n".join(lines) + "\n")
if sys.argv[2] == "print":
    print("\n".join(lines))
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(7, 4))
for arm, (meta, rows) in arms.items():
    if rows:
        ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=names[arm],
                ls="--" if arm == "fsdp2" else "-")  # FSDP's curve lies on DDP's (same data, same sums)
ax.axvline(warm, color="grey", lw=0.8, ls=":")
ax.set_xlabel("step (same global batch)"); ax.set_ylabel("loss"); ax.set_yscale("log"); ax.legend(); ax.grid(alpha=.3)
fig.tight_layout(); fig.savefig(out / "ddp_loss.png", dpi=90)
PY
for arm in ddp1 ddp2 fsdp2; do
  [ -f runs/$arm/log.csv ] && cp runs/$arm/log.csv "$OUT"/${arm}_log.csv
done
tar czf "$OUT"/scaling_logs.tar.gz $(ls runs/scaling_* 2> /dev/null)
}
failed=0
for arm in $ARMS; do
  case $arm in
    ddp1) nproc=1; parallel=ddp ;;
    ddp2) nproc=2; parallel=ddp ;;
    fsdp2) nproc=2; parallel=fsdp ;;
  esac
  if [ $nproc = 1 ]; then launch=("$PY" -m knotanim.cli.train)
  else launch=("$PY" -m torch.distributed.run --standalone --nproc-per-node $nproc -m knotanim.cli.train); fi
  rm -rf runs/$arm runs/scaling_$arm.*
  mon=""
  if command -v nvidia-smi > /dev/null; then  # GPU memory in use, every second, for the arm's peak
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 1000 > runs/scaling_$arm.gpumem.csv &
    mon=$!
  fi
  echo "== $arm: $nproc process(es), parallel=$parallel, batch $((GB / nproc)) per rank, compile=$COMPILE"
  start=$(date +%s)
  limit=(); [ "${ARM_TIMEOUT:-0}" != 0 ] && limit=(timeout -k 20 "$ARM_TIMEOUT")
  # shellcheck disable=SC2086  # EXTRA_SET is a list of words
  ${limit[@]+"${limit[@]}"} "${launch[@]}" "${common[@]}" --set batch_size=$((GB / nproc)) --set parallel=$parallel ${EXTRA_SET:-} \
    --out runs/$arm --fresh --device "$DEVICE" 2>&1 | tee runs/scaling_$arm.txt
  rc=${PIPESTATUS[0]}
  [ -n "$mon" ] && kill "$mon" && wait "$mon" 2> /dev/null
  [ "$rc" = 0 ] || failed=1
  printf '{"arm": "%s", "nproc": %s, "parallel": "%s", "global_batch": %s, "steps": %s, "compile": %s, "rc": %s, "wall_s": %s}\n' \
    "$arm" $nproc $parallel "$GB" "$STEPS" "$COMPILE" "$rc" $(($(date +%s) - start)) > runs/scaling_$arm.json
  summarise quiet || failed=1
done
summarise print || failed=1
ls -la "$OUT"
exit $failed
