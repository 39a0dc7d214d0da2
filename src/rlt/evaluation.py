"""What RLT costs a fine-tuned model on your data: accuracy, tokens kept and speed at several thresholds.

``evaluate(model, data, thresholds=[0, 0.05, 0.1, 0.2])`` (``rlt evaluate MODEL DATA``) runs a video
classifier (an RLT checkpoint, or a vanilla one loaded into the RLT class in memory) over labelled clips at
each threshold, pooling and RLT switch (``AXES``), and reports top-1 / top-5 accuracy, the tokens kept, the
model's clips/s and the change against the baseline: threshold 0, RLT off, the vanilla model's function.

Every setting sees identical inputs: the clips are decoded once (or read from a clip cache) and held in
memory as uint8 when they fit, else read again for each setting (decoding is deterministic). Model time is
the forward pass alone (normalised clips on the device, synchronised before and after), RLT's tokenizer
included; the loader's wait for batches is reported apart.

Clips shorter than the sampling needs repeat frames, and RLT drops the repeats, which overstates its token
reduction: the report counts them (``padded``).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import registry
from .cache import default_workers
from .clip_sources import SYNTHETIC_PREFIX, CacheClips, ClipDataset, ClipSource, open_clips
from .collator import ClipCollator
from .common import PixelNormalizer, plural, synchronize
from .conversion import model_and_processor
from .hf_datasets import is_dataset_source
from .models.configuration_rlt import POOLING_CHOICES, RUN_EMBEDDING_CHOICES
from .models.token_choice import run_length_tokenize_for
from .models.tokenizer import COMPARE_TO_CHOICES
from .models.video_processing_rlt import RLTVideoProcessor

__all__ = [
    "ATTENTIONS",
    "AXES",
    "DEFAULT_THRESHOLDS",
    "DTYPES",
    "POOLINGS",
    "EvaluationReport",
    "check_data_exists",
    "clip_batches",
    "clip_source",
    "evaluate",
    "resolve_device",
]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.0, 0.05, 0.1, 0.2)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
POOLINGS = POOLING_CHOICES
# The RLT switches evaluate runs as table axes, each RLT row under every combination: the axis's
# name (its row key and column) -> the config field it sets and the field's value for each choice.
# A new switch is one line here and one argument of ``evaluate`` (and the CLI's flag).
AXES = {
    "compare_to": ("rlt_compare_to", {rule: rule for rule in COMPARE_TO_CHOICES}),
    "attention": ("rlt_proportional_attention", {"plain": False, "proportional": True}),
    "run_embedding": ("rlt_run_embedding", {kind: kind for kind in RUN_EMBEDDING_CHOICES}),
}
ATTENTIONS = tuple(AXES["attention"][1])


# ----------------------------------------------------------------------------------------------
# The data


def check_data_exists(data) -> None:
    """A clear error, before a model is loaded for it, for a path that names nothing and cannot be a Hub dataset."""
    if not isinstance(data, (str, os.PathLike)) or Path(data).exists() or str(data).startswith(SYNTHETIC_PREFIX):
        return
    if not is_dataset_source(data):
        raise FileNotFoundError(f"no such clip cache, video folder or list: {data}")


def clip_source(
    data, processor: RLTVideoProcessor, config, dataset_options=None, *, class_names: Sequence[str] | None = None
) -> ClipSource:
    """The clips of ``data`` (``rlt.clip_sources.open_clips``: a clip cache, a video folder / list, a dataset, the
    generated task or in-memory uint8 clips) checked against what ``config``'s model takes; labels are matched
    to the model's ``class_names`` by name."""
    check_data_exists(data)
    source = open_clips(data, processor, class_names, dataset_options)
    if isinstance(source, CacheClips):
        cache = source.cache
        if cache.keep_only_threshold is not None:
            raise ValueError(
                f"{cache.folder} holds only the tubelets RLT keeps at tau={cache.keep_only_threshold}; "
                "a baseline with RLT off needs full clips: cache them without --keep-only-threshold"
            )
        _warn_if_sampling_differs(cache, processor)
    expected = (config.rlt_num_frames, config.rlt_num_channels, *config.rlt_image_size)
    if source.clip_shape is not None and tuple(source.clip_shape) != expected:
        raise ValueError(
            f"the clips are (frames, channels, height, width) = {tuple(source.clip_shape)}; "
            f"the model takes {expected}: cache or sample them for this model"
        )
    if len(source) == 0:
        raise ValueError(f"{source.description} holds no clips")
    return source


