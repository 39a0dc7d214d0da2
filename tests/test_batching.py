"""Token-budget batching: budgets respected, every clip once per epoch, usable with DataLoader and DDP sharding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import TINY_VIDEOMAE

from rlt import RLTVideoMAEConfig, run_length_tokenize
from rlt.batching import TokenBudgetBatchSampler, count_kept_tokens
from rlt.collator import ClipCollator


def rlt_like_counts(n: int = 500, seed: int = 0) -> np.ndarray:
    """Counts like RLT's on 16x224 clips: from one time step (196) to all 1568 tokens."""
    return np.random.default_rng(seed).integers(196, 1569, size=n)


@pytest.mark.parametrize("lookahead", [0, 64])
def test_batches_respect_the_budget_and_hold_every_clip_once(lookahead):
    counts = rlt_like_counts()
    budget = 8000
    sampler = TokenBudgetBatchSampler(counts, budget, seed=3, lookahead=lookahead)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        expected_length = len(sampler)
        batches = list(sampler)
        assert len(batches) == expected_length
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(counts)))  # every clip exactly once
        sums = [int(counts[batch].sum()) for batch in batches]
        assert max(sums) <= budget
        # Near the budget: every batch but the last is full up to less than one more clip.
        assert all(s > budget - counts.max() for s in sums[:-1])


def test_lookahead_packs_tighter_and_batches_stay_mixed():
    counts = rlt_like_counts(2000)
    budget = 8000
    plain = TokenBudgetBatchSampler(counts, budget, lookahead=0).plan(0)
    ahead = TokenBudgetBatchSampler(counts, budget, lookahead=64).plan(0)
    fill = lambda plan: np.mean([counts[b].sum() / budget for b in plan[:-1]])
    assert fill(ahead) > 0.97 > fill(plain) - 0.1
    assert fill(ahead) > fill(plain)
    assert len(ahead) < len(plain)
    # Lookahead only reaches a little ahead: batches are not sorted by size.
    means = [counts[b].mean() for b in ahead[:-1]]
    assert np.corrcoef(np.arange(len(means)), means)[0, 1] < 0.5


def test_epochs_reshuffle_deterministically_and_advance_without_set_epoch():
    counts = rlt_like_counts(200)
    a = TokenBudgetBatchSampler(counts, 4000, seed=1)
    b = TokenBudgetBatchSampler(counts, 4000, seed=1)
    first, second = list(a), list(a)  # no set_epoch: the epoch advances by itself
    assert first != second
    assert list(b) == first and list(b) == second  # same seed, same sequence (every DDP rank agrees)
    b.set_epoch(0)
    assert list(b) == first
    assert TokenBudgetBatchSampler(counts, 4000, seed=2).plan(0) != first
    ordered = TokenBudgetBatchSampler(counts, 4000, shuffle=False).plan(0)
    assert [i for batch in ordered for i in batch][:5] == [0, 1, 2, 3, 4] or ordered[0][0] == 0


def test_oversized_clips_get_their_own_batch_and_max_batch_size_caps(caplog):
    counts = np.array([100, 5000, 100, 100, 100, 100, 100])
    with caplog.at_level(logging.WARNING, logger="rlt.batching"):
        sampler = TokenBudgetBatchSampler(counts, 1000, shuffle=False, max_batch_size=3)
    assert "1 clips keep more than the 1000-token budget" in caplog.text
    batches = sampler.plan(0)
    assert [1] in batches
    assert all(len(batch) <= 3 for batch in batches)
    assert sorted(i for batch in batches for i in batch) == list(range(len(counts)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        TokenBudgetBatchSampler([10, 20], 0)
    with pytest.raises(ValueError, match="at least one token"):
        TokenBudgetBatchSampler([10, 0], 100)
    with pytest.raises(ValueError, match="non-empty"):
        TokenBudgetBatchSampler([], 100)


def test_dataloader_and_ddp_sharding_cover_every_clip():
    from accelerate.data_loader import BatchSamplerShard

    counts = rlt_like_counts(300)
    sampler = TokenBudgetBatchSampler(counts, 6000, seed=0)
    dataset = torch.utils.data.TensorDataset(torch.arange(len(counts)))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    seen = torch.cat([batch[0] for batch in loader])
    assert sorted(seen.tolist()) == list(range(len(counts)))
    # Two ranks, each with its own sampler built from the same seed, as under torchrun.
    shards = [
        list(BatchSamplerShard(TokenBudgetBatchSampler(counts, 6000, seed=0), num_processes=2, process_index=rank))
        for rank in range(2)
    ]
    assert len(shards[0]) == len(shards[1])  # the same number of steps on every rank (no DDP hang)
    covered = {i for shard in shards for batch in shard for i in batch}
    assert covered == set(range(len(counts)))
    assert all(sum(counts[b]) <= 6000 for shard in shards for b in shard)


def test_count_kept_tokens_matches_the_tokenizer_for_uint8_and_normalised_clips():
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (5, 8, 3, 32, 32), dtype=torch.uint8, generator=generator)
    clips[1, 2:] = clips[1, :1]  # a clip that repeats: fewer tokens
    clips[2, :, :, :16] = clips[2, :1, :, :16]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    normalised = (clips.float() / 255 - mean) / std
    expected = run_length_tokenize(normalised, threshold=0.1).counts.numpy()
    assert len(set(expected.tolist())) > 1
    dataset = [{"pixel_values": clip} for clip in clips]
    tau = ClipCollator(threshold=0.1)
    np.testing.assert_array_equal(count_kept_tokens(dataset, tau, batch_size=2), expected)
    floats = [{"pixel_values": clip} for clip in normalised]
    np.testing.assert_array_equal(count_kept_tokens(floats, tau, batch_size=3), expected)
    np.testing.assert_array_equal(count_kept_tokens(floats, tau, num_prefix_tokens=1), expected + 1)
    # From a model's config: its geometry and RLT settings, as the training script counts them.
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.1)
    np.testing.assert_array_equal(count_kept_tokens(dataset, ClipCollator.for_model(config)), expected)
