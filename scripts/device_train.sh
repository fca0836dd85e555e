#!/usr/bin/env bash
# Training on the accelerator machine (one H200, or NPROC of them), one call of at most 10 minutes.
#
#   STAGE1_MIN=3 STAGE2_MIN=5.5 STAGE3_MIN=0 STAGE4_MIN=0 bash scripts/device_train.sh
#
# - Stage 1 (frame autoencoder) runs only if no stage-1 model exists yet (runs/${P}stage1 on a warm
#   machine, or .cache/carry/${P}stage1 carried from this machine).
# - Stage 2 resumes runs/${P}stage2/state when the machine is still warm; otherwise it starts from the
#   carried .cache/carry/${P}model (the latest exported weights), or from the stage-1 autoencoder.
# - Stage 3 (self-rollout) starts from this call's stage-2 model, or the carried one.
# - Stage 4 (few-step distillation, STAGE4_MIN/STAGE4_SET) starts from this call's stage-3 model, or the
#   carried one; its export samples in student_steps (default 2).
# - The exported model (EMA, bf16, shards <= 16 MiB) and logs.tar.gz (logs, loss curves, sample strips) go to $OUT.
#
# STAGE*_MIN bounds each stage's wall clock, torch.compile's warm-up (~100 s on the H200) included;
# start-up (~30 s) and the export come on top. Do not wrap this script in `timeout`: a stage killed
# before its end exports nothing (checkpoints come every save_every steps).
#
# PROFILE=lite trains the lite profile instead (configs/train/lite_*.yaml, runs/lite_*, .cache/carry/lite_model).
#
# NPROC=2 (default 1) trains each stage on that many GPUs of one machine (kind nvidia-h200-x2): every
# `train` call goes through torchrun (`$PYTHON -m torch.distributed.run --standalone`, ranks started with
# the same interpreter), DDP by default, FSDP2 with `--set parallel=fsdp`; NVLink multicast stays off
# (NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1), as the machine requires.
# batch_size is per rank: the 1-GPU recipe's global batch (stage 2: 24) needs half of it on each of two
#   NPROC=2 STAGE2_MIN=7.5 STAGE2_SET="--set compile=true --set batch_size=12" bash scripts/device_train.sh
# (data.workers is per rank as well: 14 x 2 ranks on the 32 cores of the two-GPU machine). Rank 0 writes
# runs/, logs and the export; a resumed call may use another NPROC (the state files are the same).
#
# Rehearsal on a CPU (tests/test_device_scripts.py): DEVICE=cpu (default cuda) for the trainer's --device
# (NPROC > 1: gloo instead of NCCL), PYTHON (default python3) for the interpreter. runs/, .cache/ and $OUT
# are taken relative to the working directory; the code (PYTHONPATH) and configs/ come from the checkout
# this script lies in.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$ROOT PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
P=""
[ "${PROFILE:-default}" = "lite" ] && P="lite_"
OUT=${OUT:-out}
mkdir -p "$OUT" runs
NPROC=${NPROC:-1}
"$PY" -c "import sys, torch; n = torch.cuda.device_count(); print('torch', torch.__version__, \
torch.cuda.get_device_name(0) if n else 'cpu', f'x {n}' if n > 1 else ''); \
sys.exit(f'NPROC={sys.argv[1]} but {n} GPU(s)' if sys.argv[2] == 'cuda' and int(sys.argv[1]) > max(n, 1) else 0)" "$NPROC" "$DEVICE"
if [ "$NPROC" -gt 1 ]; then
  # torchrun starts each rank with $PYTHON_EXEC (default: its own sys.executable), so PYTHON's wrapper holds there too.
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHON_EXEC=$PY
  train() { "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m knotanim.cli.train "$@" --device "$DEVICE"; }
else
  train() { "$PY" -m knotanim.cli.train "$@" --device "$DEVICE"; }
fi

if [ ! -f runs/${P}stage1/model/config.json ]; then
  if [ -f .cache/carry/${P}stage1/config.json ]; then
    mkdir -p runs/${P}stage1 && cp -r .cache/carry/${P}stage1 runs/${P}stage1/model
  elif [ "${STAGE1_MIN:-0}" != "0" ]; then
    train "$ROOT"/configs/train/${P}stage1_autoencoder.yaml --out runs/${P}stage1 --set max_minutes="$STAGE1_MIN"
  fi
fi

# A stage resumed on a warm machine trains over the base it started from, recorded in its own state
# (not its config's default, which a stage started from the carried model, or PROFILE=lite, lacks).
recorded_base() {
  "$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['train_config']['init_from'])" \
    runs/${P}$1/state/state.json
}
# run_stage NAME CONFIG MINUTES INIT EXTRA: train one stage, resuming its state if there is one, and copy
# its exported model to $OUT. EXTRA is split into words (the STAGE*_SET variables).
run_stage() {
  local name=$1 config=$2 minutes=$3 init=$4
  [ -f runs/${P}$name/state/state.json ] && init=$(recorded_base "$name")
  train "$ROOT"/configs/train/$config --out runs/${P}$name --set max_minutes="$minutes" \
    ${init:+--set init_from="$init"} $5
  cp runs/${P}$name/model/* "$OUT"/
}
# A later stage starts from the previous stage's model of this call, else the carried model.
previous_or_carried() {
  if [ -f runs/${P}$1/model/config.json ]; then echo runs/${P}$1/model; else echo .cache/carry/${P}model; fi
}

INIT=runs/${P}stage1/model
WARMUP=""
if [ ! -f runs/${P}stage2/state/state.json ] && [ -f .cache/carry/${P}model/config.json ]; then
  INIT=.cache/carry/${P}model
  WARMUP="--set warmup=100"  # trained weights, fresh optimiser: a short warm-up is enough
fi
if [ "${STAGE2_MIN:-0}" != "0" ]; then
  run_stage stage2 ${P}stage2_teacher_forcing.yaml "$STAGE2_MIN" "$INIT" "$WARMUP ${STAGE2_SET:-}"
fi
if [ "${STAGE3_MIN:-0}" != "0" ]; then
  run_stage stage3 stage3_self_rollout.yaml "$STAGE3_MIN" "$(previous_or_carried stage2)" "${STAGE3_SET:-}"
fi
if [ "${STAGE4_MIN:-0}" != "0" ]; then
  # stage 4's recorded base is its teacher
  run_stage stage4 stage4_distill.yaml "$STAGE4_MIN" "$(previous_or_carried stage3)" "${STAGE4_SET:-}"
fi
# Logs, loss curves and sample strips of every stage in one file (the $OUT file count is limited).
tar czf "$OUT"/logs.tar.gz $(ls runs/*/log.csv runs/*/loss.png runs/*/samples.png 2>/dev/null)
ls -la "$OUT"
