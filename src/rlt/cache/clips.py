"""Making cached clips: the processor and token grid a checkpoint implies, one clip's preparation and
token counts, and the one worker pool that prepares the rows of any source (``ClipResult`` per row).
"""

from __future__ import annotations

import collections
import copy
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..clip_sources import VideoRow, decode_row
from ..collator import ClipCollator
from ..models.video_processing_rlt import RLTVideoProcessor
from .format import DEFAULT_THRESHOLD, PROCESSOR_FILE


@dataclass(frozen=True)
class TokenSettings:
    """Where ``tokens_kept`` comes from: RLT's threshold and tubelet grid (a checkpoint's, or the defaults)."""

    threshold: float = DEFAULT_THRESHOLD
    tubelet_size: int = 2
    patch_size: int | tuple[int, int] = 16
    compare_to: str = "previous"

    def to_dict(self) -> dict:
        patch = self.patch_size if isinstance(self.patch_size, int) else list(self.patch_size)
        return {"threshold": self.threshold, "tubelet_size": self.tubelet_size, "patch_size": patch,
                "compare_to": self.compare_to}


def load_processor(
    checkpoint: RLTVideoProcessor | str | os.PathLike | None = None,
    *,
    num_frames: int | None = None,
    frame_stride: int | None = None,
    fps: float | None = None,
    size: int | None = None,
) -> tuple[RLTVideoProcessor, TokenSettings]:
    """The RLT video processor a checkpoint (or processor) folder implies, and its token settings.

    A processor given as such is taken as it is (a copy, if overridden), with the default token settings.
    An RLT checkpoint's own processor is used as saved; a vanilla checkpoint's (VideoMAE, ViViT, ...)
    processor config is translated as ``rlt convert`` does (same mean/std, sizes, frame count).
    ``num_frames``, ``frame_stride`` / ``fps`` and ``size`` (short side and square crop) override.
    Without a checkpoint: ``RLTVideoProcessor()``'s defaults (16 frames, 224 px, ImageNet mean/std).
    """
    from .. import registry
    from ..conversion import read_processor_config

    model_config: dict = {}
    geometry = None
    if checkpoint is None or isinstance(checkpoint, RLTVideoProcessor):
        processor = checkpoint or RLTVideoProcessor()
    else:
        folder = Path(checkpoint)
        if not folder.is_dir():
            raise FileNotFoundError(f"no such checkpoint or processor folder: {folder}")
        if (folder / "config.json").is_file():
            model_config = json.loads((folder / "config.json").read_text())
            try:  # the rlt_* token geometry of a known architecture; else the default token settings apply
                geometry = registry.as_rlt_config(model_config)
            except registry.UnsupportedArchitectureError:
                pass
        name, settings = read_processor_config(folder)
        if name is None and not model_config:
            raise FileNotFoundError(f"{folder} holds neither a processor config nor a config.json")
        if name == PROCESSOR_FILE and settings.get("video_processor_type") == RLTVideoProcessor.__name__:
            processor = RLTVideoProcessor.from_pretrained(str(folder))
        else:
            processor = RLTVideoProcessor.from_source_config(
                settings,
                num_frames=geometry.rlt_num_frames if geometry is not None else None,
                image_size=geometry.rlt_image_size if geometry is not None else None,
            )
    processor = with_overrides(processor, num_frames=num_frames, frame_stride=frame_stride, fps=fps, size=size)
    tokens = TokenSettings(
        threshold=float(model_config.get("rlt_threshold", DEFAULT_THRESHOLD)),
        compare_to=model_config.get("rlt_compare_to", "previous"),
    )
    if geometry is not None:
        patch = geometry.rlt_patch_size
        square = patch[0] if patch[0] == patch[1] else patch  # square patches recorded as one int
        tokens = replace(tokens, tubelet_size=geometry.rlt_tubelet_size, patch_size=square)
    return processor, tokens


