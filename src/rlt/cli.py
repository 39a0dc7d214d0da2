"""The ``rlt`` command."""

from __future__ import annotations

import argparse
import sys

from .hf_datasets import add_dataset_arguments, dataset_options

__all__ = [
    "COMMANDS",
    "USER_ERRORS",
    "build_parser",
    "main",
]


def _supported_architectures() -> str:
    """``"VideoMAE, ViViT or V-JEPA 2"``: the registry's architectures, for help texts."""
    from . import registry

    names = [entry.display_name for entry in registry.architectures()]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _add_convert(subparsers) -> None:
    supported = _supported_architectures()
    parser = subparsers.add_parser(
        "convert",
        help=f"turn a {supported} checkpoint into an RLT checkpoint folder",
        description=f"Turn a vanilla {supported} checkpoint (folder or Hub id; a base model or a video classifier) "
        "into an RLT checkpoint folder that loads with AutoModel / AutoModelForVideoClassification.from_pretrained("
        "folder, trust_remote_code=True), with its processor and model card.",
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
        "(Big Buck Bunny, (c) Blender Foundation, CC-BY 3.0) is used; --dataset inspects rows of a dataset.",
    )
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (default: the bundled sample clip)")
    parser.add_argument("--dataset", metavar="DATA", help="inspect rows of a dataset with a Video column instead: a "
                        "save_to_disk folder, parquet / webdataset shards or a Hub id")
    parser.add_argument("--rows", type=int, nargs="+", metavar="N", help="with --dataset: the rows to inspect "
                        "(default: the first four)")
    parser.add_argument(
        "--threshold",
        type=float,
        nargs="+",
        default=[0.1],
        metavar="TAU",
        help="one or more thresholds tau (default 0.1)",
    )
    parser.add_argument(
        "--out", default="rlt-inspect", metavar="DIR", help="folder for the PNGs (default ./rlt-inspect)"
    )
    parser.add_argument("--no-png", action="store_true", help="print the statistics only")
    parser.add_argument(
        "--arch",
        choices=_architecture_names(),
        default=None,
        help="take the frame count, size, tubelet and patch of this architecture's default config "
        "(the flags below override); without it: 16 frames, 224 px, 2x16x16 tubelets",
    )
    parser.add_argument("--num-frames", type=int, default=None, help="frames sampled per clip (default 16)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--frame-stride", type=int, default=2, help="take every N-th frame (default 2)")
    sampling.add_argument("--fps", type=float, default=None, help="take frames at this rate instead of a stride")
    sampling.add_argument("--uniform", action="store_true", help="spread the frames over the whole clip")
    parser.add_argument(
        "--size", type=int, default=None, help="short side resize and square crop in pixels (default 224)"
    )
    parser.add_argument("--tubelet-size", type=int, default=None, help="frames per tubelet (default 2)")
    parser.add_argument("--patch-size", type=int, default=None, help="tubelet side in pixels (default 16)")
    parser.add_argument(
        "--compare-to", choices=["previous", "last_kept"], default="previous", help="RLT's comparison rule"
    )
    add_dataset_arguments(parser)
    parser.set_defaults(run=_run_inspect)


def _architecture_names() -> list[str]:
    from . import registry

    return registry.names()


