"""The clip cache's format: file names, the processor and token grid clips are made with, one clip's
preparation, the tubelet layout of keep-only shards, and each shard's integrity record (size, CRC-32).

The writer (``writer.py``) and the reader (``reader.py``) both build on this module; neither defines a
file name, a tensor layout or a check of its own.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.tokenizer import run_length_tokenize, to_pair
from ..models.video_processing_rlt import RLTVideoProcessor

INDEX_FILE = "clip_cache.json"
SOURCES_FILE = "sources.json"
PROCESSOR_FILE = "video_preprocessor_config.json"
CACHE_FORMAT = "rlt-clip-cache"
CACHE_VERSION = 1
CLIP_LAYOUT = "TCHW"  # each clip is (frames, channels, height, width), as pixel_values are
DEFAULT_SHARD_SIZE = 256
DEFAULT_THRESHOLD = 0.1
CHECKSUM_CHUNK = 8 << 20  # zlib.crc32 streams at about 3 GB/s on one core in chunks this large


# ----------------------------------------------------------------------------------------------
# The processor and the token grid a checkpoint implies


@dataclass(frozen=True)
class TokenSettings:
    """Where ``tokens_kept`` comes from: RLT's threshold and tubelet grid (a checkpoint's, or the defaults)."""

    threshold: float = DEFAULT_THRESHOLD
    tubelet_size: int = 2
    patch_size: int | tuple[int, int] = 16
    compare_to: str = "previous"

    def to_dict(self) -> dict:
        patch = self.patch_size if isinstance(self.patch_size, int) else list(self.patch_size)
        return {"threshold": self.threshold, "tubelet_size": self.tubelet_size, "patch_size": patch,
                "compare_to": self.compare_to}


def load_processor(
    checkpoint: str | os.PathLike | None = None,
    *,
    num_frames: int | None = None,
    frame_stride: int | None = None,
    fps: float | None = None,
    size: int | None = None,
) -> tuple[RLTVideoProcessor, TokenSettings]:
    """The RLT video processor a checkpoint (or processor) folder implies, and its token settings.

    An RLT checkpoint's own processor is used as saved; a vanilla checkpoint's (VideoMAE, ViViT, ...)
    processor config is translated as ``rlt convert`` does (same mean/std, sizes, frame count).
    ``num_frames``, ``frame_stride`` / ``fps`` and ``size`` (short side and square crop) override.
    Without a checkpoint: ``RLTVideoProcessor()``'s defaults (16 frames, 224 px, ImageNet mean/std).
    """
    from ..conversion import read_processor_config

    model_config: dict = {}
    geometry = None
    if checkpoint is None:
        processor = RLTVideoProcessor()
    else:
        folder = Path(checkpoint)
        if not folder.is_dir():
            raise FileNotFoundError(f"no such checkpoint or processor folder: {folder}")
        if (folder / "config.json").is_file():
            model_config = json.loads((folder / "config.json").read_text())
        geometry = _token_geometry(model_config)
        name, settings = read_processor_config(folder)
        if name is None and not model_config:
            raise FileNotFoundError(f"{folder} holds neither a processor config nor a config.json")
        if name == PROCESSOR_FILE and settings.get("video_processor_type") == RLTVideoProcessor.__name__:
            processor = RLTVideoProcessor.from_pretrained(str(folder))
        else:
            processor = RLTVideoProcessor.from_source_config(
                settings,
                num_frames=geometry.rlt_num_frames if geometry is not None else None,
                image_size=geometry.rlt_image_size if geometry is not None else None,
            )
    processor = with_overrides(processor, num_frames=num_frames, frame_stride=frame_stride, fps=fps, size=size)
    tokens = TokenSettings(
        threshold=float(model_config.get("rlt_threshold", DEFAULT_THRESHOLD)),
        compare_to=model_config.get("rlt_compare_to", "previous"),
    )
    if geometry is not None:
        patch = geometry.rlt_patch_size
        tokens = TokenSettings(
            threshold=tokens.threshold,
            tubelet_size=geometry.rlt_tubelet_size,
            patch_size=patch[0] if patch[0] == patch[1] else patch,  # square patches recorded as one int
            compare_to=tokens.compare_to,
        )
    return processor, tokens


def with_overrides(
    processor: RLTVideoProcessor,
    *,
    num_frames: int | None = None,
    frame_stride: int | None = None,
    fps: float | None = None,
    size: int | None = None,
) -> RLTVideoProcessor:
    """``processor``, or a copy of it with the given sampling and size (short side and square crop) settings."""
    for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride), ("size", size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if fps is not None and frame_stride is not None:
        raise ValueError("frame_stride and fps are exclusive: give one of them")
    if num_frames is None and frame_stride is None and fps is None and size is None:
        return processor
    processor = copy.deepcopy(processor)
    if num_frames is not None:
        processor.num_frames = num_frames
    if frame_stride is not None:
        processor.frame_stride, processor.fps = frame_stride, None
    if fps is not None:
        processor.fps, processor.frame_stride = float(fps), None
    if size is not None:
        processor.size, processor.crop_size = {"shortest_edge": size}, {"height": size, "width": size}
    processor.check_settings()
    return processor


def _token_geometry(model_config: dict):
    """A config answering the ``rlt_*`` token geometry for a checkpoint's ``config.json``; None without
    one, or for an architecture rlt does not know (the default token settings then apply)."""
    if not model_config:
        return None
    from .. import registry

    try:
        return registry.as_rlt_config(model_config)
    except registry.UnsupportedArchitectureError:
        return None


def processor_settings(processor: RLTVideoProcessor) -> dict:
    """The processor's settings as JSON-able values (what decides the clips and their normalisation)."""
    settings = processor.to_dict()
    settings.pop("auto_map", None)
    return json.loads(json.dumps(settings, default=lambda value: getattr(value, "__dict__", str(value))))