def with_overrides(
    processor: RLTVideoProcessor,
    *,
    num_frames: int | None = None,
    frame_stride: int | None = None,
    fps: float | None = None,
    size: int | None = None,
) -> RLTVideoProcessor:
    """``processor``, or a copy of it with the given sampling and size (short side and square crop) settings."""
    for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride), ("size", size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num_frames is None and frame_stride is None and fps is None and size is None:
        return processor
    processor = copy.deepcopy(processor)
    if num_frames is not None:
        processor.num_frames = num_frames
    if frame_stride is not None or fps is not None:  # the one given replaces the processor's sampling rule
        processor.frame_stride, processor.fps = frame_stride, None if fps is None else float(fps)
    if size is not None:
        processor.size, processor.crop_size = {"shortest_edge": size}, {"height": size, "width": size}
    processor.check_settings()  # frame_stride and fps both given: the error saying they are exclusive
    return processor


def processor_settings(processor: RLTVideoProcessor) -> dict:
    """The processor's settings as JSON-able values (what decides the clips and their normalisation)."""
    settings = processor.to_dict()
    settings.pop("auto_map", None)
    return json.loads(json.dumps(settings, default=lambda value: getattr(value, "__dict__", str(value))))


def clip_keep_mask(processor, clip: torch.Tensor, tokens: TokenSettings, threshold: float) -> torch.Tensor | None:
    """RLT's keep mask of one uint8 clip as the model computes it on the processor's output, bool
    ``(T', H', W')``; None when the clip cannot be cut into tubelets."""
    collator = ClipCollator(threshold=threshold, tubelet_size=tokens.tubelet_size, patch_size=tokens.patch_size,
                            input_scale=processor.rlt_input_scale, compare_to=tokens.compare_to)
    try:
        return collator.keep_mask(processor.normalize_frames(clip.float()).unsqueeze(0))[0]
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# The worker pool


@dataclass
class ClipResult:
    """One row prepared by a worker: its clip and token counts, or why it could not be read."""

    position: int
    name: str
    label: int | None
    clip: np.ndarray | None = None  # uint8 (T, C, H, W); None when unreadable
    tokens_kept: int = -1  # at the recorded threshold; -1 when the clip cannot be cut into tubelets
    keep_mask: torch.Tensor | None = None  # bool (T', H', W') at keep_only_threshold, when asked
    padded_frames: int = 0
    error: str | None = None


@dataclass
class PrepareJob:
    """What every worker prepares clips with."""

    processor: RLTVideoProcessor
    tokens: TokenSettings
    keep_only_threshold: float | None


_JOB: PrepareJob | None = None  # a pool worker's job, set once when it starts


def _init_worker(job: PrepareJob) -> None:
    global _JOB
    _JOB = job
    torch.set_num_threads(1)  # one process per core already


def _prepare(row: VideoRow, job: PrepareJob | None = None) -> ClipResult:
    """Decode or take one row's video, as the job's (default: this worker's) processor does, with its token counts."""
    job = job or _JOB
    decoded = decode_row(job.processor, row)
    result = ClipResult(row.index, row.name, row.label, padded_frames=decoded.padded_frames, error=decoded.error)
    if decoded.error is not None:
        return result
    clip = decoded.frames
    mask = clip_keep_mask(job.processor, clip, job.tokens, job.tokens.threshold)
    result.tokens_kept = int(mask.sum()) if mask is not None else -1
    if job.keep_only_threshold is not None:
        result.keep_mask = clip_keep_mask(job.processor, clip, job.tokens, job.keep_only_threshold)
        if result.keep_mask is None:
            raise ValueError(
                f"clips of shape {tuple(clip.shape)} cannot be cut into tubelets of {job.tokens.tubelet_size} frames "
                f"and {job.tokens.patch_size} px: keep_only_threshold needs them"
            )
    result.clip = clip.numpy()
    return result


def prepare_rows(rows: Iterable[VideoRow], job: PrepareJob, workers: int) -> Iterator[ClipResult]:
    """``_prepare`` over the rows, in order, in ``workers`` processes (0 or 1: in this one).

    Unlike ``Pool.imap``, which reads all of its input ahead, this keeps at most four rows per
    worker in flight, so the video bytes of a long dataset or stream are never all in memory.
    """
    if workers <= 1:
        yield from (_prepare(row, job) for row in rows)
        return
    pending: collections.deque = collections.deque()
    with multiprocessing.get_context().Pool(workers, _init_worker, (job,)) as pool:
        for row in rows:
            pending.append(pool.apply_async(_prepare, (row,)))
            while len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
