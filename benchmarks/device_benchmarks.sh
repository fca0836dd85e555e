#!/usr/bin/env bash
# Issue #7: the three GPU benchmarks of docs/benchmarks.md in one device call (one H200, < 9.5 minutes), and
# issue #10's lite-profile speed on 4 of the machine's CPU cores.
#
#   OUT=$OUT bash benchmarks/device_benchmarks.sh > $OUT/bench.txt 2>&1
#
# Parts, in this order (PARTS, default "backends scaling lite wan"; the order is the priority):
#   backends  `knotanim bench --backend ...` on the default model (assets/default): eager torch, torch.compile
#             (reduce-overhead: CUDA graphs) and ONNX Runtime, each in its own child process, stopped after
#             BACKEND_TIMEOUT_S (default 100) each; frames/s, chunk latency, time to first frame, peak GPU
#             memory; BACKENDS_SECONDS (default 3) seconds of audio per timed stream, except where
#             BACKENDS_SECONDS_FOR (default onnxruntime=1; empty: none) says otherwise. The machine's
#             onnxruntime is the CPU build: its row is "onnxruntime[CPU]" (an ONNX Runtime CPU session fed
#             from and back to the GPU stream each chunk), not a GPU ONNX Runtime; its export (~16 s) and
#             CPU parity check come first, and each of its chunks takes a large part of a second, hence its
#             1 s of audio (the last run's 3 s did not finish in the old 150 s budget).
#             -> backends.json (rewritten after each backend)
#   scaling   benchmarks/bench_scaling.py --device cuda --backend SCALING_BACKEND: per-chunk time against window,
#             chunk length, frame size, and one long stream stopped after SCALING_LONG_BUDGET_S (default 35)
#             seconds. SCALING_BACKEND: default graphs on cuda (each point's eager ChunkStep captured in one
#             CUDA graph: the sweep measures compute, with the GPU replay time per step, not the ~90 ms of
#             host launch overhead the eager step takes at every size), torch (eager) on the CPU;
#             SCALING_BACKEND=torch keeps the eager sweep on the GPU.
#             -> scaling.json (rewritten after each point), scaling.png
#   lite      scripts/lite_speed.py on the lite profile (configs/models/lite.yaml, random weights) on the CPU:
#             LITE_THREADS (default 4) threads, pinned to as many cores with taskset where it exists,
#             backends LITE_BACKENDS (default torch,onnxruntime), LITE_FRAMES (default 96) frames each.
#             -> its table in summary.txt (and lite.log in the logs tarball); no file of its own
#   wan       benchmarks/bench_wan_shape.py: the Wan2.1-1.3B-shaped same-work benchmark, variants WAN_VARIANTS
#             (default eager,compile,graphs,fp8,cudnn,fp8-cudnn: cudnn and fp8-cudnn are graphs and fp8 with
#             cuDNN's fused attention, skipped with a reason where it does not run), WAN_ITERS (default 3)
#             timed rounds after WAN_WARMUP (1). -> wan.json (rewritten after each variant and workload)
# Each part runs under `timeout` with a wall-clock budget (BACKENDS_S 200, SCALING_S 110, LITE_S 40, WAN_S
# 170 by default: 520 s in all, counted from the script's start; the environment check and the packing add a
# few seconds; the wan part used 127 s of its old 260 in the last run, the backends part needed more than 150). Time a part leaves unused goes to the next ones: part k is stopped at the start + the
# sum of the budgets of parts 1..k (SIGTERM; SIGKILL 10 s later if it is still running), so the parts never run
# more than 10 s past the sum. A part that fails or is
# stopped does not stop the others; the script exits 1 at the end if any part did not exit 0.
#
# Contention: at the start of every part the script records the 1-minute load average (LOADAVG_FILE, default
# /proc/loadavg; n/a where absent) and, where nvidia-smi exists, how many compute processes are on the GPUs
# (all of them other jobs': the part has not started yet; n/a without nvidia-smi). summary.txt's part table
# shows them as load1_at_start and gpu_procs_at_start, and a part that started with a load above half the CPU
# count (nproc) gets 'CONTENDED: load X on N cores at start' on its line: its timings are suspect. The wan
# part also records the load at the start of each of its runs (wan.json, and its lines in summary.txt).
#
# $OUT gets at most 7 files: the four above, summary.txt (each part's exit status, outcome, duration,
# budget, its outputs and a digest of its results; rewritten after every part), bench_logs.tar.gz (each
# part's console output, the environment, GPU memory samples from nvidia-smi every second; repacked
# after every part), and the caller's bench.txt (this script's stdout and stderr: every part's output
# is teed there too, so it survives even a call killed from outside).
#
# Knobs for the rehearsal on a CPU (tests/test_device_scripts.py): DEVICE=cpu (default cuda), PYTHON
# (default python3), BACKENDS (default torch,compiled,onnxruntime), BACKENDS_SECONDS (seconds of audio
# per timed stream, default 3), BACKENDS_SECONDS_FOR, SCALING_BACKEND, and BACKENDS_ARGS / SCALING_ARGS / LITE_ARGS / WAN_ARGS: more options for a part's
# script, last (tiny sizes; or a bad option, to see a failing part reported); LOADAVG_FILE (a fake
# load average, to see a contended part reported). The logs go to LOGS
# (default runs/bench) and $OUT (default out), both relative to the working directory; the code
# (PYTHONPATH) comes from the checkout this script lies in; knotanim need not be installed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH=$ROOT PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-out}
LOGS=${LOGS:-runs/bench}
PARTS=${PARTS:-backends scaling lite wan}
BACKENDS_S=${BACKENDS_S:-200}; SCALING_S=${SCALING_S:-110}; LITE_S=${LITE_S:-40}; WAN_S=${WAN_S:-170}
BACKENDS=${BACKENDS:-torch,compiled,onnxruntime}; BACKENDS_SECONDS=${BACKENDS_SECONDS:-3}
BACKENDS_SECONDS_FOR=${BACKENDS_SECONDS_FOR-onnxruntime=1}  # set but empty: every backend gets BACKENDS_SECONDS
BACKEND_TIMEOUT_S=${BACKEND_TIMEOUT_S:-100}
SCALING_LONG_BUDGET_S=${SCALING_LONG_BUDGET_S:-35}
if [ "$DEVICE" = cuda ]; then SCALING_BACKEND=${SCALING_BACKEND:-graphs}; else SCALING_BACKEND=${SCALING_BACKEND:-torch}; fi
LITE_THREADS=${LITE_THREADS:-4}; LITE_BACKENDS=${LITE_BACKENDS:-torch,onnxruntime}; LITE_FRAMES=${LITE_FRAMES:-96}
WAN_VARIANTS=${WAN_VARIANTS:-eager,compile,graphs,fp8,cudnn,fp8-cudnn}; WAN_ITERS=${WAN_ITERS:-3}; WAN_WARMUP=${WAN_WARMUP:-1}
for part in $PARTS; do
  case $part in backends|scaling|lite|wan) ;; *) echo "unknown part $part (PARTS: backends, scaling, lite, wan)"; exit 2 ;; esac
