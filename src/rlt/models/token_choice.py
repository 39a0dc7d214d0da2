"""Which tokens a forward keeps: the input checks, run-length tokenization with a config's settings,
and the packing of the kept tokens with their proportional-attention bias.

Apart from ``modeling_rlt.py`` because choosing tokens is its own step: it holds no weights and imports
no transformers, it runs before a model's first layer, and the tools run it ahead of the model without
building one (a data loader's keep masks through ``run_length_tokenize_for``, the benchmark's timing of
``choose_tokens``). ``modeling_rlt.py`` re-exports every name. Single-dot relative imports only: this
file travels into checkpoint folders for ``trust_remote_code``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .packing import PackedSequence, to_device_without_waiting
from .tokenizer import (
    RunLengthTokens,
    check_finite_pixels,
    check_keep_mask,
    finite_clips,
    run_length_tokenize,
    run_lengths_from_keep_mask,
    to_pair,
    tubelet_grid,
)

__all__ = [
    "check_pixel_values",
    "choose_tokens",
    "packed_run_lengths",
    "run_length_tokenize_for",
    "with_proportional_attention",
]


def choose_tokens(
    config,
    pixel_values: torch.Tensor,
    keep_mask: torch.Tensor | None = None,
    tubelet_size: int | None = None,
    patch_size=None,
    num_prefix_tokens: int | None = None,
) -> tuple[RunLengthTokens, PackedSequence]:
    """Validate the input against the config, decide which tubelets to keep, and lay out the packing.

    ``keep_mask`` (bool ``(B, T', H', W')``), when given, was computed ahead (in a data loader) and is
    used as it is. The tubelet size, patch size and prefix tokens (ViViT's CLS token: 1, laid before
    each clip's tubelet tokens in the packing) are the config's ``rlt_*`` geometry unless given.

    This is the forward's one host sync (the tokens kept per clip size the packed tensors, and the
    clips' finite flags are read with them: a clip of NaN or infinite values is refused, by index),
    except for a ``keep_mask`` that arrives on the CPU with the video on an accelerator (as a data
    loader or `VideoCollator` gives it, having checked the pixels): its checks and counts are read on
    the host, the mask is copied over without waiting (through pinned memory of its own: later changes
    to the caller's tensor cannot reach it), and the forward does not sync at all.
    """
    check_pixel_values(config, pixel_values)
    name = config.rlt_input_name
    tubelet_size = config.rlt_tubelet_size if tubelet_size is None else tubelet_size
    patch_h, patch_w = config.rlt_patch_size if patch_size is None else to_pair(patch_size)
    num_prefix_tokens = config.rlt_num_prefix_tokens if num_prefix_tokens is None else num_prefix_tokens
    batch = pixel_values.shape[0]
    grid = tubelet_grid(pixel_values.shape, tubelet_size, (patch_h, patch_w))
    buckets = getattr(config, "rlt_pack_buckets", 0)
    if keep_mask is not None:
        check_keep_mask(keep_mask, grid)
        if keep_mask.shape[0] != batch:
            raise ValueError(f"keep_mask holds {keep_mask.shape[0]} clips, {name} {batch}")
        # One read for the checks and the counts: on the host it costs nothing, on the device it is the
        # forward's one sync. The pixels join it where they lie with the mask (a mask made on the host
        # while the video is on an accelerator came from a collator, which checked them).
        counts = keep_mask.flatten(1).sum(1)
        same_device = keep_mask.device == pixel_values.device
        flags = [counts, keep_mask[:, 0].flatten(1).all(1)] + ([finite_clips(pixel_values)] if same_device else [])
        host = torch.stack([flag.long() for flag in flags]).tolist()
        if not all(host[1]):
            raise ValueError("keep_mask must keep every tubelet of the first time step")
        if same_device:
            check_finite_pixels(pixel_values, name, finite=host[2])
        keep_mask = to_device_without_waiting(keep_mask, pixel_values.device)
        tokens = RunLengthTokens(keep_mask, run_lengths_from_keep_mask(keep_mask))
        packed = PackedSequence.from_keep_mask(
            keep_mask.flatten(1), num_prefix_tokens, buckets, host[0], device_counts=counts if same_device else None
        )
        return tokens, with_proportional_attention(config, tokens, packed)
    if not config.rlt_enabled:
        # The vanilla model's function and no host sync: the pixels are checked where that is free.
        if pixel_values.device.type == "cpu":
            check_finite_pixels(pixel_values, name)
        keep = torch.ones(batch, *grid, dtype=torch.bool, device=pixel_values.device)
        tokens = RunLengthTokens(keep, torch.ones(keep.shape, dtype=torch.long, device=keep.device))
        return tokens, PackedSequence.full(batch, keep[0].numel(), keep.device, num_prefix_tokens)
    tokens = run_length_tokenize_for(config, pixel_values, tubelet_size=tubelet_size, patch_size=(patch_h, patch_w))
    counts = tokens.counts
    host = torch.stack([counts, finite_clips(pixel_values).long()]).tolist()  # the forward's one host sync
    check_finite_pixels(pixel_values, name, finite=host[1])
    packed = PackedSequence.from_keep_mask(
        tokens.keep_mask.flatten(1), num_prefix_tokens, buckets, host[0], device_counts=counts
    )
    return tokens, with_proportional_attention(config, tokens, packed)


def with_proportional_attention(config, tokens: RunLengthTokens, packed: PackedSequence) -> PackedSequence:
    """``packed`` carrying the key bias of ``rlt_proportional_attention``: ``log`` of each token's run
    length (0 for prefix tokens), which every self-attention layer adds to its scores against that key,
    so that a token standing for ``L`` repeats weighs what the ``L`` copies did in the vanilla model.

    Computed here, once per forward, on the device (no sync); a packing that dropped nothing needs none.
    """
    if getattr(config, "rlt_proportional_attention", False) and not packed.keeps_all:
        packed.key_bias = packed_run_lengths(tokens, packed).float().log()
    return packed


def run_length_tokenize_for(
    config, pixel_values: torch.Tensor, *, threshold: float | None = None, tubelet_size=None, patch_size=None
) -> RunLengthTokens:
    """``run_length_tokenize`` with an RLT config's settings: its threshold (unless ``threshold``), tubelet
    geometry (unless given), input scale and comparison rule. What the model computes in its forward, for
    code that computes the keep mask ahead (a loader, an evaluation in reduced precision, a benchmark)."""
    return run_length_tokenize(
        pixel_values,
        tubelet_size=config.rlt_tubelet_size if tubelet_size is None else tubelet_size,
        patch_size=config.rlt_patch_size if patch_size is None else patch_size,
        threshold=config.rlt_threshold if threshold is None else threshold,
        input_scale=config.rlt_input_scale,
        compare_to=config.rlt_compare_to,
    )


def check_pixel_values(config, pixel_values) -> None:
    """Clear errors for input the model cannot take, before anything reaches torch's kernels."""
    name = config.rlt_input_name
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() != 5:
        raise ValueError(
            f"{name} must have shape (batch, frames, channels, height, width), "
            f"got {pixel_values.dim()} dimensions {tuple(pixel_values.shape)}"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {pixel_values.dtype}")
    batch, frames, channels, height, width = pixel_values.shape
    if batch == 0:  # transformers' own VideoMAE, ViViT and V-JEPA 2 fail deep in a reshape on one
        raise ValueError(f"{name} holds no clip (shape {tuple(pixel_values.shape)}): a batch needs at least one clip")
    num_channels, num_frames = config.rlt_num_channels, config.rlt_num_frames
    if channels != num_channels:
        hint = ""
        if frames == num_channels:
            hint = (
                " (it looks like (batch, channels, frames, height, width): permute to (batch, frames, channels, ...))"
            )
        elif width == num_channels:
            hint = " (it looks channels-last: permute to (batch, frames, channels, height, width))"
        raise ValueError(
            f"{name} {tuple(pixel_values.shape)} has {channels} channels at dimension 2, "
            f"the model expects {num_channels}{hint}"
        )
    image_h, image_w = config.rlt_image_size
    if config.rlt_fixed_num_frames:
        if (height, width) != (image_h, image_w) or frames != num_frames:
            raise ValueError(
                f"{name} have {frames} frames of {height}x{width}; this model takes {num_frames} frames "
                f"of {image_h}x{image_w} (its position embeddings are fixed to that grid)"
            )
        return
    # Positions computed from token ids (V-JEPA 2's RoPE) on a fixed spatial grid, any length of clip.
    if (height, width) != (image_h, image_w):
        raise ValueError(
            f"{name} frames are {height}x{width}; this model takes {image_h}x{image_w} (its positions are laid "
            "out on that grid): resize and crop with the checkpoint's processor"
        )
    tubelet_size = config.rlt_tubelet_size
    if frames % tubelet_size:
        raise ValueError(
            f"{name} has {frames} frames, not a multiple of the tubelet size {tubelet_size}: sample a multiple "
            f"of {tubelet_size} frames (any such number works; the checkpoint was trained on {num_frames})"
        )


def packed_run_lengths(tokens: RunLengthTokens, packed: PackedSequence) -> torch.Tensor:
    """Time steps each packed token stands for, ``(total,)``; 1 for prefix tokens (CLS)."""
    lengths = tokens.lengths.flatten(1)
    if packed.num_prefix_tokens:
        lengths = F.pad(lengths, (packed.num_prefix_tokens, 0), value=1)
    return packed.gather(lengths)
