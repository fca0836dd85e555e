"""`knotanim data`: build the speech corpus, preview and time the synthetic data generator."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from knotanim.errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="synthetic training data: speech corpus, previews, speed")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    b = sub.add_parser("build-speech", help="synthesize an espeak-ng speech corpus into one .npz (needs espeak-ng)")
    b.add_argument("--out", type=Path, required=True, help="output .npz path")
    b.add_argument("--minutes", type=float, default=20.0, help="minutes of speech (about 0.8 MB per minute)")
    b.add_argument("--split", choices=("train", "eval"), default="train", help="train or eval voices/languages")
    b.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("preview", help="write a portrait contact sheet and a talking-clip strip (PNG)")
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--corpus", type=Path, default=None, help="speech corpus .npz for the talking strip")
    s = sub.add_parser("speed", help="measure clips/s of make_clip on this process (one core)")
    s.add_argument("--clips", type=int, default=20)
    s.add_argument("--frames", type=int, default=48)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--head-motion", type=float, default=0.5)
    s.add_argument("--source", choices=("synthetic", "photo", "mixed"), default="synthetic")
    s.add_argument("--corpus", type=Path, default=None)
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    cmd = getattr(args, "data_command", None)
    if cmd == "build-speech":
        from knotanim.data.corpus import build_corpus

        if args.minutes <= 0:
            raise InputError("--minutes must be positive")
        info = build_corpus(args.out, args.minutes, args.split, args.seed, progress=True)
        print(f"{info['path']}: {info['utterances']} utterances, {info['seconds'] / 60:.1f} min, {info['bytes'] / 1e6:.1f} MB")
        return 0
    if cmd == "preview":
        from knotanim.data.corpus import SpeechCorpus
        from knotanim.data.preview import write_previews

        for path in write_previews(args.out, SpeechCorpus(args.corpus) if args.corpus else None):
            print(path)
        return 0
    if cmd == "speed":
        from knotanim.data.clips import make_clip
        from knotanim.data.corpus import SpeechCorpus

        corpus = SpeechCorpus(args.corpus) if args.corpus else None
        make_clip(0, 2, size=args.size, corpus=corpus, source=args.source)  # warm-up
        t = time.perf_counter()
        for i in range(args.clips):
            make_clip(1000 + i, args.frames, size=args.size, head_motion=args.head_motion, corpus=corpus, source=args.source)
        dt = time.perf_counter() - t
        print(f"{args.clips / dt:.2f} clips/s, {args.clips * args.frames / dt:.0f} frames/s "
              f"({args.frames} frames, {args.size}px, head_motion {args.head_motion}, {args.source})")
        return 0
    raise InputError("choose an action: knotanim data {build-speech,preview,speed} (see --help)")
