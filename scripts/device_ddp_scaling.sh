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
# Writes to $OUT (6 files): ddp_summary.md (per arm: steady steps/s, window mean, recompile intervals,
# clips/s, clips/s per GPU, scaling efficiency = throughput / (GPUs x 1-GPU throughput), peak GPU memory
# from nvidia-smi; then each 2-GPU arm's mean loss against the 1-GPU arm's, with standard errors),
# ddp_loss.png (the arms' loss curves), <arm>_log.csv, and scaling_logs.tar.gz (each arm's console
# output, settings and memory samples). They are rewritten after every arm, so an arm that hangs (or is
# stopped by ARM_TIMEOUT seconds, default none) loses nothing of the earlier ones; a failed arm is marked
# in the table, the next one still runs, and the script exits 1 at the end. The summary covers every arm
# found in runs/: on a warm machine, a second call with ARMS=fsdp2 completes a first one's ARMS="ddp1 ddp2".
#
# COMPILE=1 (default on cuda; 0 on cpu) trains with `--set compile=true`, as every GPU run now does.
# scripts/scaling_summary.py writes the summary and keeps compile's cost out of the rate: the first
# compile takes the first ~40 steps, and every layout (knot, running ahead, lead phase) or grad mode (the
# listening gap's no-grad pass) met later compiles again, making single logged intervals 4-6x slower at
# any step (the first x2 run: 0.5-1.1 steps/s among 3.6 ones). steps/s is the median of the logged
# per-interval rates (log_every 10) after the warm-up (WARM_STEPS if set, else the first 20% of the steps
# or the first compile, whichever is later) with those recompile intervals left out and counted; the
# window mean (recompiles included) stands beside it, and the loss table compares each arm's mean logged
# loss with the 1-GPU arm's over the steps both share, with standard errors. docs/multi_gpu.md: results.
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
WARM_STEPS=${WARM_STEPS:-}
for arm in $ARMS; do
  case $arm in ddp1|ddp2|fsdp2) ;; *) echo "unknown arm $arm (ARMS: ddp1, ddp2, fsdp2)"; exit 2 ;; esac
done
mkdir -p "$OUT" runs
"$PY" -c "import torch; n = torch.cuda.device_count(); print('torch', torch.__version__, 'GPUs:', n, torch.cuda.get_device_name(0) if n else '')" || exit 1
common=("$ROOT"/configs/train/stage2_teacher_forcing.yaml --set steps="$STEPS" --set init_from="$INIT" --set log_every=10
        --set save_every=100000 --set warmup=50 --set seed=7 --set data.workers="$WORKERS")
[ "$COMPILE" = 1 ] && common+=(--set compile=true)
summarise() {  # the table, the plot and the logs of every arm so far: a later hang loses nothing
"$PY" "$ROOT"/scripts/scaling_summary.py --runs runs --out "$OUT" ${WARM_STEPS:+--warm-steps "$WARM_STEPS"} \
  $([ "$1" = print ] && echo --print) || return 1
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
