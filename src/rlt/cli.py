"""The ``rlt`` command."""

from __future__ import annotations

import argparse
import sys


def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a VideoMAE checkpoint into an RLT checkpoint folder",
        description="Turn a vanilla VideoMAE checkpoint (folder or Hub id) into an RLT checkpoint folder "
        "that loads with AutoModelForVideoClassification.from_pretrained(folder, trust_remote_code=True).",
    )
    parser.add_argument("source", help="checkpoint folder or Hub model id")
    parser.add_argument("output_dir", help="folder to write the RLT checkpoint to")
    parser.add_argument("--threshold", type=float, default=0.1, help="rlt_threshold tau (default 0.1)")
    parser.add_argument(
        "--pooling", choices=["mean", "length_weighted"], default="mean", help="how mean-pooling heads average tokens"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(run=_run_convert)


def _run_convert(args) -> None:
    from .conversion import convert

    model = convert(
        args.source, args.output_dir, threshold=args.threshold, overwrite=args.overwrite, rlt_pooling=args.pooling
    )
    print(f"wrote {type(model).__name__} (rlt_threshold={model.config.rlt_threshold}) to {args.output_dir}")


COMMANDS = [_add_convert]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlt", description="Run-Length Tokenization for video transformers")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


# Errors that come from what the user asked for: one line, no traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as error:
        print(f"rlt {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
