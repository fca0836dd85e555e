"""The `knotanim` command: one parser, one module per subcommand (knotanim/cli/<name>.py)."""
from __future__ import annotations

import argparse
import importlib
import sys

from knotanim.errors import KnotAnimError

# Subcommand modules, in the order `--help` lists them. Each exposes add_parser(subparsers) and run(args).
SUBCOMMANDS = ("render", "live", "eval", "train", "export", "bench", "soak", "data", "info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knotanim",
        description="Real-time audio-driven portrait animation (Knot Forcing). "
        "Run `knotanim COMMAND --help` for each command's options.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"knotanim.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"knotanim.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


def command_line(args: argparse.Namespace, leave_out: tuple[str, ...] = ()) -> str:
    """The `knotanim COMMAND ...` line that repeats a parsed command (options left at None / False omitted;
    `leave_out`: options not worth repeating, such as output files), for the records a command writes."""
    import shlex

    words = ["knotanim", args.command]
    for key, value in vars(args).items():
        if key in ("run", "command", "debug", *leave_out) or value is None or value is False or value == {}:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list):  # a repeated option
            words += [w for v in value for w in (flag, str(v))]
        elif isinstance(value, dict):  # NAME=VALUE pairs
            words += [flag, ",".join(f"{k}={v:g}" for k, v in value.items())]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KnotAnimError as e:
        if args.debug:
            raise
        print(f"knotanim {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"knotanim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