# ----------------------------------------------------------------------------------------------
# One clip and its tubelets


def prepare_clip(processor: RLTVideoProcessor, video, *, return_padded_frames: bool = False):
    """Decode (a path, bytes) or take (an array) one video, sample, resize, crop: uint8 ``(T, C, H, W)``.

    ``processor.normalize_frames(clip.float())`` of the result equals ``processor(video)["pixel_values"][0]``
    exactly: the processor resizes uint8 frames in uint8, so its values before normalising are whole grey levels.
    With ``return_padded_frames``: ``(clip, padded)``, the sampled frames that repeat the one before them.
    """
    frames, padded = processor.load_frames(video, return_padded_frames=True)
    clip = processor.resize_and_crop(frames).round().clamp_(0, 255).to(torch.uint8).contiguous()
    return (clip, padded) if return_padded_frames else clip


def clip_keep_mask(processor, clip: torch.Tensor, tokens: TokenSettings, threshold: float) -> torch.Tensor | None:
    """RLT's keep mask of one uint8 clip, bool ``(T', H', W')``; None when it cannot be cut into tubelets."""
    pixel_values = processor.normalize_frames(clip.float()).unsqueeze(0)
    try:
        result = run_length_tokenize(
            pixel_values,
            tubelet_size=tokens.tubelet_size,
            patch_size=tokens.patch_size,
            threshold=threshold,
            input_scale=processor.rlt_input_scale,
            compare_to=tokens.compare_to,
        )
    except ValueError:
        return None
    return result.keep_mask[0]


def split_tubelets(clip: torch.Tensor, keep_mask: torch.Tensor, tubelet_size: int, patch_size) -> torch.Tensor:
    """The kept tubelets of a ``(T, C, H, W)`` clip in token order: ``(K, t, C, p_h, p_w)``."""
    patch_h, patch_w = to_pair(patch_size)
    frames, channels, height, width = clip.shape
    grid = clip.reshape(
        frames // tubelet_size, tubelet_size, channels, height // patch_h, patch_h, width // patch_w, patch_w
    )
    grid = grid.permute(0, 3, 5, 1, 2, 4, 6)  # (T', H', W', t, C, p_h, p_w)
    return grid[keep_mask].contiguous()