def _inspect_geometry(args) -> None:
    """Fill ``--num-frames``, ``--size``, ``--tubelet-size`` and ``--patch-size`` not given: from
    ``--arch``'s default config (the registry), else 16 frames, 224 px, 2x16x16. Without ``--size``,
    ``--arch`` also sets the short side resized to before the crop (``args.resize``), as that
    architecture's checkpoints' processor does (V-JEPA 2: 292 for a 256 crop)."""
    defaults = {"num_frames": 16, "size": 224, "tubelet_size": 2, "patch_size": 16}
    args.resize = None
    if args.arch is not None:
        from . import registry

        config = registry.get(args.arch).config_class()
        patch_h, patch_w = config.rlt_patch_size
        if patch_h != patch_w:
            raise ValueError(f"rlt inspect draws square patches; {args.arch} uses {patch_h}x{patch_w}")
        defaults = {
            "num_frames": config.rlt_num_frames,
            "size": min(config.rlt_image_size),
            "tubelet_size": config.rlt_tubelet_size,
            "patch_size": patch_h,
        }
        resize = registry.get(args.arch).processor_defaults.get("size", {}).get("shortest_edge")
        crop = registry.get(args.arch).processor_defaults.get("crop_size", {})
        # The checkpoints' resize only where their crop is the config's frame size (ViViT's processor
        # crops 224 from 256 for a 224 model: the same rule then; a config of another size: no resize rule).
        if args.size is None and resize and crop.get("height") == crop.get("width") == defaults["size"]:
            args.resize = int(resize)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _run_inspect(args) -> None:
    from .inspection import run_inspection

    _inspect_geometry(args)
    for name in ("num_frames", "frame_stride", "size", "tubelet_size", "patch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    videos, names = args.videos, None
    if args.dataset is not None:
        if args.videos:
            raise ValueError("give VIDEO files or --dataset, not both")
        videos, names = _dataset_rows(args)
    elif args.rows or dataset_options(args):
        raise ValueError("--rows, --split, --config, --video-column, --label-column and --streaming go with --dataset")
    failures = []

    def report(video, error):
        failures.append(video)
        print(f"rlt inspect: error: {error}", file=sys.stderr)

    run_inspection(
        videos,
        args.threshold,
        out_dir=None if args.no_png else args.out,
        num_frames=args.num_frames,
        frame_stride=None if args.uniform or args.fps is not None else args.frame_stride,
        fps=args.fps,
        size=args.size,
        resize=args.resize,
        tubelet_size=args.tubelet_size,
        patch_size=args.patch_size,
        compare_to=args.compare_to,
        on_error=report if len(videos) > 1 else None,
        names=names,
    )
    if failures:
        raise ValueError(f"{len(failures)} of {len(videos)} videos could not be inspected")


def _dataset_rows(args) -> tuple[list, list[str]]:
    """The videos and names (``row-N``) of the dataset rows ``rlt inspect --dataset`` looks at."""
    import itertools

    from .hf_datasets import open_video_dataset

    source = open_video_dataset(args.dataset, need_labels=False, **dataset_options(args))
    rows = source.take(args.rows) if args.rows else list(itertools.islice(source.rows(), 4))
    unusable = [f"{row.name}: {row.error}" for row in rows if row.error is not None]
    if unusable:
        raise ValueError("; ".join(unusable))
    return [row.video for row in rows], [f"row-{row.index}" for row in rows]


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


def _add_cache(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="decode a labelled video folder, list or dataset once into a cache of uint8 clips (safetensors shards)",
        description="Decode DATA (a folder with one sub-folder per class, a CSV / JSON list of path,label, or a "
        "Hugging Face dataset with a Video column, streamed with --streaming) once, in parallel, sample, resize and "
        "crop each clip as the checkpoint's processor does, and write uint8 (T, C, H, W) clips with labels and "
        "source paths (a dataset's: row N) in safetensors shards under OUT. Unreadable files and rows are listed "
        "and skipped; running the command again on the same OUT resumes an interrupted run and rewrites any shard "
        "that is missing or damaged (its size or CRC-32 differs from the index). `rlt cache --verify OUT` checks a "
        "cache without writing.",
    )
    parser.add_argument("data", help="video folder (one sub-folder per class), CSV / JSON list, or a dataset: a "
                        "save_to_disk folder, parquet / webdataset shards or a Hub id")
    parser.add_argument("out", nargs="?", help="cache folder to write (or to resume or repair)")
    parser.add_argument("--processor", metavar="FOLDER", help="checkpoint or processor folder whose sampling, "
                        "sizes and normalisation to use (default: 16 frames, 224 px, ImageNet mean/std)")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: the processor's)")
    parser.add_argument("--frame-stride", type=int, help="take every N-th frame (default: the processor's sampling)")
    parser.add_argument("--size", type=int, help="short side resize and square crop in pixels (default: processor's)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per core)")
    parser.add_argument("--shard-size", type=int, default=256, help="clips per shard file (default 256)")
    parser.add_argument("--keep-only-threshold", type=float, default=None, metavar="TAU",
                        help="store only the tubelets RLT keeps at TAU, plus keep masks (for training at that TAU)")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache of other data or settings in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verify", action="store_true", help="check the cache at OUT (or the one folder given): "
                        "every shard's size and CRC-32 against the index; writes nothing")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="the classes in id order (e.g. the model's), so that caches of several splits number "
                        "them alike; labels are mapped to them by name (default: the data's own classes)")
    add_dataset_arguments(parser)
    parser.set_defaults(run=_run_cache)


