"""Step 1 of the clip road: where clips come from. One reader per kind of data, one factory, one torch
``Dataset`` over any of them.

The road of a clip to the model, for training, evaluation, calibration, inspection and the benchmark:

1. a source here gives ``Clip`` objects; ``ClipDataset`` serves them to a ``DataLoader``, which
   decodes in its workers;
2. ``rlt.collator.ClipCollator`` stacks them into a batch and computes RLT's keep mask there;
3. ``rlt.common.PixelNormalizer`` normalises the uint8 batch on the device, and the model runs.

``open_clips(data, processor)`` picks the reader: ``CacheClips`` (a clip cache, ``rlt.cache``),
``SyntheticClips`` (the generated task, ``rlt.synthetic``), ``TensorClips`` (uint8 clips in memory) or
``DecodedClips`` (a Hugging Face dataset opened by ``rlt.hf_datasets``, or a labelled video folder or
``path,label`` list from ``rlt.data``, each ``VideoRow`` decoded by ``prepare_clip`` when read).
``prepare_clip`` is the one decode of the road: the cache stores its output, so a cached clip equals
a decoded one. ``label_mapping`` is the one relabelling (to a model's classes, by name).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .common import READ_ERRORS

__all__ = [
    "CacheClips",
    "Clip",
    "ClipDataset",
    "ClipSource",
    "DecodedClips",
    "SyntheticClips",
    "TensorClips",
    "VideoRow",
    "decode_row",
    "label_mapping",
    "open_clips",
    "prepare_clip",
    "relabel",
]

logger = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "synthetic:"


class VideoRow(NamedTuple):
    """One video before decoding: a file of a list, a dataset's row, a clip handed to the cache writer.

    Attributes:
        index: its position in the source (a dataset's row index, by which rows are reported).
        name: what names it in messages: a path, or ``"row {index}"`` with the video's stored path.
        video: what ``prepare_clip`` takes: a path, a ``{"path", "bytes"}`` dict, bytes, or a uint8 array.
        label: the class id, or None when ``error`` says why there is none.
        error: why it cannot be used (no usable label, a remote video that cannot be fetched), else None.
    """

    index: int
    name: str
    video: object
    label: int | None
    error: str | None


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

    ``clip_shape`` is ``(T, C, H, W)`` of every clip, or None where only decoding tells; ``in_memory``
    sources are read in the main process (a loader worker would only copy them).
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


def prepare_clip(processor, video, *, return_padded_frames: bool = False):
    """Decode (a path, bytes) or take (an array) one video, sample, resize, crop: uint8 ``(T, C, H, W)``.

    ``processor.normalize_frames(clip.float())`` of the result equals ``processor(video)["pixel_values"][0]``
    exactly: the processor resizes uint8 frames in uint8, so its values before normalising are whole grey levels.
    With ``return_padded_frames``: ``(clip, padded)``, the sampled frames that repeat the one before them.
    """
    frames, padded = processor.load_frames(video, return_padded_frames=True)
    clip = processor.resize_and_crop(frames).round().clamp_(0, 255).to(torch.uint8).contiguous()
    return (clip, padded) if return_padded_frames else clip


def decode_row(processor, row: VideoRow) -> Clip:
    """A row's clip by ``prepare_clip``; one that cannot be read is a ``Clip`` with the error and no frames."""
    if row.error is not None:
        return Clip(None, row.label, row.name, 0, row.error)
    try:
        frames, padded = prepare_clip(processor, row.video, return_padded_frames=True)
    except READ_ERRORS as error:
        return Clip(None, row.label, row.name, 0, str(error) or type(error).__name__)
    return Clip(frames, row.label, row.name, padded)


def label_mapping(data_names: Sequence[str], model_names: Sequence[str] | None, where: str = "the data") -> list[int]:
    """Data label id -> model label id, by class name (or identity for a model with generic labels).

    The one relabelling of rlt: clip sources, the cache's views and datasets' ``ClassLabel`` columns
    all go through it. ``where`` names the data in the error for a class the model lacks.
    """
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
    raise ValueError(f"{where} has classes {unknown[:5]} that are not among the model's labels {model_names[:10]}")


def class_names_from(labels, integers: bool) -> list[str]:
    """The classes of labels given without class names: ``0 .. max`` for integer labels, else the sorted names."""
    if integers:
        return [str(i) for i in range(max((int(label) for label in labels), default=-1) + 1)]
    return sorted({str(label) for label in labels})


def relabel(labels: Sequence[int], data_names: Sequence[str], model_names: Sequence[str] | None,
            where: str = "the data") -> tuple[list[str], list[int]]:
    """``(class names, labels)`` of data labelled by ``data_names``, renumbered to ``model_names`` when given."""
    mapping = label_mapping(data_names, model_names, where)
    names = model_names if model_names is not None else data_names
    return [str(name) for name in names], [mapping[label] for label in labels]


# ----------------------------------------------------------------------------------------------
# The readers


class DecodedClips(ClipSource):
    """Videos decoded by ``prepare_clip`` when read: the files of a folder or list (``kind="videos"``) or
    the rows of an opened dataset (``kind="dataset"``). A row's error becomes its ``Clip``'s error."""

    def __init__(self, row: Callable[[int], VideoRow], num_rows: int, processor, class_names, description: str,
                 kind: str):
        self.row, self.num_rows, self.processor, self.kind = row, num_rows, processor, kind
        self.class_names, self.description = list(class_names), description
        if processor.do_center_crop:  # else the clips' size follows each video's
            self.clip_shape = (processor.num_frames, 3, processor.crop_size.height, processor.crop_size.width)

    @classmethod
    def of_files(cls, paths: Sequence, labels: Sequence[int], processor, class_names, description: str):
        rows = [VideoRow(i, str(path), path, int(label), None) for i, (path, label) in enumerate(zip(paths, labels))]
        return cls(rows.__getitem__, len(rows), processor, class_names, description, "videos")

    @classmethod
    def of_dataset(cls, source, processor):
        """The rows of an opened dataset; a stream cannot be read by row."""
        if source.streaming:
            raise ValueError(
                f"{source.description} is streamed and is read here by row: cache it first "
                "(rlt cache ... --streaming) and read the cache"
            )
        return cls(source.row, source.num_rows, processor, source.class_names, source.description, "dataset")

    def __len__(self) -> int:
        return self.num_rows

    def clip(self, i: int) -> Clip:
        return decode_row(self.processor, self.row(i))


class CacheClips(ClipSource):
    """A clip cache (``rlt.cache.ClipCache``) read from its shards, labels renumbered to ``class_names``."""

    kind = "cache"

    def __init__(self, cache, class_names: Sequence[str] | None = None, *, with_keep_masks: bool = False):
        from .cache import CachedClips

        self.clips = CachedClips(cache, class_names=class_names, with_keep_masks=with_keep_masks)
        self.cache, self.class_names = self.clips.cache, self.clips.class_names
        self.description, self.clip_shape = str(self.cache.folder), tuple(self.cache.clip_shape)

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, i: int) -> Clip:
        item, record = self.clips[i], self.clips.record(i)
        # Caches written before padding was recorded: None (unknown).
        return Clip(item["pixel_values"], item["labels"], record["path"], record.get("padded_frames"),
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
        names = model_class_names
        if class_names is not None:
            names, labels = relabel(labels, class_names, model_class_names)
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
        """``"synthetic:N"`` or ``"synthetic:VARIANT:N"``: clips 0..N-1 of the task at the processor's frame
        count and crop size; then, optionally, ``,seed=S`` (default 0), ``,time_step=T`` (default 1) and
        ``,device=D`` (where to render; default the CPU), e.g. ``"synthetic:still:64,seed=3,device=cuda"``."""
        from .synthetic import SyntheticVideoDataset, task_config

        body, *options = spec[len(SYNTHETIC_PREFIX):].split(",")
        parts = body.split(":")
        settings = dict(option.split("=", 1) for option in options if "=" in option)
        if (len(parts) not in (1, 2) or not parts[-1].isdigit() or int(parts[-1]) < 1
                or len(settings) != len(options) or not set(settings) <= {"seed", "time_step", "device"}):
            raise ValueError(f"{spec!r}: write synthetic:N or synthetic:VARIANT:N with N >= 1 clips, optionally "
                             "followed by ,seed=S ,time_step=T ,device=D")
        try:
            seed, time_step = int(settings.get("seed", 0)), float(settings.get("time_step", 1.0))
        except ValueError:
            raise ValueError(f"{spec!r}: the seed must be an integer and the time step a number") from None
        size = processor.crop_size.height if processor.do_center_crop else 224
        config = task_config(parts[0] if len(parts) == 2 else "full", num_frames=processor.num_frames,
                             image_size=size, time_step=time_step)
        return cls(SyntheticVideoDataset(int(parts[-1]), seed=seed, config=config, device=settings.get("device")),
                   model_class_names)


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
        return DecodedClips.of_dataset(source, _need(processor, data))
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
    names, labels = relabel(labels, names, class_names)
    return DecodedClips.of_files(paths, labels, _need(processor, data), names, description)


def _need(processor, data):
    if processor is None:
        raise ValueError(f"reading {data!r} needs the processor that samples and sizes its clips (processor=...)")
    return processor
