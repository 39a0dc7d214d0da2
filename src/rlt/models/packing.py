"""Packed variable-length batches: where each clip's kept tokens lie in one sequence.

After run-length tokenization clips keep different numbers of tokens. Their tokens are laid end to
end in one sequence of ``total`` tokens (``cu_seqlens`` marks where each clip starts) and attention
is block-diagonal: a clip never sees another clip, and no compute is spent on padding. Shared by
every architecture; no Hugging Face imports, so this file can travel into a checkpoint folder.

The attention kernels over this layout (the backends, proportional attention, the pooler's
cross-attention) are in ``attention_kernels.py``; their names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .attention_kernels import (  # re-exported: their old import path
    ATTENTION_BACKENDS,
    check_backend,
    fold_key_bias,
    key_score_mask,  # noqa: F401 - public, never in __all__
    packed_attention,
    packed_cross_attention,
    resolve_backend,
    varlen_available,
)

__all__ = [
    "ATTENTION_BACKENDS",
    "PackedSequence",
    "bucketed_length",
    "check_backend",
    "fold_key_bias",
    "packed_attention",
    "packed_cross_attention",
    "resolve_backend",
    "to_device_without_waiting",
    "varlen_available",
]


@torch.compiler.disable  # host-side staging: run as written, also inside a compiled model
def to_device_without_waiting(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``host`` copied to ``device`` without the host waiting for the device (a blocking copy to a GPU
    syncs the stream). On CUDA the copy is staged through pinned memory owned here, so a caller that
    reuses its own (pinned) buffer after the forward returns cannot change what the device reads."""
    if host.device.type != "cpu" or device.type != "cuda":
        return host.to(device)
    staged = torch.empty_like(host, pin_memory=True).copy_(host)
    return staged.to(device, non_blocking=True)


