#!/usr/bin/env bash
# Issue #5's 2-hour soak on the accelerator machine, across two device calls of at most 10 minutes each.
#
# At ~10 ms per chunk the compiled default model streams ~11x faster than real time, so 2 hours of stream
# take ~11 minutes of wall time: more than one call. A process that starts its own session (setsid)
# outlives the call that started it, for as long as the machine stays warm (30 s after a call), so:
#
#   call 1:  OUT=$OUT bash scripts/device_soak.sh start   > $OUT/soak_start.txt 2>&1
#   call 2:  OUT=$OUT bash scripts/device_soak.sh collect > $OUT/soak_collect.txt 2>&1   (within 30 s)
#
# start    launches `knotanim soak` (SOAK_ARGS, default: --mode stream --backend compiled --stream-hours 2
#          --device cuda) in a new session with its outputs in SOAK_DIR (default /tmp/knotanim_soak), then
#          stays WAIT_S seconds (default 560) so the machine is held while it runs, and copies what the soak
#          has written so far into $OUT/soak_partial.tar.gz (a safety net should the machine be lost).
# collect  waits up to WAIT_S seconds (default 560) for the soak to end; if it is still running then, it sends
#          SIGTERM (the soak writes its summary, complete: false, and the stream time reached) and waits
#          for it. Then $OUT/soak.tar.gz holds SOAK_DIR (CSV, JSON summary, PNG plots, the soak's console
#          output soak.txt). Exit status 0 when the soak completed and every check passed, 1 otherwise, 3 when no soak was started.
# status   one line: running or not, and the soak's last progress line.
#
# Nothing else should run on the machine meanwhile: the per-chunk time is one of the checks (docs/reliability.md).
# Rehearsal on a CPU (tests/test_device_soak.py): SOAK_ARGS with --tiny --device cpu --backend torch and a
# short --stream-hours, small WAIT_S; PYTHON (default python3). The code (PYTHONPATH) comes from this checkout.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-out}
SOAK_DIR=${SOAK_DIR:-/tmp/knotanim_soak}
WAIT_S=${WAIT_S:-560}
SOAK_ARGS=${SOAK_ARGS:---mode stream --backend compiled --stream-hours 2 --device cuda}
PIDFILE=$SOAK_DIR/soak.pid
mkdir -p "$OUT"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2> /dev/null; }

pack() {  # $1: the archive's name in $OUT
  tar czf "$OUT/$1" -C "$(dirname "$SOAK_DIR")" "$(basename "$SOAK_DIR")" && echo "packed $OUT/$1 ($(wc -c < "$OUT/$1") B)"
}

wait_for_exit() {  # up to $1 seconds; 0 once the soak has exited
  local end=$(($(date +%s) + $1))
  while running; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 2
  done
  return 0
}

case "${1:-}" in
  start)
    if running; then echo "device_soak: a soak is already running (pid $(cat "$PIDFILE"))" >&2; exit 2; fi
    rm -rf "$SOAK_DIR" && mkdir -p "$SOAK_DIR"
    # shellcheck disable=SC2086  # SOAK_ARGS is a list of words
    PYTHONPATH=$ROOT PYTHONUNBUFFERED=1 setsid "$PY" -m knotanim.cli.main soak $SOAK_ARGS --out "$SOAK_DIR" \
      > "$SOAK_DIR/soak.txt" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    echo "started knotanim soak (pid $(cat "$PIDFILE"), its own session) at $(date -u +%H:%M:%SZ): $SOAK_ARGS --out $SOAK_DIR"
    wait_for_exit "$WAIT_S" && echo "the soak ended within this call"
    tail -n 3 "$SOAK_DIR/soak.txt"
    pack soak_partial.tar.gz
    if running; then echo "still running: collect it in the next call (within 30 s)"; fi
    ;;
  collect)
    [ -f "$PIDFILE" ] || { echo "device_soak: no soak was started here (no $PIDFILE)" >&2; exit 3; }
    if ! wait_for_exit "$WAIT_S"; then
      echo "still running after $WAIT_S s: SIGTERM (the soak writes its summary, complete: false)"
      kill -TERM "$(cat "$PIDFILE")"
      wait_for_exit 120 || { echo "no exit 120 s after SIGTERM: SIGKILL"; kill -KILL "$(cat "$PIDFILE")"; }
    fi
    tail -n 25 "$SOAK_DIR/soak.txt"
    pack soak.tar.gz
    grep -q "^complete; all checks pass: True" "$SOAK_DIR/soak.txt"  # a partial soak is no pass
    ;;
  status)
    if running; then state="running (pid $(cat "$PIDFILE"))"; else state="not running"; fi
    echo "$state; last line: $(tail -n 1 "$SOAK_DIR/soak.txt" 2> /dev/null || echo none)"
    ;;
  *)
    echo "usage: device_soak.sh start | collect | status   (OUT, SOAK_DIR, WAIT_S, SOAK_ARGS, PYTHON)" >&2
    exit 2
    ;;
esac
