"""Where clips come from: one reader per kind of data, one factory, one torch ``Dataset`` over any of them.

The road of a clip to the model: a source here gives ``Clip`` objects (uint8 frames, label, name,
padded-frame count), ``ClipDataset`` serves them to a ``DataLoader`` (decoding in its workers), and
``rlt.collator.ClipCollator`` stacks them into a batch. ``open_clips(data, processor)`` picks the
reader by the argument:

- a clip cache folder or ``ClipCache`` (``rlt cache``): ``CacheClips``, read from the shards;
- ``"synthetic:N"`` / ``"synthetic:VARIANT:N"`` or a ``SyntheticVideoDataset``: ``SyntheticClips``,
  the generated task (``rlt.synthetic``) at the processor's frames and size;
- in-memory uint8 clips ``(clips, labels[, class_names])``: ``TensorClips``;
- a Hugging Face dataset with a ``Video`` column (``rlt.hf_datasets``): ``DatasetRowClips``;
- a labelled video folder, a CSV / JSON list of ``path,label`` or a ``load_video_dataset`` dataset
  of paths: ``VideoFileClips``, decoded with the processor.

Labels come out as the class ids of ``class_names`` when given (a model's labels, matched by name),
else as the data's own. Heavy imports (``datasets``, the cache, the generator) wait for the reader
that needs them. A clip that cannot be read is a ``Clip`` with ``error`` set (and no frames), so
that a loader can skip it with its label and report it by name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .common import READ_ERRORS

__all__ = [
    "CacheClips",
    "Clip",
    "ClipDataset",
    "ClipSource",
    "DatasetRowClips",
    "SyntheticClips",
    "TensorClips",
    "VideoFileClips",
    "label_mapping",
    "open_clips",
]

logger = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "synthetic:"


@dataclass
class Clip:
    """One labelled clip.

    Attributes:
        frames: uint8 ``(T, C, H, W)``, sampled, resized and cropped for the model; None when unreadable.
        label: class id, or None (unlabelled, or unreadable).
        name: what names it in messages and reports: a path, ``row N``, ``clip-N``.
        padded_frames: sampled frames that repeat the one before because the video was too short
            (``RLTVideoProcessor``); None where unknown (a cache older than the count).
        error: why it cannot be read, else None.
        keep_mask: bool ``(T', H', W')`` stored with it (a keep-only clip cache), else None.
    """

    frames: torch.Tensor | None
    label: int | None
    name: str
    padded_frames: int | None = 0
    error: str | None = None
    keep_mask: torch.Tensor | None = None


class ClipSource:
    """Random access to ``Clip`` objects: ``len(source)`` and ``source.clip(i)``.

    Attributes (set by each reader): ``kind`` (``"cache"``, ``"synthetic"``, ``"memory"``,
    ``"dataset"``, ``"videos"``), ``class_names``, ``description`` (for reports) and ``clip_shape``
    (``(T, C, H, W)`` of every clip, or None where only decoding tells). ``in_memory`` sources are
    read in the main process (a loader worker would only copy them).
    """

    kind: str = "?"
    class_names: list[str]
    description: str
    clip_shape: tuple[int, ...] | None = None
    in_memory: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def clip(self, i: int) -> Clip:
        raise NotImplementedError


class ClipDataset(torch.utils.data.Dataset):
    """Any ``ClipSource`` as a torch ``Dataset`` of ``Clip`` items, for a ``DataLoader`` with
    ``collate_fn=ClipCollator(...)`` (picklable: each worker reads its own clips)."""

    def __init__(self, source: ClipSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Clip:
        return self.source.clip(i)


def _decoded(processor, video, label: int | None, name: str) -> Clip:
    """``video`` decoded, sampled, resized and cropped (``rlt.cache.prepare_clip``, kept in uint8); a
    ``Clip`` carrying the error when it cannot be read."""
    from .cache import prepare_clip

    try:
        frames, padded = prepare_clip(processor, video, return_padded_frames=True)
    except READ_ERRORS as error:
        return Clip(None, label, name, 0, str(error) or type(error).__name__)
    return Clip(frames, label, name, padded)


def _processor_shape(processor) -> tuple[int, ...] | None:
    """``(T, C, H, W)`` of the processor's clips when it crops to a fixed size, else None."""
    if not processor.do_center_crop:
        return None
    return processor.num_frames, 3, processor.crop_size.height, processor.crop_size.width


def label_mapping(data_names: Sequence[str], model_names: Sequence[str] | None) -> list[int]:
    """Data label id -> model label id, by class name (or identity for a model with generic labels)."""
    if model_names is None:
        return list(range(len(data_names)))
    model_names = [str(name) for name in model_names]
    if all(str(name) in model_names for name in data_names):
        return [model_names.index(str(name)) for name in data_names]
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(model_names))
    if generic and len(data_names) <= len(model_names):
        logger.warning(
            "the model's labels have no names (LABEL_i): the data's classes %s are taken in order", list(data_names)
        )
        return list(range(len(data_names)))
    unknown = [name for name in data_names if str(name) not in model_names]
    raise ValueError(f"the data's classes {unknown[:5]} are not among the model's labels {model_names[:10]}")