done
mkdir -p "$OUT" "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/parts.tsv "$LOGS"/gpumem.csv
T0=$(date +%s)
export LOADAVG_FILE=${LOADAVG_FILE:-/proc/loadavg}  # exported: bench_wan_shape.py reads it too
# the cores this script may use (nproc without OMP_NUM_THREADS / OMP_THREAD_LIMIT, which it would report instead)
NCPU=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2> /dev/null || getconf _NPROCESSORS_ONLN 2> /dev/null || echo 1)

{
  echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE, parts: $PARTS"
  echo "commit $(git -C "$ROOT" rev-parse HEAD 2> /dev/null || echo unknown)"
  timeout 60 "$PY" -c "
import platform, sys, torch
n = torch.cuda.device_count()
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'GPUs:', n, torch.cuda.get_device_name(0) if n else '', 'CPU cores:', __import__('os').cpu_count())
for mod in ('onnx', 'onnxruntime', 'tensorrt', 'matplotlib'):
    try:
        m = __import__(mod)
        extra = m.get_available_providers() if mod == 'onnxruntime' else ''
        print(mod, getattr(m, '__version__', '?'), extra)
    except Exception as e:
        print(mod, 'not available:', type(e).__name__)
" 2>&1
  command -v nvidia-smi > /dev/null && nvidia-smi -L
} | tee "$LOGS/env.txt"

mon=""
if [ "$DEVICE" = cuda ] && command -v nvidia-smi > /dev/null; then  # GPU memory in use, every second
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 1000 > "$LOGS/gpumem.csv" &
  mon=$!
fi

load1_now() {  # the 1-minute load average, or n/a
  local l _
  if read -r l _ < "$LOADAVG_FILE" 2> /dev/null && [[ $l =~ ^[0-9]+(\.[0-9]+)?$ ]]; then echo "$l"; else echo n/a; fi
}

gpu_procs_now() {  # compute processes on the GPUs (nvidia-smi), or n/a
  local apps
  command -v nvidia-smi > /dev/null || { echo n/a; return; }
  apps=$(timeout 20 nvidia-smi --query-compute-apps=pid --format=csv,noheader 2> /dev/null) || { echo n/a; return; }
  printf '%s\n' "$apps" | grep -c '[0-9]'
}

contended() {  # $1 load, $2 cores: exit 0 where the load exceeds half the cores
  [ "$1" != n/a ] && awk -v l="$1" -v n="$2" 'BEGIN { exit !(l > n / 2) }'
}

outputs() {  # the files in $OUT a part writes
  case $1 in backends) echo backends.json ;; scaling) echo scaling.json scaling.png ;; wan) echo wan.json ;; esac
}

