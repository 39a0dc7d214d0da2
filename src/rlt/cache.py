"""Decode once: a folder of preprocessed uint8 clips in safetensors shards.

Decoding, not the model, bounds video training and evaluation. ``cache_clips`` (``rlt cache``)
decodes a labelled video folder or list, or a Hugging Face dataset with a ``Video`` column (streamed
too: ``rlt.hf_datasets``), once, in parallel, samples, resizes and crops every clip
exactly as a checkpoint's processor does, and writes the clips as uint8 (0..255) in shards; reading
them back costs a memory copy and one normalisation. ``write_clip_cache`` writes the same format
from clips already in memory (e.g. generated ones), without decoding, so it needs no PyAV.

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
- ``clip_cache.json``: the index: class names, settings, finished shards, unreadable files
  (``failed``: path, label, error) and, once complete, one record per clip (``clips``: path,
  label, shard, row, tokens_kept, padded_frames) and the padding in all (``padded``: clips, frames).
- ``sources.json``: the source list (paths, labels) the shards are cut from.
- ``video_preprocessor_config.json``: the processor the clips were made with (its mean/std
  normalise them when read).

A shard is written to a temporary file and renamed, then recorded in the index: an interrupted run
resumes where it stopped, without rewriting finished shards. An unreadable file is recorded with
its path and error and skipped; labels travel with their clips, so nothing shifts. A dataset's rows
are named ``row N`` (their index in the split) in place of paths, and are read in order, so a stream
of unknown length needs no first pass: its shards are named ``clips-00000.safetensors`` ..., its
``sources.json`` is written once it has ended, and a resumed run reads past the finished rows.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .common import READ_ERRORS
from .data import list_labelled_videos
from .models.tokenizer import run_length_tokenize, to_pair
from .models.video_processing_rlt import RLTVideoProcessor, frames_to_tensor

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CLIP_LAYOUT",
    "DEFAULT_SHARD_SIZE",
    "DEFAULT_THRESHOLD",
    "INDEX_FILE",
    "PROCESSOR_FILE",
    "SOURCES_FILE",
    "CacheSummary",
    "CachedClips",
    "ClipCache",
    "ClipCacheTransform",
    "TokenSettings",
    "cache_clips",
    "default_workers",
    "expand_tubelets",
    "is_clip_cache",
    "load_clip_cache",
    "load_processor",
    "prepare_clip",
    "processor_settings",
    "split_tubelets",
    "write_clip_cache",
]

logger = logging.getLogger(__name__)

INDEX_FILE = "clip_cache.json"
SOURCES_FILE = "sources.json"
PROCESSOR_FILE = "video_preprocessor_config.json"
CACHE_FORMAT = "rlt-clip-cache"
CACHE_VERSION = 1
CLIP_LAYOUT = "TCHW"  # each clip is (frames, channels, height, width), as pixel_values are
DEFAULT_SHARD_SIZE = 256
DEFAULT_THRESHOLD = 0.1


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
    from .conversion import read_processor_config

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
    for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride), ("size", size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if fps is not None and frame_stride is not None:
        raise ValueError("frame_stride and fps are exclusive: give one of them")
    if num_frames is not None:
        processor.num_frames = num_frames
    if frame_stride is not None:
        processor.frame_stride, processor.fps = frame_stride, None
    if fps is not None:
        processor.fps, processor.frame_stride = float(fps), None
    if size is not None:
        processor.size = {"shortest_edge": size}
        processor.crop_size = {"height": size, "width": size}
    processor.check_settings()
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


def _token_geometry(model_config: dict):
    """A config answering the ``rlt_*`` token geometry for a checkpoint's ``config.json``; None without
    one, or for an architecture rlt does not know (the default token settings then apply)."""
    if not model_config:
        return None
    from . import registry

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
# One clip


def prepare_clip(processor: RLTVideoProcessor, video, *, return_padded_frames: bool = False):
    """Decode (a path, bytes) or take (an array) one video, sample, resize, crop: uint8 ``(T, C, H, W)``.

    ``processor.normalize_frames(clip.float())`` of the result equals ``processor(video)["pixel_values"][0]``
    exactly: the processor resizes uint8 frames in uint8, so its values before normalising are whole grey levels.
    With ``return_padded_frames``: ``(clip, padded)``, the sampled frames that repeat the one before them.
    """
    frames, padded = processor.load_frames(video, return_padded_frames=True)
    clip = processor.resize_and_crop(frames).round().clamp_(0, 255).to(torch.uint8).contiguous()
    return (clip, padded) if return_padded_frames else clip


def _clip_tokens(processor, clip: torch.Tensor, tokens: TokenSettings, threshold: float):
    """RLT's keep mask of one uint8 clip, ``(T', H', W')``; None when it cannot be cut into tubelets."""
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


# ----------------------------------------------------------------------------------------------
# Workers


@dataclass
class _Job:
    processor: RLTVideoProcessor
    tokens: TokenSettings
    keep_only_threshold: float | None


_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job
    torch.set_num_threads(1)  # one process per core already


def _process(task) -> tuple:
    """``(position, clip | None, tokens_kept, keep-only mask | None, error | None, padded frames)``."""
    position, video = task
    job = _JOB
    try:
        clip, padded = prepare_clip(job.processor, video, return_padded_frames=True)
    except READ_ERRORS as error:
        message = str(error) or type(error).__name__
        return position, None, -1, None, message, 0
    mask = _clip_tokens(job.processor, clip, job.tokens, job.tokens.threshold)
    kept = int(mask.sum()) if mask is not None else -1
    keep_only = None
    if job.keep_only_threshold is not None:
        keep_only = _clip_tokens(job.processor, clip, job.tokens, job.keep_only_threshold)
        if keep_only is None:
            raise ValueError(
                f"clips of shape {tuple(clip.shape)} cannot be cut into tubelets of {job.tokens.tubelet_size} frames "
                f"and {job.tokens.patch_size} px: keep_only_threshold needs them"
            )
    return position, clip.numpy(), kept, keep_only, None, padded


def _results(tasks: list, job: _Job, workers: int) -> Iterator[tuple]:
    """``_process`` over the tasks, in order, in ``workers`` processes (0 or 1: in this one)."""
    if workers <= 1 or len(tasks) <= 1:
        previous = _JOB
        _init_worker_in_process(job)
        try:
            yield from map(_process, tasks)
        finally:
            _init_worker_in_process(previous)
        return
    with multiprocessing.get_context().Pool(min(workers, len(tasks)), _init_worker, (job,)) as pool:
        yield from pool.imap(_process, tasks, chunksize=1)


def _init_worker_in_process(job: _Job | None) -> None:
    global _JOB
    _JOB = job


# ----------------------------------------------------------------------------------------------
# Writing


@dataclass
class CacheSummary:
    """What a ``cache_clips`` / ``write_clip_cache`` call did."""

    folder: Path
    clips: int = 0  # clips in the cache so far
    failed: list[dict] = field(default_factory=list)  # {"path", "label", "error"}, all of the cache
    shards_written: int = 0
    shards_reused: int = 0
    shards_total: int = 0
    processed: int = 0  # videos read in this call
    seconds: float = 0.0
    complete: bool = False
    padded_clips: int = 0  # clips too short for the sampling (a repeated frame), all of the cache
    padded_frames: int = 0  # their repeated frames in all

    @property
    def clips_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        lines = [
            (
                f"{'complete' if self.complete else 'INCOMPLETE'} clip cache {self.folder}: {self.clips} clips in "
                f"{self.shards_total} shards ({self.shards_written} written now, {self.shards_reused} already done)"
            )
        ]
        if self.processed:
            lines.append(
                f"prepared {self.processed} clips in {self.seconds:.1f} s: {self.clips_per_second:.1f} clips/s "
                "(decode, sample, resize, write)"
            )
        if self.padded_clips:
            lines.append(
                f"{self.padded_clips} of {self.clips} clips are shorter than the sampling needs: {self.padded_frames} "
                f"sampled frames repeat the frame before them (per clip: 'padded_frames' in {INDEX_FILE}); RLT drops "
                "the repeats, so those clips keep fewer tokens than their content would"
            )
        if self.failed:
            lines.append(f"{len(self.failed)} unreadable videos skipped (listed in {INDEX_FILE} under 'failed'):")
            lines += [f"  {entry['path']}: {entry['error']}" for entry in self.failed]
        return "\n".join(lines)


def _write_json(path: Path, value) -> None:
    temporary = path.with_name(path.name + f".tmp-{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _shard_name(shard: int, count: int) -> str:
    return f"clips-{shard:05d}-of-{count:05d}.safetensors"


def _cache_files(folder: Path) -> list[Path]:
    names = (INDEX_FILE, SOURCES_FILE, PROCESSOR_FILE)
    return [
        p for p in folder.iterdir() if p.name in names or (p.name.startswith("clips-") and ".safetensors" in p.name)
    ]


def _prepare_folder(out: Path, settings: dict, overwrite: bool) -> dict | None:
    """The index of a resumable cache of the same settings in ``out``, or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cache folder {out} is a file")
    index_path = out / INDEX_FILE
    if out.is_dir() and overwrite:
        for path in _cache_files(out):
            path.unlink()
    elif index_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("settings") == settings:
            return index
        changed = sorted(k for k in set(settings) | set(index.get("settings", {}))
                         if settings.get(k) != index.get("settings", {}).get(k))
        raise FileExistsError(
            f"{out} holds a clip cache of other data or settings (differs in {', '.join(changed)}); "
            "choose another folder or overwrite it (--overwrite)"
        )
    elif out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"cache folder {out} is not empty and holds no clip cache; choose another folder")
    return None


