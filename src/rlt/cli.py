"""The ``rlt`` command."""

from __future__ import annotations

import argparse
import difflib
import inspect
import sys
from pathlib import Path

from . import registry
from .common import plural
from .hf_datasets import add_dataset_arguments, dataset_options
from .models.configuration_rlt import POOLING_CHOICES, RUN_EMBEDDING_CHOICES
from .models.tokenizer import COMPARE_TO_CHOICES

__all__ = [
    "COMMANDS",
    "USER_ERRORS",
    "build_parser",
    "check_local_argument",
    "main",
]

# Files that are never a checkpoint folder nor a Hub id: a suffix that names a local file.
_FILE_SUFFIXES = (".json", ".csv", ".txt", ".safetensors", ".bin", ".pt", ".pth", ".parquet", ".tar", ".zip")


def check_local_argument(value: str, what: str, *, hub: bool = True, checkpoint: bool = False) -> None:
    """Fail at once, naming ``value`` and ``what`` it was given as, where a local path does not exist.

    ``hub``: the argument may also be a Hub id (``user/name``), so only a value that looks like a path is "not
    found" here (before transformers spends its retries on the Hub). ``checkpoint``: a file given there (a video
    above all) is named as such.
    """
    from .common import VIDEO_EXTENSIONS

    path = Path(value).expanduser()
    suffix = path.suffix.lower()
    if checkpoint and suffix in VIDEO_EXTENSIONS:
        raise ValueError(
            f"{value} is a video file, not {what}: give a checkpoint folder (with config.json) or a Hub model id "
            "such as MCG-NJU/videomae-base-finetuned-kinetics"
        )
    if path.exists():
        if checkpoint and not path.is_dir():
            raise NotADirectoryError(f"{value} is a file, not {what}: give the folder that holds config.json")
        return
    looks_local = (
        not hub
        or value.startswith((".", "/", "~", "\\"))
        or value.count("/") > 1
        or "\\" in value
        or suffix in _FILE_SUFFIXES + VIDEO_EXTENSIONS
    )
    if looks_local:
        raise FileNotFoundError(f"no such file or folder: {value} ({what})")


def _supported_architectures() -> str:
    """``"VideoMAE, ViViT or V-JEPA 2"``: the registry's architectures, for help texts."""
    names = [entry.display_name for entry in registry.architectures()]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _command(subparsers, name: str, run, *, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of sub-command ``name``, which ``run(args)`` carries out; its description is ``run``'s docstring
    unless given."""
    description = description or inspect.getdoc(run)
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(run=run)
    return parser


# Flags that several commands share, worded once; a command may reword one's help (``_add_shared``'s ``helps``).
_SHARED_FLAGS = {
    "batch_size": {"type": int, "default": 16, "help": "clips per batch (default 16)"},
    "device": {"default": "auto", "help": "auto (cuda when available), cpu, cuda, cuda:1 ..."},
    "workers": {"type": int, "default": None, "help": "loader processes (default: one per core)"},
    "processor": {"metavar": "FOLDER", "help": "processor folder (default: the checkpoint's)"},
    "overwrite": {"action": "store_true", "help": "replace a non-empty output folder"},
    "no_progress": {"action": "store_true", "help": "no progress bars"},
    "private": {"action": "store_true", "help": "create the Hub repo as private"},
    "commit_message": {"default": "Upload RLT checkpoint", "help": "commit message of the upload"},
}


def _flags(args, *names: str) -> dict:
    """``{name: args.name}``: the flags a command hands on to the keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}


def _add_shared(parser, *names: str, **helps: str) -> None:
    """Add the shared flags ``names`` (``"no_progress"`` is ``--no-progress``), ``helps[name]`` as help where given."""
    for name in names:
        options = _SHARED_FLAGS[name] | ({"help": helps[name]} if name in helps else {})
        parser.add_argument("--" + name.replace("_", "-"), **options)


