"""Video datasets for training and evaluation: files on disk -> ``datasets.Dataset`` -> model batches.

- ``load_video_dataset``: a class-folder tree or a ``path,label`` list (or a Hugging Face dataset
  with a ``Video`` column, ``rlt.hf_datasets``) as a ``datasets.Dataset`` of ``video`` and a ``label``
  ``ClassLabel``; nothing is decoded here.
- ``VideoTransform(processor)``: for ``dataset.with_transform(...)``; decodes when an example is read,
  i.e. lazily, in the data loader's workers.
- ``rlt.collator.ClipCollator`` (also named ``VideoCollator`` here) batches the examples.

A file that fails to decode raises an error naming it (``on_error="raise"``); with ``"skip"`` the
example is dropped from its batch with its label and a warning, so labels never shift onto other videos.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .clip_sources import class_names_from
from .collator import ClipCollator
from .common import READ_ERRORS, VIDEO_EXTENSIONS
from .hf_datasets import is_dataset_source, open_video_dataset, row_name
from .models.video_decoding import VideoDecodeError
from .models.video_processing_rlt import RLTVideoProcessor

__all__ = [
    "ON_ERROR_CHOICES",
    "VIDEO_EXTENSIONS",
    "VideoCollator",
    "VideoTransform",
    "find_unreadable_videos",
    "list_labelled_videos",
    "load_video_dataset",
]

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")
# The collator's earlier name on this side (rlt 0.1): one class, ``rlt.collator.ClipCollator``.
VideoCollator = ClipCollator


def _read_list(path: Path, path_column: str, label_column: str) -> tuple[list[str], list]:
    """``(paths, labels)`` from a CSV (header ``path,label`` or two unnamed columns), JSON or JSON lines file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
        if not rows:
            raise ValueError(f"{path} lists no videos")
        header = [cell.strip() for cell in rows[0]]
        if path_column in header and label_column in header:
            i, j = header.index(path_column), header.index(label_column)
            rows = rows[1:]
        elif len(header) == 2:
            i, j = 0, 1
        else:
            raise ValueError(f"{path}: expected columns {path_column!r} and {label_column!r}, got {header}")
        entries = [(row[i].strip(), row[j].strip()) for row in rows]
    elif suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        if suffix == ".jsonl" or not text.lstrip().startswith("["):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
        try:
            entries = [(record[path_column], record[label_column]) for record in records]
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path}: every entry needs {path_column!r} and {label_column!r} ({error})") from None
    else:
        raise ValueError(f"{path}: a video list must be a .csv, .json or .jsonl file")
    if not entries:
        raise ValueError(f"{path} lists no videos")
    paths = [str(p) if os.path.isabs(p) else str((path.parent / p).resolve()) for p, _ in entries]
    return paths, [label for _, label in entries]


