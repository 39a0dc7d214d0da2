"""Fine-tune an RLT (or, for comparison, a vanilla) video classifier (VideoMAE, ViViT, ...) with transformers' Trainer.

Data (one of):
    --train DIR_OR_CSV [--eval DIR_OR_CSV]   video files in class folders, or a path,label list (PyAV decodes)
    --train DATASET [--split S] [--eval-split S]
                                             a Hugging Face dataset with a Video column: a save_to_disk folder,
                                             parquet / webdataset shards or a Hub id (--config, --video-column,
                                             --label-column); unreadable rows stop the run, naming the row
    --cache DIR [--eval-cache DIR]           a clip cache written by `rlt cache` (uint8 clips, no decoding)
    --synthetic N [--synthetic-eval M]       the generated task of rlt.synthetic, rendered in memory
                                             (no files, no PyAV; on the GPU when there is one)
Model (one of):
    --model PATH                             a VideoMAE / ViViT / V-JEPA 2 checkpoint folder (vanilla or RLT)
    --from-scratch {vit-b,vit-s,tiny}        a randomly initialised model of that size (--arch: an rlt.registry name)
RLT switches:
    --vanilla            transformers' own class (every token, no RLT code at all): the baseline
    --rlt-off            the RLT class with RLT disabled (every token, same code path)
    --threshold TAU      RLT's threshold (default 0.1)
    --no-length-encoding drop the run-length encoding
    --random-drop        ablation: drop random tubelets, as many per clip as RLT would (keep mask made in the collator)
    --token-budget N     batches of about N kept tokens instead of --batch-size clips (rlt.batching)
Speed:
    --compile {none,default,cuda-graphs,auto}
                         torch.compile the model for training and evaluation (transformers' torch_compile);
                         cuda-graphs = mode "reduce-overhead" over bucketed packing (--pack-buckets, default 8
                         then), for the vanilla baseline too; auto = cuda-graphs on a GPU, none on the CPU.
                         Each new graph compiles in its first step (10-30 s on a GPU): the log and
                         summary.json report the seconds (compile_s).

Examples:
    # a tiny CPU run on the generated task (about a minute)
    python examples/train_video_classification.py --synthetic 256 --synthetic-eval 64 --from-scratch tiny \\
        --image-size 64 --num-frames 8 --epochs 2 --batch-size 16 --output-dir /tmp/rlt-tiny
    # baseline vs RLT, ViT-B 16x224 from scratch, bf16 (one GPU), both with CUDA graphs
    python examples/train_video_classification.py --synthetic 4000 --from-scratch vit-b --vanilla --bf16 \\
        --compile cuda-graphs --output-dir runs/base
    python examples/train_video_classification.py --synthetic 4000 --from-scratch vit-b --bf16 \\
        --compile cuda-graphs --output-dir runs/rlt
    # several GPUs, no code change (DDP):
    torchrun --nproc_per_node 2 examples/train_video_classification.py ...   # or: accelerate launch ...

Writes to --output-dir: the final model (+ its processor config, so `rlt convert` / `rlt evaluate` can reuse
it), Trainer checkpoints (--resume-from-checkpoint last), and summary.json (wall-clock per epoch, clips/s,
data loader wait apart from the step, mean tokens kept, final top-1/top-5 accuracy).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

import rlt
import rlt.hf_datasets
from rlt import registry
from rlt.batching import TokenBudgetBatchSampler, count_kept_tokens
from rlt.collator import ClipCollator
from rlt.common import PixelNormalizer
from rlt.models.configuration_rlt import RUN_EMBEDDING_CHOICES
from rlt.models.tokenizer import COMPARE_TO_CHOICES
from rlt.synthetic import add_task_arguments
from rlt.training import (
    COMPILE_CHOICES,
    RLTTrainer,
    StepProfiler,
    compile_arguments,
    compute_metrics,
    host_overlap_arguments,
    resolve_compile,
)
from rlt.training import VIT_SIZES as SIZES

logger = logging.getLogger("train_video_classification")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--train", help="training videos: a folder of class folders, a CSV/JSON path,label list, "
                        "or a dataset (save_to_disk folder, parquet / webdataset shards, Hub id)")
    source.add_argument("--cache", help="a clip cache folder (rlt cache) for training")
    source.add_argument("--synthetic", type=int, metavar="N", help="N generated clips in memory (rlt.synthetic)")
    data.add_argument("--eval", help="evaluation videos or dataset (default: 10%% of --train, stratified)")
    data.add_argument("--eval-split", help="the evaluation split of the --train (or --eval) dataset, e.g. validation")
    data.add_argument("--eval-cache", help="a clip cache folder for evaluation")
    data.add_argument("--synthetic-eval", type=int, metavar="M", help="generated evaluation clips (default N/5)")
    add_task_arguments(data, training=True)  # --synthetic-device, -variant, -time-step, -on-device, --data-seed
    data.add_argument("--frame-stride", type=int, help="sample every N-th frame of a video (default: uniform)")
    data.add_argument("--num-workers", type=int, default=min(4, (os.cpu_count() or 1) - 1),
                      help="data loader workers (default: 4, leaving one core to the main process)")

    model = parser.add_argument_group("model")
    choice = model.add_mutually_exclusive_group(required=True)
    choice.add_argument("--model", help="checkpoint folder (VideoMAE / ViViT / V-JEPA 2, vanilla or RLT)")
    choice.add_argument("--from-scratch", choices=sorted(SIZES), help="a new model of this size")
    model.add_argument("--arch", choices=registry.names(), default="videomae", help="with --from-scratch")
    model.add_argument("--num-frames", type=int,
                       help="frames per clip of a new model (default 16); with --model: the checkpoint's")
    model.add_argument("--image-size", type=int,
                       help="frame size of a new model (default 224); with --model: the checkpoint's")
    model.add_argument("--vanilla", action="store_true", help="transformers' own model class (the baseline)")
    model.add_argument("--rlt-off", action="store_true", help="RLT class with RLT disabled (every token)")
    model.add_argument("--threshold", type=float, default=0.1, help="RLT threshold tau (default 0.1)")
    model.add_argument("--no-length-encoding", action="store_true", help="no run-length encoding")
    model.add_argument("--random-drop", action="store_true", help="ablation: random tokens at RLT's per-clip budget")
    model.add_argument("--compare-to", choices=COMPARE_TO_CHOICES, default="previous", help="RLT's rule")
    model.add_argument("--attention", default="auto", help="rlt_attention backend (default auto)")
    model.add_argument("--proportional-attention", action="store_true",
                       help="rlt_proportional_attention: each key's attention score + log of its run length")
    model.add_argument("--run-embedding", choices=RUN_EMBEDDING_CHOICES, default="first",
                       help="rlt_run_embedding: a kept token is its run's first tubelet (default) or the run's mean")
    model.add_argument(
        "--keep-mask-in-loader",
        action="store_true",
        help="compute RLT's keep mask in the loader workers, not on the device",
    )

    speed = parser.add_argument_group("speed")
    speed.add_argument("--compile", choices=COMPILE_CHOICES, default="none",
                       help="torch.compile for training and evaluation: default (inductor), cuda-graphs "
                       "(reduce-overhead over bucketed packing), auto (cuda-graphs on a GPU, else none); default none")
    speed.add_argument("--pack-buckets", type=int, metavar="K",
                       help="rlt_pack_buckets of the RLT model (default 8 with --compile cuda-graphs, else 0)")
    # e.g. aot_eager: the compiled path, fast, on a CPU (the tests)
    speed.add_argument("--compile-backend", help=argparse.SUPPRESS)
    speed.add_argument("--tf32", action=argparse.BooleanOptionalAction,
                       help="TF32 matmuls (transformers' tf32; with --compile it turns TF32 on unless --no-tf32)")
    speed.add_argument("--profile-steps", type=int, default=0, metavar="N",
                       help="profile N training steps (torch.profiler): device busy fraction, kernels, host syncs "
                       "and the top kernels and host ops, in summary.json's 'profile' (default 0: off)")
    speed.add_argument("--profile-after", type=int, default=20, metavar="STEP",
                       help="the profiled steps start after this step (default 20: past the first compiles)")

    train = parser.add_argument_group("training")
    train.add_argument("--output-dir", required=True)
    train.add_argument("--epochs", type=float, default=3)
    train.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs")
    train.add_argument("--batch-size", type=int, default=8, help="clips per device per step")
    train.add_argument("--eval-batch-size", type=int, help="default: --batch-size")
    train.add_argument("--token-budget", type=int, metavar="N", help="batches of about N kept tokens (rlt.batching)")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--lr", type=float, help="peak learning rate (default 5e-5, 3e-4 with --from-scratch)")
    train.add_argument("--weight-decay", type=float, default=0.05)
    train.add_argument("--warmup", type=float, default=0.1, help="warm-up: a fraction (<1) or a number of steps")
    train.add_argument("--label-smoothing", type=float, default=0.0)
    precision = train.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true")
    precision.add_argument("--fp16", action="store_true")
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--eval-strategy", choices=["no", "epoch", "steps"], default="epoch")
    train.add_argument("--eval-steps", type=int, default=500)
    train.add_argument("--save-strategy", choices=["no", "epoch", "steps"], default="epoch")
    train.add_argument("--save-steps", type=int, default=500)
    train.add_argument("--save-total-limit", type=int, default=2)
    train.add_argument("--logging-steps", type=int, default=20)
    train.add_argument(
        "--eval-only", action="store_true",
        help="no training: evaluate --model as it is (a vanilla checkpoint loads into the RLT class training-free)",
    )
    train.add_argument("--resume-from-checkpoint", help="a checkpoint folder, or 'last' (the newest in --output-dir)")
    train.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the final RLT model with its model card")
    train.add_argument("--hub-private", action="store_true")
    train.add_argument("--report-to", default="none")
    rlt.hf_datasets.add_dataset_arguments(parser, streaming=False)
    args = parser.parse_args(argv)

    if args.vanilla and (args.random_drop or args.rlt_off or args.no_length_encoding or args.token_budget):
        parser.error("--vanilla runs transformers' own class: --random-drop, --rlt-off, --no-length-encoding "
                     "and --token-budget need the RLT class")
    if args.random_drop and args.rlt_off:
        parser.error("--random-drop drops tokens; --rlt-off keeps them all: choose one")
    if args.vanilla and args.push_to_hub:
        parser.error("--push-to-hub uploads RLT checkpoints (rlt.hub); push a vanilla model with huggingface_hub")
    if (args.eval_cache and not args.cache) or (args.eval and not args.train):
        parser.error("--eval goes with --train, --eval-cache with --cache")
    if (args.eval_split or rlt.hf_datasets.dataset_options(args)) and not args.train:
        parser.error("--split, --eval-split, --config, --video-column and --label-column go with --train")
    if (args.synthetic_eval is not None or args.synthetic_on_device) and args.synthetic is None:
        parser.error("--synthetic-eval and --synthetic-on-device go with --synthetic")
    if args.eval_only and not args.model:
        parser.error("--eval-only evaluates a checkpoint: give --model")
    if args.profile_steps < 0 or args.profile_after < 0:
        parser.error(f"--profile-steps and --profile-after must be >= 0, got {args.profile_steps} and {args.profile_after}")
    if args.lr is None:
        args.lr = 3e-4 if args.from_scratch else 5e-5
    if args.from_scratch:
        args.num_frames = args.num_frames or 16
        args.image_size = args.image_size or 224
    args.compile = resolve_compile(args.compile, "cuda" if torch.cuda.is_available() else "cpu")
    if args.pack_buckets is not None and args.pack_buckets < 0:
        parser.error(f"--pack-buckets must be 0 (exact packing) or a positive number of sizes, got {args.pack_buckets}")
    if args.vanilla and args.pack_buckets:
        parser.error("--pack-buckets sets RLT's packing; --vanilla has fixed shapes without it")
    args.buckets_for_graphs = args.pack_buckets is None and args.compile == "cuda-graphs" and not args.vanilla
    if args.pack_buckets is None:  # CUDA graphs need static shapes: RLT's packed length rounded up to K sizes
        args.pack_buckets = 8 if args.buckets_for_graphs else 0
    return args


# ------------------------------------------------------------------------------------------ model


def rlt_settings(args) -> dict:
    return {
        "rlt_enabled": not args.rlt_off,
        "rlt_threshold": args.threshold,
        "rlt_use_length_encoding": not args.no_length_encoding,
        "rlt_compare_to": args.compare_to,
        "rlt_attention": args.attention,
        "rlt_pack_buckets": args.pack_buckets,
        "rlt_proportional_attention": args.proportional_attention,
        "rlt_run_embedding": args.run_embedding,
    }


def build_model(args, id2label: dict[int, str], processor: rlt.RLTVideoProcessor):
    """The model to train: new (--from-scratch) or from a checkpoint, RLT or vanilla (--vanilla)."""
    labels = {"num_labels": len(id2label), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()},
              # Set now: the loss would set it on its first call, a config change that recompiles a compiled model.
              "problem_type": "single_label_classification"}
    if args.from_scratch:
        architecture = registry.get(args.arch)
        hidden, layers, heads, intermediate = SIZES[args.from_scratch]
        shape = registry.ModelShape(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                    intermediate_size=intermediate, image_size=args.image_size,
                                    num_frames=args.num_frames)
        vanilla_config = architecture.vanilla_config(shape, **labels)
        if args.vanilla:
            return architecture.vanilla_classifier_class(vanilla_config)
        config = architecture.rlt_config(
            vanilla_config, **rlt_settings(args), rlt_length_encoding_init="trunc_normal",
            rlt_input_scale=processor.rlt_input_scale,
        )
        return architecture.classifier_class(config)

    from transformers import AutoConfig

    source = AutoConfig.from_pretrained(args.model)
    architecture = registry.for_config(source)
    load = dict(**labels, ignore_mismatched_sizes=True)
    if args.vanilla:
        if source.model_type == architecture.model_type:
            raise ValueError(f"{args.model} is an RLT checkpoint; --vanilla needs a vanilla one")
        return architecture.vanilla_classifier_class.from_pretrained(
            args.model, key_mapping=architecture.legacy_key_mapping, **load
        )
    settings = {**rlt_settings(args), **labels}
    if source.model_type != architecture.model_type:  # a vanilla checkpoint: its processor's input scale
        settings["rlt_input_scale"] = processor.rlt_input_scale
    config = architecture.rlt_config(source, **settings)
    return architecture.classifier_class.from_pretrained(args.model, config=config, ignore_mismatched_sizes=True)


def make_processor(args, cache=None) -> rlt.RLTVideoProcessor:
    """The processor the model expects (its checkpoint's, the cache's, or ImageNet normalisation at --image-size)."""
    if args.model:
        from rlt.cache import load_processor

        processor, _ = load_processor(args.model)  # a vanilla checkpoint's translated as rlt convert does
        for flag, given, model_value in (("--num-frames", args.num_frames, processor.num_frames),
                                         ("--image-size", args.image_size, processor.crop_size["height"])):
            if given is not None and given != model_value:
                raise ValueError(f"{args.model} takes {model_value} for {flag}, not {given}: leave {flag} out")
    elif cache is not None:
        processor = cache.processor
    else:
        size = args.image_size
        processor = rlt.RLTVideoProcessor(
            num_frames=args.num_frames, size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
    if args.frame_stride:
        processor.frame_stride = args.frame_stride
    return processor


# ------------------------------------------------------------------------------------------- data


def load_data(args, processor, device):
    """``(train, eval, class_names, info)``; items hold ``pixel_values`` (uint8 or normalised) and ``labels``."""
    info = {}
    if args.synthetic:
        from rlt.synthetic import SyntheticVideoDataset, task_config

        config = task_config(  # clips shaped as the model takes them (a checkpoint's shape with --model)
            args.synthetic_variant,
            num_frames=processor.num_frames,
            image_size=processor.crop_size["height"],
            time_step=args.synthetic_time_step,
        )
        render = args.synthetic_device or device
        start = time.perf_counter()
        num_train = 0 if args.eval_only else args.synthetic
        kept_on = device if args.synthetic_on_device else None  # this process's GPU (cuda:LOCAL_RANK)
        train = SyntheticVideoDataset(num_train, seed=args.data_seed, config=config, device=render,
                                      clips_device=kept_on)
        num_eval = (
            args.synthetic_eval if args.synthetic_eval is not None else max(len(config.classes), args.synthetic // 5)
        )
        # Another seed: other backgrounds, objects and motions than any training clip.
        evaluation = SyntheticVideoDataset(num_eval, seed=args.data_seed + 1_000_003, config=config, device=render,
                                           clips_device=kept_on)
        info.update(data="synthetic", generate_s=time.perf_counter() - start, render_device=str(render),
                    clips_device=str(train.device))
        return train, evaluation, list(config.classes), info
    if args.cache:
        from rlt.cache import CachedClips, ClipCache, load_clip_cache

        cache = ClipCache(args.cache)
        class_names = cache.class_names
        if args.eval_cache:  # relabelled by class name: a cache written apart may number its classes otherwise
            train, evaluation = CachedClips(cache), CachedClips(args.eval_cache, class_names=class_names)
        else:  # the index's rows (no clip is read) split as a datasets.Dataset: stratified by label
            rows = load_clip_cache(cache.folder, normalize=False).with_format(None)
            split = rows.train_test_split(test_size=0.1, seed=args.seed, stratify_by_column="label")
            train, evaluation = (CachedClips(cache, indices=split[side]["clip_id"]) for side in ("train", "test"))
        info.update(data="cache", cache=args.cache)
        return train, evaluation, class_names, info
    options = rlt.hf_datasets.dataset_options(args)
    train = rlt.load_video_dataset(args.train, **options)
    class_names = train.features["label"].names
    if args.eval or args.eval_split:
        # The column options hold for the evaluation data too; --split is the training split's.
        eval_options = {key: value for key, value in options.items() if key != "split"}
        if args.eval_split:
            eval_options["split"] = args.eval_split
        evaluation = rlt.load_video_dataset(args.eval or args.train, class_names=class_names, **eval_options)
    else:
        split = train.train_test_split(test_size=0.1, seed=args.seed, stratify_by_column="label")
        train, evaluation = split["train"], split["test"]
    transform = rlt.VideoTransform(processor)
    is_dataset = "row" in train.column_names  # a Hugging Face dataset's rows, not files
    info.update(data="dataset" if is_dataset else "videos", train=args.train)
    return train.with_transform(transform), evaluation.with_transform(transform), class_names, info


def token_counts(args, dataset, model, normalizer, device):
    """Tokens each training clip keeps (for --token-budget): the cache's stored counts, or one pass of RLT's rule."""
    config = model.config
    prefix, tubelet, patch = config.rlt_num_prefix_tokens, config.rlt_tubelet_size, config.rlt_patch_size
    if args.rlt_off:
        return [config.rlt_tokens_per_clip] * len(dataset)
    from rlt.cache import CachedClips

    if isinstance(dataset, CachedClips):
        stored = dataset.cache.index["settings"].get("tokens", {})
        wanted = {"threshold": args.threshold, "tubelet_size": tubelet, "compare_to": args.compare_to}
        same_patch = stored.get("patch_size") in (list(patch), patch[0] if patch[0] == patch[1] else None)
        if same_patch and all(stored.get(key) == value for key, value in wanted.items()):
            counts = dataset.tokens_kept
            if min(counts) > 0:
                return [c + prefix for c in counts]
    keep_masks = ClipCollator.for_model(config, drop="rlt", input_scale=normalizer.input_scale)  # as the model chooses
    return count_kept_tokens(dataset, keep_masks, num_prefix_tokens=prefix, num_workers=args.num_workers,
                             device=device).tolist()


# ------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.push_to_hub:
        from rlt.hub import require_token

        require_token()  # before training, not after
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    cache = None
    if args.cache:
        from rlt.cache import ClipCache

        cache = ClipCache(args.cache)
    processor = make_processor(args, cache)
    normalizer = PixelNormalizer.from_processor(processor)
    train_dataset, eval_dataset, class_names, data_info = load_data(args, processor, device)
    model = build_model(args, dict(enumerate(class_names)), processor)
    config = model.config
    is_rlt = hasattr(config, "rlt_enabled")
    if args.cache:
        use_masks = is_rlt and not (args.rlt_off or args.random_drop)
        for dataset, folder in ((train_dataset, args.cache), (eval_dataset, args.eval_cache or args.cache)):
            stored = dataset.cache.keep_only_threshold
            if use_masks and stored is not None and stored != args.threshold:
                raise ValueError(f"{folder} keeps the tubelets of threshold {stored}, not {args.threshold}")
            # A keep-only cache's masks go to the model, which then uses exactly the tubelets the cache kept.
            dataset.with_keep_masks = use_masks and stored is not None
    collator = ClipCollator.for_model(
        config,
        drop="random"
        if args.random_drop
        else ("rlt" if is_rlt and args.keep_mask_in_loader and not args.rlt_off else None),
        input_scale=normalizer.input_scale,
    )
    geometry = registry.as_rlt_config(config)  # the token geometry, for the vanilla baseline too
    tokens_per_clip = geometry.rlt_tokens_per_clip

    sampler, counts = None, None
    if args.token_budget:
        start = time.perf_counter()
        counts = token_counts(args, train_dataset, model, normalizer, device)
        sampler = TokenBudgetBatchSampler(counts, args.token_budget, seed=args.seed)
        data_info["count_tokens_s"] = time.perf_counter() - start

    training_args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,  # transformers 5: a value below 1 is a fraction of the steps (warmup_ratio is gone)
        lr_scheduler_type="cosine",
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        label_smoothing_factor=args.label_smoothing,
        bf16=args.bf16,
        fp16=args.fp16,
        **checkpointing_argument(args.gradient_checkpointing),
        eval_strategy=args.eval_strategy,
        eval_steps=args.eval_steps,
        save_strategy=args.save_strategy,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps,
        seed=args.seed,
        data_seed=args.seed,
        # The collator reads raw columns, and a wrapped forward hides the signature: say what the labels are.
        remove_unused_columns=False,
        label_names=["labels"],
        # Every parameter gets a gradient in every step (length table included, even when all runs are 1;
        # RLT classifiers build no pooler), so DDP need not search the graph for unused ones.
        ddp_find_unused_parameters=False,
        report_to=args.report_to,
        use_cpu=not torch.cuda.is_available(),
        tf32=args.tf32,
        **compile_arguments(args.compile, device, backend=args.compile_backend),
        **host_overlap_arguments(device, args.num_workers, data_info.get("clips_device", "cpu")),
    )
    trainer = RLTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        compute_metrics=compute_metrics,
        normalizer=normalizer,
        train_batch_sampler=sampler,
        tokens_per_clip=tokens_per_clip,
    )
    profiler = None
    if args.profile_steps:
        profiler = StepProfiler(trainer, steps=args.profile_steps, after=args.profile_after)
        trainer.add_callback(profiler)
    resume = args.resume_from_checkpoint
    if resume == "last":
        resume = get_last_checkpoint(str(output_dir))
        if resume is None:
            logger.info("no checkpoint in %s: starting from scratch", output_dir)
    train_metrics = {}
    if not args.eval_only:
        train_metrics = trainer.train(resume_from_checkpoint=resume).metrics
    stats = trainer.training_stats()

    eval_start = time.perf_counter()
    metrics = trainer.evaluate()
    eval_s = time.perf_counter() - eval_start
    compile_stats = trainer.compile_stats()

    mode = "eval-only " if args.eval_only else ""
    mode += "vanilla" if not is_rlt else "rlt-off" if args.rlt_off else "random-drop" if args.random_drop else "rlt"
    summary = {
        "mode": mode,
        "model": args.model or f"{args.arch} {args.from_scratch} from scratch",
        "model_class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "rlt": {k: getattr(config, k) for k in ("rlt_enabled", "rlt_threshold", "rlt_use_length_encoding",
                                                "rlt_compare_to", "rlt_attention", "rlt_proportional_attention",
                                                "rlt_run_embedding")} if is_rlt else None,
        "token_budget": args.token_budget,
        "compile": args.compile,
        "compile_mode": training_args.torch_compile_mode if training_args.torch_compile else None,
        "pack_buckets": getattr(config, "rlt_pack_buckets", None),
        **compile_stats,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "gradient_checkpointing": args.gradient_checkpointing,
        "seed": args.seed,
        "data": {
            **data_info,
            "train_clips": len(train_dataset),
            "eval_clips": len(eval_dataset),
            "classes": class_names,
        },
        "clip_shape": [geometry.rlt_num_frames, geometry.rlt_num_channels, *geometry.rlt_image_size],
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        **stats,
        "trainer_train_samples_per_second": train_metrics.get("train_samples_per_second"),
        "final_loss": train_metrics.get("train_loss"),
        "eval_accuracy": metrics.get("eval_accuracy"),
        "eval_top5_accuracy": metrics.get("eval_top5_accuracy"),
        "eval_loss": metrics.get("eval_loss"),
        "eval_mean_tokens_kept": metrics.get("eval_mean_tokens_kept"),
        "eval_s": eval_s,
        "profile": profiler.report if profiler is not None else None,
        # Accuracy after each evaluation during training: where a run plateaus, or how fast it recovers.
        "eval_history": [
            {
                key: entry[key]
                for key in ("epoch", "step", "eval_accuracy", "eval_top5_accuracy", "eval_loss")
                if key in entry
            }
            for entry in trainer.state.log_history
            if "eval_accuracy" in entry
        ],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "rlt": rlt.__version__,
                     "python": platform.python_version()},
        "command": " ".join(sys.argv),
    }
    if not args.eval_only:  # the final model (all ranks call it; rank 0 writes): reusable by rlt convert / evaluate
        if is_rlt and args.buckets_for_graphs:
            # Bucketing was for the graphs; the saved model packs exactly, as an eager user wants (outputs unchanged).
            config.rlt_pack_buckets = 0
        trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        if not args.eval_only:
            processor.save_pretrained(str(output_dir))
        if is_rlt and not args.eval_only:
            write_card(output_dir, summary, args)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print_summary(summary)
        if args.push_to_hub:
            from rlt.hub import push_to_hub

            info = push_to_hub(
                output_dir, args.push_to_hub, private=args.hub_private, commit_message="Fine-tuned RLT model"
            )
            print(f"uploaded {output_dir} to {args.push_to_hub}: {info.commit_url}")
    return summary


def checkpointing_argument(enabled: bool) -> dict:
    """``gradient_checkpointing`` (renamed ``activation_checkpointing`` in transformers 5.2x), only when asked for."""
    if not enabled:
        return {}
    import dataclasses

    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": True}


def write_card(output_dir: Path, summary: dict, args) -> None:
    from huggingface_hub import EvalResult

    from rlt.hub import write_model_card

    train = Path(args.train or ".")
    dataset = {"synthetic": ("rlt-synthetic-motion", "rlt.synthetic generated motion classes"),
               "cache": (Path(args.cache or ".").name, Path(args.cache or ".").name),
               "videos": (train.name, train.name),
               # A Hub id is the dataset's type on the Hub; a local dataset folder goes by its name.
               "dataset": (train.name if train.exists() else str(args.train), str(args.train))}[summary["data"]["data"]]
    results = [
        EvalResult(task_type="video-classification", dataset_type=dataset[0], dataset_name=dataset[1],
                   dataset_split="validation", metric_type=metric, metric_name=name, metric_value=round(value, 4))
        for metric, name, value in (("accuracy", "top-1 accuracy", summary["eval_accuracy"]),
                                    ("top_5_accuracy", "top-5 accuracy", summary["eval_top5_accuracy"]))
        if value is not None
    ]
    write_model_card(
        output_dir,
        eval_results=results,
        base_model=args.model if args.model and not Path(args.model).exists() else None,
    )


def print_summary(summary: dict) -> None:
    lines = [
        (
            f"== {summary['mode']}: {summary['model_class']} ({summary['parameters'] / 1e6:.1f}M parameters), "
            f"{summary['device']}"
        )
    ]
    if summary["train_clips"]:
        epochs = ", ".join(f"{s:.1f}" for s in summary["epoch_wall_s"])
        lines += [
            (
                f"   wall-clock per epoch [s]: {epochs}  "
                f"(train total {summary['train_wall_s']:.1f} s, {summary['steps']} steps)"
            ),
            (
                f"   train clips/s: {summary['train_clips_per_s']:.1f}   "
                f"data loader wait: {summary['loader_wait_s']:.1f} s "
                f"({100 * (summary['loader_wait_fraction'] or 0):.1f}% of training)"
            ),
            (
                f"   mean tokens kept (training): {summary['mean_tokens_kept']:.0f} of "
                f"{summary.get('tokens_per_clip')} ({100 * summary.get('kept_fraction', 0):.1f}%)"
            ),
        ]
    if summary["compile"] != "none":
        lines.append(
            f"   compiled ({summary['compile']}, buckets {summary['pack_buckets']}): {summary['compile_s']:.1f} s in "
            f"{len(summary['compile_steps'])} compiling steps (train {summary['compile_s_train']:.1f} s, "
            f"eval {summary['compile_s_eval']:.1f} s), {summary['graph_breaks']} graph breaks"
        )
    profile = summary.get("profile")
    if profile:
        busy = profile["device_busy_fraction"]
        first, last = profile["steps"]
        lines.append(
            f"   profiled steps {first}-{last}: {profile['wall_ms_per_step']:.1f} ms a step, device busy "
            f"{'-' if busy is None else f'{busy:.2f}'}, {profile['kernels_per_step']:.0f} kernels, "
            f"{profile['host_syncs_per_step']:.1f} host syncs, loader wait {profile['loader_wait_ms_per_step']:.1f} ms"
        )
    lines.append(
        f"   eval top-1 {summary['eval_accuracy']:.4f}  top-5 {summary['eval_top5_accuracy']:.4f}  "
        f"loss {summary['eval_loss']:.4f}  mean tokens kept {summary['eval_mean_tokens_kept'] or 0:.0f}  "
        f"({summary['data']['eval_clips']} clips, {summary['eval_s']:.1f} s)"
    )
    print("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
