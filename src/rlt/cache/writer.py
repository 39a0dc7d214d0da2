"""Writing a clip cache: one write loop over any ``RowSource``, with one resume-and-repair rule.

The sources (``sources.py``) hand the loop their rows in position order (``rlt.clip_sources.VideoRow``);
shard ``s`` holds rows ``s * shard_size`` up to the next shard's first. Rows are read in order, so a
stream of unknown length needs no first pass, and a resumed run reads past the finished rows. An
unreadable video is recorded with its path and error and skipped; labels travel with their clips, so
nothing shifts.

The rule on an existing folder (``_shards_to_write``): a shard whose index entry names a file of the
recorded size and CRC-32 is kept; a missing or damaged one is written again from the sources under its
recorded name, and the summary says so; the shards after the last recorded one are written next.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ..clip_sources import VideoRow
from .clips import ClipResult, PrepareJob, prepare_rows, processor_settings
from .format import (
    CACHE_FORMAT,
    CLIP_LAYOUT,
    INDEX_FILE,
    PROCESSOR_FILE,
    SOURCES_FILE,
    finish_index,
    integrity_record,
    new_index,
    shard_name,
    shard_problem,
    shard_tensors,
    write_json,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# The write loop


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
    repaired: dict[str, str] = field(default_factory=dict)  # shard file -> what was wrong with it
    checksums_added: int = 0  # shards of an older cache whose size and CRC-32 this call recorded

    @property
    def clips_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        repaired = f"; {len(self.repaired)} damaged or missing shards rewritten" if self.repaired else ""
        lines = [
            (
                f"{'complete' if self.complete else 'INCOMPLETE'} clip cache {self.folder}: {self.clips} clips in "
                f"{self.shards_total} shards ({self.shards_written} written now, {self.shards_reused} already done"
                f"{repaired})"
            )
        ]
        lines += [f"  {name} was rewritten: {problem}" for name, problem in self.repaired.items()]
        if self.checksums_added:
            lines.append(
                f"recorded the size and CRC-32 of {self.checksums_added} shards written before rlt recorded them "
                "(kept as they are): `rlt cache --verify` and a later run now check their contents"
            )
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


@dataclass
class RowSource:
    """What the write loop needs of a clip source."""

    identity: object  # what tells this data from other data (a resumed run must match it)
    description: str  # recorded as the index's "source"
    class_names: list[str]
    num_rows: int | None  # None: a stream of unknown length
    exact: bool  # num_rows is known for sure (a dataset's metadata may be wrong until it is read through)
    rows: Callable[[int], Iterator[VideoRow]]  # the rows from a position on, in order
    unit: str = "clip"  # what the progress bar counts


def write_source(
    out: Path, source: RowSource, job: PrepareJob, *, workers: int, shard_size: int, overwrite: bool,
    max_shards: int | None, on_shard: Callable[[int], None] | None, progress: bool,
) -> CacheSummary:
    """Write the shards a cache folder lacks (all, on a fresh start), finish its index, and say what was done."""
    from tqdm.auto import tqdm

    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if max_shards is not None and max_shards < 0:
        raise ValueError(f"max_shards must be >= 0, got {max_shards}")
    if source.num_rows == 0:
        raise ValueError(f"{source.description} has no rows to cache")
    settings = {
        "sources": hashlib.sha256(json.dumps(source.identity, sort_keys=True).encode()).hexdigest()[:16],
        "class_names": source.class_names,
        "processor": processor_settings(job.processor),
        "tokens": job.tokens.to_dict(),
        "shard_size": shard_size,
        "keep_only_threshold": job.keep_only_threshold,
    }
    index = _prepare_folder(out, settings, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if index is None:
        index = new_index(out, job.processor, source.description, source.class_names, source.num_rows, settings)
    summary = CacheSummary(out)
    todo, tail, problems = _shards_to_write(out, index, shard_size, source.exact, summary)
    summary.shards_reused = len(index["shards"]) - len(problems)
    total = index["num_sources"]
    count = math.ceil(total / shard_size) if total is not None else None

    def plans() -> Iterator[tuple[int, int, int]]:
        """``(shard, first row, end row)`` of the shards to write, in order; a stream's last one may end early."""
        shards = itertools.chain(todo, itertools.count(tail) if tail is not None else ())
        for shard in itertools.islice(shards, max_shards):
            end = (shard + 1) * shard_size
            yield shard, shard * shard_size, end if tail is not None else min(end, total)

    rows = _rows_in(source.rows, ((first, end) for _, first, end in plans()))
    work = next(plans(), None) is not None
    if tail is None:
        planned = sum(end - first for _, first, end in plans())
    else:  # as the dataset's metadata says, if it does
        planned = None if total is None else len(todo) * shard_size + max(total - tail * shard_size, 0)
    bar = tqdm(total=planned, unit=source.unit, desc=f"caching {source.unit}s", disable=not progress)
    began, ended = time.perf_counter(), None
    with closing(prepare_rows(rows, job, workers if work else 0)) as results, bar:
        for shard, first, end in plans():
            batch = list(itertools.islice(results, end - first))
            bar.update(len(batch))
            if len(batch) < end - first:
                ended = first + len(batch)  # the stream's end: its length is known now
            if batch:
                entry = index["shards"].get(str(shard))
                name = entry["file"] if entry is not None else shard_name(shard, count)
                if name in problems:
                    summary.repaired[name] = problems[name]
                _save_shard(out, index, shard, name, first, batch, job)
                summary.shards_written += 1
                summary.processed += len(batch)
                if on_shard is not None:
                    on_shard(shard)
            if ended is not None:
                break
    summary.seconds = time.perf_counter() - began
    if ended is not None:
        if ended == 0:
            raise ValueError(f"{source.description} has no rows to cache")
        if total is not None and ended != total:
            logger.warning("%s has %d rows, not the %d its metadata gives", source.description, ended, total)
        index["num_sources"] = total = ended
    all_there = total is not None and len(index["shards"]) == math.ceil(total / shard_size)
    if all_there and (summary.shards_written or not index["complete"]):
        finish_index(out, index)
    elif summary.checksums_added:
        write_json(out / INDEX_FILE, index)
    summary.complete = index["complete"]
    summary.shards_total = math.ceil(total / shard_size) if total is not None else len(index["shards"])
    entries = [index["shards"][key] for key in sorted(index["shards"], key=int)]
    summary.failed = [failure for entry in entries for failure in entry["failed"]]
    summary.clips = sum(entry["rows"] for entry in entries)
    summary.padded_clips = sum(entry.get("padded_clips", 0) for entry in entries)
    summary.padded_frames = sum(entry.get("padded_frames", 0) for entry in entries)
    return summary