# ----------------------------------------------------------------------------------------------
# The readers


class VideoFileClips(ClipSource):
    """Video files with labels, decoded when read (``rlt.cache.prepare_clip``: the processor's sampling,
    resize and crop, kept in uint8)."""

    kind = "videos"

    def __init__(self, paths: Sequence, labels: Sequence[int], processor, class_names, description: str):
        self.paths, self.labels, self.processor = list(paths), [int(label) for label in labels], processor
        self.class_names, self.description = list(class_names), description
        self.clip_shape = _processor_shape(processor)

    def __len__(self) -> int:
        return len(self.paths)

    def clip(self, i: int) -> Clip:
        return _decoded(self.processor, self.paths[i], self.labels[i], str(self.paths[i]))


class DatasetRowClips(ClipSource):
    """The rows of an opened ``rlt.hf_datasets.VideoDatasetSource`` (not a stream), decoded when read;
    a row without a usable label or video is a ``Clip`` with its error."""

    kind = "dataset"

    def __init__(self, source, processor):
        if source.streaming:
            raise ValueError(
                f"{source.description} is streamed and is read here by row: cache it first "
                "(rlt cache ... --streaming) and read the cache"
            )
        self.source, self.processor = source, processor
        self.class_names, self.description = list(source.class_names), source.description
        self.clip_shape = _processor_shape(processor)

    def __len__(self) -> int:
        return self.source.num_rows

    def clip(self, i: int) -> Clip:
        row = self.source.row(i)
        if row.error is not None:
            return Clip(None, None, row.name, 0, row.error)
        return _decoded(self.processor, row.video, row.label, row.name)


class CacheClips(ClipSource):
    """A clip cache (``rlt.cache.ClipCache``) read from its shards, labels renumbered to ``class_names``."""

    kind = "cache"

    def __init__(self, cache, class_names: Sequence[str] | None = None, *, with_keep_masks: bool = False):
        from .cache import CachedClips, ClipCache

        self.cache = cache if isinstance(cache, ClipCache) else ClipCache(cache)
        self.clips = CachedClips(self.cache, with_keep_masks=with_keep_masks)
        self.mapping = label_mapping(self.cache.class_names, class_names)
        self.class_names = list(class_names) if class_names is not None else list(self.cache.class_names)
        self.description, self.clip_shape = str(self.cache.folder), tuple(self.cache.clip_shape)

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, i: int) -> Clip:
        item, record = self.clips[i], self.clips.record(i)
        # Caches written before padding was recorded: None (unknown).
        return Clip(item["pixel_values"], self.mapping[item["labels"]], record["path"], record.get("padded_frames"),
                    keep_mask=item.get("keep_mask"))


