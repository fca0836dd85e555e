"""`knotanim eval`: run KnotBench on one or more models and write JSON / Markdown / PNG reports."""
from __future__ import annotations

import argparse
import sys
import time

from knotanim.request import ModelRequest, add_model_arguments
from knotanim.errors import ConfigError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="benchmark models on KnotBench (lip sync, PSNR/SSIM, seams, flicker, long-horizon drift)",
        description="Evaluate one or more models on KnotBench: seeded held-out clips generated on demand "
        "(plus the held-out real portrait), scored against ground truth and against two reference rows "
        "(copy-reference and audio-zeroed). Writes report.json, report.md and plots to --out.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few short clips (CI / CPU); no long stream by default")
    size.add_argument("--spec", metavar="JSON", help="a KnotBench spec file (BenchSpec JSON) instead of quick/full")
    p.add_argument("--long-minutes", type=float, default=None, metavar="M",
                   help="length of the long-horizon stream in minutes (full: 10; quick: 0 = none)")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="length of each full-size clip (seconds)")
    p.add_argument("--corpus", default=None, metavar="PATH",
                   help="held-out speech corpus .npz (`knotanim data build-speech --split eval`); needed where "
                   "espeak-ng is not installed (default: synthesise the speech with espeak-ng)")
    p.add_argument("--variants", default="default",
                   help="comma-separated: default, no-knot, no-run-ahead, no-knot-no-run-ahead")
    p.add_argument("--reference-rows", default="ground-truth,copy-reference,audio-zeroed", metavar="ROWS",
                   help="comma-separated reference rows to score beside the variants (default: all three), or none; "
                   "a long run can be split over processes, each scoring some rows")
    p.add_argument("--out", default="knotbench", metavar="DIR", help="report folder (default: ./knotbench)")
    add_model_arguments(p, flags=("model", "device", "dtype", "backend", "engine-dir", "steps"), several_models=True,
                        backend_default="torch")
    p.add_argument("--seed", type=int, default=0, help="stream seed")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    rp = p.add_argument_group("real-photo set (judged by dlib's face models: pip install 'knotanim[eval]')")
    rp.add_argument("--real-photos", action="store_true",
                    help="animate the real photographs (knotanim/eval/photo_set.py) with held-out speech and judge every "
                    "frame: identity distance, sharpness, face found, mouth against the audio envelope, beside the photo "
                    "copied to every frame and the data generator's warped-photo animation. --model also takes a "
                    "profile name (default, lite)")
    rp.add_argument("--photos", default="held-out", metavar="NAMES", help="held-out (default), all, or comma-separated names")
    rp.add_argument("--photo-file", action="append", default=None, metavar="IMAGE",
                    help="judge this photo instead of the set's (repeatable); with --judge-videos, DIR holds <stem>.mp4")
    rp.add_argument("--seconds", type=float, default=10.0, help="length of each real-photo stream, seconds (default 10)")
    rp.add_argument("--judge-videos", action="append", default=None, metavar="[NAME=]DIR",
                    help="judge videos rendered elsewhere instead of rendering here: DIR holds <photo>.mp4 (rendered with "
                    "the speech) and <photo>.audio-zeroed.mp4 (with silence), e.g. from scripts/real_photo_renders.sh; "
                    "NAME labels its rows (default: the folder's name); repeat for several models")
    rp.add_argument("--speech", metavar="AUDIO", help="the speech an audio-zeroed video is scored against when its "
                    "<photo>.mp4 sibling is absent")
    rp.add_argument("--write-inputs", metavar="DIR", help="only write the photos (DIR/photos/<name>.png), the held-out "
                    "speech (DIR/speech_<S>s.wav) and silence (DIR/silence_<S>s.wav) for rendering elsewhere, then stop")
    p.set_defaults(run=run)
    return p