def expand_tubelets(tubelets: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """Inverse of ``split_tubelets`` up to the dropped tubelets: ``(T, C, H, W)``.

    A dropped tubelet is filled with the kept one its run reuses (the last kept one at that place),
    which is what the model stands it for; give the model ``keep_mask`` with the clip.
    """
    steps, grid_h, grid_w = keep_mask.shape
    _, tubelet_size, channels, patch_h, patch_w = tubelets.shape
    token_id = torch.cumsum(keep_mask.flatten().long(), 0).view_as(keep_mask) - 1
    source = torch.where(keep_mask, token_id, torch.full_like(token_id, -1)).cummax(dim=0).values
    grid = tubelets[source]  # (T', H', W', t, C, p_h, p_w)
    grid = grid.permute(0, 3, 4, 1, 5, 2, 6)  # (T', t, C, H', p_h, W', p_w)
    return grid.reshape(steps * tubelet_size, channels, grid_h * patch_h, grid_w * patch_w)


def stored_clip_shape(handle) -> list[int]:
    """``[T, C, H, W]`` of the clips in an open shard (of full clips or of kept tubelets)."""
    if "clips" in handle.keys():  # noqa: SIM118 - safe_open handles have keys() but no __contains__/__iter__
        return list(handle.get_slice("clips").get_shape()[1:])
    steps, grid_h, grid_w = handle.get_slice("keep_mask").get_shape()[1:]
    _, tubelet_size, channels, patch_h, patch_w = handle.get_slice("tubelets").get_shape()
    return [steps * tubelet_size, channels, grid_h * patch_h, grid_w * patch_w]


# ----------------------------------------------------------------------------------------------
# Files and integrity


def shard_name(shard: int, count: int | None) -> str:
    """``clips-00001-of-00004.safetensors``; ``clips-00001.safetensors`` in a stream of unknown length."""
    return f"clips-{shard:05d}-of-{count:05d}.safetensors" if count else f"clips-{shard:05d}.safetensors"


def write_json(path: Path, value) -> None:
    """Write ``value`` to ``path`` through a temporary file, so that a reader never sees half of it."""
    temporary = path.with_name(path.name + f".tmp-{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


class DamagedCacheError(ValueError):
    """A shard of a clip cache is missing, cut short or altered since it was written."""


def integrity_record(path: Path) -> dict:
    """``{"bytes", "crc32"}`` of a shard file, as its index entry records them; reads it once, in 8 MiB chunks."""
    crc = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHECKSUM_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return {"bytes": path.stat().st_size, "crc32": f"{crc:08x}"}


def shard_problem(folder: Path, entry: dict, *, checksum: bool) -> str | None:
    """Why the shard of an index entry cannot be trusted (missing, wrong size, wrong CRC-32), or None.

    Entries written before sizes were recorded are checked against the size their safetensors header
    implies (a cut shard fails that too); their contents cannot be checked.
    """
    path = folder / entry["file"]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    expected = entry.get("bytes")
    if expected is None:
        expected = _size_from_header(path)
        if expected is None:
            return f"unreadable safetensors header ({size} bytes)"
    if size != expected:
        return f"{size} bytes where {expected} were written (cut short or overwritten)"
    if checksum and "crc32" in entry and integrity_record(path)["crc32"] != entry["crc32"]:
        return "its contents changed since it was written (CRC-32 mismatch)"
    return None


def _size_from_header(path: Path) -> int | None:
    """The file size a safetensors header implies: 8 + header length + the end of its last tensor; None if unreadable."""
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            return None
        (length,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(file.read(min(length, 100 << 20)))
        except (ValueError, UnicodeDecodeError):
            return None
    ends = [spec["data_offsets"][1] for key, spec in header.items() if key != "__metadata__"]
    return 8 + length + max(ends, default=0)


def repair_command(folder: Path, index: dict) -> str:
    """What rewrites a cache's damaged shards: the command (or call) that wrote it, run again."""
    if index.get("source") == "<in memory>":
        return f"call write_clip_cache(..., {str(folder)!r}) again with the same clips and settings"
    return f"run `rlt cache {index.get('source') or 'DATA'} {folder}` again with the same settings"


def damaged_error(folder: Path, index: dict, problems: dict[str, str]) -> DamagedCacheError:
    """The error naming each damaged shard (``{file: problem}``) and the repair."""
    listed = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
    return DamagedCacheError(
        f"clip cache {folder} is damaged ({listed}); to repair it, {repair_command(folder, index)}: "
        "it rewrites only the damaged shards"
    )