def _add_convert(subparsers) -> None:
    supported = _supported_architectures()
    parser = _command(
        subparsers, "convert", _run_convert,
        help=f"turn a {supported} checkpoint into an RLT checkpoint folder",
        description=f"Turn a vanilla {supported} checkpoint (folder or Hub id; a base model or a video classifier) "
        "into an RLT checkpoint folder that loads with AutoModel / AutoModelForVideoClassification.from_pretrained("
        "folder, trust_remote_code=True), with its processor and model card.",
    )
    parser.add_argument("source", help="checkpoint folder or Hub model id")
    parser.add_argument("output_dir", help="folder to write the RLT checkpoint to")
    parser.add_argument("--threshold", type=float, default=0.1, help="rlt_threshold tau (default 0.1)")
    parser.add_argument("--pooling", choices=POOLING_CHOICES, default="mean",
                        help="how mean-pooling heads average tokens")
    parser.add_argument("--proportional-attention", action="store_true",
                        help="rlt_proportional_attention=True: each key's attention score + log of its run length "
                        "(default off)")
    parser.add_argument("--run-embedding", choices=RUN_EMBEDDING_CHOICES, default="first",
                        help="rlt_run_embedding: a kept token is the first tubelet of its run (default, the paper's) "
                        "or the mean of the run's tubelets with their positions (mean: an experiment, measured worse)")
    _add_shared(parser, "overwrite")
    parser.add_argument("--push-to-hub", metavar="REPO_ID",
                        help="then upload the folder to this Hub repo (e.g. user/name)")
    _add_shared(parser, "private", "commit_message")


def _run_convert(args) -> None:
    from .conversion import convert
    from .hub import require_token

    check_local_argument(args.source, "the checkpoint to convert", checkpoint=True)
    if args.push_to_hub:
        require_token()  # before converting, not after
    model = convert(
        args.source, args.output_dir, threshold=args.threshold, overwrite=args.overwrite, rlt_pooling=args.pooling,
        rlt_proportional_attention=args.proportional_attention, rlt_run_embedding=args.run_embedding,
    )
    print(f"wrote {type(model).__name__} (rlt_threshold={model.config.rlt_threshold}) to {args.output_dir}")
    if args.push_to_hub:
        _push(args.output_dir, args.push_to_hub, args)


def _push(folder, repo_id: str, args) -> None:
    from .hub import push_to_hub

    info = push_to_hub(folder, repo_id, private=args.private, commit_message=args.commit_message)
    print(f"uploaded {folder} to {repo_id}: {info.commit_url}")


def _add_push(subparsers) -> None:
    parser = _command(subparsers, "push", _run_push,
                      help="upload an RLT checkpoint folder (converted or fine-tuned) to the Hub")
    parser.add_argument("folder", help="checkpoint folder (config.json with auto_map, code files, weights)")
    parser.add_argument("repo_id", help="Hub repo to upload to, e.g. user/name (created if needed)")
    _add_shared(parser, "private", "commit_message")


def _run_push(args) -> None:
    """Upload a complete RLT checkpoint folder to the Hugging Face Hub, writing its model card (README.md) if it has
    none. The token comes from HF_TOKEN or `hf auth login`."""
    check_local_argument(args.folder, "the checkpoint folder to upload", hub=False)
    _push(args.folder, args.repo_id, args)


def _add_inspect(subparsers) -> None:
    parser = _command(subparsers, "inspect", _run_inspect,
                      help="show how many tokens RLT keeps for videos, with pictures of what it drops")
    parser.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (default: the bundled sample clip)")
    parser.add_argument("--dataset", metavar="DATA", help="inspect rows of a dataset with a Video column instead: a "
                        "save_to_disk folder, parquet / webdataset shards or a Hub id")
    parser.add_argument("--rows", type=int, nargs="+", metavar="N", help="with --dataset: the rows to inspect "
                        "(default: the first four)")
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.1], metavar="TAU",
                        help="one or more thresholds tau (default 0.1)")
    parser.add_argument("--out", default="rlt-inspect", metavar="DIR",
                        help="folder for the PNGs (default ./rlt-inspect)")
    parser.add_argument("--no-png", action="store_true", help="print the statistics only")
    parser.add_argument("--arch", choices=registry.names(), default=None,
                        help="take the frame count, size, tubelet and patch of this architecture's default config "
                        "(the flags below override); without it: 16 frames, 224 px, 2x16x16 tubelets")
    parser.add_argument("--num-frames", type=int, default=None, help="frames sampled per clip (default 16)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--frame-stride", type=int, default=2, help="take every N-th frame (default 2)")
    sampling.add_argument("--fps", type=float, default=None, help="take frames at this rate instead of a stride")
    sampling.add_argument("--uniform", action="store_true", help="spread the frames over the whole clip")
    parser.add_argument("--size", type=int, default=None,
                        help="short side resize and square crop in pixels (default 224)")
    parser.add_argument("--tubelet-size", type=int, default=None, help="frames per tubelet (default 2)")
    parser.add_argument("--patch-size", type=int, default=None, help="tubelet side in pixels (default 16)")
    parser.add_argument("--compare-to", choices=COMPARE_TO_CHOICES, default="previous",
                        help="RLT's comparison rule")
    parser.add_argument("--video-llm", choices=["qwen2_5_vl", "qwen3_vl"], default=None,
                        help="show what this video LLM keeps instead: LLM tokens (2x2 patch groups) per slice of 2 "
                        "frames, at --fps (default 2) for --num-frames frames, in the model processor's own resize")
    add_dataset_arguments(parser)