def bucketed_length(total: int, full: int, buckets: int) -> int:
    """``total`` rounded up to the next of ``buckets`` static lengths: multiples of ``ceil(full / buckets)``,
    the last one ``full`` itself. ``buckets = 0`` leaves ``total`` as it is.

    ``full`` is the batch's token count with nothing dropped (``B * capacity``): with 8 buckets a
    packed batch pads by less than an eighth of it and only ever takes 8 shapes (per batch size).
    """
    if buckets < 0:
        raise ValueError(f"buckets must be >= 0 (0 = no bucketing), got {buckets}")
    if not buckets or total >= full:
        return total
    step = -(-full // buckets)
    return min(-(-total // step) * step, full)


def padding_segments(full: int, capacity: int, buckets: int) -> int:
    """How many dummy segments hold a bucketed packing's padding: each at most ``capacity`` tokens (so
    the kernels' static max length ``capacity`` holds for them too), enough for the largest padding."""
    step = -(-full // buckets)
    return max(1, -(-(step - 1) // capacity))


@dataclass
class PackedSequence:
    """Where each clip's tokens lie in a packed sequence.

    Attributes:
        cu_seqlens: int32 ``(B + 1,)`` on the tokens' device; clip ``i`` is ``[cu_seqlens[i], cu_seqlens[i+1])``.
        lengths: tokens per clip, on the host (read once per forward: the only host sync).
        token_index: int64 ``(total,)``, each packed token's flat index into the unpacked ``(B * N)`` tokens.
        source_positions: int64 ``(total,)``, each token's index in its clip before packing (``0 <= i < N``).
        clip_ids: int64 ``(total,)``, the clip each token belongs to (``>= B`` for padding tokens).
        positions: int64 ``(total,)``, each token's index within its clip (or its padding segment).
        num_prefix_tokens: tokens every clip has before its tubelet tokens (ViViT's CLS token: 1), always kept.
        capacity: tokens a clip has before dropping (prefix included): a static bound on every clip's length.
        is_uniform: every clip has the same number of tokens and there is no padding, so the batch is a
            plain ``(B, N)`` tensor.
        keeps_all: no token was dropped.
        segment_cu_seqlens: int32 ``(B + 1 + D,)``, what the variable-length kernels get: ``cu_seqlens``
            followed, when bucketed, by ``D`` dummy segments that hold the padding (some may be empty).
            The same tensor as ``cu_seqlens`` when not bucketed.
        key_bias: float32 ``(total,)`` or None: added to every attention score against each key, in every
            self-attention over this packing (proportional attention: ``log`` of the key's run length,
            0 for prefix tokens; a bucketed packing's padding rows take any value: no clip attends to
            them). Set once per forward (``choose_tokens``); every layer reads it.
        bucketed: the packed length was rounded up to a bucket (``from_keep_mask(..., buckets=k)``):
            ``total`` is the bucket size, the last ``total - cu_seqlens[-1]`` rows are padding tokens
            (copies of a real token, in dummy segments no clip attends to), and every per-token tensor
            has a size from a fixed set: dynamo makes that size symbolic after the second one (one
            graph), and CUDA graphs are recorded once per size.
        device_lengths: int64 ``(B,)`` on the tokens' device, ``lengths`` as a tensor (prefix tokens
            included): what a model reports as the tokens each clip kept, without another reduction.

    Code that runs per layer reads only tensors and the static fields (``capacity``, the flags,
    ``batch_size``), never ``lengths``: under ``torch.compile`` the packed length is then a dynamic
    dimension (bucketed: one of a few sizes) and a new batch does not recompile.
    """

    cu_seqlens: torch.Tensor
    lengths: list[int]
    token_index: torch.Tensor
    source_positions: torch.Tensor
    clip_ids: torch.Tensor
    positions: torch.Tensor
    num_prefix_tokens: int = 0
    capacity: int = 0
    is_uniform: bool = False
    keeps_all: bool = False
    segment_cu_seqlens: torch.Tensor | None = None
    bucketed: bool = False
    key_bias: torch.Tensor | None = None
    device_lengths: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.segment_cu_seqlens is None:
            self.segment_cu_seqlens = self.cu_seqlens

    @classmethod
    @torch.compiler.disable
    def from_keep_mask(
        cls,
        keep: torch.Tensor,
        num_prefix_tokens: int = 0,
        buckets: int = 0,
        counts: Sequence[int] | None = None,
        device_counts: torch.Tensor | None = None,
    ) -> PackedSequence:
        """From a bool ``(B, N)`` mask of the tokens each clip keeps (in order). One host sync, none
        with ``counts``: the ``True`` entries of each row of ``keep``, already known on the host (e.g.
        from a keep mask computed in a data loader, or read together with other per-clip values),
        trusted as given. ``device_counts``: the same counts, int64 ``(B,)`` on ``keep``'s device, where
        the caller has them (saves copying ``counts`` back to the device).

        With ``num_prefix_tokens`` (e.g. 1 for a CLS token), every clip is laid out as its prefix tokens
        followed by its kept tokens: the packing is over ``(B, num_prefix_tokens + N)`` with the prefix
        columns always kept, so ``source_positions`` index a table that has the prefix rows first.

        With ``buckets = k > 0`` the packed length is rounded up with ``bucketed_length`` (at most ``k``
        sizes per batch size) and the padding rows go into ``padding_segments`` dummy segments of at
        most ``capacity`` tokens each; their outputs are never pooled (see ``bucketed``).
        """
        if keep.dim() != 2 or keep.dtype != torch.bool:
            raise ValueError(f"keep must be a bool (batch, tokens) tensor, got {keep.dtype} {tuple(keep.shape)}")
        if counts is not None and len(counts) != keep.shape[0]:
            raise ValueError(f"counts has {len(counts)} entries for a keep mask of {keep.shape[0]} clips")
        if num_prefix_tokens:
            keep = torch.cat([keep.new_ones(keep.shape[0], num_prefix_tokens), keep], dim=1)
        if counts is None:
            counts = keep.sum(1)
            lengths = [int(n) for n in counts.tolist()]
        else:
            lengths = [int(n) + num_prefix_tokens for n in counts]
            if device_counts is None:
                counts = to_device_without_waiting(torch.tensor(lengths), keep.device)
            else:
                counts = device_counts + num_prefix_tokens if num_prefix_tokens else device_counts
        if 0 in lengths:  # a clip without tokens has no mean and no first token
            raise ValueError(f"clip {lengths.index(0)} keeps no token; every clip needs at least one")
        (batch, capacity), total = keep.shape, sum(lengths)
        keeps_all = total == keep.numel()
        size = bucketed_length(total, keep.numel(), buckets)
        if keeps_all:
            token_index = torch.arange(total, device=keep.device)
        else:
            # The total is known on the host, so the gather needs no second sync; padding rows point at token 0.
            token_index = torch.nonzero_static(keep.flatten(), size=size, fill_value=0).squeeze(-1)
        starts = F.pad(counts.cumsum(0), (1, 0))  # int64: indexes without a cast back from cu_seqlens' int32
        cu_seqlens = starts.to(torch.int32)
        clip_ids = token_index // capacity
        row = torch.arange(size, device=keep.device)
        positions = row - starts[clip_ids]
        segment_cu_seqlens = cu_seqlens
        if buckets:
            segments = padding_segments(keep.numel(), capacity, buckets)
            padding = size - total
            ends = (torch.arange(1, segments + 1, device=keep.device) * capacity).clamp(max=padding) + total
            segment_cu_seqlens = torch.cat([cu_seqlens, ends.to(torch.int32)])
            if padding:
                beyond = row - total  # >= 0 on padding rows: their place in the padding
                is_padding = beyond >= 0
                clip_ids = torch.where(is_padding, batch + beyond.div(capacity, rounding_mode="floor"), clip_ids)
                positions = torch.where(is_padding, beyond.remainder(capacity), positions)
        packed = cls(
            cu_seqlens,
            lengths,
            token_index,
            token_index % capacity,
            clip_ids,
            positions,
            num_prefix_tokens=num_prefix_tokens,
            capacity=capacity,
            is_uniform=keeps_all if buckets else len(set(lengths)) == 1,
            keeps_all=keeps_all,
            segment_cu_seqlens=segment_cu_seqlens,
            bucketed=bool(buckets),
            device_lengths=counts,
        )
        if not keeps_all and not buckets:
            for tensor in (token_index, packed.source_positions, clip_ids, positions):
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return packed

    @classmethod
    def full(cls, batch: int, tokens_per_clip: int, device, num_prefix_tokens: int = 0) -> PackedSequence:
        """Every clip keeps all its ``num_prefix_tokens + tokens_per_clip`` tokens; no host sync."""
        capacity = num_prefix_tokens + tokens_per_clip
        token_index = torch.arange(batch * capacity, device=device)
        clip_ids, positions = token_index // capacity, token_index % capacity
        cu_seqlens = torch.arange(0, batch * capacity + 1, capacity, device=device, dtype=torch.int32)
        return cls(
            cu_seqlens,
            [capacity] * batch,
            token_index,
            positions,
            clip_ids,
            positions,
            num_prefix_tokens=num_prefix_tokens,
            capacity=capacity,
            is_uniform=True,
            keeps_all=True,
            device_lengths=torch.full((batch,), capacity, device=device),
        )

    @property
    def batch_size(self) -> int:
        return self.cu_seqlens.shape[0] - 1

    @property
    def total(self) -> int:
        return self.token_index.shape[0]

    @property
    def max_seqlen(self) -> int:
        return max(self.lengths)

    @property
    def num_padding_segments(self) -> int:
        """Dummy segments after the clips (0 when not bucketed)."""
        return self.segment_cu_seqlens.shape[0] - self.cu_seqlens.shape[0]

    @property
    def pad_length(self) -> int:
        """Rows per clip of ``pad``: the longest clip, or ``capacity`` when bucketed (a static size)."""
        return self.capacity if self.bucketed else self.max_seqlen

    @property
    def num_real_tokens(self) -> int:
        """Tokens of the clips, padding excluded (a host value: not for code under torch.compile)."""
        return sum(self.lengths)

    def gather(self, unpacked: torch.Tensor) -> torch.Tensor:
        """Kept rows of ``(B, N, ...)`` -> packed ``(total, ...)``."""
        flat = unpacked.flatten(0, 1)
        if self.keeps_all:
            return flat
        return flat.index_select(0, self.token_index)

    @torch.compiler.disable
    def drop_padding(self, packed: torch.Tensor) -> torch.Tensor:
        """``(total, ...)`` without a bucketed packing's padding rows; as it is otherwise.

        Reads ``lengths`` on the host, so it runs outside a compiled graph: a compiled base model
        would otherwise guard on every clip's length and recompile for each batch."""
        if not self.bucketed:
            return packed
        return packed[: self.num_real_tokens]

    def per_token(self, per_clip: torch.Tensor) -> torch.Tensor:
        """Each token's row of a per-clip ``(B, ...)`` tensor -> ``(total, ...)``; padding tokens get zeros."""
        if not self.bucketed:
            return per_clip[self.clip_ids]
        rows = (self.num_padding_segments, *per_clip.shape[1:])
        return torch.cat([per_clip, per_clip.new_zeros(rows)])[self.clip_ids]

    def cached(self, name: Hashable, build: Callable[[], Any]) -> Any:
        """``build()``, computed once per packing and kept with it (masks and index tensors the layers share)."""
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    def content_rows(self) -> torch.Tensor:
        """Rows of the packed tokens that are not prefix tokens, int64 ``(total - B * num_prefix_tokens,)``.

        A bucketed packing's padding rows count as content rows (so that the size is static)."""
        if "content_rows" not in self._cache:
            size = self.total - self.batch_size * self.num_prefix_tokens
            is_content = (self.positions >= self.num_prefix_tokens) | (self.clip_ids >= self.batch_size)
            self._cache["content_rows"] = torch.nonzero_static(is_content, size=size).squeeze(-1)
        return self._cache["content_rows"]

    def tubelet_coordinates(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
        """``(clip, t, h, w)`` of the tubelet each content row holds (``content_rows`` order), int64 each.

        ``grid`` is the clip's ``(T', H', W')``; padding rows point at clip 0's first tubelet. Computed
        once per packing: the embedding gathers the kept tubelets straight out of the video with them.
        """

        def build():
            rows = self.content_rows() if self.num_prefix_tokens else None
            clips = self.clip_ids if rows is None else self.clip_ids[rows]
            tubelets = self.source_positions if rows is None else self.source_positions[rows] - self.num_prefix_tokens
            if self.bucketed:
                real = clips < self.batch_size
                clips, tubelets = clips * real, tubelets * real
            _, grid_h, grid_w = grid
            frame, cell = tubelets.div(grid_h * grid_w, rounding_mode="floor"), tubelets.remainder(grid_h * grid_w)
            return clips, frame, cell.div(grid_w, rounding_mode="floor"), cell.remainder(grid_w)

        return self.cached(("tubelet_coordinates", tuple(grid)), build)

    def _padded_rows(self) -> int:
        return self.batch_size + self.num_padding_segments

    def pad(self, packed: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """``(total, ...) -> (B, pad_length, ...)``, padding with ``value``; a bucketed packing's padding
        tokens are left out (they fill rows past ``B`` that are dropped)."""
        out = packed.new_full((self._padded_rows(), self.pad_length, *packed.shape[1:]), value)
        out[self.clip_ids, self.positions] = packed
        return out[: self.batch_size]

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """``(B, pad_length, ...) -> (total, ...)``; a bucketed packing's padding tokens get zeros."""
        if self.bucketed:
            padded = torch.cat([padded, padded.new_zeros(self.num_padding_segments, *padded.shape[1:])])
        return padded[self.clip_ids, self.positions]

    def padding_mask(self) -> torch.Tensor:
        """bool ``(B, pad_length)``, True at real tokens."""
        if "padding_mask" not in self._cache:
            device = self.clip_ids.device
            mask = torch.zeros(self._padded_rows(), self.pad_length, dtype=torch.bool, device=device)
            # A tensor value, not the Python scalar True: that one is copied to the device synchronously.
            mask[self.clip_ids, self.positions] = mask.new_ones(())
            self._cache["padding_mask"] = mask[: self.batch_size]
        return self._cache["padding_mask"]

    def split(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """One tensor per clip (a bucketed packing's padding rows left out)."""
        return list(self.drop_padding(packed).split(self.lengths))

    def first_tokens(self, packed: torch.Tensor) -> torch.Tensor:
        """The first token of every clip: ``(total, D) -> (B, D)``."""
        return packed[self.cu_seqlens[:-1].long()]

    def mean(self, packed: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-clip mean of ``(total, D)`` -> ``(B, D)``; ``weights`` ``(total,)`` makes it a weighted mean."""
        # A (B, total) matrix of per-clip weights times the tokens: one matmul forward and backward,
        # where a scatter-add would serialise on B rows of atomics.
        clips = torch.arange(self.batch_size, device=packed.device).unsqueeze(1)
        same_clip = self.clip_ids.unsqueeze(0) == clips
        if weights is None:  # the 0/1 matrix itself, cast once (its row sums accumulate in float32 all the same)
            matrix = same_clip.to(packed.dtype)
            return (matrix @ packed) / matrix.sum(1, keepdim=True)
        matrix = torch.where(same_clip, weights.float().unsqueeze(0), 0.0)
        # Integer weights (counts, run lengths) are exact even in bf16; divide by the totals after.
        sums = matrix.to(packed.dtype) @ packed
        return sums / matrix.sum(1, keepdim=True).to(packed.dtype)
