"""`knotanim soak`: memory, per-chunk time, output drift and queue depths over a long stream.

  --mode stream  drives a KnotStream directly, as fast as the hardware allows, for --stream-hours of stream
                 time (default 2.0) with an endless speech-like signal (the bundled speech.wav looped with
                 random gaps and gain, seeded), sampling every --sample-seconds of stream time. --backend
                 picks the chunk backend as `knotanim render/live --backend` do; it is built, and compiled,
                 before the stream's clock starts.
  --mode live    runs the real LivePipeline (fake microphone looping the same signal in real time, recording
                 to a fragmented mp4 in a temporary folder) for --minutes, sampling every second.

Outputs in --out: soak_<mode>.csv, soak_<mode>.json (pass/fail checks and the command), PNG plots.
--max-wall-s (counted from the command's start: imports, model load and the backend's compile included) or
SIGTERM / Ctrl-C ends a run early; the summary then says complete: false and the stream time reached. Exit
status 0 when the run completed and every check passed, 1 otherwise.

  knotanim soak --mode stream --tiny --stream-hours 2 --backend torch --out docs/soak/cpu_tiny
  knotanim soak --mode stream --backend compiled --stream-hours 2 --device cuda --max-wall-s 540 --out $OUT/soak
  knotanim soak --mode live --tiny --minutes 3 --out docs/soak/cpu_tiny_live
"""
from __future__ import annotations

import argparse
import time

from knotanim.request import ModelRequest, add_model_arguments, positive_float

T0 = time.monotonic()  # the command's start, near enough: --max-wall-s counts from here


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="long-run reliability test: memory, chunk time, drift, queue depths",
                       description="Soak test: " + __doc__.split("\n\n", 1)[0].split(": ", 1)[1] + "\n\n"
                       + __doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("stream", "live"), default="stream")
    p.add_argument("--stream-hours", type=positive_float, default=2.0, help="stream mode: hours of stream time")
    p.add_argument("--minutes", type=positive_float, default=3.0, help="live mode: minutes of real time")
    add_model_arguments(p, flags=("model", "tiny", "device", "dtype", "backend", "engine-dir"), purpose="live")
    p.add_argument("--out", required=True, help="folder for the CSV, the JSON summary and the plots")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-seconds", type=positive_float, default=None,
                   help="stream: stream seconds between samples (default 10); live: wall seconds (default 1)")
    p.add_argument("--max-wall-s", type=positive_float, default=None,
                   help="stream mode: stop once this many wall seconds have passed since the command started "
                   "(imports, model load and the backend's build/compile count), then write every output")
    p.add_argument("--vcam", choices=("none", "null", "real"), default="null",
                   help="live mode: virtual camera output (null: the real output class with a discarding camera)")
    p.add_argument("--drift-factor", type=positive_float, default=1.5,
                   help="a drift check fails when the last 10%% of the run exceed the first 10%% by this factor")
    p.add_argument("--gc-every", type=int, default=6,
                   help="stream mode: count Python's gc objects every N samples (rows between repeat the last "
                   "count); the count walks every object, tens of ms with torch.compile loaded")
    p.add_argument("--progress", type=int, default=30, help="print every N samples (0: quiet)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    ModelRequest.from_args(args)  # a bad --device etc. is one line before anything loads
    import signal
    from pathlib import Path

    import torch

    from knotanim.cli.main import command_line
    from knotanim.errors import OutputError
    from knotanim.soak.common import StopRequest

    args.gc_every = max(1, args.gc_every)
    if args.sample_seconds is None:
        args.sample_seconds = 10.0 if args.mode == "stream" else 1.0
    args.command_line = command_line(args)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out {out}: {e.strerror or e}") from None
    stop = StopRequest()
    before = {sig: signal.signal(sig, stop.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    torch.manual_seed(args.seed)
    try:
        if args.mode == "stream":
            from knotanim.soak.stream import run_stream

            summary = run_stream(args, out, stop, T0)
        else:
            from knotanim.soak.live import run_live

            summary = run_live(args, out, stop)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    for c in summary["checks"]:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['check']}")
    print(f"{'complete' if summary['complete'] else 'PARTIAL'}; all checks pass: {summary['all_pass']}; outputs in {out}")
    return 0 if summary["all_pass"] else 1