def _run_inspect(args) -> None:
    """Print, per clip, the tokens RLT keeps of the total, the reduction and the mean run length, and write a PNG per
    clip with the dropped tubelets greyed out. With several thresholds, also a plot of the kept fraction against the
    threshold. With no VIDEO, a bundled sample clip (Big Buck Bunny, (c) Blender Foundation, CC-BY 3.0) is used;
    --dataset inspects rows of a dataset."""
    from .inspection import default_geometry, run_inspection, run_video_llm_inspection

    if args.video_llm is not None:
        # The video LLM's processor decides the resize, tubelets and groups; the ViT sampling flags do not apply.
        ignored = {"--dataset": args.dataset, "--rows": args.rows, "--arch": args.arch, "--size": args.size,
                   "--tubelet-size": args.tubelet_size, "--patch-size": args.patch_size, "--uniform": args.uniform,
                   "--compare-to": args.compare_to != "previous" or None,
                   "--frame-stride": args.frame_stride != 2 or None}
        given = [flag for flag, value in ignored.items() if value]
        if given or dataset_options(args):
            raise ValueError(f"{', '.join(given) or 'the dataset options'} do not apply with --video-llm "
                             "(it takes VIDEO files, --threshold, --fps, --num-frames, --out and --no-png)")
        run_video_llm_inspection(args.videos, args.threshold, family=args.video_llm, fps=args.fps or 2.0,
                                 num_frames=args.num_frames or 16, out_dir=None if args.no_png else args.out)
        return
    # The flags not given: --arch's (default_geometry); its checkpoints' resize goes with their crop size only.
    geometry = default_geometry(args.arch)
    args.resize = geometry.pop("resize") if args.size is None else None
    for name, value in geometry.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
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
    missing = [video for video in args.videos if not Path(video).expanduser().exists()]
    if missing:  # before the table's header: nothing of it would follow
        raise FileNotFoundError(f"video file{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}")
    failures = []

    def report(video, error):
        failures.append(video)
        print(f"rlt inspect: error: {error}", file=sys.stderr)

    sampling = _flags(args, "num_frames", "fps", "size", "resize", "compare_to")
    run_inspection(
        videos, args.threshold, out_dir=None if args.no_png else args.out,
        frame_stride=None if args.uniform or args.fps is not None else args.frame_stride,
        tubelet_size=args.tubelet_size, patch_size=args.patch_size, on_error=report if len(videos) > 1 else None,
        names=names, **sampling,
    )
    if failures:
        raise ValueError(f"{len(failures)} of {plural(len(videos), 'video')} could not be inspected")


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

    parser = _command(
        subparsers, "bench", run,
        help="benchmark RLT against vanilla transformers video models (speed, tokens, memory, compile)",
        description="Side-by-side speed benchmark of RLT and vanilla VideoMAE / ViViT on real clips; "
        "prints a table and writes bench.json and bench.md under --out. "
        "`rlt bench --prepare-clips FILE` only decodes the clips (needs PyAV).",
    )
    add_arguments(parser)