class TensorClips(ClipSource):
    """uint8 clips ``(N, T, C, H, W)`` in memory, already sampled and sized for the model."""

    kind = "memory"
    in_memory = True

    def __init__(self, clips: torch.Tensor, labels, class_names: Sequence[str] | None = None,
                 model_class_names: Sequence[str] | None = None, description: str = "in-memory clips"):
        labels = [int(label) for label in labels]
        if not isinstance(clips, torch.Tensor) or clips.dtype != torch.uint8 or clips.dim() != 5:
            got = f"{clips.dtype} {tuple(clips.shape)}" if isinstance(clips, torch.Tensor) else type(clips).__name__
            raise ValueError(f"in-memory clips must be uint8 (N, T, C, H, W), got {got}")
        if len(labels) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(labels)} labels")
        if class_names is not None:
            mapping = label_mapping(class_names, model_class_names)
            labels = [mapping[label] for label in labels]
        names = model_class_names if model_class_names is not None else class_names
        self.clips, self.labels = clips, labels
        self.class_names = list(names) if names is not None else [str(i) for i in range(max(labels) + 1)]
        self.description, self.clip_shape = description, tuple(clips.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def clip(self, i: int) -> Clip:
        return Clip(self.clips[i], self.labels[i], f"clip-{i:06d}")


class SyntheticClips(TensorClips):
    """The generated task (``rlt.synthetic``): a ``SyntheticVideoDataset``, its clips held in memory."""

    kind = "synthetic"

    def __init__(self, dataset, model_class_names: Sequence[str] | None = None):
        super().__init__(dataset.clips, dataset.labels.tolist(), dataset.class_names, model_class_names,
                         description=f"{len(dataset)} generated clips")

    @classmethod
    def from_spec(cls, spec: str, processor, model_class_names: Sequence[str] | None = None) -> SyntheticClips:
        """``"synthetic:N"`` or ``"synthetic:VARIANT:N"``: clips 0..N-1 of the task (seed 0) at the
        processor's frame count and crop size."""
        from .synthetic import SyntheticVideoDataset, task_config

        parts = spec[len(SYNTHETIC_PREFIX):].split(":")
        if len(parts) not in (1, 2) or not parts[-1].isdigit() or int(parts[-1]) < 1:
            raise ValueError(f"{spec!r}: write synthetic:N or synthetic:VARIANT:N with N >= 1 clips")
        size = processor.crop_size.height if processor.do_center_crop else 224
        config = task_config(parts[0] if len(parts) == 2 else "full", num_frames=processor.num_frames,
                             image_size=size)
        return cls(SyntheticVideoDataset(int(parts[-1]), config=config), model_class_names)


# ----------------------------------------------------------------------------------------------
# The factory


def open_clips(data, processor=None, class_names: Sequence[str] | None = None, dataset_options=None) -> ClipSource:
    """The reader for ``data`` (see the module doc); ``processor`` decodes videos and sizes generated clips.

    ``class_names``: the model's classes; labels are then its class ids, matched by name.
    ``dataset_options``: ``split``, ``config``, ``video_column``, ``label_column`` of a Hugging Face dataset.
    """
    from .cache import ClipCache, is_clip_cache

    if isinstance(data, ClipSource):
        return data
    if isinstance(data, ClipCache) or (isinstance(data, (str, os.PathLike)) and is_clip_cache(data)):
        return CacheClips(data, class_names)
    if isinstance(data, str) and data.startswith(SYNTHETIC_PREFIX):
        return SyntheticClips.from_spec(data, _need(processor, data), class_names)
    if type(data).__name__ == "SyntheticVideoDataset":
        return SyntheticClips(data, class_names)
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and isinstance(data[0], torch.Tensor):
        return TensorClips(data[0], data[1], data[2] if len(data) == 3 else None, class_names)
    from .hf_datasets import is_dataset_source, open_video_dataset

    if dataset_options or is_dataset_source(data):
        # With the model's classes given, the opener maps ClassLabel and string labels by name and takes
        # integer labels as the model's class ids (it cannot name them otherwise).
        source = open_video_dataset(data, class_names=class_names, **dict(dataset_options or {}))
        return DatasetRowClips(source, _need(processor, data))
    if hasattr(data, "column_names") and "video" in data.column_names:
        paths, labels, names = list(data["video"]), list(data["label"]), data.features["label"].names
        description = f"dataset of {len(paths)} videos"
    elif isinstance(data, (str, os.PathLike)):
        from .data import list_labelled_videos

        paths, labels, names = list_labelled_videos(data)
        description = str(data)
    else:
        raise TypeError(
            f"cannot read clips from {type(data).__name__}: give a cache folder, a video folder or list, a dataset, "
            "'synthetic:N', or (clips, labels)"
        )
    mapping = label_mapping(names, class_names)
    names = list(class_names) if class_names is not None else list(names)
    return VideoFileClips(paths, [mapping[label] for label in labels], _need(processor, data), names, description)


def _need(processor, data):
    if processor is None:
        raise ValueError(f"reading {data!r} needs the processor that samples and sizes its clips (processor=...)")
    return processor
