"""Hugging Face ``datasets`` with a ``Video`` column as labelled videos: open one, pick its columns, read its rows.

``open_video_dataset`` opens a ``save_to_disk`` folder, a local folder or file of parquet / arrow /
webdataset (``.tar``) shards or a Hub id (both through one ``load_dataset`` call), or a ``datasets``
object already loaded; every entry point that takes a video folder or list also takes a dataset.

The video column is the first ``Video`` feature (or ``video_column``: a ``Video`` column, or one of
file paths or video bytes), read with ``Video(decode=False)``: its ``{"path", "bytes"}`` rows are
decoded by ``RLTVideoProcessor`` with PyAV (no torchcodec, no system FFmpeg); a remote path alone is
fetched with ``datasets``' own file opener. The label column is ``label``, else ``labels`` (or
``label_column``); class names come from its ``ClassLabel``, else from the column's values.

Rows are named by their index in the split (``row 12``, with the video's stored path when it has
one). A row without a usable label carries the reason instead of a label, so that the entry points
report and skip it with its label, and labels never shift onto other videos.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .clip_sources import VideoRow, class_names_from, label_mapping
from .common import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_COLUMNS",
    "VideoDatasetSource",
    "add_dataset_arguments",
    "dataset_options",
    "is_dataset_source",
    "open_video_dataset",
    "row_name",
]

LABEL_COLUMNS = ("label", "labels")
# Files that `datasets` reads as a dataset, and the builder that reads each.
DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".tar": "webdataset"}
# Names that are files of ours (video files, path,label lists), never Hub ids.
_NOT_HUB_SUFFIXES = (".csv", ".json", ".jsonl", ".txt", *VIDEO_EXTENSIONS, *DATA_FILE_BUILDERS)
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
OPTION_NAMES = ("split", "config", "video_column", "label_column", "streaming")
_TEXT_TYPES = ("string", "large_string")
_BYTES_TYPES = ("binary", "large_binary")


def _datasets():
    try:
        import datasets
    except ImportError as error:
        raise ImportError("reading Hugging Face datasets needs the datasets package: pip install datasets") from error
    if not hasattr(datasets, "Video"):
        raise ImportError(f"datasets {datasets.__version__} has no Video feature: pip install -U datasets")
    return datasets


# ----------------------------------------------------------------------------------------------
# What is a dataset


def _is_saved_dataset(folder: Path) -> bool:
    """A ``save_to_disk`` folder: a ``DatasetDict``'s, or a ``Dataset``'s (``state.json`` + ``dataset_info.json``)."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def _has_data_files(folder: Path) -> bool:
    """Parquet / arrow / webdataset shards up to three levels down
    (the Hub's ``data/``, ``<config>/<split>/`` layouts)."""
    return any(
        next(folder.glob(pattern + suffix), None) is not None
        for pattern in ("*", "*/*", "*/*/*")
        for suffix in DATA_FILE_BUILDERS
    )


def _dataset_object_kind(source) -> str | None:
    """``"dict"``, ``"map"`` or ``"iterable"`` for ``datasets`` objects, else None (without importing ``datasets``)."""
    if not type(source).__module__.startswith("datasets."):
        return None
    kinds = {"DatasetDict": "dict", "IterableDatasetDict": "dict", "Dataset": "map", "IterableDataset": "iterable"}
    return kinds.get(type(source).__name__)


def is_dataset_source(source) -> bool:
    """Whether ``source`` is a dataset for ``open_video_dataset`` rather than a video folder or ``path,label`` list.

    True for a ``save_to_disk`` folder, a folder or file of parquet / arrow / webdataset shards, a name
    that is no local path but has the form of a Hub id (``owner/name``), a ``DatasetDict`` or
    ``IterableDataset``, and a ``Dataset`` with a ``Video`` column (one of plain file paths, as
    ``load_video_dataset`` makes from a folder, is read as before).
    """
    kind = _dataset_object_kind(source)
    if kind == "map":
        datasets = _datasets()
        return any(isinstance(feature, datasets.Video) for feature in source.features.values())
    if kind is not None:
        return True
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    if path.is_dir():
        return _is_saved_dataset(path) or _has_data_files(path)
    if path.exists():
        return path.suffix.lower() in DATA_FILE_BUILDERS
    text = os.fspath(source)
    return bool(HUB_ID_PATTERN.match(text)) and not text.lower().endswith(_NOT_HUB_SUFFIXES)


