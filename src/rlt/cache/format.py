"""The clip cache on disk: file names, the tensors of a shard (clips, or the tubelets RLT keeps), the
index and its per-clip records, and each shard's integrity record (size, CRC-32) and check. The writer
(``writer.py``) and the reader (``reader.py``) both build on this module; neither defines a file name, a
tensor layout or a check of its own.

A cache folder holds:

- ``clips-00000-of-000NN.safetensors``: tensors ``clips`` uint8 ``(N, T, C, H, W)`` (the layout the
  models take, channels before height), ``labels`` int64 ``(N,)``, ``positions`` int64 ``(N,)``
  (index in the source list), ``tokens_kept`` int64 ``(N,)`` (tokens RLT keeps at the recorded
  threshold; -1 when the clip cannot be cut into tubelets) and ``padded_frames`` int64 ``(N,)``
  (sampled frames that repeat the one before them because the video is too short for the sampling:
  RLT drops the repeats, so such a clip's ``tokens_kept`` understates its content). With
  ``keep_only_threshold``, ``clips`` is replaced by ``tubelets`` uint8 ``(K, t, C, p, p)`` (only
  the kept ones, clip after clip, in token order), ``tubelet_offsets`` int64 ``(N + 1,)`` and
  ``keep_mask`` bool ``(N, T', H', W')``.
- ``clip_cache.json``: the index: class names, settings, finished shards (each with its file's
  ``bytes`` and ``crc32``), unreadable files (``failed``: path, label, error) and, once complete,
  one record per clip (``clips``: path, label, shard, row, tokens_kept, padded_frames) and the
  padding in all (``padded``: clips, frames).
- ``sources.json``: the source list (paths, labels) the shards are cut from.
- ``video_preprocessor_config.json``: the processor the clips were made with (its mean/std
  normalise them when read).

A shard is written to a temporary file and renamed, then recorded in the index with its size and
CRC-32. Opening a cache checks every shard's size; ``verify=True`` (``rlt cache --verify``) checks the
CRC-32s too. A dataset's rows are named ``row N`` (their index in the split); a stream of unknown
length names its shards ``clips-00000.safetensors`` ...
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import torch

from ..models.tokenizer import to_pair
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


def _stored_clip_shape(handle) -> list[int]:
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
    """The size a safetensors header implies (8 + header length + its last tensor's end); None if unreadable."""
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


# ----------------------------------------------------------------------------------------------
# Shards and the index


def new_index(out: Path, processor: RLTVideoProcessor, source: str, class_names: list[str], num_sources: int | None,
              settings: dict) -> dict:
    """Start a cache: save the processor and write an index with no shards yet."""
    processor.save_pretrained(out)
    index = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "layout": CLIP_LAYOUT,
        "dtype": "uint8",
        "source": source,
        "class_names": class_names,
        "num_sources": num_sources,
        "settings": settings,
        "shards": {},
        "complete": False,
    }
    write_json(out / INDEX_FILE, index)
    return index


def shard_tensors(rows: list, tokens, keep_only_threshold: float | None, num_frames: int) -> dict:
    """The tensors of one shard from its readable rows (``ClipResult``; the package doc names the tensors)."""
    tensors = {
        "positions": torch.tensor([r.position for r in rows], dtype=torch.int64),
        "labels": torch.tensor([r.label for r in rows], dtype=torch.int64),
        "tokens_kept": torch.tensor([r.tokens_kept for r in rows], dtype=torch.int64),
        "padded_frames": torch.tensor([r.padded_frames for r in rows], dtype=torch.int64),
    }
    if not rows:  # a shard of unreadable videos only: empty tensors of the right rank
        if keep_only_threshold is None:
            tensors["clips"] = torch.zeros((0, num_frames, 3, 0, 0), dtype=torch.uint8)
        else:
            tensors["tubelets"] = torch.zeros((0, tokens.tubelet_size, 3, 0, 0), dtype=torch.uint8)
            tensors["tubelet_offsets"] = torch.zeros(1, dtype=torch.int64)
            tensors["keep_mask"] = torch.zeros((0, 0, 0, 0), dtype=torch.bool)
        return tensors
    clips = [torch.from_numpy(r.clip) for r in rows]
    shapes = sorted({tuple(clip.shape) for clip in clips})
    if len(shapes) > 1:
        raise ValueError(f"the clips came out in different shapes {shapes}; every clip must have one shape")
    if keep_only_threshold is None:
        tensors["clips"] = torch.stack(clips)
        return tensors
    parts = [split_tubelets(clip, r.keep_mask, tokens.tubelet_size, tokens.patch_size) for clip, r in zip(clips, rows)]
    tensors["tubelets"] = torch.cat(parts)
    tensors["tubelet_offsets"] = torch.tensor([0] + [len(part) for part in parts]).cumsum(0)
    tensors["keep_mask"] = torch.stack([r.keep_mask for r in rows])
    return tensors


def finish_index(out: Path, index: dict) -> None:
    """Add the per-clip records and the source list (in source order, read back from the shards) and the
    clip shape, write ``sources.json``, and mark the index complete."""
    from safetensors import safe_open

    records, shape, sources = [], None, {}
    for shard in sorted(index["shards"], key=int):
        entry = index["shards"][shard]
        with safe_open(str(out / entry["file"]), framework="pt") as handle:
            positions = handle.get_tensor("positions").tolist()
            labels = handle.get_tensor("labels").tolist()
            names = json.loads(handle.metadata()["paths"])
            kept = handle.get_tensor("tokens_kept").tolist()
            # Shards written before padding was recorded hold no count: None, not a made-up 0.
            # A safe_open handle has keys() but no __contains__/__iter__.
            padded = handle.get_tensor("padded_frames").tolist() if "padded_frames" in handle.keys() else None  # noqa: SIM118
            if positions and shape is None:
                shape = _stored_clip_shape(handle)
        for row, (position, name, label, count) in enumerate(zip(positions, names, labels, kept)):
            sources[position] = (name, label)
            records.append({
                "path": name, "label": int(label), "shard": int(shard), "row": row, "tokens_kept": int(count),
                "padded_frames": int(padded[row]) if padded is not None else None,
            })
        sources.update({failure["position"]: (failure["path"], failure["label"]) for failure in entry["failed"]})
    ordered = [sources[position] for position in sorted(sources)]
    write_json(out / SOURCES_FILE, {"paths": [name for name, _ in ordered], "labels": [label for _, label in ordered]})
    index["clips"] = records
    index["padded"] = {"clips": sum(1 for r in records if r["padded_frames"]),
                       "frames": sum(r["padded_frames"] or 0 for r in records)}
    index["failed"] = [f for s in sorted(index["shards"], key=int) for f in index["shards"][s]["failed"]]
    if shape is None:
        processor = RLTVideoProcessor.from_pretrained(str(out))
        shape = [processor.num_frames, 3, processor.crop_size.height, processor.crop_size.width]
    index["clip_shape"] = shape
    settings = index["settings"]["tokens"]
    patch_h, patch_w = to_pair(settings["patch_size"])
    if shape[0] % settings["tubelet_size"] == 0 and shape[2] % patch_h == 0 and shape[3] % patch_w == 0:
        index["tokens_per_clip"] = shape[0] // settings["tubelet_size"] * (shape[2] // patch_h) * (shape[3] // patch_w)
    index["complete"] = True
    write_json(out / INDEX_FILE, index)
