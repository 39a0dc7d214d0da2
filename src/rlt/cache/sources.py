"""The clip sources and the calls that cache them: ``cache_clips`` (a labelled video folder or list, or a
Hugging Face dataset or stream, decoded) and ``write_clip_cache`` (clips already in memory, no PyAV). Each
builds a ``RowSource`` and hands it to the one write loop (``writer.py``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..clip_sources import VideoRow
from ..data import list_labelled_videos
from ..models.video_decoding import frames_to_tensor
from ..models.video_processing_rlt import RLTVideoProcessor
from .clips import PrepareJob, TokenSettings, default_workers, load_processor
from .format import DEFAULT_SHARD_SIZE
from .writer import CacheSummary, RowSource, write_source


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
    """Decode a labelled video folder / CSV / JSON list or a dataset once into a clip cache (see the package doc).

    Run again on the same ``out``, it resumes an interrupted run and rewrites only the shards that are
    missing or damaged (``writer.py``).

    Args:
        data: a folder with one sub-folder per class, or a ``path,label`` list (``load_video_dataset``);
            or a Hugging Face dataset with a ``Video`` column (``rlt.hf_datasets.is_dataset_source``).
        out: the cache folder.
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
    from ..hf_datasets import is_dataset_source, open_video_dataset

    processor, tokens = load_processor(processor, num_frames=num_frames, frame_stride=frame_stride, size=size)
    if dataset_options or is_dataset_source(data):
        dataset = open_video_dataset(data, class_names=class_names, **dict(dataset_options or {}))
        source = RowSource(dataset.identity(), dataset.description, dataset.class_names, dataset.num_rows,
                         exact=False, rows=dataset.rows, unit="row")
    else:
        paths, labels, names = list_labelled_videos(data, class_names=class_names)

        def rows(start: int) -> Iterator[VideoRow]:
            return (VideoRow(p, paths[p], paths[p], labels[p], None) for p in range(start, len(paths)))

        source = RowSource({"paths": paths, "labels": labels}, str(data), names, len(paths), exact=True, rows=rows)
    job = PrepareJob(processor, tokens, keep_only_threshold)
    workers = default_workers() if workers is None else int(workers)
    return write_source(Path(out), source, job, workers=workers, shard_size=shard_size, overwrite=overwrite,
                        max_shards=max_shards, on_shard=on_shard, progress=progress)


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
    order; a resumed run reads past the clips of finished shards, and a repair run rewrites the
    damaged ones from it). With ``processor=None`` the clips are stored as they are and read back
    with ImageNet normalisation; with a processor (e.g. from ``load_processor(checkpoint)``), each
    clip is sampled, resized and cropped as it would be after decoding, and read back with that
    processor's normalisation.

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
        clips = itertools.chain([first], clips)

    def rows(start: int) -> Iterator[VideoRow]:
        seen = 0
        for position, clip in enumerate(clips):
            seen = position + 1
            if position >= len(ids):
                raise ValueError(f"more clips than the {len(ids)} labels")
            if position < start:
                continue  # a clip of a finished shard
            array = clip if isinstance(clip, torch.Tensor) else np.asarray(clip)
            if array.dtype not in (np.uint8, torch.uint8):
                raise TypeError(
                    f"clip {position} ({paths[position]}) has dtype {array.dtype}; "
                    "the cache stores uint8 (0..255) clips"
                )
            yield VideoRow(position, paths[position], array, ids[position], None)
        if seen < len(ids):
            raise ValueError(f"{len(ids)} labels but only {seen} clips")

    source = RowSource({"paths": paths, "labels": ids}, "<in memory>", class_names, len(ids), exact=True, rows=rows)
    job = PrepareJob(processor, tokens or TokenSettings(), keep_only_threshold)
    return write_source(Path(out), source, job, workers=0, shard_size=shard_size, overwrite=overwrite,
                        max_shards=max_shards, on_shard=on_shard, progress=progress)