def clip_batches(source: ClipSource, batch_size: int, *, workers: int = 0, pin_memory: bool = False, indices=None):
    """A ``DataLoader`` of ``ClipBatch`` es (uint8 clips) over ``source``, or over its clips ``indices`` in
    that order; clips are read in ``workers`` processes (none for clips held in memory). Unreadable clips
    are listed in each batch's ``failed``, never raised, so a batch may be empty."""
    dataset = ClipDataset(source)
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, list(indices))
    workers = 0 if source.in_memory else workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=functools.partial(ClipCollator().collate, allow_empty=True),
        pin_memory=pin_memory, persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
    )


def _warn_if_sampling_differs(cache, processor: RLTVideoProcessor) -> None:
    made_with = cache.index["settings"]["processor"]
    if made_with.get("do_sample_frames") is False:
        return  # clips written as they were given (write_clip_cache without a processor)
    for key in ("num_frames", "frame_stride", "fps", "do_sample_frames"):
        if made_with.get(key) != getattr(processor, key, None):
            logger.warning(
                "%s was made with %s=%r, the model's processor uses %r: the clips are not sampled as the model expects",
                cache.folder, key, made_with.get(key), getattr(processor, key, None),
            )


class _Batches:
    """``(uint8 clips, labels)`` of ``source``, read through ``clip_batches``; counts the seconds spent
    waiting for the loader, and (``record``) notes unreadable and padded clips."""

    def __init__(self, source: ClipSource, batch_size: int, workers: int, pin: bool, record: bool = False):
        self.loader = clip_batches(source, batch_size, workers=workers, pin_memory=pin)
        self.record = record
        self.failed: list[dict] = []
        self.padded: list[dict] = []
        self.wait_seconds = 0.0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            batch = next(iterator, None)
            self.wait_seconds += time.perf_counter() - start
            if batch is None:
                return
            if self.record:
                self.failed += batch.failed
                self.padded += batch.padded
                for entry in batch.failed:
                    logger.warning("skipping an unreadable video: %s", entry["error"])
            if len(batch):
                yield batch.pixel_values, batch.labels


# ----------------------------------------------------------------------------------------------
# Running


