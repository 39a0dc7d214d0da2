"""Self-supervised VideoMAE pretraining (tube masking) with transformers' VideoMAEForPreTraining and Trainer.

VideoMAE ("Masked autoencoders are data-efficient learners for self-supervised video pre-training",
Tong et al., NeurIPS 2022) hides most of every clip and trains the encoder to let a small decoder
reconstruct it. With a few thousand clips this is the known way to get a video ViT that learns;
transformers ships the model but no video pretraining example. This is one.

Data (one of; labels, where there are any, are not used):
    --synthetic N              N generated clips in memory (rlt.synthetic; rendered on the GPU when there is one)
    --cache DIR                a clip cache (`rlt cache`, make_synthetic_dataset.py --cache): uint8 clips, no decoding
    --train DIR_OR_CSV         video files: every video under a folder (any layout), or a path,label CSV / JSON list

Masking (VideoMAE's "tube" masking): per clip, round(--mask-ratio x H'W') of the H'W' cells of the
token grid are hidden, the same cells at every time step (a tube through time), chosen on the device
for each clip of each step; 0.9 by default, as in the paper. The loss is the mean squared error of
the decoder's reconstruction of the hidden tubelets, each normalised by its own pixel mean and std
(VideoMAE's norm_pix_loss).

Examples:
    # a tiny CPU run (about half a minute)
    python examples/pretrain_videomae.py --synthetic 96 --from-scratch tiny --image-size 64 --num-frames 8 \\
        --epochs 2 --batch-size 16 --output-dir /tmp/mae-tiny
    # ViT-S at 112 px on one GPU, then fine-tune the encoder (the classifier head is new):
    python examples/pretrain_videomae.py --synthetic 8000 --from-scratch vit-s --image-size 112 --bf16 \\
        --batch-size 64 --epochs 30 --output-dir runs/mae-vits
    python examples/train_video_classification.py --model runs/mae-vits --synthetic 8000 --bf16 ...

Writes to --output-dir: the final VideoMAEForPreTraining weights and config (a checkpoint whose encoder
`VideoMAEForVideoClassification.from_pretrained(folder, num_labels=...)` and
`train_video_classification.py --model folder` load: only the classifier and fc_norm are new, the
decoder and the pretraining LayerNorm are left out), the video processor config the clips were
made with, Trainer checkpoints (--resume-from-checkpoint last) and summary.json (loss curve,
wall-clock per epoch, clips/s, data loader wait).

The saved config has use_mean_pooling=True although the encoder trained with a final LayerNorm
(use_mean_pooling=False): VideoMAE pretrains with that norm and fine-tunes by mean-pooling the
tokens through a new fc_norm (the norm's weights are not reused). A classifier loaded with
use_mean_pooling=False would read the first token, and VideoMAE has no CLS token.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import TrainingArguments, VideoMAEConfig, VideoMAEForPreTraining, set_seed
from transformers.trainer_utils import get_last_checkpoint

import rlt
from rlt.clip_sources import ClipDataset, DecodedClips, SyntheticClips
from rlt.collator import ClipCollator
from rlt.common import PixelNormalizer
from rlt.synthetic import add_task_arguments
from rlt.training import (
    COMPILE_CHOICES,
    VIT_SIZES,
    RLTTrainer,
    compile_arguments,
    host_overlap_arguments,
    resolve_compile,
)

logger = logging.getLogger("pretrain_videomae")

TUBELET_SIZE, PATCH_SIZE = 2, 16
# VideoMAE's decoders (hidden, layers, heads, intermediate): 4 blocks, 384 wide for ViT-B, 192 for ViT-S.
DECODER_SIZES = {
    "vit-b": (384, 4, 6, 1536),
    "vit-s": (192, 4, 3, 768),
    "tiny": (32, 1, 2, 64),
}
BASE_LR, BASE_BATCH = 1.5e-4, 256  # VideoMAE's rule: peak lr = 1.5e-4 x clips per step / 256


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, metavar="N", help="N generated clips in memory (rlt.synthetic)")
    source.add_argument("--cache", metavar="DIR", help="a clip cache folder (rlt cache)")
    source.add_argument("--train", metavar="DIR_OR_CSV", help="video files: a folder (searched recursively) or a list")
    add_task_arguments(data, training=True)  # --synthetic-device, -variant, -time-step, -on-device, --data-seed
    data.add_argument("--frame-stride", type=int, help="with --train: sample every N-th frame (default: uniform)")
    data.add_argument("--num-workers", type=int, default=4, help="data loader workers (default 4)")

    model = parser.add_argument_group("model")
    model.add_argument(
        "--from-scratch", choices=sorted(VIT_SIZES), required=True, help="encoder size (decoder: VideoMAE's)"
    )
    model.add_argument("--num-frames", type=int, help="frames per clip (default 16; a --cache's own)")
    model.add_argument("--image-size", type=int, help="square frame side in pixels (default 224; a --cache's own)")
    model.add_argument("--mask-ratio", type=float, default=0.9, help="share of each frame's cells hidden (default 0.9)")

    train = parser.add_argument_group("training")
    train.add_argument("--output-dir", required=True)
    train.add_argument("--epochs", type=float, default=10)
    train.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs")
    train.add_argument("--batch-size", type=int, default=8, help="clips per device per step")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument(
        "--lr", type=float, help=f"peak learning rate (default {BASE_LR:g} x clips per step / {BASE_BATCH})"
    )
    train.add_argument("--weight-decay", type=float, default=0.05)
    train.add_argument("--warmup", type=float, default=0.1, help="warm-up: a fraction (<1) or a number of steps")
    train.add_argument("--bf16", action="store_true")
    train.add_argument("--compile", choices=COMPILE_CHOICES, default="none",
                       help="torch.compile the model: default (inductor), cuda-graphs (mode reduce-overhead: "
                       "the tube mask hides a fixed count, so shapes are static), auto (cuda-graphs on a GPU); "
                       "default none")
    # e.g. aot_eager: the compiled path, fast, on a CPU (the tests)
    train.add_argument("--compile-backend", help=argparse.SUPPRESS)
    train.add_argument("--tf32", action=argparse.BooleanOptionalAction,
                       help="TF32 matmuls (transformers' tf32; with --compile it turns TF32 on unless --no-tf32)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--save-strategy", choices=["no", "epoch", "steps"], default="epoch")
    train.add_argument("--save-steps", type=int, default=500)
    train.add_argument("--save-total-limit", type=int, default=2)
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--resume-from-checkpoint", help="a checkpoint folder, or 'last' (the newest in --output-dir)")
    train.add_argument("--report-to", default="none")
    args = parser.parse_args(argv)

    if not 0 < args.mask_ratio < 1:
        parser.error(f"--mask-ratio must lie strictly between 0 and 1 (VideoMAE uses 0.9), got {args.mask_ratio}")
    if args.synthetic is not None and args.synthetic < 1:
        parser.error(f"--synthetic needs at least one clip, got {args.synthetic}")
    if args.synthetic_on_device and args.synthetic is None:
        parser.error("--synthetic-on-device goes with --synthetic")
    for flag, value in (("--batch-size", args.batch_size), ("--grad-accum", args.grad_accum),
                        ("--frame-stride", args.frame_stride), ("--num-frames", args.num_frames),
                        ("--image-size", args.image_size)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if args.frame_stride is not None and not args.train:
        parser.error("--frame-stride samples video files: it goes with --train")
    args.compile = resolve_compile(args.compile, "cuda" if torch.cuda.is_available() else "cpu")
    try:
        check_clip_shape(args.num_frames, args.image_size, args.mask_ratio)
    except ValueError as error:
        parser.error(str(error))
    return args


# ------------------------------------------------------------------------------------------ masks


def check_clip_shape(num_frames: int | None, image_size: int | None, mask_ratio: float, origin: str = "") -> None:
    """Clips must cut into whole tubelets, and the ratio must hide some but not all cells of a frame.

    ``origin`` names where the shape comes from in the messages (default: the flags).
    """
    frames_from, size_from = (origin, origin) if origin else ("--num-frames", "--image-size")
    if num_frames is not None and num_frames % TUBELET_SIZE:
        raise ValueError(
            f"{num_frames} frames per clip ({frames_from}) are not divisible by the tubelet size {TUBELET_SIZE}: "
            f"use clips of a multiple of {TUBELET_SIZE} frames "
            f"(e.g. {num_frames - num_frames % TUBELET_SIZE or TUBELET_SIZE})"
        )
    if image_size is not None:
        if image_size % PATCH_SIZE:
            raise ValueError(
                f"frames of {image_size} px ({size_from}) are not divisible by the patch size {PATCH_SIZE}: "
                f"use a multiple of {PATCH_SIZE} (e.g. {max(PATCH_SIZE, image_size - image_size % PATCH_SIZE)})"
            )
        cells = (image_size // PATCH_SIZE) ** 2
        masked = masked_cells(cells, mask_ratio)
        if not 0 < masked < cells:
            raise ValueError(
                f"--mask-ratio {mask_ratio} hides {masked} of the {cells} cells of a {image_size} px frame: "
                "every clip needs hidden and visible cells; choose another ratio or larger frames"
            )


def masked_cells(cells_per_step: int, mask_ratio: float) -> int:
    """Cells hidden in each time step: ``round(mask_ratio * cells_per_step)``."""
    return round(mask_ratio * cells_per_step)


def tube_mask(
    batch_size: int,
    steps: int,
    cells_per_step: int,
    mask_ratio: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """VideoMAE's tube masking: bool ``(B, steps * cells_per_step)``, True = hidden.

    Each clip hides its own random ``round(mask_ratio * cells_per_step)`` cells, the same ones at
    every time step; the layout is VideoMAE's token order (time step major, then row, then column).
    """
    scores = torch.rand(batch_size, cells_per_step, device=device, generator=generator)
    hidden = scores.argsort(dim=1)[:, : masked_cells(cells_per_step, mask_ratio)]
    spatial = torch.zeros(batch_size, cells_per_step, dtype=torch.bool, device=scores.device)
    spatial.scatter_(1, hidden, True)
    return spatial.unsqueeze(1).expand(batch_size, steps, cells_per_step).reshape(batch_size, steps * cells_per_step)


class TubeMaskingTrainer(RLTTrainer):
    """``RLTTrainer`` (uint8 clips normalised on the device, timing) that adds a fresh tube mask to every batch."""

    def __init__(self, *args, mask_ratio: float, grid: tuple[int, int], **kwargs):
        super().__init__(*args, **kwargs)
        # VideoMAE's loss is a plain batch mean that ignores num_items_in_batch, though its forward takes
        # **kwargs: Trainer must divide it by the accumulation steps itself, not count on the model to.
        self.model_accepts_loss_kwargs = False
        self.mask_ratio = mask_ratio
        self.steps, self.cells_per_step = grid

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        inputs.pop("labels", None)  # the clips are their own targets: the data's labels, if any, are unused
        pixel_values = inputs["pixel_values"]
        inputs["bool_masked_pos"] = tube_mask(
            pixel_values.shape[0], self.steps, self.cells_per_step, self.mask_ratio, device=pixel_values.device
        )
        return inputs


# ------------------------------------------------------------------------------------------- data


def list_videos(source: str) -> list[str]:
    """Every video file under a folder (class folders or none), or the paths of a CSV / JSON list."""
    from rlt.data import VIDEO_EXTENSIONS, list_labelled_videos

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such video folder or list: {path}")
    if path.is_file():
        return list_labelled_videos(path)[0]
    paths = sorted(
        str(file.resolve()) for file in path.rglob("*")
        if file.is_file() and file.suffix.lower() in VIDEO_EXTENSIONS and not file.name.startswith(".")
    )
    if not paths:
        raise ValueError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {path}: pretraining needs clips")
    return paths


def load_data(args, device) -> tuple[torch.utils.data.Dataset, rlt.RLTVideoProcessor, dict]:
    """``(uint8 clips, the processor that made them, info)``; sets ``args.num_frames`` / ``args.image_size``."""
    if args.cache:
        from rlt.cache import CachedClips, ClipCache

        cache = ClipCache(args.cache)
        frames, _, height, width = cache.clip_shape
        if height != width:
            raise ValueError(f"{args.cache} holds {height}x{width} clips; VideoMAE here takes square frames")
        for flag, given, stored in (
            ("--num-frames", args.num_frames, frames),
            ("--image-size", args.image_size, height),
        ):
            if given is not None and given != stored:
                raise ValueError(f"{args.cache} holds clips with {flag} {stored}, not {given}: leave {flag} out")
        args.num_frames, args.image_size = frames, height
        check_clip_shape(frames, height, args.mask_ratio, origin=f"the clip cache {args.cache}")
        if len(cache) == 0:
            raise ValueError(f"the clip cache {args.cache} holds no clips")
        # The clips alone: they are their own targets, and VideoMAEForPreTraining takes no labels or keep mask.
        clips = CachedClips(cache, with_labels=False, with_keep_masks=False)
        return clips, cache.processor, {"data": "cache", "cache": args.cache}

    args.num_frames = args.num_frames or 16
    args.image_size = args.image_size or 224
    size = args.image_size
    processor = rlt.RLTVideoProcessor(
        num_frames=args.num_frames, size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        frame_stride=args.frame_stride,
    )
    if args.synthetic:
        from rlt.synthetic import SyntheticVideoDataset, task_config

        config = task_config(
            args.synthetic_variant, num_frames=args.num_frames, image_size=size, time_step=args.synthetic_time_step
        )
        render = args.synthetic_device or device
        start = time.perf_counter()
        dataset = SyntheticVideoDataset(args.synthetic, seed=args.data_seed, config=config, device=render,
                                        clips_device=device if args.synthetic_on_device else None)
        info = {"data": "synthetic", "variant": args.synthetic_variant, "time_step": args.synthetic_time_step,
                "generate_s": time.perf_counter() - start, "render_device": str(render),
                "clips_device": str(dataset.device)}
        return ClipDataset(SyntheticClips(dataset)), processor, info
    # Decoded in the loader workers; a file that cannot be read is skipped by the collator with a warning naming it.
    paths = list_videos(args.train)
    videos = DecodedClips.of_files(paths, [0] * len(paths), processor, ["video"], args.train)
    return ClipDataset(videos), processor, {"data": "videos", "train": args.train}


# ------------------------------------------------------------------------------------------ model


def build_model(args) -> VideoMAEForPreTraining:
    hidden, layers, heads, intermediate = VIT_SIZES[args.from_scratch]
    decoder_hidden, decoder_layers, decoder_heads, decoder_intermediate = DECODER_SIZES[args.from_scratch]
    config = VideoMAEConfig(
        image_size=args.image_size, patch_size=PATCH_SIZE, num_frames=args.num_frames, tubelet_size=TUBELET_SIZE,
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
        decoder_hidden_size=decoder_hidden, decoder_num_hidden_layers=decoder_layers,
        decoder_num_attention_heads=decoder_heads, decoder_intermediate_size=decoder_intermediate,
        norm_pix_loss=True,
        # VideoMAE's pretraining encoder ends with a LayerNorm; the saved config switches to mean pooling (see above).
        use_mean_pooling=False,
    )
    return VideoMAEForPreTraining(config)


# ------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    train_dataset, processor, data_info = load_data(args, device)
    model = build_model(args)
    config = model.config
    steps = config.num_frames // TUBELET_SIZE
    cells_per_step = (config.image_size // PATCH_SIZE) ** 2
    visible = steps * (cells_per_step - masked_cells(cells_per_step, args.mask_ratio))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    clips_per_step = args.batch_size * args.grad_accum * world_size
    lr = args.lr if args.lr is not None else BASE_LR * clips_per_step / BASE_BATCH

    training_args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=lr,
        weight_decay=args.weight_decay,
        adam_beta2=0.95,  # VideoMAE's AdamW betas (0.9, 0.95)
        warmup_steps=args.warmup,  # transformers 5: a value below 1 is a fraction of the steps
        lr_scheduler_type="cosine",
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        bf16=args.bf16,
        eval_strategy="no",
        save_strategy=args.save_strategy,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps,
        seed=args.seed,
        data_seed=args.seed,
        remove_unused_columns=False,  # the collator reads pixel_values; the mask is added on the device
        label_names=[],  # the targets are the clips themselves
        ddp_find_unused_parameters=False,
        report_to=args.report_to,
        use_cpu=not torch.cuda.is_available(),
        tf32=args.tf32,
        **compile_arguments(args.compile, device, backend=args.compile_backend),
        **host_overlap_arguments(device, args.num_workers, data_info.get("clips_device", "cpu")),
    )
    trainer = TubeMaskingTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=ClipCollator(),
        normalizer=PixelNormalizer.from_processor(processor),
        mask_ratio=args.mask_ratio,
        grid=(steps, cells_per_step),
    )
    resume = args.resume_from_checkpoint
    if resume == "last":
        resume = get_last_checkpoint(str(output_dir))
        if resume is None:
            logger.info("no checkpoint in %s: starting from scratch", output_dir)
    train_metrics = trainer.train(resume_from_checkpoint=resume).metrics
    stats = trainer.training_stats()
    stats.pop("mean_tokens_kept", None)  # RLT's count; the encoder's tokens are visible_tokens_per_clip

    encoder_parameters = sum(p.numel() for p in model.videomae.parameters())
    summary = {
        "mode": "videomae-pretraining",
        "model": f"videomae {args.from_scratch} from scratch",
        "encoder_parameters": encoder_parameters,
        "decoder_parameters": sum(p.numel() for p in model.parameters()) - encoder_parameters,
        "mask_ratio": args.mask_ratio,
        "tokens_per_clip": steps * cells_per_step,
        "visible_tokens_per_clip": visible,
        "clip_shape": [config.num_frames, 3, config.image_size, config.image_size],
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "lr": lr,
        "warmup": args.warmup,
        "weight_decay": args.weight_decay,
        "precision": "bf16" if args.bf16 else "fp32",
        "compile": args.compile,
        **trainer.compile_stats(),
        "seed": args.seed,
        "data": {**data_info, "train_clips": len(train_dataset)},
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        **stats,
        "final_loss": train_metrics.get("train_loss"),
        "loss_curve": [
            {key: entry[key] for key in ("step", "epoch", "loss", "learning_rate") if key in entry}
            for entry in trainer.state.log_history if "loss" in entry
        ],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "rlt": rlt.__version__,
                     "python": platform.python_version()},
        "command": " ".join(sys.argv),
    }
    # The checkpoint is for fine-tuning: mean pooling through a new fc_norm, as VideoMAE fine-tunes.
    model.config.use_mean_pooling = True
    trainer.save_model(str(output_dir))  # all ranks call it; rank 0 writes
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(output_dir))
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    epochs = ", ".join(f"{s:.1f}" for s in summary["epoch_wall_s"])
    loss = summary["final_loss"]
    curve = summary["loss_curve"]
    last = curve[-1]["loss"] if curve else float("nan")
    print(
        f"\n== VideoMAE pretraining, {summary['model']} ({summary['encoder_parameters'] / 1e6:.1f}M encoder + "
        f"{summary['decoder_parameters'] / 1e6:.1f}M decoder parameters), {summary['device']}\n"
        f"   mask ratio {summary['mask_ratio']:g}: the encoder sees {summary['visible_tokens_per_clip']} of "
        f"{summary['tokens_per_clip']} tokens per clip\n"
        f"   wall-clock per epoch [s]: {epochs}  "
        f"(train total {summary['train_wall_s']:.1f} s, {summary['steps']} steps)\n"
        f"   train clips/s: {summary['train_clips_per_s'] or math.nan:.1f}   data loader wait: "
        f"{summary['loader_wait_s']:.1f} s\n"
        f"   loss: mean over training {loss if loss is not None else math.nan:.4f}, last logged {last:.4f}\n"
        + (f"   compiled ({summary['compile']}): {summary['compile_s']:.1f} s in {len(summary['compile_steps'])} "
           f"compiling steps, {summary['graph_breaks']} graph breaks\n" if summary["compile"] != "none" else "")
    )


if __name__ == "__main__":
    main()
