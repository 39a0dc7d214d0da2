"""Reading a clip cache: ``ClipCache`` (the one reader, integrity-checked on open) and its views,
``CachedClips`` (a torch ``Dataset``) and ``load_clip_cache`` (a lazy ``datasets.Dataset``, whose
``ClipCacheTransform`` reads its items through ``CachedClips``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..clip_sources import relabel
from ..models.video_processing_rlt import RLTVideoProcessor
from .format import CACHE_FORMAT, INDEX_FILE, damaged_error, expand_tubelets, repair_command, shard_problem

_NOTED: set[Path] = set()  # older caches whose missing checksums were pointed out


class ClipCache:
    """A complete clip cache folder: its index, its processor and random access to its clips. Picklable
    (each process opens the shard files it reads).

    Opening checks that every shard is there at the size the index records (one ``stat`` per shard);
    ``verify=True`` also compares each shard's CRC-32 (one read, at disk speed). A problem raises
    ``DamagedCacheError`` naming the shards and the command that repairs them. A cache written before
    sizes and checksums were recorded is checked against its shards' headers, with a warning.
    """

    def __init__(self, folder: str | os.PathLike, *, verify: bool = False):
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
        self.check(verify=verify)
        self.records = self.index["clips"]
        self.class_names = list(self.index["class_names"])
        self.keep_only_threshold = self.index["settings"].get("keep_only_threshold")
        self._handles: dict = {}
        self._processor = None

    def check(self, *, verify: bool = True) -> None:
        """Raise ``DamagedCacheError`` if a shard is missing or of the wrong size (or, with ``verify``, CRC-32)."""
        entries = [self.index["shards"][key] for key in sorted(self.index["shards"], key=int)]
        problems = {entry["file"]: shard_problem(self.folder, entry, checksum=verify) for entry in entries}
        problems = {name: problem for name, problem in problems.items() if problem is not None}
        if problems:
            raise damaged_error(self.folder, self.index, problems)
        if any("crc32" not in entry for entry in entries) and self.folder.resolve() not in _NOTED:
            _NOTED.add(self.folder.resolve())  # once per folder and process, not on every open
            warnings.warn(
                f"the clip cache {self.folder} was written before rlt recorded shard sizes and checksums, so only its "
                f"shards' headers can be checked; to record them, {repair_command(self.folder, self.index)}: "
                "it keeps the shards and adds their size and CRC-32 to the index",
                stacklevel=3,
            )

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
        from safetensors import SafetensorError, safe_open

        handle = self._handles.get(shard)
        if handle is None:
            entry = self.index["shards"][str(shard)]
            try:
                handle = self._handles[shard] = safe_open(str(self.folder / entry["file"]), framework="pt")
            except (SafetensorError, OSError) as error:  # changed since the check on open
                raise damaged_error(self.folder, self.index, {entry["file"]: str(error)}) from error
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


class CachedClips(torch.utils.data.Dataset):
    """A clip cache, or some of its clips, as a torch ``Dataset`` of uint8 clips read from the shards when indexed.

    Item ``i``: ``{"pixel_values": uint8 (T, C, H, W), "labels": int}`` and, from a keep-only cache,
    ``"keep_mask": bool (T', H', W')``. ``ClipCollator`` batches them; ``record(i)`` describes a clip
    without reading it.

    Args:
        cache: a ``ClipCache`` or its folder.
        indices: which of the cache's clips, in this order (one side of a split, say); all by default.
        class_names: renumber the labels to these classes, by name (``rlt.clip_sources.relabel``): two
            caches written apart may number their classes differently.
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
        cache = self.cache
        self.class_names, self._labels = relabel(cache.labels, cache.class_names, class_names, str(cache.folder))
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

    Adds ``pixel_values`` (or uint8 ``clip`` with ``normalize=False``), ``labels``, ``video`` and, for a
    keep-only cache, ``keep_mask`` to the dataset's own columns.
    """

    def __init__(self, cache: ClipCache, processor: RLTVideoProcessor | None = None, normalize: bool = True):
        self.cache = cache
        self.processor = processor if processor is not None else cache.processor
        self.normalize = normalize
        self._items = CachedClips(cache, with_labels=False)  # the labels come from the dataset's own column

    def __call__(self, batch: dict) -> dict:
        output: dict = {key: list(values) for key, values in batch.items()}  # column reads keep working
        output.update(labels=list(batch["label"]), video=list(batch["path"]))
        items = [self._items[int(i)] for i in batch["clip_id"]]
        clips = [item["pixel_values"] for item in items]
        if self.normalize:
            output["pixel_values"] = [self.processor.normalize_frames(clip.float()) for clip in clips]
        else:
            output["clip"] = clips
        if self.cache.keep_only_threshold is not None:
            output["keep_mask"] = [item["keep_mask"] for item in items]
        return output


def load_clip_cache(
    folder: str | os.PathLike,
    *,
    processor: RLTVideoProcessor | None = None,
    normalize: bool = True,
    class_names: Sequence[str] | None = None,
    verify: bool = False,
):
    """A clip cache as a lazy ``datasets.Dataset``: ``clip_id``, ``path``, ``label`` (``ClassLabel``), ``tokens_kept``.

    Reading an example reads its clip and normalises it with the cache's processor (or ``processor``,
    e.g. the checkpoint's, when its mean/std differ); ``ClipCollator`` batches them. Read plain columns
    from ``dataset.with_format(None)`` (``["tokens_kept"]`` for token-budget batching): through the
    transform, a column read reads every clip.

    ``class_names`` (e.g. the model's classes, in id order) relabels the clips by class name: two
    caches written apart number their classes differently, and one read with the other's ids would
    shift labels silently. ``verify=True`` as for ``ClipCache``.
    """
    from datasets import ClassLabel, Dataset, Features, Value

    cache = ClipCache(folder, verify=verify)
    names, labels = relabel(cache.labels, cache.class_names, class_names, str(cache.folder))
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