def _write_cache(
    out: Path,
    *,
    paths: list[str],
    labels: list[int],
    class_names: list[str],
    results: Callable[[list[int]], Iterator[tuple]],
    processor: RLTVideoProcessor,
    tokens: TokenSettings,
    shard_size: int,
    keep_only_threshold: float | None,
    source: str,
    overwrite: bool,
    max_shards: int | None,
    on_shard: Callable[[int], None] | None,
    progress: bool,
) -> CacheSummary:
    from tqdm.auto import tqdm

    _check_shard_arguments(shard_size, max_shards)
    if not paths:
        raise ValueError("no clips to cache")
    out = Path(out)
    shard_count = math.ceil(len(paths) / shard_size)
    settings = _cache_settings({"paths": paths, "labels": labels}, class_names, processor, tokens, shard_size,
                               keep_only_threshold)
    index = _prepare_folder(out, settings, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if index is None:
        _write_json(out / SOURCES_FILE, {"paths": paths, "labels": labels})
        index = _new_index(out, processor, source, class_names, len(paths), settings)

    summary = CacheSummary(out, shards_total=shard_count)
    done = {int(k) for k, entry in index["shards"].items() if (out / entry["file"]).is_file()}
    summary.shards_reused = len(done)
    todo = [s for s in range(shard_count) if s not in done]
    if max_shards is not None:
        todo = todo[:max_shards]
    positions = [p for s in todo for p in range(s * shard_size, min((s + 1) * shard_size, len(paths)))]
    start = time.perf_counter()
    bar = tqdm(total=len(positions), unit="clip", desc="caching clips", disable=not progress)
    with closing(results(positions)) as stream, bar:
        for shard in todo:
            first, end = shard * shard_size, min((shard + 1) * shard_size, len(paths))
            rows, failed = [], []
            for _ in range(first, end):
                _take_result(next(stream), paths, labels, rows, failed)
                bar.update(1)
            _save_shard(out, index, shard, _shard_name(shard, shard_count), first, end - first, rows, failed,
                        paths, labels, processor, tokens, keep_only_threshold)
            summary.shards_written += 1
            summary.processed += end - first
            if on_shard is not None:
                on_shard(shard)
    summary.seconds = time.perf_counter() - start
    if len(index["shards"]) == shard_count and not index["complete"]:
        _finish_index(out, index, paths, labels, class_names)
    return _summarise(summary, index)


def _check_shard_arguments(shard_size, max_shards) -> None:
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if max_shards is not None and max_shards < 0:
        raise ValueError(f"max_shards must be >= 0, got {max_shards}")


def _cache_settings(sources, class_names, processor, tokens: TokenSettings, shard_size: int,
                    keep_only_threshold: float | None) -> dict:
    """What a cache was written from and with: a resumed run must match it exactly (``_prepare_folder``)."""
    return {
        "sources": _digest(sources),
        "class_names": class_names,
        "processor": processor_settings(processor),
        "tokens": tokens.to_dict(),
        "shard_size": shard_size,
        "keep_only_threshold": keep_only_threshold,
    }


def _new_index(out: Path, processor, source: str, class_names, num_sources: int | None, settings: dict) -> dict:
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
    _write_json(out / INDEX_FILE, index)
    return index


def _take_result(result: tuple, paths, labels, rows: list, failed: list) -> None:
    """File one ``_process`` result: a clip into ``rows``, an unreadable video into ``failed`` (with a warning)."""
    position, clip, kept, keep_only, error, padded = result
    if error is not None:
        failed.append({"path": paths[position], "label": labels[position], "error": error, "position": position})
        logger.warning("skipping an unreadable video: %s: %s", paths[position], error)
        return
    rows.append((position, torch.from_numpy(clip), kept, keep_only, padded))


def _save_shard(out: Path, index: dict, shard: int, name: str, first: int, count: int, rows, failed, paths, labels,
                processor, tokens, keep_only_threshold) -> None:
    """Write a shard (to a temporary file, renamed when complete) and record it in the index."""
    from safetensors.torch import save_file

    tensors = _shard_tensors(rows, labels, processor, tokens, keep_only_threshold)
    temporary = out / f"{name}.tmp-{os.getpid()}"
    save_file(tensors, str(temporary), metadata={"format": CACHE_FORMAT, "layout": CLIP_LAYOUT,
                                                 "paths": json.dumps([paths[r[0]] for r in rows])})
    os.replace(temporary, out / name)
    index["shards"][str(shard)] = {"file": name, "first": first, "count": count, "rows": len(rows), "failed": failed,
                                   "padded_clips": sum(r[4] > 0 for r in rows),
                                   "padded_frames": sum(r[4] for r in rows)}
    _write_json(out / INDEX_FILE, index)


def _summarise(summary: CacheSummary, index: dict) -> CacheSummary:
    summary.complete = index["complete"]
    summary.failed = [entry for s in sorted(index["shards"], key=int) for entry in index["shards"][s]["failed"]]
    summary.clips = sum(entry["rows"] for entry in index["shards"].values())
    summary.padded_clips = sum(entry.get("padded_clips", 0) for entry in index["shards"].values())
    summary.padded_frames = sum(entry.get("padded_frames", 0) for entry in index["shards"].values())
    return summary


def _shard_tensors(rows, labels, processor, tokens: TokenSettings, keep_only_threshold) -> dict:
    positions = torch.tensor([r[0] for r in rows], dtype=torch.int64)
    tensors = {
        "positions": positions,
        "labels": torch.tensor([labels[r[0]] for r in rows], dtype=torch.int64),
        "tokens_kept": torch.tensor([r[2] for r in rows], dtype=torch.int64),
        "padded_frames": torch.tensor([r[4] for r in rows], dtype=torch.int64),
    }
    if not rows:
        shape = (0, processor.num_frames, 3, 0, 0)
        if keep_only_threshold is None:
            tensors["clips"] = torch.zeros(shape, dtype=torch.uint8)
        else:
            tensors["tubelets"] = torch.zeros((0, tokens.tubelet_size, 3, 0, 0), dtype=torch.uint8)
            tensors["tubelet_offsets"] = torch.zeros(1, dtype=torch.int64)
            tensors["keep_mask"] = torch.zeros((0, 0, 0, 0), dtype=torch.bool)
        return tensors
    shapes = {tuple(r[1].shape) for r in rows}
    if len(shapes) > 1:
        raise ValueError(f"the clips came out in different shapes {sorted(shapes)}; every clip must have one shape")
    if keep_only_threshold is None:
        tensors["clips"] = torch.stack([r[1] for r in rows])
    else:
        parts = [split_tubelets(r[1], r[3], tokens.tubelet_size, tokens.patch_size) for r in rows]
        tensors["tubelets"] = torch.cat(parts)
        tensors["tubelet_offsets"] = torch.tensor([0] + [len(p) for p in parts]).cumsum(0)
        tensors["keep_mask"] = torch.stack([r[3] for r in rows])
    return tensors


def _finish_index(out: Path, index: dict, paths, labels, class_names) -> None:
    """Add the per-clip records (in source order) and the clip shape, and mark the index complete."""
    from safetensors import safe_open

    records, shape = [], None
    for shard in sorted(index["shards"], key=int):
        entry = index["shards"][shard]
        with safe_open(str(out / entry["file"]), framework="pt") as handle:
            positions = handle.get_tensor("positions").tolist()
            kept = handle.get_tensor("tokens_kept").tolist()
            # Shards written before padding was recorded hold no count: None, not a made-up 0.
            # A safe_open handle has keys() but no __contains__/__iter__.
            padded = handle.get_tensor("padded_frames").tolist() if "padded_frames" in handle.keys() else None  # noqa: SIM118
            if positions and shape is None:
                shape = _stored_clip_shape(handle)
        for row, (position, count) in enumerate(zip(positions, kept)):
            records.append({"path": paths[position], "label": int(labels[position]), "shard": int(shard),
                            "row": row, "tokens_kept": int(count),
                            "padded_frames": int(padded[row]) if padded is not None else None})
    index["clips"] = records
    index["padded"] = {"clips": sum(1 for r in records if r["padded_frames"]),
                       "frames": sum(r["padded_frames"] or 0 for r in records)}
    index["failed"] = [f for s in sorted(index["shards"], key=int) for f in index["shards"][s]["failed"]]
    if shape is None:
        processor = RLTVideoProcessor.from_pretrained(str(out))
        crop = processor.crop_size
        shape = [processor.num_frames, 3, crop.height, crop.width]
    index["clip_shape"] = shape
    settings = index["settings"]["tokens"]
    patch_h, patch_w = to_pair(settings["patch_size"])
    if shape[0] % settings["tubelet_size"] == 0 and shape[2] % patch_h == 0 and shape[3] % patch_w == 0:
        index["tokens_per_clip"] = shape[0] // settings["tubelet_size"] * (shape[2] // patch_h) * (shape[3] // patch_w)
    index["complete"] = True
    _write_json(out / INDEX_FILE, index)


def _stored_clip_shape(handle) -> list[int]:
    if "clips" in handle.keys():  # noqa: SIM118 - safe_open handles have keys() but no __contains__/__iter__
        return list(handle.get_slice("clips").get_shape()[1:])
    steps, grid_h, grid_w = handle.get_slice("keep_mask").get_shape()[1:]
    _, tubelet_size, channels, patch_h, patch_w = handle.get_slice("tubelets").get_shape()
    return [steps * tubelet_size, channels, grid_h * patch_h, grid_w * patch_w]


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cache_clips(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    processor: RLTVideoProcessor | str | os.PathLike | None = None,
    num_frames: int | None = None,
    frame_stride: int | None = None,
    size: int | None = None,
    workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    keep_only_threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    max_shards: int | None = None,
    on_shard: Callable[[int], None] | None = None,
    progress: bool = True,
    dataset_options: Mapping | None = None,
) -> CacheSummary:
    """Decode a labelled video folder / CSV / JSON list or a dataset once into a clip cache folder (see the module doc).

    Args:
        data: a folder with one sub-folder per class, or a ``path,label`` list (``load_video_dataset``);
            or a Hugging Face dataset with a ``Video`` column (``rlt.hf_datasets.is_dataset_source``).
        out: the cache folder; a cache of the same data and settings there is resumed.
        processor: an ``RLTVideoProcessor``, or a checkpoint / processor folder (``load_processor``);
            default ``RLTVideoProcessor()``. ``num_frames``, ``frame_stride``, ``size`` override it.
        workers: decoding processes (default: one per core; 0 or 1 decode in this process).
        shard_size: clips per shard file.
        keep_only_threshold: store only the tubelets RLT keeps at this ``tau``, plus keep masks.
        max_shards: stop after writing this many shards (the cache stays resumable).
        on_shard: called with each shard's number once it is written and recorded.
        dataset_options: ``split``, ``config``, ``streaming``, ``video_column``, ``label_column`` for
            ``rlt.hf_datasets.open_video_dataset``; a stream is cached as it is read, in one pass.
    """
    from .hf_datasets import is_dataset_source, open_video_dataset

    if isinstance(processor, RLTVideoProcessor):
        processor, tokens = _override(processor, num_frames, frame_stride, size), TokenSettings()
    else:
        processor, tokens = load_processor(processor, num_frames=num_frames, frame_stride=frame_stride, size=size)
    workers = default_workers() if workers is None else int(workers)
    job = _Job(processor, tokens, keep_only_threshold)
    if dataset_options or is_dataset_source(data):
        source = open_video_dataset(data, class_names=class_names, **dict(dataset_options or {}))
        return _write_dataset_cache(Path(out), source, job=job, workers=workers, shard_size=shard_size,
                                    overwrite=overwrite, max_shards=max_shards, on_shard=on_shard, progress=progress)
    paths, labels, names = list_labelled_videos(data, class_names=class_names)
    return _write_cache(
        Path(out), paths=paths, labels=labels, class_names=names,
        results=lambda positions: _results([(p, paths[p]) for p in positions], job, workers),
        processor=processor, tokens=tokens, shard_size=shard_size, keep_only_threshold=keep_only_threshold,
        source=str(data), overwrite=overwrite, max_shards=max_shards, on_shard=on_shard, progress=progress,
    )


def _ordered_results(tasks: Iterable[tuple], job: _Job, workers: int) -> Iterator[tuple]:
    """``_process`` over ``(position, video, error)`` tasks, in order; a task that carries an error is not decoded.

    Unlike ``Pool.imap``, which reads all of its input ahead, this keeps at most four tasks per
    worker in flight, so the video bytes of a long dataset or stream are never all in memory.
    """
    if workers <= 1:
        previous = _JOB
        _init_worker_in_process(job)
        try:
            for position, video, error in tasks:
                yield (position, None, -1, None, error, 0) if error is not None else _process((position, video))
        finally:
            _init_worker_in_process(previous)
        return
    pending: collections.deque = collections.deque()
    with multiprocessing.get_context().Pool(workers, _init_worker, (job,)) as pool:
        for position, video, error in tasks:
            if error is not None:
                pending.append((position, None, -1, None, error, 0))
            else:
                pending.append(pool.apply_async(_process, ((position, video),)))
            while len(pending) >= 4 * workers:
                yield _result_of(pending.popleft())
        while pending:
            yield _result_of(pending.popleft())


def _result_of(item) -> tuple:
    return item if isinstance(item, tuple) else item.get()


def _recorded_rows(out: Path, index: dict) -> tuple[dict, dict]:
    """``(names, labels)`` by position of the rows in the finished shards (read from the shards and the index)."""
    from safetensors import safe_open

    names, labels = {}, {}
    for entry in index["shards"].values():
        with safe_open(str(out / entry["file"]), framework="pt") as handle:
            positions = handle.get_tensor("positions").tolist()
            names.update(zip(positions, json.loads(handle.metadata()["paths"])))
            labels.update(zip(positions, handle.get_tensor("labels").tolist()))
        for failure in entry["failed"]:
            names[failure["position"]], labels[failure["position"]] = failure["path"], failure["label"]
    return names, labels


def _dataset_tasks(source, start: int, names: dict, labels: dict) -> Iterator[tuple]:
    """``(position, video, error)`` of the dataset's rows from ``start`` on, recording each row's name and label."""
    for row in source.rows(start):
        names[row.index], labels[row.index] = row.name, row.label
        yield row.index, row.video, row.error


def _write_dataset_cache(
    out: Path, source, *, job: _Job, workers: int, shard_size: int, overwrite: bool, max_shards: int | None,
    on_shard: Callable[[int], None] | None, progress: bool,
) -> CacheSummary:
    """Cache the rows of a ``rlt.hf_datasets.VideoDatasetSource`` in order, in one pass (a stream too).

    Shards are cut every ``shard_size`` rows as they come; finished shards are a prefix of the rows,
    so a resumed run starts at the first row after them. The progress bar counts rows (of the
    total, when the dataset's metadata gives it).
    """
    from tqdm.auto import tqdm

    _check_shard_arguments(shard_size, max_shards)
    processor, tokens, keep_only_threshold = job.processor, job.tokens, job.keep_only_threshold
    total = source.num_rows
    if total == 0:
        raise ValueError(f"{source.description} has no rows to cache")
    settings = _cache_settings(source.identity(), source.class_names, processor, tokens, shard_size,
                               keep_only_threshold)
    index = _prepare_folder(out, settings, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if index is None:
        index = _new_index(out, processor, source.description, source.class_names, total, settings)
    shard_count = math.ceil(total / shard_size) if total is not None else None
    summary = CacheSummary(out, shards_total=shard_count or len(index["shards"]))
    if index["complete"]:
        summary.shards_reused = len(index["shards"])
        return _summarise(summary, index)

    done = 0  # finished shards form a prefix; any after a missing one are redone
    while str(done) in index["shards"] and (out / index["shards"][str(done)]["file"]).is_file():
        done += 1
    index["shards"] = {key: entry for key, entry in index["shards"].items() if int(key) < done}
    summary.shards_reused = done
    start = sum(entry["count"] for entry in index["shards"].values())
    names, labels = _recorded_rows(out, index)
    tasks = _dataset_tasks(source, start, names, labels)
    bar = tqdm(total=total, initial=start, unit="row", desc="caching rows", disable=not progress)
    began = time.perf_counter()
    ended = False
    with closing(_ordered_results(tasks, job, workers)) as results, bar:
        shard, first = done, start
        while max_shards is None or summary.shards_written < max_shards:
            rows, failed, count = [], [], 0
            for result in itertools.islice(results, shard_size):
                _take_result(result, names, labels, rows, failed)
                count += 1
                bar.update(1)
            ended = count < shard_size
            if count:
                name = _shard_name(shard, shard_count) if shard_count else f"clips-{shard:05d}.safetensors"
                _save_shard(out, index, shard, name, first, count, rows, failed, names, labels, processor, tokens,
                            keep_only_threshold)
                summary.shards_written += 1
                summary.processed += count
                if on_shard is not None:
                    on_shard(shard)
            if ended:
                break
            shard, first = shard + 1, first + count
    summary.seconds = time.perf_counter() - began
    if ended:
        rows_read = len(names)
        if rows_read == 0:
            raise ValueError(f"{source.description} has no rows to cache")
        if total is not None and rows_read != total:
            logger.warning("%s has %d rows, not the %d its metadata gives", source.description, rows_read, total)
        ordered = range(rows_read)
        _write_json(out / SOURCES_FILE, {"paths": [names[i] for i in ordered], "labels": [labels[i] for i in ordered]})
        index["num_sources"] = rows_read
        _finish_index(out, index, names, labels, source.class_names)
    summary.shards_total = shard_count if shard_count and not ended else len(index["shards"])
    return _summarise(summary, index)


def _override(processor: RLTVideoProcessor, num_frames, frame_stride, size) -> RLTVideoProcessor:
    if num_frames is None and frame_stride is None and size is None:
        return processor
    processor = copy.deepcopy(processor)
    if num_frames is not None:
        processor.num_frames = num_frames
    if frame_stride is not None:
        processor.frame_stride, processor.fps = frame_stride, None
    if size is not None:
        processor.size, processor.crop_size = {"shortest_edge": size}, {"height": size, "width": size}
    processor.check_settings()
    return processor


def write_clip_cache(
    clips: Iterable,
    labels: Sequence,
    out: str | os.PathLike,
    class_names: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    processor: RLTVideoProcessor | None = None,
    tokens: TokenSettings | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    keep_only_threshold: float | None = None,
    overwrite: bool = False,
    max_shards: int | None = None,
    on_shard: Callable[[int], None] | None = None,
    progress: bool = True,
) -> CacheSummary:
    """Write clips already in memory (uint8 ``(T, H, W, C)`` or ``(T, C, H, W)`` arrays or tensors) as a clip cache.

    Nothing is decoded, so PyAV is not needed. ``clips`` may be a generator (it is read once, in
    order; a resumed run reads past the clips of finished shards). With ``processor=None`` the clips
    are stored as they are and read back with ImageNet normalisation; with a processor (e.g. from
    ``load_processor(checkpoint)``), each clip is sampled, resized and cropped as it would be after
    decoding, and read back with that processor's normalisation.

    Args:
        labels: label ids, or class names from ``class_names``, one per clip.
        paths: a name per clip for the index (default ``clip-000000`` ...).
    """
    class_names = [str(name) for name in class_names]
    ids = []
    for label in labels:
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= int(label) < len(class_names):
            ids.append(int(label))
        elif str(label) in class_names:
            ids.append(class_names.index(str(label)))
        else:
            raise ValueError(f"label {label!r} is neither a class id below {len(class_names)} nor one of {class_names}")
    paths = [str(p) for p in paths] if paths is not None else [f"clip-{i:06d}" for i in range(len(ids))]
    if len(paths) != len(ids):
        raise ValueError(f"{len(paths)} paths for {len(ids)} labels")
    clips = iter(clips)
    first = None
    if processor is None:
        # The clips' own shape decides the processor that normalises them.
        first = next(clips, None)
        if first is None:
            raise ValueError("no clips to cache")
        frames = frames_to_tensor(first if isinstance(first, torch.Tensor) else np.asarray(first), "clip 0")
        processor = RLTVideoProcessor(
            num_frames=frames.shape[0], do_resize=False, do_center_crop=False, do_sample_frames=False,
            crop_size={"height": frames.shape[2], "width": frames.shape[3]},
            size={"shortest_edge": min(frames.shape[2:])},
        )
        clips = _chain_first(first, clips)
    job = _Job(processor, tokens or TokenSettings(), keep_only_threshold)

    def results(positions: list[int]) -> Iterator[tuple]:
        wanted = set(positions)
        _init_worker_in_process(job)
        seen = 0
        for position, clip in enumerate(clips):
            seen = position + 1
            if position >= len(ids):
                raise ValueError(f"more clips than the {len(ids)} labels")
            if position not in wanted:
                continue  # a clip of a finished shard, or of a later run (max_shards)
            array = clip if isinstance(clip, torch.Tensor) else np.asarray(clip)
            if array.dtype not in (np.uint8, torch.uint8):
                raise TypeError(
                    f"clip {position} ({paths[position]}) has dtype {array.dtype}; "
                    "the cache stores uint8 (0..255) clips"
                )
            yield _process((position, array))
            if position == max(wanted):
                return
        if seen < len(ids):
            raise ValueError(f"{len(ids)} labels but only {seen} clips")

    return _write_cache(
        Path(out), paths=paths, labels=ids, class_names=class_names, results=results, processor=processor,
        tokens=job.tokens, shard_size=shard_size, keep_only_threshold=keep_only_threshold, source="<in memory>",
        overwrite=overwrite, max_shards=max_shards, on_shard=on_shard, progress=progress,
    )


def _chain_first(first, rest):
    yield first
    yield from rest


# ----------------------------------------------------------------------------------------------
# Reading


class ClipCache:
    """A complete clip cache folder: its index, its processor and random access to its clips.

    ``len(cache)``; ``cache.clip(i)`` uint8 ``(T, C, H, W)``; ``cache.keep_mask(i)`` for a keep-only
    cache; ``cache.labels``, ``cache.paths``, ``cache.class_names``, ``cache.processor``.
    Picklable (shard files are opened lazily in each process).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index_path = self.folder / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"{self.folder} is not a clip cache (no {INDEX_FILE}); make one with `rlt cache`")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != CACHE_FORMAT:
            raise ValueError(f"{index_path} is not an rlt clip cache index")
        if not self.index.get("complete"):
            done, sources = len(self.index.get("shards", {})), self.index["num_sources"]
            # A stream of unknown length does not know its shard count before it has ended.
            total = "?" if sources is None else math.ceil(sources / self.index["settings"]["shard_size"])
            raise ValueError(
                f"the clip cache {self.folder} is incomplete ({done} of {total} shards); "
                "run `rlt cache` again to finish it"
            )
        self.records = self.index["clips"]
        self.class_names = list(self.index["class_names"])
        self.keep_only_threshold = self.index["settings"].get("keep_only_threshold")
        self._handles: dict = {}
        self._processor = None

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def processor(self) -> RLTVideoProcessor:
        if self._processor is None:
            self._processor = RLTVideoProcessor.from_pretrained(str(self.folder))
        return self._processor

    @property
    def labels(self) -> list[int]:
        return [record["label"] for record in self.records]

    @property
    def paths(self) -> list[str]:
        return [record["path"] for record in self.records]

    @property
    def clip_shape(self) -> tuple[int, ...]:
        return tuple(self.index["clip_shape"])

    def _handle(self, shard: int):
        from safetensors import safe_open

        handle = self._handles.get(shard)
        if handle is None:
            entry = self.index["shards"][str(shard)]
            handle = self._handles[shard] = safe_open(str(self.folder / entry["file"]), framework="pt")
        return handle

    def clip(self, i: int) -> torch.Tensor:
        """Clip ``i``: uint8 ``(T, C, H, W)`` (dropped tubelets filled by their run's kept one in a keep-only cache)."""
        record = self.records[i]
        handle, row = self._handle(record["shard"]), record["row"]
        if self.keep_only_threshold is None:
            return handle.get_slice("clips")[row : row + 1][0]
        start, end = handle.get_slice("tubelet_offsets")[row : row + 2].tolist()
        return expand_tubelets(handle.get_slice("tubelets")[start:end], self.keep_mask(i))

    def keep_mask(self, i: int) -> torch.Tensor | None:
        """The stored keep mask ``(T', H', W')`` of a keep-only cache; None for a cache of full clips."""
        if self.keep_only_threshold is None:
            return None
        record = self.records[i]
        return self._handle(record["shard"]).get_slice("keep_mask")[record["row"] : record["row"] + 1][0]

    def shard_clips(self, shard: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole shard of full clips at once: uint8 ``(N, T, C, H, W)`` and labels ``(N,)``."""
        if self.keep_only_threshold is not None:
            raise ValueError("shard_clips reads caches of full clips; this one holds only the kept tubelets")
        handle = self._handle(shard)
        return handle.get_tensor("clips"), handle.get_tensor("labels")


def _relabelled(cache: ClipCache, class_names: Sequence[str] | None) -> tuple[list[str], list[int]]:
    """``(class names, each clip's label)`` of a cache, renumbered to ``class_names`` by name when given."""
    labels, names = cache.labels, list(cache.class_names)
    if class_names is None:
        return names, labels
    names = [str(name) for name in class_names]
    unknown = [name for name in cache.class_names if name not in names]
    if unknown:
        raise ValueError(f"{cache.folder} has classes {unknown[:5]} that are not among {names[:10]}")
    ids = [names.index(name) for name in cache.class_names]
    return names, [ids[label] for label in labels]


class CachedClips(torch.utils.data.Dataset):
    """A clip cache, or some of its clips, as a torch ``Dataset`` of uint8 clips read from the shards when indexed.

    Item ``i``: ``{"pixel_values": uint8 (T, C, H, W), "labels": int}`` and, from a keep-only cache
    (``keep_only_threshold``), ``"keep_mask": bool (T', H', W')`` (the tubelets the cache kept; dropped
    ones are filled by their run's kept one). ``rlt.training.ClipCollator`` batches these items, and
    ``RLTTrainer`` normalises the uint8 clips on the device. What describes a clip without reading
    it (path, label, ``tokens_kept``, ``padded_frames``) is in ``record(i)``. Picklable: each
    ``DataLoader`` worker opens the shards it reads.

    Args:
        cache: a ``ClipCache`` or its folder.
        indices: which of the cache's clips, in this order (one side of a split, say); all by default.
        class_names: renumber the labels to these classes, by name (as ``load_clip_cache`` does): two
            caches written apart may number their classes differently. A class of the cache that is
            not among them is an error.
        with_labels: False leaves ``labels`` out of the items (self-supervised pretraining takes none).
        with_keep_masks: False leaves a keep-only cache's ``keep_mask`` out (the model then tokenizes the
            filled-in clips itself).
    """

    def __init__(
        self,
        cache: ClipCache | str | os.PathLike,
        *,
        indices: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        with_labels: bool = True,
        with_keep_masks: bool = True,
    ):
        self.cache = cache if isinstance(cache, ClipCache) else ClipCache(cache)
        self.indices = list(range(len(self.cache))) if indices is None else [int(i) for i in indices]
        if self.indices and not 0 <= min(self.indices) <= max(self.indices) < len(self.cache):
            raise IndexError(
                f"indices must lie in 0..{len(self.cache) - 1}: {self.cache.folder} holds {len(self.cache)} clips"
            )
        self.class_names, self._labels = _relabelled(self.cache, class_names)
        self.with_labels = with_labels
        self.with_keep_masks = with_keep_masks

    def __len__(self) -> int:
        return len(self.indices)

    def record(self, i: int) -> dict:
        """Item ``i``'s entry in the cache index (``path``, ``label`` as stored, ``tokens_kept``, and
        ``padded_frames``, absent from caches written before padding was recorded); reads no clip."""
        return self.cache.records[self.indices[i]]

    @property
    def tokens_kept(self) -> list[int]:
        """Each item's token count at the cache's threshold (-1 where the clip cannot be cut into tubelets)."""
        return [self.cache.records[index]["tokens_kept"] for index in self.indices]

    def __getitem__(self, i: int) -> dict:
        index = self.indices[i]
        item = {"pixel_values": self.cache.clip(index)}
        if self.with_labels:
            item["labels"] = self._labels[index]
        if self.with_keep_masks and self.cache.keep_only_threshold is not None:
            item["keep_mask"] = self.cache.keep_mask(index)
        return item


class ClipCacheTransform:
    """``dataset.with_transform(...)`` for ``load_clip_cache``: reads clips and normalises them when accessed.

    Output per batch: ``pixel_values`` float ``(T, C, H, W)`` each (or ``clip`` uint8 with
    ``normalize=False``), ``labels``, ``video`` (source paths) and, for a keep-only cache, ``keep_mask``,
    besides the dataset's own columns. Reading a whole column (``dataset["label"]``) reads every clip
    through here: read columns from ``dataset.with_format(None)`` instead.
    """

    def __init__(self, cache: ClipCache, processor: RLTVideoProcessor | None = None, normalize: bool = True):
        self.cache = cache
        self.processor = processor if processor is not None else cache.processor
        self.normalize = normalize

    def __call__(self, batch: dict) -> dict:
        output: dict = {key: list(values) for key, values in batch.items()}  # column reads keep working
        output.update(labels=list(batch["label"]), video=list(batch["path"]))
        clips = [self.cache.clip(int(i)) for i in batch["clip_id"]]
        if self.normalize:
            output["pixel_values"] = [self.processor.normalize_frames(clip.float()) for clip in clips]
        else:
            output["clip"] = clips
        if self.cache.keep_only_threshold is not None:
            output["keep_mask"] = [self.cache.keep_mask(int(i)) for i in batch["clip_id"]]
        return output


def load_clip_cache(
    folder: str | os.PathLike,
    *,
    processor: RLTVideoProcessor | None = None,
    normalize: bool = True,
    class_names: Sequence[str] | None = None,
):
    """A clip cache as a lazy ``datasets.Dataset``: ``clip_id``, ``path``, ``label`` (``ClassLabel``), ``tokens_kept``.

    Reading an example reads its clip from the shard and normalises it with the cache's processor
    (or ``processor``, e.g. the checkpoint's, when its mean/std differ): ``pixel_values`` float
    ``(T, C, H, W)``, ``labels``, ``video``; ``VideoCollator`` batches them. ``tokens_kept`` (RLT's
    count at the cache's threshold) is readable without touching a clip, e.g. for token-budget
    batching: ``dataset.with_format(None)["tokens_kept"]`` (a plain column read would read every clip).

    ``class_names`` (e.g. the training cache's or the model's classes, in id order) relabels the clips
    by class name: two caches written apart (a split without one of the classes, string labels sorted
    per split) number their classes differently, and evaluating one with the other's ids would shift
    labels silently. A class of the cache that is not among them is an error.
    """
    from datasets import ClassLabel, Dataset, Features, Value

    cache = ClipCache(folder)
    names, labels = _relabelled(cache, class_names)
    features = Features({
        "clip_id": Value("int64"),
        "path": Value("string"),
        "label": ClassLabel(names=names),
        "tokens_kept": Value("int64"),
    })
    dataset = Dataset.from_dict(
        {
            "clip_id": list(range(len(cache))),
            "path": cache.paths,
            "label": labels,
            "tokens_kept": [record["tokens_kept"] for record in cache.records],
        },
        features=features,
    )
    return dataset.with_transform(ClipCacheTransform(cache, processor, normalize))


def is_clip_cache(folder: str | os.PathLike) -> bool:
    return (Path(folder) / INDEX_FILE).is_file()
