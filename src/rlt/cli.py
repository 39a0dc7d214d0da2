"""The ``rlt`` command."""

from __future__ import annotations

import argparse
import sys


def _add_convert(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a VideoMAE or ViViT checkpoint into an RLT checkpoint folder",
        description="Turn a vanilla VideoMAE or ViViT checkpoint (folder or Hub id) into an RLT checkpoint folder "
        "that loads with AutoModelForVideoClassification.from_pretrained(folder, trust_remote_code=True).",
    )
    parser.add_argument("source", help="checkpoint folder or Hub model id")
    parser.add_argument("output_dir", help="folder to write the RLT checkpoint to")
    parser.add_argument("--threshold", type=float, default=0.1, help="rlt_threshold tau (default 0.1)")
    parser.add_argument(
        "--pooling", choices=["mean", "length_weighted"], default="mean", help="how mean-pooling heads average tokens"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    _add_push_options(parser, "--push-to-hub", "then upload the folder to this Hub repo (e.g. user/name)")
    parser.set_defaults(run=_run_convert)


def _run_convert(args) -> None:
    from .conversion import convert
    from .hub import require_token

    if args.push_to_hub:
        require_token()  # before converting, not after
    model = convert(
        args.source, args.output_dir, threshold=args.threshold, overwrite=args.overwrite, rlt_pooling=args.pooling
    )
    print(f"wrote {type(model).__name__} (rlt_threshold={model.config.rlt_threshold}) to {args.output_dir}")
    if args.push_to_hub:
        _push(args.output_dir, args.push_to_hub, args)


def _add_push_options(parser, repo_flag: str | None, repo_help: str) -> None:
    if repo_flag:
        parser.add_argument(repo_flag, metavar="REPO_ID", help=repo_help)
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--commit-message", default="Upload RLT checkpoint", help="commit message of the upload")


def _push(folder, repo_id: str, args) -> None:
    from .hub import push_to_hub

    info = push_to_hub(folder, repo_id, private=args.private, commit_message=args.commit_message)
    print(f"uploaded {folder} to {repo_id}: {info.commit_url}")


def _add_push(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload an RLT checkpoint folder (converted or fine-tuned) to the Hub",
        description="Upload a complete RLT checkpoint folder to the Hugging Face Hub, writing its model card "
        "(README.md) if it has none. The token comes from HF_TOKEN or `hf auth login`.",
    )
    parser.add_argument("folder", help="checkpoint folder (config.json with auto_map, code files, weights)")
    parser.add_argument("repo_id", help="Hub repo to upload to, e.g. user/name (created if needed)")
    _add_push_options(parser, None, "")
    parser.set_defaults(run=lambda args: _push(args.folder, args.repo_id, args))


def _add_inspect(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show how many tokens RLT keeps for videos, with pictures of what it drops",
        description="Print, per clip, the tokens RLT keeps of the total, the reduction and the mean run "
        "length, and write a PNG per clip with the dropped tubelets greyed out. With several thresholds, "
        "also a plot of the kept fraction against the threshold. With no VIDEO, a bundled sample clip "
        "(Big Buck Bunny, (c) Blender Foundation, CC-BY 3.0) is used.",
    )
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (default: the bundled sample clip)")
    parser.add_argument(
        "--threshold", type=float, nargs="+", default=[0.1], metavar="TAU", help="one or more thresholds tau (default 0.1)"
    )
    parser.add_argument("--out", default="rlt-inspect", metavar="DIR", help="folder for the PNGs (default ./rlt-inspect)")
    parser.add_argument("--no-png", action="store_true", help="print the statistics only")
    parser.add_argument("--num-frames", type=int, default=16, help="frames sampled per clip (default 16)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--frame-stride", type=int, default=2, help="take every N-th frame (default 2)")
    sampling.add_argument("--fps", type=float, default=None, help="take frames at this rate instead of a stride")
    sampling.add_argument("--uniform", action="store_true", help="spread the frames over the whole clip")
    parser.add_argument("--size", type=int, default=224, help="short side resize and square crop in pixels (default 224)")
    parser.add_argument("--tubelet-size", type=int, default=2, help="frames per tubelet (default 2)")
    parser.add_argument("--patch-size", type=int, default=16, help="tubelet side in pixels (default 16)")
    parser.add_argument(
        "--compare-to", choices=["previous", "last_kept"], default="previous", help="RLT's comparison rule"
    )
    parser.set_defaults(run=_run_inspect)


def _run_inspect(args) -> None:
    from .inspection import run_inspection

    for name in ("num_frames", "frame_stride", "size", "tubelet_size", "patch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    failures = []

    def report(video, error):
        failures.append(video)
        print(f"rlt inspect: error: {error}", file=sys.stderr)

    run_inspection(
        args.videos,
        args.threshold,
        out_dir=None if args.no_png else args.out,
        num_frames=args.num_frames,
        frame_stride=None if args.uniform or args.fps is not None else args.frame_stride,
        fps=args.fps,
        size=args.size,
        tubelet_size=args.tubelet_size,
        patch_size=args.patch_size,
        compare_to=args.compare_to,
        on_error=report if len(args.videos) > 1 else None,
    )
    if failures:
        raise ValueError(f"{len(failures)} of {len(args.videos)} videos could not be inspected")


def _add_bench(subparsers) -> None:
    from .benchmark import add_arguments, run

    parser = subparsers.add_parser(
        "bench",
        help="benchmark RLT against vanilla transformers video models (speed, tokens, memory, compile)",
        description="Side-by-side speed benchmark of RLT and vanilla VideoMAE / ViViT on real clips; "
        "prints a table and writes bench.json and bench.md under --out. "
        "`rlt bench --prepare-clips FILE` only decodes the clips (needs PyAV).",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


COMMANDS = [_add_convert, _add_push, _add_inspect, _add_bench]


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
