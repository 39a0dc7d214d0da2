"""Decode once: a folder of preprocessed uint8 clips in safetensors shards.

Decoding, not the model, bounds video training and evaluation. ``cache_clips`` (``rlt cache``)
decodes a labelled video folder or list, or a Hugging Face dataset with a ``Video`` column (streamed
too: ``rlt.hf_datasets``), once, in parallel, samples, resizes and crops every clip
exactly as a checkpoint's processor does, and writes the clips as uint8 (0..255) in shards; reading
them back costs a memory copy and one normalisation. ``write_clip_cache`` writes the same format
from clips already in memory (e.g. generated ones), without decoding, so it needs no PyAV.

The package, in the order a clip takes: ``clips`` (the processor a checkpoint implies, one clip's
preparation and token counts, the worker pool), ``sources`` (a video folder or list, a dataset, clips
in memory: ``cache_clips``, ``write_clip_cache``), ``writer`` (one write loop over any source, the
resume-and-repair rule), ``format`` (file names, shard tensors, the index, shard integrity) and
``reader`` (``ClipCache`` and its two views, ``CachedClips`` for torch, ``load_clip_cache`` for
``datasets``).

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
CRC-32: an interrupted run resumes where it stopped, without rewriting finished shards, and a run on
a cache with a missing or damaged shard rewrites that shard alone. Opening a cache checks every
shard's size; ``verify=True`` (``rlt cache --verify``) checks the CRC-32s too. An unreadable file
is recorded with its path and error and skipped; labels travel with their clips, so nothing
shifts. A dataset's rows are named ``row N`` (their index in the split) in place of paths, and are
read in order, so a stream of unknown length needs no first pass: its shards are named
``clips-00000.safetensors`` ..., and a resumed run reads past the finished rows.
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