@dataclass
class EvaluationReport:
    """Rows of (threshold, pooling) results and the loader's numbers; ``str()`` is the table."""

    model: str
    data: str
    device: str
    dtype: str
    batch_size: int
    num_clips: int
    num_classes: int
    loader: dict
    rows: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    padded: list[dict] = field(default_factory=list)  # {"path", "padded_frames"} of clips with repeated frames

    def padding(self) -> dict:
        """Clips too short for the sampling: ``{"clips", "frames", "unknown", "videos"}``.

        ``frames``: their repeated frames in all; ``unknown``: clips of a cache that predates the count.
        """
        known = [entry for entry in self.padded if entry["padded_frames"] is not None]
        return {
            "clips": len(known),
            "frames": sum(entry["padded_frames"] for entry in known),
            "unknown": len(self.padded) - len(known),
            "videos": known,
        }

    def to_dict(self) -> dict:
        """The report as JSON: every field (``rows`` as ``results``, ``padded`` as ``padding()``) and the versions."""
        import transformers

        fields = {key: value for key, value in asdict(self).items() if key != "rows"}
        return {
            **fields,
            "device_name": torch.cuda.get_device_name(0) if self.device.startswith("cuda") else "cpu",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "results": self.rows,
            "padded": self.padding(),
        }

    def __str__(self) -> str:
        loader = self.loader
        lines = [
            (
                f"{plural(self.num_clips, 'clip')} from {self.data} ({loader['kind']}), {self.device} {self.dtype}, "
                f"batch {self.batch_size}"
            ),
            (
                f"loader: {loader['clips_per_s']:.1f} clips/s ({plural(loader['clips'], 'clip')} in "
                f"{loader['seconds']:.2f} s, {plural(loader['workers'], 'worker')}, "
                f"{'held in memory' if loader['held_in_memory'] else 'read again for each setting'})"
            ),
        ]
        if self.failed:
            lines.append(f"{plural(len(self.failed), 'unreadable video')} skipped:")
            lines += [f"  {entry['path']}: {entry['error']}" for entry in self.failed]
        padding = self.padding()
        if padding["clips"]:
            lines.append(
                f"padded: {padding['clips']} of {plural(self.num_clips, 'clip')} are shorter than the sampling needs; "
                f"{padding['frames']} of their sampled frames repeat the one before, and RLT drops the repeats, "
                "so 'tokens kept' counts them as saved (listed under 'padded' in the JSON)"
            )
        if padding["unknown"]:
            lines.append(f"padded: unknown for {plural(padding['unknown'], 'clip')} (a clip cache older than the count)")
        varied = [axis for axis in AXES if len({row.get(axis) for row in self.rows if row["rlt_enabled"]}) > 1]
        header = ["threshold", "pooling", *varied, "top-1", "top-5", "tokens kept", "model clips/s", "d top-1",
                  "speed-up", "agree"]
        table = [header]
        for row in self.rows:
            table.append([
                f"{row['threshold']:g}" + (" (off)" if not row["rlt_enabled"] else ""),
                row["pooling"],
                *[str(row.get(axis, "-")) for axis in varied],
                f"{100 * row['top1']:.2f}",
                f"{100 * row['top5']:.2f}",
                f"{row['tokens_kept_pct']:.1f}%",
                f"{row['model_clips_per_s']:.1f}",
                f"{row['delta_top1']:+.2f}",
                f"{row['throughput_gain']:.2f}x",
                f"{100 * row['agreement']:.1f}%",
            ])
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        text_columns = 2 + len(varied)
        for r in table:
            cells = [cell.ljust(w) if i < text_columns else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells))
        lines.append(f"top-5 is top-{self.num_classes} with {self.num_classes} classes" if self.num_classes < 5 else "")
        lines.append("d top-1: points against the baseline; speed-up: model clips/s over the baseline's; "
                     "agree: top-1 predictions equal to the baseline's")
        return "\n".join(line for line in lines if line)


