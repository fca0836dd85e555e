#!/usr/bin/env bash
# The long-horizon Knot Forcing ablation (issue #9) on one GPU, in one call of at most 10 minutes:
# KnotBench's 10-minute still-head stream (configs/eval/knotbench_long10.json, the `long` clip of the
# full set) under three variants (default = knot + running ahead, no-knot, no-run-ahead), minute 1
# against minute 10. Scoring a 15,000-frame row takes ~1.5 min of one CPU core, so the rows are split
# over three processes on the same GPU (`knotanim eval --reference-rows`), two rows each:
#   default + audio-zeroed,  no-knot + copy-reference,  no-run-ahead + ground-truth.
# Each writes its report folder and log under /tmp/long_ablation; everything comes back in one file,
# $OUT/long_ablation.tar.gz. A part that runs past LIMIT_S is killed and says so in its log; the others keep
# theirs.
#
#   OUT=$OUT bash scripts/device_long_ablation.sh
#
# MODEL (default assets/default), MINUTES (default: the spec's 10), BACKEND (default compiled), DEVICE
# (default cuda), CORPUS (default .cache/data/speech_eval.npz: the eval speech; carry it), LIMIT_S (default 540),
# PYTHON (default python3). Rehearsed on the CPU in tests/test_device_scripts.py.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$ROOT PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-out}
WORK=${WORK:-/tmp/long_ablation}
MODEL=${MODEL:-$ROOT/assets/default}
mkdir -p "$OUT" "$WORK"
minutes=()
[ -n "${MINUTES:-}" ] && minutes=(--long-minutes "$MINUTES")
part() {  # part NAME VARIANT REFERENCE_ROWS
  timeout "${LIMIT_S:-540}" "$PY" -m knotanim.cli.main eval --model "$MODEL" --spec "$ROOT"/configs/eval/knotbench_long10.json \
    ${minutes[@]+"${minutes[@]}"} --corpus "${CORPUS:-.cache/data/speech_eval.npz}" --backend "${BACKEND:-compiled}" \
    --device "${DEVICE:-cuda}" --variants "$2" --reference-rows "$3" --out "$WORK/$1" > "$WORK/$1.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "killed after ${LIMIT_S:-540} s (LIMIT_S)" >> "$WORK/$1.log"
  echo "$1: exit $rc" >> "$WORK/parts.txt"
}
: > "$WORK/parts.txt"
part default default audio-zeroed &
part no-knot no-knot copy-reference &
part no-run-ahead no-run-ahead ground-truth &
wait
"$PY" "$ROOT"/scripts/long_ablation_table.py "$WORK"/*/report.json > "$WORK/table.md" 2>&1
cat "$WORK/parts.txt" "$WORK/table.md"
tar czf "$OUT"/long_ablation.tar.gz -C "$(dirname "$WORK")" "$(basename "$WORK")"
