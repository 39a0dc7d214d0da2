"""Decode once: the clip cache, a folder of preprocessed uint8 clips in safetensors shards.

Decoding, not the model, bounds video training and evaluation. ``cache_clips`` (``rlt cache``) decodes
a labelled video folder or list, or a Hugging Face dataset (streamed too), once, in parallel, with
``rlt.clip_sources.prepare_clip``, the road's one decode; ``write_clip_cache`` writes clips already in
memory, without PyAV. Reading a clip back costs a memory copy and one normalisation on the device; on
the clip road a cache is one more source (``rlt.clip_sources.CacheClips``).

The package, in the order a clip takes: ``sources`` (what to cache), ``clips`` (the processor a
checkpoint implies, token counts, the worker pool), ``writer`` (the one write loop and its
resume-and-repair rule), ``format`` (the files, the shard tensors, the index, shard integrity) and
``reader`` (``ClipCache``, the one reader, and its views ``CachedClips`` and ``load_clip_cache``).
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
