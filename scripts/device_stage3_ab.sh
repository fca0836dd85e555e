#!/usr/bin/env bash
# Issue #9: two stage-3 recipes side by side in one device call, one arm per GPU of nvidia-h200-x2, both from the
# same carried model, then KnotBench on each arm's model on its own GPU. A second, short call fetches one arm's
# model (two 50 MB models do not fit the 64 MiB a call brings back).
#
#   ARM_A="--set lr=3e-5" ARM_B="--set lr=3e-5 --set rollout_knot_target=own" STAGE3_MIN=7 \
#     OUT=$OUT bash scripts/device_stage3_ab.sh train > $OUT/ab.txt 2>&1
#   OUT=$OUT bash scripts/device_stage3_ab.sh fetch B        (the next call, within 30 s: the machine is warm)
#   STAGE3_MIN=6 OUT=$OUT bash scripts/device_stage3_ab.sh resume   (a later call on the warm machine: both arms on)
#
# train  Each arm runs scripts/device_train.sh (stage 3 only: STAGE3_MIN minutes, STAGE3_BASE then ARM_A / ARM_B as
#        its STAGE3_SET) in its own working directory AB_DIR/<arm> (default /tmp/knotanim_ab), where .cache/carry and
#        .cache/data of the calling directory are linked, with CUDA_VISIBLE_DEVICES=GPU_A / GPU_B (default 0 / 1) and
#        OUT=AB_DIR/<arm>/out. Then `knotanim eval` on each arm's exported model on its GPU (EVAL_DEVICE, default
#        cuda): the quick set, and EVAL_SPECS (default configs/eval/knotbench_long_first10s.json, the early drift),
#        with the eval corpus .cache/data/speech_eval.npz. $OUT: ab_summary.md (each arm's recipe, steps and
#        KnotBench tables) and ab_A.tar.gz / ab_B.tar.gz (training logs, curves, sample strips, KnotBench reports).
# resume Each arm's stage 3 continued from its state for STAGE3_MIN more minutes, with the recipe `train` recorded in
#        AB_DIR/<arm>/stage3_set (ARM_A, ARM_B and STAGE3_BASE are not read; RESUME_SET is added after it, e.g. a
#        larger --set steps=N), then the same KnotBench. The exports replace AB_DIR/<arm>/out (so `fetch` brings the
#        continued model); the log is resume.txt; $OUT as for train.
# fetch  Copies arm ARM's exported model (config.json and its safetensors shards) into $OUT.
#
# Rehearsal on a CPU (tests/test_device_scripts.py): DEVICE=cpu and EVAL_DEVICE=cpu, STAGE3_BASE with tiny sizes,
# PYTHON for the interpreter, EVAL_ARGS for more `knotanim eval` options (e.g. a tiny spec instead of --quick).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-out}
AB_DIR=${AB_DIR:-/tmp/knotanim_ab}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: the arms run and are packed from their own directories

