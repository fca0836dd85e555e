"""`knotanim render`: portrait + audio file -> mp4 / webm / PNG sequence (single file or batch).

Exit codes: 0 done; 2 bad input/output (one-line message); 1 some batch rows failed; 130 interrupted
(Ctrl-C or SIGTERM: the partial output is finalised and playable).

GPU out of memory mid-render: a `warning:` line says so and the file is rendered again from the start
on a smaller installed profile on the same GPU, else on the CPU (knotanim.render.FallbackRenderer);
the partial file stays at the output path until the new one is complete.
"""
from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

from knotanim.request import add_model_arguments
from knotanim.errors import InputError, OutputError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jp2", ".ppm", ".pgm", ".heic"}
AUDIO_EXTS = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".oga", ".wma", ".aif", ".aiff"}
BAR_WIDTH = 24
LINE_INTERVAL = 5.0  # seconds between progress lines when stderr is not a terminal


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "render", help="animate a portrait to an audio file (mp4 / webm / PNG frames)",
        description="Animate the face in a portrait in sync with speech and write a video with the "
        "original audio. Output format from the name: .mp4 (H.264 + AAC), .webm (VP9 + Opus), "
        "or a folder/ (PNG frames + audio.wav).")
    io = p.add_argument_group("input and output")
    io.add_argument("--image", "-i", help="portrait image (any format Pillow/OpenCV reads)")
    io.add_argument("--audio", "-a", help="speech audio (any format ffmpeg decodes, or a video's audio)")
    io.add_argument("--output", "-o", help="output .mp4, .webm, or folder/ for PNG frames")
    io.add_argument("--format", choices=("mp4", "webm", "png"), help="output format (default: from --output)")
    io.add_argument("--batch", metavar="FILE_OR_FOLDER",
                    help="render many: a folder of image+audio pairs with the same stem, or a CSV/JSONL "
                    "list of image,audio[,output] rows")
    io.add_argument("--out-dir", metavar="DIR", help="output folder for --batch")
    v = p.add_argument_group("video")
    v.add_argument("--fps", type=float, help="output frame rate (default: the model's, 25)")
    v.add_argument("--crf", type=int, choices=range(0, 64), metavar="0-63",
                   help="quality, lower is better (default: 18 for H.264, 32 for VP9)")
    v.add_argument("--crop-only", action="store_true", help="write only the animated face crop")
    v.add_argument("--face-index", type=int, default=0, metavar="N", help="which face, by size (0 = largest)")
    v.add_argument("--no-face-detect", action="store_true", help="animate the whole image (centre square crop)")
    m = p.add_argument_group("model")
    add_model_arguments(m, flags=("model", "profile", "device", "dtype", "backend", "engine-dir", "steps"))
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--head-motion", type=_unit_float, default=0.5, metavar="0..1")
    m.add_argument("--no-knot", action="store_true", help="ablation: disable the knot between chunks")
    m.add_argument("--no-run-ahead", action="store_true", help="ablation: keep the reference at a fixed position")
    o = p.add_argument_group("messages")
    o.add_argument("--progress", action="store_true", help="always show progress (periodic lines when not a terminal)")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")
    p.set_defaults(run=run)
    return p


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ProgressPrinter:
    """Progress on a text stream: a redrawn bar on a terminal, or a line every LINE_INTERVAL seconds."""

    def __init__(self, out: TextIO, bar: bool, label: str = "render", interval: float | None = None):
        self.out, self.bar, self.label = out, bar, label
        self.interval = interval if interval is not None else (0.1 if bar else LINE_INTERVAL)
        self.last = float("-inf")
        self.drawn = False

    def __call__(self, p) -> None:
        now = time.monotonic()
        final = p.total_frames is not None and p.frames >= p.total_frames
        if now - self.last < self.interval and not final:
            return
        self.last = now
        total = p.total_frames
        count = f"{p.frames}/{total}" if total else f"{p.frames}"
        stats = f"{count} frames  {p.speed:5.1f} fps  ETA {_clock(p.eta)}"
        if self.bar:
            done = min(1.0, p.frames / total) if total else 0.0
            filled = int(done * BAR_WIDTH)
            self.out.write(f"\r\x1b[K{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done * 100:3.0f}%  {stats}")
            self.drawn = True
        else:
            self.out.write(f"{self.label}: {stats}\n")
        self.out.flush()

    def end(self) -> None:
        """Finish the bar's line (call before printing anything else)."""
        if self.drawn:
            self.out.write("\n")
            self.out.flush()
            self.drawn = False


