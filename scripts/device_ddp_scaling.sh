#!/usr/bin/env bash
# Issue #6: DDP scaling on a two-GPU machine (kind nvidia-h200-x2), one device call.
#
#   OUT=$OUT STEPS=300 GLOBAL_BATCH=24 bash scripts/device_ddp_scaling.sh
#
# Runs the default recipe's main stage (stage 2) twice from the same carried checkpoint and seed:
# once on one GPU with the global batch, once through torchrun on two GPUs with half the batch per
# rank. Writes both logs, a loss-curve comparison (ddp_loss.png) and a summary (ddp_summary.md:
# steps/s, samples/s per GPU, scaling efficiency = 2-GPU throughput / (2 x 1-GPU throughput)).
# NVLink multicast stays off, as the machine's notes require.
set -euo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-out}; STEPS=${STEPS:-300}; GB=${GLOBAL_BATCH:-24}
INIT=${INIT:-.cache/carry/model}
mkdir -p "$OUT" runs
python3 -c "import torch; print('GPUs:', torch.cuda.device_count(), torch.cuda.get_device_name(0))"
common=(configs/train/stage2_teacher_forcing.yaml --set steps="$STEPS" --set init_from="$INIT" --set log_every=10
        --set save_every=100000 --set warmup=50 --set seed=7 --fresh --device cuda)
python3 -m knotanim.cli.train "${common[@]}" --out runs/ddp1 --set batch_size="$GB" --set data.workers=14
torchrun --standalone --nproc-per-node 2 -m knotanim.cli.train "${common[@]}" --out runs/ddp2 \
  --set batch_size=$((GB / 2)) --set data.workers=14
python3 - "$OUT" <<'PY'
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {n: list(csv.DictReader(open(f"runs/{n}/log.csv"))) for n in ("ddp1", "ddp2")}
def rate(r):  # steady-state steps/s: median of the logged rates after the first quarter
    v = sorted(float(x["steps_per_s"]) for x in r[len(r) // 4:] if float(x["steps_per_s"]) > 0)
    return v[len(v) // 2]
r1, r2 = rate(rows["ddp1"]), rate(rows["ddp2"])
gb = int(__import__("os").environ.get("GLOBAL_BATCH", "24"))
lines = ["| run | steps/s | clip-steps/s | clip-steps/s per GPU |", "|---|---|---|---|",
         f"| 1 GPU, batch {gb} | {r1:.3f} | {r1 * gb:.1f} | {r1 * gb:.1f} |",
         f"| 2 GPUs (DDP), {gb // 2} per rank | {r2:.3f} | {r2 * gb:.1f} | {r2 * gb / 2:.1f} |",
         "", f"scaling efficiency = 2-GPU throughput / (2 x 1-GPU throughput) = {r2 / (2 * r1):.3f}"]
(out / "ddp_summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(7, 4))
for n, label in (("ddp1", "1 GPU"), ("ddp2", "2 GPUs (DDP)")):
    ax.plot([int(x["step"]) for x in rows[n]], [float(x["loss"]) for x in rows[n]], label=label)
ax.set_xlabel("step (same global batch)"); ax.set_ylabel("loss"); ax.set_yscale("log"); ax.legend(); ax.grid(alpha=.3)
fig.tight_layout(); fig.savefig(out / "ddp_loss.png", dpi=90)
PY
cp runs/ddp1/log.csv "$OUT"/ddp1_log.csv; cp runs/ddp2/log.csv "$OUT"/ddp2_log.csv
