"""Decode once: the clip cache, a folder of preprocessed uint8 clips in safetensors shards.

Decoding, not the model, bounds video training and evaluation. ``cache_clips`` (``rlt cache``)
decodes a labelled video folder or list, or a Hugging Face dataset with a ``Video`` column (streamed
too: ``rlt.hf_datasets``), once, in parallel, with ``rlt.clip_sources.prepare_clip`` (the road's one
decode: sample, resize and crop exactly as a checkpoint's processor does), and writes the clips as
uint8 (0..255) in shards; reading them back costs a memory copy and one normalisation on the device.
``write_clip_cache`` writes the same format from clips already in memory (e.g. generated ones),
without decoding, so it needs no PyAV. On the clip road a cache is one more source:
``rlt.clip_sources.CacheClips`` reads it like any other.

The package, in the order a clip takes: ``sources`` (what to cache: ``cache_clips``,
``write_clip_cache``), ``clips`` (the processor a checkpoint implies, one clip's token counts, the
worker pool), ``writer`` (the one write loop and its resume-and-repair rule), ``format`` (the files
on disk, the shard tensors, the index, shard integrity) and ``reader`` (``ClipCache``, the one reader,
and its views: ``CachedClips`` for torch, ``load_clip_cache`` for ``datasets``).
"""

from ..clip_sources import prepare_clip
from .clips import ClipResult, TokenSettings, default_workers, load_processor
from .format import INDEX_FILE, DamagedCacheError
from .reader import CachedClips, ClipCache, ClipCacheTransform, is_clip_cache, load_clip_cache
from .sources import cache_clips, write_clip_cache
from .writer import CacheSummary

__all__ = [
    "INDEX_FILE",
    "CacheSummary",
    "CachedClips",
    "ClipCache",
    "ClipCacheTransform",
    "ClipResult",
    "DamagedCacheError",
    "TokenSettings",
    "cache_clips",
    "default_workers",
    "is_clip_cache",
    "load_clip_cache",
    "load_processor",
    "prepare_clip",
    "write_clip_cache",
]