def _shards_to_write(out: Path, index: dict, shard_size: int, exact: bool, summary: CacheSummary):
    """The resume-and-repair rule (module doc): ``(shards to write among the known ones, first shard past
    them or None, {damaged shard file: what is wrong})``.

    Checking every CRC-32 costs one read of the cache, cheap beside decoding. Shards of an older cache
    that recorded no checksum are kept and get one (nothing can tell whether they changed).
    """
    recorded, problems = index["shards"], {}
    for key in sorted(recorded, key=int):
        entry = recorded[key]
        problem = shard_problem(out, entry, checksum=True)
        if problem is not None:
            problems[entry["file"]] = problem
            logger.warning("shard %s of %s is damaged (%s): writing it again", entry["file"], out, problem)
        elif "crc32" not in entry:
            entry.update(integrity_record(out / entry["file"]))
            summary.checksums_added += 1
    known = index["num_sources"] is not None and (exact or index["complete"])
    count = math.ceil(index["num_sources"] / shard_size) if known else max(map(int, recorded), default=-1) + 1
    damaged = {int(key) for key, entry in recorded.items() if entry["file"] in problems}
    todo = [s for s in range(count) if str(s) not in recorded or s in damaged]
    return todo, None if known else count, problems


def _rows_in(rows: Callable[[int], Iterator[VideoRow]], ranges: Iterator[tuple[int, int]]) -> Iterator[VideoRow]:
    """The rows in ``ranges`` (ordered ``[first, end)`` pairs), read from ``rows`` in one pass."""
    first, end = next(ranges, (None, None))
    if first is None:
        return
    for row in rows(first):
        while row.index >= end:
            first, end = next(ranges, (None, None))
            if first is None:
                return
        if row.index >= first:
            yield row


def _prepare_folder(out: Path, settings: dict, overwrite: bool) -> dict | None:
    """The index of a resumable cache of the same settings in ``out``, or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cache folder {out} is a file")
    index_path = out / INDEX_FILE
    if out.is_dir() and overwrite:  # the cache's own files only: whatever else lives there stays
        for path in out.iterdir():
            shard = path.name.startswith("clips-") and ".safetensors" in path.name  # temporary files too
            if shard or path.name in (INDEX_FILE, SOURCES_FILE, PROCESSOR_FILE):
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


def _save_shard(out: Path, index: dict, shard: int, name: str, first: int, batch: list[ClipResult],
                job: PrepareJob) -> None:
    """Write a shard (to a temporary file, renamed when complete) and record it, with its size and CRC-32."""
    from safetensors.torch import save_file

    rows = [result for result in batch if result.error is None]
    failed = []
    for result in batch:
        if result.error is not None:
            failed.append({"path": result.name, "label": result.label, "error": result.error,
                           "position": result.position})
            logger.warning("skipping an unreadable video: %s: %s", result.name, result.error)
    temporary = out / f"{name}.tmp-{os.getpid()}"
    tensors = shard_tensors(rows, job.tokens, job.keep_only_threshold, job.processor.num_frames)
    save_file(tensors, str(temporary),
              metadata={"format": CACHE_FORMAT, "layout": CLIP_LAYOUT, "paths": json.dumps([r.name for r in rows])})
    os.replace(temporary, out / name)
    index["shards"][str(shard)] = {
        "file": name, "first": first, "count": len(batch), "rows": len(rows), "failed": failed,
        "padded_clips": sum(r.padded_frames > 0 for r in rows), "padded_frames": sum(r.padded_frames for r in rows),
        **integrity_record(out / name),
    }
    write_json(out / INDEX_FILE, index)