class Interrupts:
    """What `stop_signals_interrupt` saw. Its handler raises KeyboardInterrupt at once and also remembers
    the signal, because an exception raised in a signal handler can be lost: Python runs the handler at
    the next bytecode, which may be in a Python function called from C code that discards whatever error
    it gets back (seen once in CI: a SIGTERM mid-render was ignored and the render ran to its end). Long
    loops call `check()` at safe points, which raises KeyboardInterrupt again once a signal came."""

    def __init__(self) -> None:
        self.received: int | None = None  # the signal number, once one came

    def check(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[Interrupts]:
    """While active, SIGTERM and SIGINT (Ctrl-C) raise KeyboardInterrupt, so the output is finalised
    the same way after either, and are recorded in the Interrupts it yields (see there why)."""
    interrupts = Interrupts()

    def handler(signum, frame):
        interrupts.received = signum
        raise KeyboardInterrupt

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they were
        pass
    try:
        yield interrupts
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _backend_for(args, animator):
    """The ChunkBackend for --backend (None: eager torch); says which when it is not eager torch."""
    if args.backend == "torch":
        return None
    from knotanim.engines import select_backend

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"backend: {msg}", file=sys.stderr, flush=True)

    backend, reason = select_backend(args.backend, animator, knot=not args.no_knot, steps=args.steps,
                                     model_path=_model_path(args), artifacts=args.engine_dir,
                                     progress=say)
    if backend.name != "torch":
        say(reason)
    return backend


def _options(args, printer: ProgressPrinter | None, interrupts: Interrupts, backend=None):
    """RenderOptions from the arguments; its progress callback draws `printer` (if any) and raises
    KeyboardInterrupt once a stop signal came (Interrupts.check), after every output frame."""
    from knotanim.render import RenderOptions

    def progress(p) -> None:
        interrupts.check()
        if printer:
            printer(p)

    return RenderOptions(
        fps=args.fps, format=args.format, crf=args.crf, crop_only=args.crop_only, face_index=args.face_index,
        face_detect=not args.no_face_detect, seed=args.seed, head_motion=args.head_motion, knot=not args.no_knot,
        run_ahead=not args.no_run_ahead, steps=args.steps, progress=progress, backend=backend)


def _progress_for(args, label: str = "render") -> ProgressPrinter | None:
    if args.quiet:
        return None
    tty = sys.stderr.isatty()
    if not (tty or args.progress):
        return None
    return ProgressPrinter(sys.stderr, bar=tty, label=label)


def _model_path(args):
    """--model, else the --profile's folder (auto: the best-quality installed profile)."""
    if args.model:
        return args.model
    from knotanim.profiles import find_profile

    return find_profile(getattr(args, "profile", "auto")).path


def _load_animator(args):
    """The model on the requested device; no GPU, or no room on it for the model: the CPU, with a
    `note:` line saying so (as `knotanim live` does)."""
    from knotanim.animator import KnotAnimator
    from knotanim.loading import load_for_live
    from knotanim.profiles import parse_dtype

    path = _model_path(args)
    dtype = parse_dtype(getattr(args, "dtype", "auto"))
    animator, notes = load_for_live(lambda device: KnotAnimator.from_pretrained(path, device=device, dtype=dtype),
                                    args.device, probe=None)
    for note in notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    return animator


def _renderer(args, animator, printer: ProgressPrinter | None):
    """Renders with `animator`; GPU out of memory: says so in a `warning:` line (even with --quiet)
    and renders again on a smaller installed profile, else on the CPU."""
    from knotanim.profiles import find_profile
    from knotanim.render import FallbackRenderer

    profile = None if args.model else find_profile(getattr(args, "profile", "auto")).name

    def say(message: str) -> None:
        if printer:
            printer.end()
        print(f"warning: {message}", file=sys.stderr, flush=True)
    return FallbackRenderer(animator, model_name=profile or str(args.model), profile=profile, say=say)


def run(args) -> int:
    if args.batch:
        if args.image or args.audio or args.output:
            raise InputError("--batch takes its inputs from the list/folder; drop --image/--audio/--output")
        return _run_batch(args)
    missing = [name for name, value in (("--image", args.image), ("--audio", args.audio), ("--output", args.output)) if not value]
    if missing:
        raise InputError(f"render needs {', '.join(missing)} (or --batch FILE_OR_FOLDER --out-dir DIR)")
    from knotanim.render import RenderInterrupted

    printer = _progress_for(args)
    animator = _load_animator(args)
    with stop_signals_interrupt() as interrupts:
        try:
            options = _options(args, printer, interrupts, _backend_for(args, animator))
            summary = _renderer(args, animator, printer).render(args.image, args.audio, args.output, options)
        except RenderInterrupted as e:
            if printer:
                printer.end()
            kept = "frames written so far are kept" if e.summary.format == "png" else "the file is finalised and playable"
            print(f"knotanim render: interrupted: {kept}: {e.summary.line()}", file=sys.stderr)
            return 130
        finally:
            if printer:
                printer.end()
    if not args.quiet:
        print(summary.line(), file=sys.stderr)
    return 0