case "${1:-}" in
  train | resume)
    mode=$1
    STAGE3_BASE=${STAGE3_BASE:---set compile=true}
    EVAL_DEVICE=${EVAL_DEVICE:-cuda}
    EVAL_SPECS=${EVAL_SPECS:-$ROOT/configs/eval/knotbench_long_first10s.json}
    EVAL_ARGS=${EVAL_ARGS:-}
    log=train.txt
    if [ "$mode" = train ]; then
      [ -f .cache/carry/model/config.json ] || { echo "device_stage3_ab: no carried model in .cache/carry/model" >&2; exit 2; }
      rm -rf "$AB_DIR"
    else
      log=resume.txt
      for arm in A B; do
        [ -f "$AB_DIR/$arm/runs/stage3/state/state.json" ] && [ -f "$AB_DIR/$arm/stage3_set" ] || {
          echo "device_stage3_ab: arm $arm has no stage-3 state in $AB_DIR to resume (run 'train' first, on this machine)" >&2
          exit 2
        }
      done
    fi
    declare -A GPU=([A]=${GPU_A:-0} [B]=${GPU_B:-1})
    pids=()
    for arm in A B; do
      dir=$AB_DIR/$arm
      if [ "$mode" = train ]; then
        mkdir -p "$dir/.cache"
        ln -s "$PWD/.cache/carry" "$dir/.cache/carry"
        ln -s "$PWD/.cache/data" "$dir/.cache/data"
        set_var=ARM_$arm
        echo "$STAGE3_BASE ${!set_var:-}" > "$dir/stage3_set"
      fi
      recipe=$(cat "$dir/stage3_set")
      [ "$mode" = resume ] && recipe="$recipe ${RESUME_SET:-}"
      echo "arm $arm on GPU ${GPU[$arm]} ($mode): STAGE3_SET=$recipe"
      (cd "$dir" && CUDA_VISIBLE_DEVICES=${GPU[$arm]} OUT=$dir/out STAGE3_MIN=${STAGE3_MIN:-7} STAGE2_MIN=0 STAGE1_MIN=0 \
        STAGE3_SET="$recipe" bash "$ROOT"/scripts/device_train.sh > "$dir/$log" 2>&1) &
      pids+=($!)
    done
    failed=0
    for i in 0 1; do wait "${pids[$i]}" || failed=1; done
    for arm in A B; do  # evaluated one after the other, each on its own GPU: both GPUs are free by now
      dir=$AB_DIR/$arm
      [ -f "$dir/out/config.json" ] || { echo "arm $arm exported no model"; failed=1; continue; }
      corpus=()
      [ -f .cache/data/speech_eval.npz ] && corpus=(--corpus .cache/data/speech_eval.npz)
      kb() {  # $1: the report's name under $dir (kb_quick, kb_spec1, ...); the rest: `knotanim eval` options
        local name=$1
        shift
        CUDA_VISIBLE_DEVICES=${GPU[$arm]} PYTHONPATH=$ROOT "$PY" -m knotanim.cli.main eval --model "$dir/out" \
          ${corpus[@]+"${corpus[@]}"} --device "$EVAL_DEVICE" --no-plots --out "$dir/$name" "$@" > "$dir/$name.txt" 2>&1
      }
      # shellcheck disable=SC2086  # EVAL_ARGS is a list of words
      kb kb_quick ${EVAL_ARGS:---quick} &
      evals=($!)
      k=0
      for spec in $EVAL_SPECS; do
        k=$((k + 1))
        kb "kb_spec$k" --spec "$spec" --reference-rows none &
        evals+=($!)
      done
      for p in "${evals[@]}"; do wait "$p" || failed=1; done
    done
    {
      echo "# stage-3 A/B (scripts/device_stage3_ab.sh $mode), $(date -u +%Y-%m-%dT%H:%M:%SZ), STAGE3_MIN=${STAGE3_MIN:-7}"
      for arm in A B; do
        dir=$AB_DIR/$arm
        echo; echo "## arm $arm: $(cat "$dir/stage3_set")"
        grep -h "^resumed from\|^done at step" "$dir/$log" || echo "(no 'done at step' line: see $log)"
        for rep in "$dir"/kb_quick/report.md "$dir"/kb_spec*/report.md; do
          [ -f "$rep" ] || continue
          echo; echo "### $(basename "$(dirname "$rep")")"; grep -E "^\|" "$rep" | head -12
        done
      done
    } > "$OUT/ab_summary.md"
    for arm in A B; do
      dir=$AB_DIR/$arm
      (cd "$dir" && tar czf "$OUT/ab_$arm.tar.gz" $(ls train.txt resume.txt 2> /dev/null) kb_*.txt $(ls -d kb_quick kb_spec* 2> /dev/null) \
        $(ls out/logs.tar.gz out/config.json 2> /dev/null))
    done
    cat "$OUT/ab_summary.md"
    exit $failed
    ;;
  fetch)
    arm=${2:-}
    [ -f "$AB_DIR/$arm/out/config.json" ] || { echo "device_stage3_ab: arm '$arm' has no model in $AB_DIR" >&2; exit 2; }
    cp "$AB_DIR/$arm"/out/config.json "$AB_DIR/$arm"/out/*.safetensors "$OUT"/
    ls -la "$OUT"
    ;;
  *)
    echo "usage: device_stage3_ab.sh train | resume | fetch A|B   (ARM_A, ARM_B, STAGE3_MIN, STAGE3_BASE, GPU_A, GPU_B," \
      "EVAL_DEVICE, EVAL_SPECS, EVAL_ARGS, AB_DIR, OUT, PYTHON)" >&2
    exit 2
    ;;
esac