def _add_cache(subparsers) -> None:
    parser = _command(subparsers, "cache", _run_cache,
                      help="decode a labelled video folder, list or dataset once into a cache of uint8 clips "
                      "(safetensors shards)")
    parser.add_argument("data", help="video folder (one sub-folder per class), CSV / JSON list, or a dataset: a "
                        "save_to_disk folder, parquet / webdataset shards or a Hub id")
    parser.add_argument("out", nargs="?", help="cache folder to write (or to resume or repair)")
    parser.add_argument("--processor", metavar="FOLDER", help="checkpoint or processor folder whose sampling, "
                        "sizes and normalisation to use (default: 16 frames, 224 px, ImageNet mean/std)")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: the processor's)")
    parser.add_argument("--frame-stride", type=int, help="take every N-th frame (default: the processor's sampling)")
    parser.add_argument("--size", type=int, help="short side resize and square crop in pixels (default: processor's)")
    parser.add_argument("--shard-size", type=int, default=256, help="clips per shard file (default 256)")
    parser.add_argument("--keep-only-threshold", type=float, default=None, metavar="TAU",
                        help="store only the tubelets RLT keeps at TAU, plus keep masks (for training at that TAU)")
    _add_shared(parser, "workers", "overwrite", "no_progress", workers="decoding processes (default: one per core)",
                overwrite="replace a cache of other data or settings in OUT")
    parser.add_argument("--verify", action="store_true", help="check the cache at OUT (or the one folder given): "
                        "every shard's size and CRC-32 against the index; writes nothing")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="the classes in id order (e.g. the model's), so that caches of several splits number "
                        "them alike; labels are mapped to them by name (default: the data's own classes)")
    add_dataset_arguments(parser)


def _run_cache(args) -> None:
    """Decode DATA (a folder with one sub-folder per class, a CSV / JSON list of path,label, or a Hugging Face dataset
    with a Video column, streamed with --streaming) once, in parallel, sample, resize and crop each clip as the
    checkpoint's processor does, and write uint8 (T, C, H, W) clips with labels and source paths (a dataset's: row
    N) in safetensors shards under OUT. Unreadable files and rows are listed and skipped; running the command again
    on the same OUT resumes an interrupted run and rewrites any shard that is missing or damaged (its size or CRC-32
    differs from the index). `rlt cache --verify OUT` checks a cache without writing."""
    from .cache import ClipCache, cache_clips

    if args.verify:
        cache = ClipCache(args.out or args.data, verify=True)
        shards = cache.index["shards"].values()
        unchecked = sum("crc32" not in entry for entry in shards)
        print(f"clip cache {cache.folder}: {plural(len(cache), 'clip')} in {plural(len(shards), 'shard')} as recorded"
              + (f" ({unchecked} without a recorded checksum: checked by size only)" if unchecked else ""))
        return
    if args.out is None:
        raise ValueError("give the cache folder OUT after DATA (or --verify to check a cache)")
    check_local_argument(args.data, "the data to cache")

    summary = cache_clips(
        args.data, args.out, progress=not args.no_progress, dataset_options=dataset_options(args),
        **_flags(args, "processor", "num_frames", "frame_stride", "size", "workers", "shard_size",
                 "keep_only_threshold", "overwrite", "class_names"),
    )
    print(summary)


def _add_evaluate(subparsers) -> None:
    from .evaluation import ATTENTIONS, DEFAULT_THRESHOLDS, DTYPES, POOLINGS

    parser = _command(subparsers, "evaluate", _run_evaluate,
                      help="accuracy, tokens kept and speed of a fine-tuned classifier at several RLT thresholds")
    parser.add_argument("model", help="checkpoint folder of a fine-tuned video classifier")
    parser.add_argument("data", help="clip cache folder, video folder (one sub-folder per class), CSV / JSON list, "
                        "or a dataset: a save_to_disk folder, parquet / webdataset shards or a Hub id")
    parser.add_argument("--threshold", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS), metavar="TAU",
                        help="thresholds to evaluate; 0 is the baseline, always run (default 0 0.05 0.1 0.2)")
    parser.add_argument("--pooling", nargs="+", choices=POOLINGS, default=["mean"],
                        help="pooling of mean-pooling heads to compare (default mean)")
    parser.add_argument("--compare-to", nargs="+", choices=COMPARE_TO_CHOICES, default=["previous"],
                        help="RLT's rule(s): compare a tubelet with the previous one (the paper's) or with the last "
                        "kept one (drift-safe); several give one row each (default previous)")
    parser.add_argument("--attention", nargs="+", choices=ATTENTIONS, default=["plain"],
                        help="RLT's self-attention: plain, and / or proportional (each key's score + log of its run "
                        "length, rlt_proportional_attention); several give one row each (default plain)")
    parser.add_argument("--run-embedding", nargs="+", choices=RUN_EMBEDDING_CHOICES, default=["first"],
                        help="what a kept token carries: the first tubelet of its run, and / or the mean of the run's "
                        "tubelets (rlt_run_embedding); several give one row each (default first)")
    _add_shared(parser, "batch_size", "device")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="model precision (default fp32)")
    _add_shared(parser, "workers", "processor")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="hold decoded clips in memory up to this size (default: half the free memory)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes on the first batch per setting")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    _add_shared(parser, "no_progress")
    add_dataset_arguments(parser, streaming=False)