summarise() {  # summary.txt and bench_logs.tar.gz from what has run so far
  {
    echo "benchmarks/device_benchmarks.sh: device $DEVICE, parts: $PARTS; budgets (s): backends $BACKENDS_S," \
      "scaling $SCALING_S, lite $LITE_S, wan $WAN_S; scaling backend $SCALING_BACKEND; $(($(date +%s) - T0)) s so far"
    echo
    printf '%-9s %-5s %-10s %8s %8s %14s %18s  %s\n' part exit outcome wall_s limit_s load1_at_start \
      gpu_procs_at_start outputs
    ncontended=0
    [ -f "$LOGS/parts.tsv" ] && while IFS=$'\t' read -r name rc outcome wall limit load gprocs; do
      files=""
      for f in $(outputs "$name"); do
        if [ -f "$OUT/$f" ]; then files+="$f ($(wc -c < "$OUT/$f") B) "; else files+="$f (missing) "; fi
      done
      note=""
      if contended "$load" "$NCPU"; then note="  CONTENDED: load $load on $NCPU cores at start"; ncontended=$((ncontended + 1)); fi
      printf '%-9s %-5s %-10s %8s %8s %14s %18s  %s%s\n' "$name" "$rc" "$outcome" "$wall" "$limit" "$load" "$gprocs" \
        "$files" "$note"
    done < "$LOGS/parts.tsv"
    echo
    if [ "$ncontended" -gt 0 ]; then
      echo "WARNING: $ncontended part(s) started on a contended machine (1-minute load above half of $NCPU cores):" \
        "their timings are suspect"
    fi
    "$PY" "$ROOT"/benchmarks/device_benchmarks_digest.py "$OUT" 2>&1 || true
    if [ -f "$LOGS/lite.log" ]; then  # lite_speed.py prints its own Markdown table
      echo; echo "lite (scripts/lite_speed.py, CPU):"; grep -E '^(\| |20[0-9][0-9]-)' "$LOGS/lite.log" || echo "  no table"
    fi
  } > "$OUT/summary.txt"
  (cd "$LOGS" && tar czf - $(ls env.txt parts.tsv gpumem.csv ./*.log 2> /dev/null)) > "$OUT/bench_logs.tar.gz"
}

failed=0
deadline=$T0
for part in $PARTS; do
  case $part in
    backends) budget=$BACKENDS_S
      # shellcheck disable=SC2086  # *_ARGS are lists of words
      cmd=("$PY" -m knotanim.cli.main bench --device "$DEVICE" $(printf -- '--backend %s ' ${BACKENDS//,/ })
           --seconds "$BACKENDS_SECONDS" --seconds-for "$BACKENDS_SECONDS_FOR" --timeout-s "$BACKEND_TIMEOUT_S"
           --engine-dir "$LOGS/artifacts" --json "$OUT/backends.json" ${BACKENDS_ARGS:-}) ;;
    scaling) budget=$SCALING_S
      cmd=("$PY" "$ROOT"/benchmarks/bench_scaling.py --device "$DEVICE" --backend "$SCALING_BACKEND" --out "$OUT"
           --long-budget-s "$SCALING_LONG_BUDGET_S" ${SCALING_ARGS:-}) ;;
    lite) budget=$LITE_S
      pin=()  # the thread count pinned to as many cores, where taskset exists and the machine has them
      if command -v taskset > /dev/null && [ "$(nproc)" -ge "$LITE_THREADS" ]; then pin=(taskset -c "0-$((LITE_THREADS - 1))"); fi
      cmd=(${pin[@]+"${pin[@]}"} "$PY" "$ROOT"/scripts/lite_speed.py --config "$ROOT"/configs/models/lite.yaml
           --backends "$LITE_BACKENDS" --threads "$LITE_THREADS" --frames "$LITE_FRAMES" --artifacts "$LOGS/lite_artifacts"
           ${LITE_ARGS:-}) ;;
    wan) budget=$WAN_S
      cmd=("$PY" "$ROOT"/benchmarks/bench_wan_shape.py --device "$DEVICE" --variants "$WAN_VARIANTS" --iters "$WAN_ITERS"
           --warmup "$WAN_WARMUP" --out "$OUT/wan.json" ${WAN_ARGS:-}) ;;
  esac
  deadline=$((deadline + budget))
  load=$(load1_now); gprocs=$(gpu_procs_now)
  start=$(date +%s)
  limit=$((deadline - start)); [ "$limit" -lt 1 ] && limit=1
  echo
  echo "== $part: limit ${limit} s (budget $budget s + what earlier parts left): ${cmd[*]}"
  echo "== $part: load1 $load on $NCPU cores, $gprocs compute process(es) on the GPUs at start$(contended "$load" "$NCPU" && echo ": CONTENDED")"
  timeout -k 10 "$limit" "${cmd[@]}" 2>&1 | tee "$LOGS/$part.log"
  rc=${PIPESTATUS[0]}
  wall=$(($(date +%s) - start))
  case $rc in
    0) outcome=ok ;;
    124|137) outcome="timed-out" ;;
    *) outcome=failed ;;
  esac
  [ "$rc" = 0 ] || failed=1
  echo "== $part: exit $rc ($outcome) after $wall s"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$part" "$rc" "$outcome" "$wall" "$limit" "$load" "$gprocs" >> "$LOGS/parts.tsv"
  summarise
done
[ -n "$mon" ] && kill "$mon" && wait "$mon" 2> /dev/null
summarise
echo
cat "$OUT/summary.txt"
ls -la "$OUT"
exit $failed