def class_names(config) -> list[str] | None:
    """A classifier config's class names in class id order (None without ``id2label``)."""
    return [str(config.id2label[i]) for i in range(config.num_labels)] if config.id2label else None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when torch sees it, else the CPU; a CUDA device asked for without CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return device


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def evaluate(
    model,
    data,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    poolings: Sequence[str] = ("mean",),
    compare_to: Sequence[str] = ("previous",),
    attentions: Sequence[str] = ("plain",),
    run_embeddings: Sequence[str] = ("first",),
    batch_size: int = 16,
    device: str | torch.device = "auto",
    dtype: str = "fp32",
    workers: int | None = None,
    processor: RLTVideoProcessor | str | os.PathLike | None = None,
    max_memory_gb: float | None = None,
    warmup: int = 1,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    dataset_options=None,
) -> EvaluationReport:
    """Evaluate a video classifier at each threshold, pooling and RLT switch on identical inputs; see the module doc.

    Args:
        model: a checkpoint folder (RLT, or vanilla VideoMAE / ViViT / V-JEPA 2: loaded into the RLT class) or
            an RLT classifier already loaded (then give ``processor``).
        data: labelled clips, as ``clip_source`` takes them.
        thresholds: ``tau`` values; 0 (always run, first) is the baseline with RLT off.
        poolings: ``"mean"`` and / or ``"length_weighted"`` (``rlt_pooling``; a CLS head has one row).
        compare_to, attentions, run_embeddings: the choices of each RLT switch (``AXES``: ``rlt_compare_to``,
            ``rlt_proportional_attention``, ``rlt_run_embedding``); each RLT row is run under every combination.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"``: the model's weights and inputs (RLT's keep mask
            is computed from the float32 clip, in the timed region). A checkpoint folder is loaded in
            this dtype; a model passed in must already be in it (it is not cast, and returns to its device).
        workers: loader processes (default one per core).
        processor: the processor whose normalisation (and, for videos, sampling) the model expects;
            default: the checkpoint's.
        max_memory_gb: hold the decoded uint8 clips in memory up to this size (default: half the
            free memory), else read them again for each setting.
        warmup: untimed forward passes on the first batch before each setting's timed pass.
        json_path: also write the report as JSON here.
        dataset_options: ``split``, ``config``, ``video_column``, ``label_column`` of a dataset
            (``rlt.hf_datasets.open_video_dataset``).
    """
    check_data_exists(data)  # before loading the model
    loaded_here = isinstance(model, (str, os.PathLike))
    model_name = str(model) if loaded_here else type(model).__name__
    model, processor = model_and_processor(model, processor, classifier_only=True)
    axes = {"compare_to": compare_to, "attention": attentions, "run_embedding": run_embeddings}
    thresholds = _check_settings(dtype, batch_size, thresholds, poolings, axes)
    device = resolve_device(device)
    workers = default_workers() if workers is None else int(workers)

    config = model.config
    source = clip_source(data, processor, config, dataset_options, class_names=class_names(config))
    changed = ("rlt_enabled", "rlt_threshold", "rlt_pooling", *(name for name, _ in AXES.values()))
    original = {name: getattr(config, name) for name in changed}
    # A model the caller holds is not cast (a round trip through bf16 would round its weights, and it may
    # share them with another model: rlt.from_model), and goes back to its device afterwards.
    home = next(model.parameters()).device
    if not loaded_here and next(model.parameters()).dtype != DTYPES[dtype]:
        raise ValueError(
            f"the model is {next(model.parameters()).dtype} and evaluate would cast its weights to {dtype}: "
            f"pass dtype matching the model, cast it yourself first, or pass its checkpoint folder"
        )
    try:
        model.to(device=device, dtype=DTYPES[dtype])
        normalizer = PixelNormalizer.from_processor(processor)
        pin = device.type == "cuda"
        budget = (max_memory_gb * (1 << 30)) if max_memory_gb is not None else _available_memory() / 2
        clip_bytes = math.prod(source.clip_shape) if source.clip_shape else float("inf")
        hold = source.in_memory or len(source) * clip_bytes <= budget
        # The first pass (reading into memory, or the baseline's) notes the unreadable and padded clips.
        first = _Batches(source, batch_size, workers, pin, record=True)
        held = None
        if hold:
            from tqdm.auto import tqdm

            held = list(tqdm(first, total=len(first), unit="batch", desc=f"reading {source.kind}", disable=not progress))
            if not held:
                raise ValueError(f"no readable clip in {source.description}")
        rows, baseline = [], None
        for setting in _settings(model, thresholds, poolings, axes):
            _apply(config, setting)
            batches = held if hold else first if baseline is None else _Batches(source, batch_size, workers, pin)
            if setting["rlt_enabled"]:
                desc = " ".join([f"tau={setting['threshold']:g}", setting["pooling"], *(setting[a] for a in AXES)])
            else:
                desc = "baseline (RLT off)"
            result = _run_setting(model, batches, normalizer, device, DTYPES[dtype], warmup, desc, progress)
            if baseline is None:
                baseline = result
            wait = None if hold else batches.wait_seconds
            rows.append(_row(setting, result, baseline, config.rlt_tokens_per_clip, wait))
    finally:
        for name, value in original.items():
            setattr(config, name, value)
        if not loaded_here:
            model.to(home)
    loader = {"kind": source.kind, "workers": 0 if source.in_memory else workers, "held_in_memory": hold,
              "clips": baseline.clips, "seconds": first.wait_seconds,
              "clips_per_s": _per_second(baseline.clips, first.wait_seconds)}
    report = EvaluationReport(model_name, source.description, str(device), dtype, batch_size, baseline.clips,
                              config.num_labels, loader, rows, failed=first.failed, padded=first.padded)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2))
    return report