def _run_evaluate(args) -> None:
    """Run a fine-tuned video classifier (an RLT checkpoint, or a vanilla VideoMAE / ViViT / V-JEPA 2 one, converted
    in memory) over labelled clips (a video folder / CSV / JSON list, a Hugging Face dataset with a Video column, or
    a cache from `rlt cache`) at each threshold (and each --pooling, --compare-to, --attention, --run-embedding
    given), and print top-1 / top-5, tokens kept, model clips/s and the change against
    threshold 0 (RLT off, the baseline). The clips are decoded once and reused for every threshold."""
    from .evaluation import evaluate

    check_local_argument(args.model, "the classifier to evaluate", checkpoint=True)  # evaluate checks the data
    if args.processor is not None:
        check_local_argument(args.processor, "the processor folder", hub=False)

    report = evaluate(
        args.model, args.data, thresholds=args.threshold, poolings=args.pooling, attentions=args.attention,
        run_embeddings=args.run_embedding, json_path=args.json, progress=not args.no_progress,
        **_flags(args, "compare_to", "batch_size", "device", "dtype", "workers", "processor", "max_memory_gb",
                 "warmup"),
        dataset_options=dataset_options(args),
    )
    print(report)
    if args.json:
        print(f"wrote {args.json}")


def _add_calibrate(subparsers) -> None:
    from .calibration import PARAMETER_GROUPS
    from .evaluation import POOLINGS
    from .synthetic import add_task_arguments

    parser = _command(subparsers, "calibrate", _run_calibrate,
                      help="label-free calibration of a training-free RLT model: distil it with RLT off into itself "
                      "with RLT on")
    parser.add_argument("model", help="checkpoint folder (RLT, or vanilla of a supported architecture)")
    parser.add_argument("output_dir", help="folder to write the calibrated checkpoint to")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="clips to calibrate on (labels ignored): a clip cache, video folder, CSV / JSON "
                      "list, or a dataset (save_to_disk folder, parquet / webdataset shards, Hub id)")
    data.add_argument("--synthetic", type=int, metavar="N", help="N clips of the generated task (rlt.synthetic)")
    parser.add_argument("--steps", type=int, required=True, help="optimiser steps (batches)")
    parser.add_argument("--train", nargs="+", default=["length_encoding"], metavar="GROUP",
                        help=f"parameter groups to train, among {', '.join(PARAMETER_GROUPS)} "
                        "(default length_encoding)")
    parser.add_argument("--eval-data", metavar="DATA", help="held-out clips (as --data) to evaluate on; labelled ones "
                        "also give top-1")
    parser.add_argument("--holdout", type=int, default=0, metavar="N",
                        help="without --eval-data: set N clips of the data aside to evaluate on")
    parser.add_argument("--eval-steps", type=int, nargs="+", default=[], metavar="STEP",
                        help="also evaluate after these steps (always at 0 and at the end)")
    parser.add_argument("--threshold", type=float, help="rlt_threshold to calibrate for (default: the model's)")
    parser.add_argument("--pooling", choices=POOLINGS, help="rlt_pooling to calibrate for (default: the model's)")
    parser.add_argument("--proportional-attention", action=argparse.BooleanOptionalAction, default=None,
                        help="turn rlt_proportional_attention on (a key's score gets + log run length) or off "
                        "(default: as the model has it)")
    parser.add_argument("--run-embedding", choices=RUN_EMBEDDING_CHOICES,
                        help="rlt_run_embedding to calibrate for (default: the model's)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the KL (default 1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    _add_shared(parser, "batch_size", "device", batch_size="clips per step (default 16)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument("--log-every", type=int, default=10, help="steps per point of the loss curve (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order and the holdout (default 0)")
    parser.add_argument("--json", metavar="OUT", help="also write the loss curve and evaluations as JSON here")
    _add_shared(parser, "workers", "processor", "overwrite", "no_progress")
    add_task_arguments(parser.add_argument_group("the generated task (with --synthetic)"))
    add_dataset_arguments(parser, streaming=False)


def _run_calibrate(args) -> None:
    """Train a small named set of parameters (default: the length encoding) of an RLT model (an RLT checkpoint, or a
    vanilla classifier / base model converted on the fly) for --steps steps so that with RLT on it matches its own
    output with RLT off (KL of the class distributions; MSE of pooled features for a base model), on unlabelled
    clips. Every other parameter stays as it was. Writes a checkpoint folder like `rlt convert`'s, whose model card
    says what was calibrated."""
    import torch

    from .calibration import calibrate

    data = args.data
    if args.synthetic is not None:  # the generated task's flags spelled as its spec (rlt.clip_sources.SyntheticClips)
        device = args.synthetic_device or ("cuda" if torch.cuda.is_available() else "cpu")
        data = (f"synthetic:{args.synthetic_variant}:{args.synthetic},seed={args.data_seed},"
                f"time_step={args.synthetic_time_step},device={device}")
    result = calibrate(
        args.model, data, dataset_options=dataset_options(args), json_path=args.json,
        rlt_run_embedding=args.run_embedding, progress=not args.no_progress,
        **_flags(args, "steps", "train", "output_dir", "overwrite", "temperature", "lr", "batch_size", "device",
                 "bf16", "workers", "threshold", "pooling", "proportional_attention", "eval_data", "holdout",
                 "eval_steps", "log_every", "seed", "processor"),
    )
    print(result)
    print(f"wrote the calibrated checkpoint to {args.output_dir}" + (f" and {args.json}" if args.json else ""))


COMMANDS = [_add_convert, _add_push, _add_inspect, _add_bench, _add_cache, _add_evaluate, _add_calibrate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlt", description="Run-Length Tokenization for video transformers")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with errors that point at the fix: an unknown command or flag gets
    the closest valid one, and an unknown flag the sub-command's usage (argparse would print the
    top-level ``usage: rlt [-h] COMMAND ...``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        close = difflib.get_close_matches(argv[0], list(commands), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        parser.error(f"unknown command {argv[0]!r}{hint}; choose one of {', '.join(commands)}")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subparser = commands[args.command]
        hints = [_did_you_mean(subparser, token) for token in unknown]
        subparser.error(f"unrecognized arguments: {' '.join(unknown)}" + "".join(hint for hint in hints if hint))
    return args


def _did_you_mean(parser: argparse.ArgumentParser, token: str) -> str:
    """``"; did you mean --threshold?"`` for a mistyped flag (by spelling, or by the flag's metavar:
    ``--tau`` names ``--threshold TAU``), else ``""``."""
    if not token.startswith("--"):
        return ""
    flag = token.split("=", 1)[0]
    close = [
        action.option_strings[-1]
        for action in parser._actions
        if action.option_strings and str(action.metavar or "").lower() == flag[2:].lower()
    ]
    if not close:
        options = [option for option in parser._option_string_actions if option.startswith("--")]
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.7)
    return f"; did you mean {close[0]}?" if close else ""


# Errors that come from what the user asked for: one line, no traceback (OSError: a missing file, a non-empty folder...).
USER_ERRORS = (ValueError, TypeError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = _parse(build_parser(), argv)
    if getattr(args, "no_progress", False):  # transformers' weight-loading bar too
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        args.run(args)
    except USER_ERRORS as error:
        from .conversion import OutputNotEmptyError

        if isinstance(error, OutputNotEmptyError):  # its message names overwrite=True; here it is the flag
            error = f"output folder {error.folder} is not empty; add --overwrite to replace it"
        print(f"rlt {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