def _read_folder(folder: Path, extensions: Sequence[str]) -> tuple[list[str], list[str]]:
    extensions = tuple(e.lower() for e in extensions)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder} has no class sub-folders (expected {folder}/<class name>/<video files>)")
    paths, labels = [], []
    for class_folder in classes:
        for file in sorted(class_folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in extensions:
                paths.append(str(file.resolve()))
                labels.append(class_folder.name)
    if not paths:
        raise ValueError(f"no video files ({', '.join(extensions)}) under {folder}'s class sub-folders")
    return paths, labels


def list_labelled_videos(
    source: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    path_column: str = "path",
    label_column: str = "label",
) -> tuple[list[str], list[int], list[str]]:
    """``(paths, label ids, class names)`` of a class-folder tree or a CSV / JSON list, checked; needs no
    ``datasets``. Arguments as for ``load_video_dataset``."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such video folder or list: {source}")
    if source.is_dir():
        paths, labels = _read_folder(source, extensions)
    else:
        paths, labels = _read_list(source, path_column, label_column)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed video files do not exist, e.g. {missing[:3]}")

    integer_labels = all(isinstance(label, int) or (isinstance(label, str) and label.isdigit()) for label in labels)
    if class_names is None:
        class_names = class_names_from(labels, integer_labels and not source.is_dir())
    class_names = [str(name) for name in class_names]
    index = {name: i for i, name in enumerate(class_names)}
    ids = []
    for path, label in zip(paths, labels):
        if str(label) in index:
            ids.append(index[str(label)])
        elif integer_labels and int(label) < len(class_names):
            ids.append(int(label))
        else:
            raise ValueError(f"{path} has label {label!r}, which is not one of the classes {class_names}")
    return paths, ids, class_names


def load_video_dataset(
    source,
    *,
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    path_column: str = "path",
    label_column: str | None = None,
    split: str | None = None,
    config: str | None = None,
    streaming: bool = False,
    video_column: str | None = None,
):
    """A ``datasets.Dataset`` of ``video`` (file path) and ``label`` (``ClassLabel``); nothing decoded.

    Args:
        source: a folder with one sub-folder per class (``train/cat/a.mp4``), or a ``.csv`` /
            ``.json`` / ``.jsonl`` list of ``path,label`` (relative paths are relative to the list);
            or a dataset ``rlt.hf_datasets`` opens, which gives ``video`` (``{"path", "bytes"}``),
            ``label`` and ``row`` (the row's index in its split), leaving out rows without a usable label.
        class_names: the classes in the order of the label ids (e.g. a model's ``id2label``);
            default: sorted class names (a dataset's ``ClassLabel`` names). Integer labels in a
            list are taken as ids.
        label_column: the label column of a list (default ``label``) or dataset (default ``label``,
            else ``labels``).
        split, config, streaming, video_column: for a dataset (``rlt.hf_datasets.open_video_dataset``);
            ``streaming=True`` returns an ``IterableDataset``.
    """
    options = {"split": split, "config": config, "streaming": streaming, "video_column": video_column}
    if is_dataset_source(source) or any(options.values()):
        return open_video_dataset(
            source, class_names=class_names, label_column=label_column, **options
        ).to_video_dataset()
    from datasets import ClassLabel, Dataset, Features, Value

    paths, ids, class_names = list_labelled_videos(
        source, class_names=class_names, extensions=extensions, path_column=path_column,
        label_column=label_column or "label",
    )
    features = Features({"video": Value("string"), "label": ClassLabel(names=class_names)})
    return Dataset.from_dict({"video": paths, "label": ids}, features=features)


class VideoTransform:
    """Decode and preprocess examples when they are read: ``dataset.with_transform(VideoTransform(processor))``.

    A batch ``{"video", "label"}`` becomes ``{"pixel_values": [(T, C, H, W)], "labels", "video"}``; a
    dataset's rows (with a ``row`` column) are named ``row N``, not by their bytes. Picklable, for
    ``DataLoader`` workers.

    Args:
        processor: an ``RLTVideoProcessor`` (or anything called like one returning ``pixel_values``).
        on_error: ``"raise"`` (an error naming the file) or ``"skip"`` (``pixel_values`` None and a
            warning naming the file; ``ClipCollator`` then drops the example with its label).
    """

    def __init__(self, processor: RLTVideoProcessor | None = None, *, on_error: str = "raise"):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.processor = processor if processor is not None else RLTVideoProcessor()
        self.on_error = on_error

    def __call__(self, batch: dict) -> dict:
        pixel_values, videos = [], batch["video"]
        if "row" in batch:  # a dataset's rows: named "row N" (with their stored path), not by their bytes
            names = [row_name(row, video) for video, row in zip(videos, batch["row"])]
        else:
            names = [str(video) for video in videos]
        for path, name in zip(videos, names):
            try:
                pixel_values.append(self.processor(path, return_tensors="pt")["pixel_values"][0])
            except READ_ERRORS as error:
                message = str(error) if name in str(error) else f"{name}: {error}"
                if self.on_error == "raise":
                    if message == str(error):
                        raise
                    raise VideoDecodeError(message) from error
                logger.warning("skipping a video that cannot be read: %s", message)
                pixel_values.append(None)
        return {"pixel_values": pixel_values, "labels": list(batch["label"]), "video": names}


def find_unreadable_videos(dataset_or_paths, processor: RLTVideoProcessor | None = None) -> list[tuple[str, str]]:
    """Decode every video once and list ``(path, error)`` for those that fail (a check before a long run).

    The rows of a dataset from ``load_video_dataset`` are named ``row N`` (read one by one, not as a column).
    """
    processor = processor if processor is not None else RLTVideoProcessor(num_frames=2)
    if hasattr(dataset_or_paths, "column_names") and "row" in dataset_or_paths.column_names:
        videos = ((row["video"], row_name(row["row"], row["video"])) for row in dataset_or_paths.with_format(None))
    else:
        paths = dataset_or_paths["video"] if hasattr(dataset_or_paths, "column_names") else list(dataset_or_paths)
        videos = ((path, str(path)) for path in paths)
    failures = []
    for video, name in videos:
        try:
            processor.load_frames(video)
        except READ_ERRORS as error:
            failures.append((name, str(error)))
    return failures