# ----------------------------------------------------------------------------------------------
# Opening


def _pick_split(splits, split: str | None, name: str):
    available = list(splits.keys())
    if split is None:
        if len(available) == 1:
            return splits[available[0]], available[0]
        raise ValueError(f"{name} has the splits {available}: choose one (--split, or split=...)")
    if split not in splits:
        raise ValueError(f"{name} has no split {split!r}; its splits are {available}")
    return splits[split], split


def _load(source, split: str | None, config: str | None, streaming: bool):
    """``(Dataset or IterableDataset, split name or None, description)`` of any source ``open_video_dataset`` takes."""
    datasets = _datasets()
    kind = _dataset_object_kind(source)
    if kind is not None:
        name = f"the {type(source).__name__}"
        if config is not None:
            raise ValueError("config names a configuration of load_dataset; a dataset object is loaded already")
        if kind == "dict":
            dataset, split = _pick_split(source, split, name)
        else:
            if split is not None and str(source.split) != split:
                raise ValueError(f"{name} is one split already ({source.split}); split= picks one of a DatasetDict")
            dataset, split = source, str(source.split) if source.split else None
        return dataset, split, f"{name}" + (f" [{split}]" if split else "")

    path = Path(source)
    text = str(path.resolve()) if path.exists() else os.fspath(source)  # one name for one folder, however spelled
    if path.is_dir() and _is_saved_dataset(path):
        if config is not None:
            raise ValueError(f"{path} is a save_to_disk folder, which has no configurations: leave out --config")
        loaded = datasets.load_from_disk(text)
        dataset, split = (
            _pick_split(loaded, split, text) if isinstance(loaded, datasets.DatasetDict) else (loaded, split)
        )
    else:
        if path.is_file():
            builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ValueError(f"{path} is not a dataset file (expected {', '.join(DATA_FILE_BUILDERS)})")
            loaded = datasets.load_dataset(builder, data_files=text, split=split, streaming=streaming)
        else:  # a local folder of shards or a Hub id: one and the same call
            try:
                loaded = datasets.load_dataset(text, name=config, split=split, streaming=streaming)
            except (FileNotFoundError, ConnectionError) as error:
                if path.exists():
                    raise
                raise FileNotFoundError(
                    f"{text} is no local folder or file, and no Hub dataset of that name could be loaded "
                    f"({type(error).__name__}: {error})"
                ) from error
        dataset, split = _pick_split(loaded, None, text) if split is None else (loaded, split)
    details = [f"config {config}"] if config else []
    details += [f"split {split}"] if split else []
    return dataset, split, text + (f" ({', '.join(details)})" if details else "")


