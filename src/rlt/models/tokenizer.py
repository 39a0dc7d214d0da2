"""Run-length tokenization of videos: which tubelets repeat the one before them in time.

Pure tensor code (no Hugging Face imports) so that it can run in a data loader, on any device, and
be copied into a checkpoint folder for ``trust_remote_code``. Shapes follow Hugging Face's video
layout: ``pixel_values`` is ``(B, T, C, H, W)``; the tubelet grid is ``(B, T', H', W')`` with
``T' = T / tubelet_size``, ``H' = H / patch_h`` and ``W' = W / patch_w``, in the time-major order in
which VideoMAE and ViViT lay out their tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "COMPARE_TO_CHOICES",
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "REFERENCE_INPUT_SCALE",
    "RunLengthTokens",
    "check_finite_pixels",
    "check_keep_mask",
    "check_threshold",
    "finite_clips",
    "pixel_affine",
    "run_length_tokenize",
    "run_lengths_from_keep_mask",
    "to_pair",
    "tubelet_grid",
]

# The threshold is defined in the units of the reference implementation: pixels scaled to [0, 1]
# and normalised with the ImageNet standard deviation. One grey level (1/255 of the range) is then
# worth (1/255) / std_c in channel c. The one definition of the ImageNet statistics in rlt.
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
REFERENCE_INPUT_SCALE = tuple((1 / 255) / std for std in IMAGENET_DEFAULT_STD)

COMPARE_TO_CHOICES = ("previous", "last_kept")


def pixel_affine(processor, num_channels: int = 3) -> tuple[list[float], list[float]] | None:
    """A processor's value mapping ``(p * rescale_factor + rescale_offset - mean_c) / std_c`` as
    ``p * scale_c + shift_c``: ``(scale, shift)``, one number per channel; the one formula in rlt.

    ``processor``: a processor or its config dict (missing keys take transformers' defaults: rescale
    by 1/255, mean 0 and std 1 when it does not normalise). ``scale`` is the input scale (how much one
    grey level of 0..255 moves the input: an RLT config's ``rlt_input_scale``). None for an empty
    config (nothing known) or statistics of another channel count.
    """
    if isinstance(processor, dict):
        if not processor:
            return None
        get = processor.get
    else:
        def get(key, default):
            return getattr(processor, key, default)
    rescale = float(get("rescale_factor", 1 / 255)) if get("do_rescale", True) else 1.0
    offset = float(get("rescale_offset", 0.0) or 0.0) if get("do_rescale", True) else 0.0
    normalize = get("do_normalize", True) and get("image_std", None) is not None
    mean = get("image_mean", None) if normalize else None
    std = get("image_std", None) if normalize else None
    mean = [0.0] * num_channels if mean is None else [float(m) for m in _per_channel(mean, num_channels)]
    std = [1.0] * num_channels if std is None else [float(s) for s in _per_channel(std, num_channels)]
    if len(std) != num_channels or len(mean) != num_channels:
        return None
    return [rescale / s for s in std], [(offset - m) / s for m, s in zip(mean, std)]


def _per_channel(value, num_channels: int) -> list:
    return [value] * num_channels if isinstance(value, (int, float)) else list(value)


@dataclass(frozen=True)
class RunLengthTokens:
    """Which tubelets a clip keeps and how many time steps each kept one stands for.

    Attributes:
        keep_mask: bool ``(B, T', H', W')``; time step 0 is always kept.
        lengths: int64 ``(B, T', H', W')``; run length ``L`` (``1 <= L <= T'``) at kept positions,
            0 at dropped ones. The lengths at one spatial cell sum to ``T'``.
    """

    keep_mask: torch.Tensor
    lengths: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """Kept tokens per clip, int64 ``(B,)``."""
        return self.keep_mask.flatten(1).sum(1)

    @property
    def tokens_per_clip(self) -> int:
        """Tokens a clip has before RLT drops any (``T' * H' * W'``)."""
        return math.prod(self.keep_mask.shape[1:])

    @property
    def kept_fraction(self) -> torch.Tensor:
        """Fraction of tokens kept per clip, float ``(B,)``."""
        return self.counts.float() / self.tokens_per_clip

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``keep_mask`` and ``lengths`` flattened to ``(B, T' * H' * W')`` in token order."""
        return self.keep_mask.flatten(1), self.lengths.flatten(1)


def to_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``16 -> (16, 16)``; a pair stays a pair (of ints)."""
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"patch_size must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def tubelet_grid(
    pixel_values_shape: Sequence[int], tubelet_size: int, patch_size: int | Sequence[int]
) -> tuple[int, int, int]:
    """``(T', H', W')`` for a ``(B, T, C, H, W)`` shape; raises a clear error for a bad shape."""
    if len(pixel_values_shape) != 5:
        raise ValueError(
            "pixel_values must have 5 dimensions (batch, frames, channels, height, width), "
            f"got shape {tuple(pixel_values_shape)}"
        )
    patch_h, patch_w = to_pair(patch_size)
    _, frames, channels, height, width = pixel_values_shape
    if width in (1, 3) and channels not in (1, 3):
        raise ValueError(
            f"pixel_values of shape {tuple(pixel_values_shape)} look channels-last; "
            "expected (batch, frames, channels, height, width)"
        )
    problems = []
    if frames < tubelet_size or frames % tubelet_size:
        problems.append(f"{frames} frames are not a multiple of the tubelet size {tubelet_size}")
    if height < patch_h or height % patch_h:
        problems.append(f"height {height} is not a multiple of the patch size {patch_h}")
    if width < patch_w or width % patch_w:
        problems.append(f"width {width} is not a multiple of the patch size {patch_w}")
    if problems:
        raise ValueError(
            "pixel_values of shape (batch, frames, channels, height, width) = "
            f"{tuple(pixel_values_shape)} cannot be cut into tubelets: " + "; ".join(problems)
        )
    return frames // tubelet_size, height // patch_h, width // patch_w


def check_threshold(threshold: float, name: str = "threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(threshold).__name__}")
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {threshold}")
    return float(threshold)


def _channel_weights(input_scale: Sequence[float] | None, channels: int) -> list[float]:
    """Per-channel factors that turn a difference in the input's units into reference units."""
    if input_scale is None:
        return [1.0] * channels
    input_scale = [float(s) for s in input_scale]
    if len(input_scale) != channels or any(not math.isfinite(s) or s <= 0 for s in input_scale):
        raise ValueError(
            f"input_scale must hold {channels} positive numbers (one per channel), got {input_scale}"
        )
    reference = REFERENCE_INPUT_SCALE if channels == len(REFERENCE_INPUT_SCALE) else (1 / 255,) * channels
    return [ref / scale for ref, scale in zip(reference, input_scale)]


def _mean_abs_difference(
    a: torch.Tensor, b: torch.Tensor, weights: list[float], patch_h: int, patch_w: int
) -> torch.Tensor:
    """Mean over channels and the ``p x p`` pixels of ``|a - b|``: ``(..., C, H, W) -> (..., H', W')``."""
    diff = (a - b).abs()
    if any(w != 1.0 for w in weights):
        # Not torch.tensor(..., device=...): a blocking copy to a GPU waits for the stream (a host sync per
        # forward). From pageable memory a non-blocking copy is staged at once, so the list may go.
        factors = torch.tensor(weights, dtype=diff.dtype).to(diff.device, non_blocking=True)
        diff = diff * factors.view(-1, 1, 1)
    *lead, channels, height, width = diff.shape
    diff = diff.reshape(*lead, channels, height // patch_h, patch_h, width // patch_w, patch_w)
    return diff.float().mean(dim=(-5, -3, -1))


def run_lengths_from_keep_mask(keep_mask: torch.Tensor) -> torch.Tensor:
    """Run length of every kept tubelet: ``(B, T', H', W')`` bool -> int64, 0 where dropped.

    A kept tubelet at time step ``k`` stands for itself and the dropped ones that follow it at the
    same place, up to the next kept one (or the end of the clip).
    """
    check_keep_mask(keep_mask)
    steps = keep_mask.shape[1]
    time = torch.arange(steps, device=keep_mask.device).view(1, steps, 1, 1)
    # Index of the next kept step at or after k (steps if none), by a reverse running minimum.
    own_index = torch.where(keep_mask, time, steps)
    next_kept = own_index.flip(1).cummin(1).values.flip(1)
    next_after = F.pad(next_kept[:, 1:], (0, 0, 0, 0, 0, 1), value=steps)  # the step after the last: none kept
    return torch.where(keep_mask, next_after - time, 0)


def check_keep_mask(keep_mask: torch.Tensor, grid: tuple[int, int, int] | None = None) -> None:
    """Raise a clear error unless ``keep_mask`` is a valid bool ``(B, T', H', W')`` keep mask."""
    if not isinstance(keep_mask, torch.Tensor) or keep_mask.dtype != torch.bool or keep_mask.dim() != 4:
        shape = tuple(keep_mask.shape) if isinstance(keep_mask, torch.Tensor) else type(keep_mask).__name__
        raise ValueError(f"keep_mask must be a bool tensor of shape (batch, T', H', W'), got {shape}")
    if grid is not None and tuple(keep_mask.shape[1:]) != tuple(grid):
        raise ValueError(f"keep_mask has grid {tuple(keep_mask.shape[1:])}, the video's tubelet grid is {grid}")


def finite_clips(pixel_values: torch.Tensor) -> torch.Tensor:
    """Which clips of a ``(B, ...)`` batch hold finite values only: bool ``(B,)`` on the batch's device, no
    host sync (integer clips, such as uint8 ones, are finite by construction)."""
    if not pixel_values.is_floating_point():
        return torch.ones(pixel_values.shape[0], dtype=torch.bool, device=pixel_values.device)
    # x * 0 is 0 exactly when x is finite (inf * 0 and NaN * 0 are NaN): two passes over the video where
    # torch.isfinite makes four (abs, ne, eq, and).
    return pixel_values.mul(0).eq(0).flatten(1).all(1)


def check_finite_pixels(
    pixel_values: torch.Tensor, name: str = "pixel_values", finite: Sequence[bool] | None = None
) -> None:
    """Raise a ValueError naming the clips of a ``(B, T, C, H, W)`` batch that hold NaN or infinite values.

    Such a clip would go through silently wrong: a NaN difference compares as "no change", so RLT drops
    every tubelet after the first time step, and the logits come out NaN.

    Args:
        finite: the clips' ``finite_clips`` flags, already read on the host (a model reads them together
            with its token counts, in its one host sync). Computed here otherwise: free on the CPU (a
            collator, a processor), one host sync on an accelerator.
    """
    if finite is None:
        if not pixel_values.is_floating_point():
            return
        finite = finite_clips(pixel_values).tolist()
    bad = [index for index, ok in enumerate(finite) if not ok]
    if bad:
        clips = f"clip {bad[0]}" if len(bad) == 1 else "clips " + ", ".join(map(str, bad))
        raise ValueError(
            f"{name}: {clips} of this batch of {len(finite)} hold NaN or infinite values; check how the "
            "video was decoded and normalised (an image_std of 0, a division by zero, a bad file)"
        )


def run_length_tokenize(
    pixel_values: torch.Tensor,
    *,
    tubelet_size: int = 2,
    patch_size: int | Sequence[int] = 16,
    threshold: float = 0.1,
    input_scale: Sequence[float] | None = None,
    compare_to: str = "previous",
) -> RunLengthTokens:
    """Find the tubelets that repeat the one before them: ``(B, T, C, H, W) -> (B, T', H', W')``.

    A tubelet at time step ``k >= 1`` is dropped when the mean absolute difference between its last
    frame and the first frame of tubelet ``k - 1`` (over the ``p x p`` pixels and the channels) is at
    most ``threshold``; time step 0 is always kept.

    Args:
        pixel_values: float ``(B, T, C, H, W)``, normalised as the model expects.
        tubelet_size: frames per tubelet.
        patch_size: pixels per tubelet side (an int or ``(height, width)``).
        threshold: ``tau`` in the reference units (pixels in [0, 1], ImageNet std); 0 drops only exact repeats.
        input_scale: per channel, how much one grey level (of 0..255) moves ``pixel_values``
            (``rescale_factor / std_c`` of the processor). ``None`` means the reference scale.
        compare_to: ``"previous"`` compares with the tubelet just before (the published rule);
            ``"last_kept"`` compares with the tubelet the run actually reuses, so a slow drift
            (a pan, a fade) cannot accumulate unseen.
    """
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be a float tensor normalised for the model, got dtype {pixel_values.dtype}"
        )
    if compare_to not in COMPARE_TO_CHOICES:
        raise ValueError(f"compare_to must be one of {COMPARE_TO_CHOICES}, got {compare_to!r}")
    steps, grid_h, grid_w = tubelet_grid(pixel_values.shape, tubelet_size, patch_size)
    threshold = check_threshold(threshold)
    patch_h, patch_w = to_pair(patch_size)
    batch, _, channels, _, _ = pixel_values.shape
    weights = _channel_weights(input_scale, channels)

    first_frames = pixel_values[:, ::tubelet_size]  # (B, T', C, H, W)
    last_frames = pixel_values[:, tubelet_size - 1 :: tubelet_size]
    if steps == 1:
        keep = torch.ones(batch, 1, grid_h, grid_w, dtype=torch.bool, device=pixel_values.device)
    elif compare_to == "previous":
        difference = _mean_abs_difference(last_frames[:, 1:], first_frames[:, :-1], weights, patch_h, patch_w)
        keep = F.pad(difference > threshold, (0, 0, 0, 0, 1, 0), value=True)  # time step 0 is always kept
    else:
        keep = _keep_against_last_kept(first_frames, last_frames, weights, patch_h, patch_w, threshold)
    return RunLengthTokens(keep_mask=keep, lengths=run_lengths_from_keep_mask(keep))


def _keep_against_last_kept(first_frames, last_frames, weights, patch_h, patch_w, threshold):
    # Each step depends on what the previous one kept, so this walks the T' time steps (8 for a
    # 16-frame clip); everything within a step stays vectorised over clips and places.
    reference = first_frames[:, 0]
    batch, _, height, width = reference.shape
    keeps = [torch.ones(batch, height // patch_h, width // patch_w, dtype=torch.bool, device=reference.device)]
    for step in range(1, first_frames.shape[1]):
        keep = _mean_abs_difference(last_frames[:, step], reference, weights, patch_h, patch_w) > threshold
        keeps.append(keep)
        pixel_keep = keep.repeat_interleave(patch_h, 1).repeat_interleave(patch_w, 2).unsqueeze(1)
        reference = torch.where(pixel_keep, first_frames[:, step], reference)
    return torch.stack(keeps, dim=1)