def _check_settings(dtype: str, batch_size, thresholds: Sequence[float], poolings: Sequence[str], axes: dict
                    ) -> list[float]:
    """Clear errors for bad arguments; returns the thresholds sorted, with the baseline 0 added."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    thresholds = sorted({float(t) for t in thresholds} | {0.0})
    if any(not math.isfinite(t) or t < 0 for t in thresholds):
        raise ValueError(f"thresholds must be finite numbers >= 0, got {thresholds}")
    for name, values, choices in (("pooling", poolings, POOLINGS),
                                  *((axis, axes[axis], tuple(AXES[axis][1])) for axis in AXES)):
        if not values or any(value not in choices for value in values):
            raise ValueError(f"{name} must be among {choices}, got {list(values)}")
    return thresholds


def _settings(model, thresholds: list[float], poolings: Sequence[str], axes: dict) -> list[dict]:
    """The settings to run (a report row's keys), the baseline first (RLT off: every token, so both poolings
    are the plain mean and no RLT switch applies); heads that do not mean-pool get one row per threshold
    and combination of the switches."""
    settings = [{"threshold": 0.0, "rlt_enabled": False, "pooling": "-", **{axis: "-" for axis in AXES}}]
    if not registry.for_model(model).rlt_pooling_applies(model.config):
        poolings = ["cls"]
    for choices in itertools.product(*(axes[axis] for axis in AXES)):
        for tau in thresholds[1:]:  # sorted, the baseline's 0 first
            for pooling in poolings:
                settings.append({"threshold": tau, "rlt_enabled": True, "pooling": pooling, **dict(zip(AXES, choices))})
    return settings


def _apply(config, setting: dict) -> None:
    """Set ``config`` as ``setting`` says; the baseline only turns RLT off."""
    config.rlt_enabled = setting["rlt_enabled"]
    if not setting["rlt_enabled"]:
        return
    config.rlt_threshold = setting["threshold"]
    if setting["pooling"] in POOLINGS:
        config.rlt_pooling = setting["pooling"]
    for axis, (name, values) in AXES.items():
        setattr(config, name, values[setting[axis]])


@dataclass
class _Result:
    """A setting's pass over the clips."""

    clips: int
    top1: float
    top5: float
    tokens: int
    seconds: float
    predictions: torch.Tensor  # top-1 class per clip

    @property
    def clips_per_s(self) -> float:
        return _per_second(self.clips, self.seconds)


def _per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _row(setting: dict, result: _Result, baseline: _Result, tokens_per_clip: int, wait: float | None) -> dict:
    """One row of the report: a setting's result against the baseline's."""
    row = {
        **setting,
        "top1": result.top1,
        "top5": result.top5,
        "tokens_kept_pct": 100.0 * result.tokens / (result.clips * tokens_per_clip),
        "model_clips_per_s": result.clips_per_s,
        "model_seconds": result.seconds,
        "delta_top1": 100.0 * (result.top1 - baseline.top1),
        "throughput_gain": result.clips_per_s / baseline.clips_per_s,
        "agreement": float((result.predictions == baseline.predictions).float().mean()),
    }
    if wait is not None:
        row["loader_wait_seconds"] = wait
    return row


def _forward(model, pixel_values: torch.Tensor, dtype: torch.dtype):
    config = model.config
    video = {config.rlt_input_name: pixel_values.to(dtype)}
    if dtype == torch.float32 or not config.rlt_enabled:
        return model(**video)
    # The keep mask from the float32 clip, so that reduced precision does not change which tokens are kept.
    keep_mask = run_length_tokenize_for(config, pixel_values).keep_mask
    return model(**video, keep_mask=keep_mask)


@torch.inference_mode()
def _run_setting(model, batches, normalizer, device, dtype, warmup, desc, progress) -> _Result:
    from tqdm.auto import tqdm

    seconds, clips, correct1, correct5, tokens = 0.0, 0, 0, 0, 0
    predictions = []
    top_k = min(5, model.config.num_labels)
    first = True
    for batch, labels in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        pixel_values = normalizer(batch.to(device, non_blocking=True))
        if first:
            for _ in range(warmup):
                _forward(model, pixel_values, dtype)
            first = False
        synchronize(device)
        start = time.perf_counter()
        outputs = _forward(model, pixel_values, dtype)
        synchronize(device)
        seconds += time.perf_counter() - start
        logits = outputs.logits.float().cpu()
        ranked = logits.topk(top_k, dim=-1).indices
        correct1 += int((ranked[:, 0] == labels).sum())
        correct5 += int((ranked == labels[:, None]).any(-1).sum())
        tokens += int(outputs.tokens_kept.sum())
        predictions.append(ranked[:, 0])
        clips += len(labels)
    if clips == 0:
        raise ValueError("no readable clip to evaluate")
    return _Result(clips, correct1 / clips, correct5 / clips, tokens, seconds, torch.cat(predictions))
