"""Clips -> one model batch: the one collator of rlt (training, evaluation, token counts, pretraining).

``ClipCollator.for_model(model_or_config)`` stacks clips (uint8 frames, normalised later on the device
by ``rlt.common.PixelNormalizer``, or floats a processor normalised) and their labels, and can add a
``keep_mask`` computed in the data loader's workers: RLT's own (through ``run_length_tokenize_for``, the
model's own token choice) or, as an ablation, a random one with RLT's per-clip counts. It takes dicts
(``pixel_values``, ``labels`` or ``label``, ``video``, ``keep_mask``) and ``rlt.clip_sources.Clip``
objects; unreadable ones are dropped with their labels and listed in the ``ClipBatch``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .clip_sources import Clip
from .models.token_choice import run_length_tokenize_for
from .models.tokenizer import check_finite_pixels

__all__ = ["DROP_CHOICES", "ClipBatch", "ClipCollator", "KeepMaskSettings", "random_drop_keep_mask"]

logger = logging.getLogger(__name__)

DROP_CHOICES = (None, "rlt", "random")


@dataclass(frozen=True)
class KeepMaskSettings:
    """RLT's token choice, under the names of an RLT config's fields (what ``run_length_tokenize_for``
    reads), for a collator that must not hold a whole model config."""

    rlt_threshold: float = 0.1
    rlt_tubelet_size: int = 2
    rlt_patch_size: int | tuple[int, int] = 16
    rlt_input_scale: tuple[float, ...] | None = None
    rlt_compare_to: str = "previous"


def random_drop_keep_mask(keep_mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random keep mask with the same tokens per clip as ``keep_mask``: ``(B, T', H', W')`` bool.

    The first time step stays fully kept (as RLT keeps it); of the later tubelets, each clip keeps as
    many as ``keep_mask`` does, chosen uniformly at random. The ablation for "is it which tokens RLT
    drops, or only how many?".
    """
    if keep_mask.dtype != torch.bool or keep_mask.dim() != 4:
        raise ValueError(
            f"keep_mask must be a bool (B, T', H', W') tensor, got {keep_mask.dtype} {tuple(keep_mask.shape)}"
        )
    batch = keep_mask.shape[0]
    later = keep_mask[:, 1:].reshape(batch, -1)
    wanted = later.sum(1, keepdim=True)  # (B, 1)
    scores = torch.rand(later.shape, generator=generator, device=keep_mask.device)
    ranks = scores.argsort(1).argsort(1)  # a random rank per tubelet
    chosen = (ranks < wanted).view_as(keep_mask[:, 1:])
    return torch.cat([torch.ones_like(keep_mask[:, :1]), chosen], dim=1)


@dataclass
class ClipBatch:
    """One collated batch.

    Attributes:
        pixel_values: ``(B, T, C, H, W)`` in the examples' dtype (uint8 or normalised float); None when
            no example of the batch was readable (only from ``collate(..., allow_empty=True)``).
        labels: int64 ``(B,)``, or None for unlabelled examples.
        keep_mask: bool ``(B, T', H', W')`` or None.
        input_name: the model's video argument, the key of ``pixel_values`` in ``as_dict()``.
        names: the readable clips' names (paths, ``row N``, ``clip-N``).
        failed: ``{"path", "error"}`` of the examples dropped as unreadable.
        padded: ``{"path", "padded_frames"}`` of the clips whose sampling repeated frames (None: unknown).
    """

    pixel_values: torch.Tensor | None
    labels: torch.Tensor | None = None
    keep_mask: torch.Tensor | None = None
    input_name: str = "pixel_values"
    names: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    padded: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return 0 if self.pixel_values is None else len(self.pixel_values)

    def as_dict(self) -> dict:
        """The model's inputs and ``labels``: what ``Trainer`` and ``model(**batch)`` take."""
        batch = {self.input_name: self.pixel_values}
        if self.labels is not None:
            batch["labels"] = self.labels
        if self.keep_mask is not None:
            batch["keep_mask"] = self.keep_mask
        return batch


def _as_clip(feature) -> Clip:
    """A ``Clip`` of a dict example (``pixel_values`` None: unreadable) or the ``Clip`` itself."""
    if not isinstance(feature, dict):
        return feature
    frames, label = feature.get("pixel_values"), feature.get("labels", feature.get("label"))
    return Clip(frames, label, str(feature.get("video", "?")), feature.get("padded_frames", 0),
                None if frames is not None else "unreadable", feature.get("keep_mask"))


