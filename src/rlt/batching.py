"""Batches by token budget: each step holds about the same number of kept tokens, not of clips.

With RLT a clip keeps anywhere from ``1 / T'`` of its tokens (a still scene) to all of them (a camera
pan), so a fixed number of clips per step gives steps of very different cost: memory must be sized
for the worst batch and the average step leaves the accelerator under-used. ``TokenBudgetBatchSampler``
(a ``DataLoader``'s ``batch_sampler``) fills each batch up to ``max_tokens`` from the per-clip counts
that ``count_kept_tokens`` computes once. Under DDP every rank builds the same batches from the same
seed and ``accelerator.prepare`` deals them out in turn, so the sampler needs no rank logic.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from .collator import ClipCollator

__all__ = [
    "TokenBudgetBatchSampler",
    "count_kept_tokens",
]

logger = logging.getLogger(__name__)


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """Batches of clip indices whose kept tokens add up to at most ``max_tokens``: clips in random order,
    looking ahead for one that still fits when the next does not. Every clip appears once per epoch; a
    clip larger than the budget gets a batch of its own.

    Args:
        token_counts: tokens each clip keeps (``len(dataset)`` numbers), e.g. from ``count_kept_tokens``.
        max_tokens: the budget per batch (sum of ``token_counts`` of its clips).
        shuffle: a new random order each epoch (seeded by ``seed`` and the epoch); else dataset order.
        seed: the shuffling seed; every process of a distributed run must use the same.
        lookahead: when the next clip does not fit, how many further clips to try before closing the
            batch (0: plain sequential filling).
        max_batch_size: also cap the clips per batch (per-clip costs: the head, the loss, memory).
        drop_last: drop the last batch of an epoch when it holds less than half the budget.

    The epoch is set by ``set_epoch`` (``Trainer`` and accelerate call it) or else advances by one
    on each iteration. ``len()`` is the number of batches of the current epoch's plan.
    """

    def __init__(
        self,
        token_counts: Sequence[int] | np.ndarray | torch.Tensor,
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        lookahead: int = 64,
        max_batch_size: int | None = None,
        drop_last: bool = False,
    ):
        counts = np.asarray(token_counts.cpu() if isinstance(token_counts, torch.Tensor) else token_counts)
        if counts.ndim != 1 or len(counts) == 0:
            raise ValueError(f"token_counts must be a non-empty list of numbers, got shape {counts.shape}")
        if (counts < 1).any():
            raise ValueError("every clip keeps at least one token; token_counts has values below 1")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        self.token_counts = counts.astype(np.int64)
        self.max_tokens = int(max_tokens)
        self.shuffle = shuffle
        self.seed = seed
        self.lookahead = lookahead
        self.max_batch_size = max_batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self._plans: dict[int, list[list[int]]] = {}
        oversized = int((self.token_counts > self.max_tokens).sum())
        if oversized:
            logger.warning(
                "%d clips keep more than the %d-token budget (up to %d): each gets a batch of its own",
                oversized, self.max_tokens, int(self.token_counts.max()),
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` (deterministic for the seed and epoch)."""
        if epoch not in self._plans:
            self._plans = {epoch: self._make_plan(epoch)}  # keep only the latest
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> list[list[int]]:
        counts, budget = self.token_counts, self.max_tokens
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(counts))
        else:
            order = np.arange(len(counts))
        remaining = deque(order.tolist())
        smallest = int(counts.min())
        batches = []
        while remaining:
            batch, total, skipped = [], 0, []
            while remaining and len(skipped) <= self.lookahead:
                index = remaining.popleft()
                if not batch or total + counts[index] <= budget:
                    batch.append(index)
                    total += int(counts[index])
                    if budget - total < smallest or (self.max_batch_size and len(batch) >= self.max_batch_size):
                        break
                else:
                    skipped.append(index)
            remaining.extendleft(reversed(skipped))  # back to the front, in their order
            batches.append(batch)
        if self.drop_last and len(batches) > 1 and counts[batches[-1]].sum() < budget / 2:
            batches.pop()
        return batches

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1  # advance when nobody calls set_epoch
        yield from self.plan(epoch)

    def __len__(self) -> int:
        return len(self.plan(self.epoch))


def count_kept_tokens(
    dataset,
    collator: ClipCollator,
    *,
    num_prefix_tokens: int = 0,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Tokens each clip of ``dataset`` keeps under RLT, int64 ``(len(dataset),)``, in dataset order.

    ``collator`` makes the keep masks: ``ClipCollator.for_model(config, input_scale=...)`` chooses tokens as
    the model does (``ClipCollator(threshold=...)`` for the default geometry). ``dataset`` items hold
    ``pixel_values`` ``(T, C, H, W)``: uint8 frames (0..255), or floats normalised by a processor (the
    collator's ``input_scale`` says how). A dataset with a ``clips`` tensor
    (``rlt.synthetic.SyntheticVideoDataset``) is read directly. ``num_prefix_tokens`` (ViViT's CLS: 1) is
    added to every count, as the models count it.
    """
    device = torch.device(device or "cpu")

    def count(pixel_values: torch.Tensor) -> torch.Tensor:
        return collator.keep_mask(pixel_values.to(device)).flatten(1).sum(1).cpu() + num_prefix_tokens

    clips = getattr(dataset, "clips", None)
    if isinstance(clips, torch.Tensor):
        return torch.cat([count(clips[i : i + batch_size]) for i in range(0, len(clips), batch_size)]).numpy()
    # The clips alone are stacked in the workers; their keep masks are computed on ``device``.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_stack_pixel_values
    )
    return torch.cat([count(batch) for batch in loader]).numpy()


def _stack_pixel_values(items: list[dict]) -> torch.Tensor:
    batch = ClipCollator().collate(items)
    if batch.failed:  # dropping them would shift every later count onto another clip
        raise ValueError(f"cannot count the tokens of unreadable clips: {[entry['path'] for entry in batch.failed]}")
    return batch.pixel_values
