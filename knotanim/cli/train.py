"""`knotanim train CONFIG`: run one stage of the training recipe (configs/train/*.yaml)."""
from __future__ import annotations

import argparse
import gc


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model stage from a recipe config (one GPU, or many via torchrun)",
                       description="Train one stage of the recipe. Multi-GPU: "
                       "torchrun --nproc-per-node N -m knotanim.cli.main train CONFIG --out DIR")
    p.add_argument("config", help="training config YAML (e.g. configs/train/stage2_teacher_forcing.yaml)")
    p.add_argument("--out", required=True, help="run folder: log.csv, loss.png, state/ (resumable), model/ (exported)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing state/ in --out instead of resuming")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set steps=100 --set data.workers=0 (repeatable)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from knotanim.train.config import TrainConfig
    from knotanim.train.trainer import train

    cfg = TrainConfig.load(args.config, args.set)
    train(cfg, args.out, resume=not args.fresh, device=None if args.device == "auto" else args.device)
    # Under FSDP the dropped result's shards, garbage in cycles through FSDP's hooks, still hold the process
    # group and with it gloo's threads: collected now rather than at interpreter shutdown (cleanup_distributed).
    gc.collect()
    return 0


if __name__ == "__main__":  # `python -m knotanim.cli.train ...`: training without the rest of the CLI
    import sys

    from knotanim.errors import KnotAnimError

    parser = argparse.ArgumentParser(prog="python -m knotanim.cli.train")
    add_parser(parser.add_subparsers(dest="command"))
    try:
        sys.exit(run(parser.parse_args(["train", *sys.argv[1:]])))
    except KnotAnimError as e:  # one line, as `knotanim train` prints it
        print(f"knotanim train: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