@dataclass
class VideoDatasetSource:
    """An opened video dataset: one split, its video and label columns, its class names. See ``open_video_dataset``.

    ``dataset`` holds just the two columns, the video column read with ``Video(decode=False)``.
    ``num_rows`` is None for a stream whose size its metadata does not give.
    """

    dataset: object
    description: str
    split: str | None
    config: str | None
    video_column: str
    label_column: str | None
    label_kind: str | None  # "class_label", "int", "string" or None (no labels)
    class_names: list[str]
    label_ids: dict  # a ClassLabel id or a string label -> class id; empty for integer labels
    streaming: bool
    num_rows: int | None

    # -- rows ---------------------------------------------------------------------------------

    def label_of(self, value) -> int:
        """The class id of a raw label value; ValueError saying why there is none (unlabelled, unknown)."""
        if value is None or (self.label_kind != "string" and int(value) < 0):
            raise ValueError(f"no label ({value!r} in column {self.label_column!r})")
        if self.label_kind == "int":
            if int(value) >= len(self.class_names):
                raise ValueError(f"label {int(value)} is beyond the {len(self.class_names)} classes")
            return int(value)
        key = int(value) if self.label_kind == "class_label" else value
        if key not in self.label_ids:
            raise ValueError(f"label {value!r} is not one of the classes {self.class_names[:10]}")
        return self.label_ids[key]

    def _label_or_error(self, value) -> tuple[int | None, str | None]:
        """``(class id, None)``, or ``(None, why there is none)``: such rows are skipped with their label."""
        try:
            return self.label_of(value), None
        except (ValueError, TypeError) as problem:
            return None, str(problem)

    def _row(self, index: int, example: Mapping) -> VideoRow:
        video = example[self.video_column]
        name = row_name(index, video)
        label, error = None, None
        if self.label_column is not None:
            label, error = self._label_or_error(example[self.label_column])
        if error is None:
            try:
                video = _fetch_remote(video)
            except OSError as problem:
                error = f"cannot fetch the video: {problem}"
        return VideoRow(index, name, video, label, error)

    def row(self, index: int) -> VideoRow:
        """Row ``index`` (random access; not for a stream)."""
        if self.streaming:
            raise TypeError(f"{self.description} is streamed: read its rows in order with rows()")
        return self._row(index, self.dataset[index])

    def rows(self, start: int = 0) -> Iterator[VideoRow]:
        """The rows from ``start`` on, in order (a stream reads past the first ``start`` rows without decoding them)."""
        if not self.streaming:
            return map(self.row, range(start, self.num_rows))
        stream = self.dataset.skip(start) if start else self.dataset
        return (self._row(start + offset, example) for offset, example in enumerate(stream))

    def take(self, indices: Sequence[int]) -> list[VideoRow]:
        """The rows at ``indices`` (a stream is read up to the largest); an index past the end is an error."""
        wanted = sorted({int(i) for i in indices})
        if not wanted:
            return []
        if wanted[0] < 0:
            raise ValueError(f"row indices must be >= 0, got {wanted[0]}")
        if self.num_rows is not None and wanted[-1] >= self.num_rows:
            raise ValueError(f"{self.description} has {self.num_rows} rows; there is no row {wanted[-1]}")
        rows = itertools.islice(self.rows(), wanted[-1] + 1) if self.streaming else map(self.row, wanted)
        found = {row.index: row for row in rows if row.index in wanted}
        if len(found) < len(wanted):
            raise ValueError(f"{self.description} ended before row {wanted[-1]}")
        return [found[int(i)] for i in indices]

    def identity(self) -> dict:
        """What tells this data from other data (a clip cache compares it before resuming)."""
        fields = ("description", "split", "config", "video_column", "label_column", "class_names", "num_rows")
        identity = {name: getattr(self, name) for name in fields}
        return {**identity, "fingerprint": getattr(self.dataset, "_fingerprint", None)}

    # -- as a dataset of the shape load_video_dataset returns ----------------------------------------

    def to_video_dataset(self):
        """The rows as ``video`` (what the processor decodes), ``label`` (``ClassLabel``) and ``row`` (index) columns.

        A ``Dataset`` (or, streamed, an ``IterableDataset``) for ``with_transform(VideoTransform(...))``;
        rows without a usable label are left out (a warning names them). The video column is not
        copied: a ``Dataset``'s stays memory-mapped where it was.
        """
        if self.label_column is None:
            raise ValueError(f"{self.description} has no label column; training and evaluation need one")
        datasets = _datasets()
        features = {"label": datasets.ClassLabel(names=self.class_names), "row": datasets.Value("int64")}
        if self.streaming:
            wanted = datasets.Features({"video": self.dataset.features[self.video_column], **features})

            def relabel(example, index):
                row = self._row(index, example)
                if row.error is not None:  # no label, or a video that cannot be fetched: left out, as said
                    logger.warning("leaving out %s: %s", row.name, row.error)
                return {"video": row.video, "label": row.label if row.error is None else -1, "row": index}

            stream = self.dataset.map(relabel, with_indices=True, remove_columns=list(self.dataset.features),
                                      features=wanted)
            return stream.filter(lambda example: example["label"] >= 0)

        raw = self.dataset.select_columns([self.label_column]).to_dict()[self.label_column]
        labels = [self._label_or_error(value) for value in raw]
        ids = [-1 if label is None else label for label, _ in labels]
        skipped = [f"row {index}: {error}" for index, (_, error) in enumerate(labels) if error is not None]
        dataset = self.dataset.select_columns([self.video_column])
        if self.video_column != "video":
            dataset = dataset.rename_column(self.video_column, "video")
        dataset = dataset.add_column("label", ids, feature=features["label"])
        dataset = dataset.add_column("row", list(range(len(ids))), feature=features["row"])
        if skipped:
            logger.warning("leaving out %d rows of %s without a usable label: %s", len(skipped), self.description,
                           "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
            dataset = dataset.select([i for i, label in enumerate(ids) if label >= 0])
        return dataset


def row_name(index: int, video) -> str:
    """``row 12``, with the video's stored path when it has one: ``row 12 (clips/a.mp4)``."""
    path = video.get("path") if isinstance(video, Mapping) else video if isinstance(video, str) else None
    return f"row {index}" + (f" ({path})" if path else "")


def _fetch_remote(video):
    """A ``{"path", "bytes"}`` row that holds only a remote path (``hf://``, ``https://`` ...)
    with its bytes fetched."""
    if not isinstance(video, Mapping) or video.get("bytes") is not None or not video.get("path"):
        return video
    path = str(video["path"])
    if "://" not in path:
        return video
    from datasets.utils.file_utils import xopen

    with xopen(path, "rb") as handle:
        return {"path": path, "bytes": handle.read()}


def _label_setup(dataset, column: str, feature, class_names, streaming: bool, description: str):
    """``(kind, class names, label ids)`` of the label column; the names are read from the column where needed."""
    datasets = _datasets()
    given = [str(name) for name in class_names] if class_names is not None else None
    if isinstance(feature, datasets.ClassLabel):
        names = given if given is not None else [str(name) for name in feature.names]
        return "class_label", names, dict(enumerate(label_mapping(feature.names, given, where=description)))
    dtype = getattr(feature, "dtype", None)
    if isinstance(feature, datasets.Value) and ("int" in dtype or dtype in _TEXT_TYPES):
        kind = "string" if dtype in _TEXT_TYPES else "int"
        if given is None and streaming:
            raise ValueError(
                f"the labels of {description} ({column!r}) are {dtype} values without class names (no ClassLabel "
                "feature), and a stream cannot be read for them first: load it without streaming, or give the class "
                "names (class_names=..., rlt cache --class-names)"
            )
        names = given
        if names is None:
            values = [v for v in dataset.select_columns([column]).to_dict()[column] if v is not None]
            names = class_names_from(values, kind == "int")
        return kind, names, {} if kind == "int" else {name: i for i, name in enumerate(names)}
    raise ValueError(
        f"column {column!r} of {description} holds {feature}; rlt needs one class per video "
        "(a ClassLabel, integer or string column): name another with --label-column"
    )


def open_video_dataset(
    source,
    *,
    split: str | None = None,
    config: str | None = None,
    streaming: bool = False,
    video_column: str | None = None,
    label_column: str | None = None,
    class_names: Sequence[str] | None = None,
    need_labels: bool = True,
) -> VideoDatasetSource:
    """Open a video dataset (see the module doc) and pick its split, video column and label column.

    Args:
        source: a ``save_to_disk`` folder, a parquet / arrow / webdataset folder or file, a Hub id,
            or a ``datasets`` object.
        split: the split to read; needed when there are several.
        config: the configuration (subset) name, for ``load_dataset``.
        streaming: read rows as they come (``load_dataset(..., streaming=True)``; a ``Dataset`` is
            turned into an ``IterableDataset``) instead of downloading everything first.
        video_column: default: the first ``Video`` column.
        label_column: default: ``label``, else ``labels``.
        class_names: the classes in the order of the class ids (e.g. a model's ``id2label``); data
            classes are mapped to them by name. Default: the ``ClassLabel``'s names, else those
            read from the label column (sorted strings, or ``0 .. max`` for integers).
        need_labels: False reads no labels unless ``label_column`` is given (``rlt inspect``).
    """
    datasets = _datasets()
    dataset, split, description = _load(source, split, config, streaming)
    if streaming and isinstance(dataset, datasets.Dataset):
        dataset = dataset.to_iterable_dataset()
    elif isinstance(dataset, datasets.Dataset):
        dataset = dataset.with_format(None)
    features = dataset.features
    if features is None:
        raise ValueError(
            f"{description} does not declare its columns' features when streamed: load it without streaming"
        )
    columns = list(features)

    if video_column is None:
        video_column = next((name for name, feature in features.items() if isinstance(feature, datasets.Video)), None)
        if video_column is None:
            raise ValueError(
                f"{description} has no Video column (its columns: {columns}); name the column that holds the "
                "videos (a Video feature, file paths or video bytes) with --video-column"
            )
    elif video_column not in features:
        raise ValueError(f"{description} has no column {video_column!r}; its columns are {columns}")
    video_feature = features[video_column]
    plain = isinstance(video_feature, datasets.Value) and video_feature.dtype in (*_TEXT_TYPES, *_BYTES_TYPES)
    if not isinstance(video_feature, datasets.Video) and not plain:
        raise ValueError(
            f"column {video_column!r} of {description} holds {video_feature}, not videos: expected a Video "
            "feature, file paths or video bytes (--video-column)"
        )

    if label_column is None and need_labels:
        label_column = next((name for name in LABEL_COLUMNS if name in features), None)
        if label_column is None:
            raise ValueError(
                f"{description} has no 'label' or 'labels' column (its columns: {columns}); name the column that "
                "holds the class labels with --label-column"
            )
    elif label_column is not None and label_column not in features:
        raise ValueError(f"{description} has no column {label_column!r}; its columns are {columns}")
    if label_column == video_column:
        raise ValueError(f"the video and label columns are both {video_column!r}")

    dataset = dataset.select_columns([video_column] + ([label_column] if label_column else []))
    if isinstance(video_feature, datasets.Video):
        # {"path", "bytes"} rows for PyAV: no torchcodec needed, and no file scan for exact seeking.
        dataset = dataset.cast_column(video_column, datasets.Video(decode=False))
    kind, names, label_ids = None, [str(name) for name in class_names or []], {}
    if label_column is not None:
        kind, names, label_ids = _label_setup(
            dataset, label_column, features[label_column], class_names, streaming, description
        )
    if isinstance(dataset, datasets.Dataset):
        num_rows = len(dataset)
    else:
        splits = dataset.info.splits or {}
        num_rows = splits[split].num_examples if split in splits and splits[split].num_examples else None
    return VideoDatasetSource(
        dataset=dataset, description=description + (" [streamed]" if streaming else ""), split=split,
        config=config, video_column=video_column, label_column=label_column, label_kind=kind, class_names=names,
        label_ids=label_ids, streaming=streaming, num_rows=num_rows,
    )


# ----------------------------------------------------------------------------------------------
# Command-line options


def add_dataset_arguments(parser, *, streaming: bool = True) -> None:
    """The options that pick what to read of a dataset: ``--split``, ``--config``, ``--video-column``,
    ``--label-column`` and (with ``streaming``) ``--streaming``."""
    group = parser.add_argument_group(
        "Hugging Face datasets",
        "when DATA is a dataset: a save_to_disk folder, a folder (or file) of parquet / arrow / webdataset shards, "
        "or a Hub dataset id",
    )
    group.add_argument("--split", help="the split to read (needed when the dataset has several)")
    group.add_argument("--config", help="the dataset's configuration (subset), for load_dataset")
    group.add_argument("--video-column", help="the column of videos (default: the first Video column)")
    group.add_argument("--label-column", help="the column of class labels (default: label, else labels)")
    if streaming:
        group.add_argument("--streaming", action="store_true",
                           help="read the rows as they download (load_dataset(..., streaming=True))")


def dataset_options(args) -> dict:
    """The dataset options given on a command line, as keyword arguments of ``open_video_dataset``."""
    return {name: getattr(args, name) for name in OPTION_NAMES if getattr(args, name, None)}