def build_spec(args: argparse.Namespace, fps: int):
    """The BenchSpec the arguments ask for, at the model's frame rate."""
    from knotanim.eval.spec import BenchSpec, full_spec, quick_spec

    if args.long_minutes is not None and args.long_minutes < 0:
        raise ConfigError("--long-minutes must be >= 0")
    if args.spec:
        spec = BenchSpec.load(args.spec)
        return spec.with_long(args.long_minutes, fps) if args.long_minutes is not None else spec
    if args.quick:
        return quick_spec(n_frames=2 * fps).with_long(args.long_minutes or 0.0, fps)
    if args.clip_seconds <= 0:
        raise ConfigError("--clip-seconds must be > 0")
    minutes = 10.0 if args.long_minutes is None else args.long_minutes
    return full_spec(long_minutes=minutes, clip_seconds=args.clip_seconds, fps=fps)


def run_real_photo_set(args: argparse.Namespace) -> int:
    """`--real-photos` / `--write-inputs`: the real-photo set, rendered here or judged from --judge-videos."""
    from pathlib import Path

    from knotanim.eval.photo_set import select_photos, user_photo, write_inputs
    from knotanim.eval.runner import load_animators

    photos = tuple(user_photo(f) for f in args.photo_file) if args.photo_file else select_photos(args.photos)
    if args.seconds < 1:
        raise ConfigError("--seconds must be >= 1 (the judge needs at least a second of video)")
    if args.write_inputs:
        paths = write_inputs(args.write_inputs, photos, args.seconds, args.seed, args.corpus)
        print(f"wrote {len(paths['photos'])} photos, {paths['speech']} and {paths['silence']}")
        return 0
    from knotanim.eval.judge import FaceJudge
    from knotanim.eval.real_photos import run_real_photos

    FaceJudge()  # the judge's models are there, before any model loads or renders
    dirs = []
    for item in args.judge_videos or []:
        name, _, folder = item.rpartition("=")
        dirs.append((name or Path(folder).name, Path(folder)))
    models = []
    if args.model or not dirs:
        from knotanim.profiles import PROFILE_NAMES, find_profile

        paths = [(m, find_profile(m).path) if m in PROFILE_NAMES and not Path(m).exists() else m
                 for m in (args.model or ["default"])]
        models = load_animators(paths, device=args.device)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    t0 = time.perf_counter()
    report = run_real_photos(photos, args.out, models=models, video_dirs=dirs, seconds=args.seconds, seed=args.seed,
                             corpus=args.corpus, speech_path=args.speech, plots=not args.no_plots, say=say)
    print()
    print(report["table"])
    print(f"\nreal-photo set judged in {time.perf_counter() - t0:.0f} s; reports in {args.out}/ (report.md, report.json)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.real_photos or args.write_inputs:
        return run_real_photo_set(args)
    from knotanim.eval.report import drift_table, summary_table
    from knotanim.eval.runner import load_animators, parse_reference_rows, parse_variants, run_knotbench

    variants = parse_variants(args.variants)
    refs = parse_reference_rows(args.reference_rows)
    dtype = ModelRequest.from_args(args).torch_dtype()
    corpus = None
    if args.corpus:
        from knotanim.eval.speech import EvalSpeech

        corpus = EvalSpeech(args.corpus).corpus  # checked (readable, eval split) before loading any model
    models = load_animators(args.model or [None], device=args.device, dtype=dtype)
    spec = build_spec(args, models[0][1].config.fps)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    say(f"KnotBench {spec.name}: {len(spec.clips)} clips, models {', '.join(n for n, _ in models)}, "
        f"variants {', '.join(variants)}, backend {args.backend}")
    t0 = time.perf_counter()
    report = run_knotbench(models, spec, args.out, variants=variants, progress=say,
                           seed=args.seed, steps=args.steps, plots=not args.no_plots, corpus=corpus,
                           backend=args.backend, engine_dir=args.engine_dir, reference_rows=refs)
    print()
    print(summary_table(report))
    print(f"frames/s: {report['metrics']['fps']}")
    drift = drift_table(report)
    if drift:
        print("\nlong-horizon drift, first window -> last window (change %):")
        print(drift)
    print(f"\nKnotBench finished in {time.perf_counter() - t0:.0f} s; reports in {args.out}/ "
          f"(report.md, report.json)", file=sys.stdout)
    return 0