# --- batch -------------------------------------------------------------------------------------------
def collect_batch_jobs(source: str | Path, out_dir: str | Path, fmt: str | None = None):
    """Jobs from a folder (image + audio with the same stem) or a CSV / JSONL list.

    Returns (jobs: list[BatchJob], problems: list[(what, reason)]) — problems are rows or files
    that cannot become a job (they are reported as failures). Relative paths in a list are taken
    from the list's folder; relative outputs from out_dir.
    """
    from knotanim.render import BatchJob

    source, out_dir = Path(source), Path(out_dir)
    ext = {"webm": ".webm", "png": ""}.get(fmt or "mp4", ".mp4")
    rows: list[tuple[str, dict]] = []
    problems: list[tuple[str, str]] = []
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file())
        images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_EXTS}
        audios = {p.stem: p for p in files if p.suffix.lower() in AUDIO_EXTS}
        for stem in sorted(set(images) | set(audios)):
            if stem in images and stem in audios:
                rows.append((stem, {"image": images[stem], "audio": audios[stem]}))
            else:
                have = images.get(stem) or audios.get(stem)
                problems.append((have.name, "no " + ("audio" if stem in images else "image") + " file with the same name"))
    elif source.is_file():
        rows, problems = _read_list(source)
    else:
        raise InputError(f"batch source {source} does not exist")
    jobs, used = [], set()
    for what, row in rows:
        image, audio = Path(row["image"]), Path(row["audio"])
        if not source.is_dir():
            image, audio = (p if p.is_absolute() else source.parent / p for p in (image, audio))
        output = row.get("output")
        if output:
            output = Path(output) if Path(output).is_absolute() else out_dir / output
        else:
            name = image.stem if image.stem not in used else f"{image.stem}_{audio.stem}"
            output = out_dir / (name + ext)
        used.add(Path(output).stem)
        jobs.append(BatchJob(image, audio, Path(output)))
    return jobs, problems


def _read_list(path: Path):
    rows, problems = [], []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read batch list {path}: {getattr(e, 'strerror', None) or e}") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append((f"line {n}", f"not valid JSON ({e.msg})"))
                continue
            if not isinstance(row, dict) or not row.get("image") or not row.get("audio"):
                problems.append((f"line {n}", "needs \"image\" and \"audio\" fields"))
                continue
            rows.append((f"line {n}", row))
        return rows, problems
    reader = list(csv.reader(text.splitlines()))
    header = [c.strip().lower() for c in reader[0]] if reader else []
    start = 1 if "image" in header and "audio" in header else 0
    columns = header if start else ["image", "audio", "output"]
    for n, cells in enumerate(reader[start:], start + 1):
        if not any(c.strip() for c in cells):
            continue
        row = {k: c.strip() for k, c in zip(columns, cells)}
        if not row.get("image") or not row.get("audio"):
            problems.append((f"row {n}", "needs an image and an audio column"))
            continue
        rows.append((f"row {n}", row))
    return rows, problems


def _run_batch(args) -> int:
    from knotanim.render import render_batch, RenderInterrupted

    if not args.out_dir:
        raise InputError("--batch needs --out-dir DIR")
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        if not out_dir.parent.is_dir():
            raise OutputError(f"output folder {out_dir.parent} does not exist")
        try:
            out_dir.mkdir()
        except OSError as e:
            raise OutputError(f"cannot create {out_dir}: {e.strerror or e}") from None
    jobs, problems = collect_batch_jobs(args.batch, out_dir, args.format)
    if not jobs and not problems:
        raise InputError(f"batch {args.batch}: nothing to render")
    animator = _load_animator(args) if jobs else None
    failed = list(problems)
    done = 0

    def report(result) -> None:
        nonlocal done
        if printer:
            printer.end()
        if result.error:
            failed.append((f"{result.job.image.name} + {result.job.audio.name}", result.error))
            if not args.quiet:
                print(f"failed: {result.job.image.name} + {result.job.audio.name}: {result.error}", file=sys.stderr)
        else:
            done += 1
            if not args.quiet:
                print(result.summary.line(), file=sys.stderr)

    printer = _progress_for(args)
    with stop_signals_interrupt() as interrupts:
        try:
            backend = _backend_for(args, animator) if animator is not None else None
            renderer = _renderer(args, animator, printer) if animator is not None else None
            render_batch(animator, jobs, _options(args, printer, interrupts, backend), on_result=report, renderer=renderer)
        except RenderInterrupted as e:
            if printer:
                printer.end()
            print(f"knotanim render: interrupted after {done} of {len(jobs)} renders; the current one is "
                  f"finalised: {e.summary.line()}", file=sys.stderr)
            return 130
    total = len(jobs) + len(problems)
    print(f"batch: {done} of {total} rendered, {len(failed)} failed", file=sys.stderr)
    for what, why in failed:
        print(f"  {what}: {why}", file=sys.stderr)
    return 1 if failed else 0