class ClipCollator:
    """Stack examples into a batch, optionally with a ``keep_mask`` computed here (see the module doc).

    Args:
        drop: None (no keep mask computed: the model decides, with its config), ``"rlt"`` (RLT's keep
            mask) or ``"random"`` (a random keep mask with RLT's per-clip counts). Default: ``"rlt"``
            when ``threshold`` is given, else None.
        threshold, tubelet_size, patch_size, compare_to: RLT's token choice (``for_model`` reads them
            from a config); tau defaults to 0.1 when ``drop`` is set.
        input_scale: per channel, how much one grey level moves float ``pixel_values`` (the
            processor's ``rlt_input_scale``); uint8 clips need none (one grey level is one unit).
        input_name: the batch key of the clips, the name of the model's video argument.
    """

    def __init__(
        self,
        *,
        drop: str | None = None,
        threshold: float | None = None,
        tubelet_size: int = 2,
        patch_size: int | Sequence[int] = 16,
        input_scale: Sequence[float] | None = None,
        compare_to: str = "previous",
        input_name: str = "pixel_values",
    ):
        drop = "rlt" if drop is None and threshold is not None else drop
        if drop not in DROP_CHOICES:
            raise ValueError(f"drop must be one of {DROP_CHOICES}, got {drop!r}")
        self.drop = drop
        self.settings = KeepMaskSettings(
            rlt_threshold=0.1 if threshold is None else float(threshold),
            rlt_tubelet_size=tubelet_size,
            rlt_patch_size=patch_size if isinstance(patch_size, int) else tuple(patch_size),
            rlt_input_scale=tuple(input_scale) if input_scale is not None else None,
            rlt_compare_to=compare_to,
        )
        self.input_name = input_name

    @classmethod
    def for_model(cls, model_or_config, drop: str | None = "auto", input_scale: Sequence[float] | None = None):
        """A collator with the token geometry and RLT settings of a model or its config (RLT or vanilla,
        any registered architecture).

        ``drop="auto"`` computes RLT's keep mask when the config has RLT on (never for a vanilla config);
        a vanilla config's tau is 0.1.
        """
        from . import registry

        config = getattr(model_or_config, "config", model_or_config)
        if drop == "auto":
            drop = "rlt" if getattr(config, "rlt_enabled", False) else None
        geometry = registry.as_rlt_config(config)
        collator = cls(drop=drop, input_name=geometry.rlt_input_name)
        scale = input_scale if input_scale is not None else getattr(config, "rlt_input_scale", None)
        collator.settings = KeepMaskSettings(
            rlt_threshold=getattr(config, "rlt_threshold", 0.1),
            rlt_tubelet_size=geometry.rlt_tubelet_size,
            rlt_patch_size=geometry.rlt_patch_size,
            rlt_input_scale=tuple(scale) if scale is not None else None,
            rlt_compare_to=getattr(config, "rlt_compare_to", "previous"),
        )
        return collator

    @property
    def threshold(self) -> float | None:
        """tau of the keep masks computed here; None when none are (``drop`` None)."""
        return self.settings.rlt_threshold if self.drop is not None else None

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        if value is None:
            self.drop = None
            return
        self.settings = dataclasses.replace(self.settings, rlt_threshold=float(value))
        self.drop = self.drop or "rlt"

    def keep_mask(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """RLT's keep mask for a batch ``(B, T, C, H, W)`` (uint8 or normalised floats): bool ``(B, T', H', W')``."""
        settings = self.settings
        as_float = pixel_values.is_floating_point()
        if not as_float:
            settings = dataclasses.replace(settings, rlt_input_scale=(1.0,) * pixel_values.shape[2])
        if pixel_values.device.type != "cpu":
            return run_length_tokenize_for(settings, pixel_values if as_float else pixel_values.float()).keep_mask
        # In a loader worker, one clip at a time: a batch of 64 clips of 16 x 224 px is 600 MB in float32,
        # and going through it whole took 4x as long as clip by clip (610 against 155 ms on one thread).
        return torch.cat([
            run_length_tokenize_for(settings, (clip if as_float else clip.float())[None]).keep_mask
            for clip in pixel_values
        ])

    def collate(self, features: Sequence, *, allow_empty: bool = False) -> ClipBatch:
        """The batch of ``features`` (dicts or ``Clip`` objects) as a ``ClipBatch``.

        Raises a ``ValueError`` when no example is readable, unless ``allow_empty``.
        """
        clips = [_as_clip(feature) for feature in features]
        good = [clip for clip in clips if clip.frames is not None and clip.error is None]
        failed = [{"path": clip.name, "error": clip.error} for clip in clips if clip.error is not None]
        if failed and not allow_empty:
            logger.warning("dropped %d unreadable videos from a batch: %s", len(failed), [f["path"] for f in failed])
        batch = ClipBatch(None, input_name=self.input_name, failed=failed)
        if not good:
            if allow_empty:
                return batch
            raise ValueError(f"no readable video in this batch (unreadable: {[f['path'] for f in failed]})")
        batch.pixel_values = torch.stack([torch.as_tensor(clip.frames) for clip in good])
        check_finite_pixels(batch.pixel_values, self.input_name)
        batch.names = [clip.name for clip in good]
        padded = [clip for clip in good if clip.padded_frames != 0]  # None: unknown (a cache older than the count)
        batch.padded = [{"path": clip.name, "padded_frames": clip.padded_frames} for clip in padded]
        if all(clip.label is not None for clip in good):
            batch.labels = torch.tensor([int(clip.label) for clip in good], dtype=torch.long)
        if good[0].keep_mask is not None:  # stored with the clip (a keep-only clip cache)
            batch.keep_mask = torch.stack([torch.as_tensor(clip.keep_mask) for clip in good])
        elif self.drop is not None:
            batch.keep_mask = self.keep_mask(batch.pixel_values)
        if self.drop == "random":
            batch.keep_mask = random_drop_keep_mask(batch.keep_mask)
        return batch

    def __call__(self, features: Sequence) -> dict:
        return self.collate(features).as_dict()