def _run_cache(args) -> None:
    from .cache import ClipCache, cache_clips

    if args.verify:
        cache = ClipCache(args.out or args.data, verify=True)
        shards = cache.index["shards"].values()
        unchecked = sum("crc32" not in entry for entry in shards)
        print(f"clip cache {cache.folder}: {len(cache)} clips in {len(shards)} shards as recorded"
              + (f" ({unchecked} without a recorded checksum: checked by size only)" if unchecked else ""))
        return
    if args.out is None:
        raise ValueError("give the cache folder OUT after DATA (or --verify to check a cache)")
    summary = cache_clips(
        args.data, args.out, processor=args.processor, num_frames=args.num_frames, frame_stride=args.frame_stride,
        size=args.size, workers=args.workers, shard_size=args.shard_size,
        keep_only_threshold=args.keep_only_threshold, overwrite=args.overwrite, progress=not args.no_progress,
        dataset_options=dataset_options(args), class_names=args.class_names,
    )
    print(summary)


def _add_evaluate(subparsers) -> None:
    from .evaluation import DEFAULT_THRESHOLDS, DTYPES, POOLINGS

    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, tokens kept and speed of a fine-tuned classifier at several RLT thresholds",
        description="Run a fine-tuned video classifier (an RLT checkpoint, or a vanilla VideoMAE / ViViT one, "
        "converted in memory) over labelled clips (a video folder / CSV / JSON list, a Hugging Face dataset with a "
        "Video column, or a cache from `rlt cache`) "
        "at each threshold, and print top-1 / top-5, tokens kept, model clips/s and the change against "
        "threshold 0 (RLT off, the baseline). The clips are decoded once and reused for every threshold.",
    )
    parser.add_argument("model", help="checkpoint folder of a fine-tuned video classifier")
    parser.add_argument("data", help="clip cache folder, video folder (one sub-folder per class), CSV / JSON list, "
                        "or a dataset: a save_to_disk folder, parquet / webdataset shards or a Hub id")
    parser.add_argument("--threshold", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS), metavar="TAU",
                        help="thresholds to evaluate; 0 is the baseline, always run (default 0 0.05 0.1 0.2)")
    parser.add_argument("--pooling", nargs="+", choices=POOLINGS, default=["mean"],
                        help="pooling of mean-pooling heads to compare (default mean)")
    parser.add_argument("--compare-to", nargs="+", choices=["previous", "last_kept"], default=["previous"],
                        help="RLT's rule(s): compare a tubelet with the previous one (the paper's) or with the last "
                        "kept one (drift-safe); several give one row each (default previous)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per batch (default 16)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="model precision (default fp32)")
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: one per core)")
    parser.add_argument("--processor", metavar="FOLDER", help="processor folder (default: the checkpoint's)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="hold decoded clips in memory up to this size (default: half the free memory)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes on the first batch per setting")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_dataset_arguments(parser, streaming=False)
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> None:
    from .evaluation import evaluate

    report = evaluate(
        args.model, args.data, thresholds=args.threshold, poolings=args.pooling, compare_to=args.compare_to,
        batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, workers=args.workers, processor=args.processor,
        max_memory_gb=args.max_memory_gb, warmup=args.warmup, json_path=args.json, progress=not args.no_progress,
        dataset_options=dataset_options(args),
    )
    print(report)
    if args.json:
        print(f"wrote {args.json}")


COMMANDS = [_add_convert, _add_push, _add_inspect, _add_bench, _add_cache, _add_evaluate]


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
