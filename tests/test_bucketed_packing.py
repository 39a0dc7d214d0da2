"""Bucketed packing (``rlt_pack_buckets``): static shapes for CUDA graphs, padding that no clip sees.

The model-level equivalence (bucketed == exact packing, logits and gradients, every architecture) is
in test_models_common.py; these check the packing itself.
"""

import pytest
import torch

from rlt import RLTVideoMAEConfig
from rlt.models.attention_kernels import packed_attention
from rlt.models.packing import PackedSequence, bucketed_length, padding_segments


def random_keep(batch, capacity, seed):
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(batch, capacity, generator=generator) < torch.rand(batch, 1, generator=generator)
    keep[:, 0] = True
    return keep


def test_bucketed_length_takes_only_the_bucket_sizes():
    assert [bucketed_length(total, 64, 8) for total in (1, 8, 9, 63, 64)] == [8, 8, 16, 64, 64]
    assert bucketed_length(10, 30, 4) == 16 and bucketed_length(25, 30, 4) == 30  # the last bucket is the full length
    assert bucketed_length(10, 30, 0) == 10
    with pytest.raises(ValueError, match="buckets must be >= 0"):
        bucketed_length(10, 30, -1)


@pytest.mark.parametrize("prefix", [0, 1])
def test_every_shape_is_a_bucket_size_and_segments_stay_within_capacity(prefix):
    batch, tubelets, buckets = 4, 23, 8
    capacity = tubelets + prefix
    sizes = {bucketed_length(n, batch * capacity, buckets) for n in range(1, batch * capacity + 1)}
    assert len(sizes) == buckets
    segments = padding_segments(batch * capacity, capacity, buckets)
    for seed in range(30):
        keep = random_keep(batch, tubelets, seed)
        packed = PackedSequence.from_keep_mask(keep, prefix, buckets=buckets)
        real = int(keep.sum()) + batch * prefix
        assert packed.total in sizes and packed.total >= real and packed.num_real_tokens == real
        for tensor in (packed.token_index, packed.source_positions, packed.clip_ids, packed.positions):
            assert tensor.shape == (packed.total,)
        assert packed.content_rows().shape == (packed.total - batch * prefix,)
        assert packed.segment_cu_seqlens.shape == (batch + 1 + segments,)
        assert torch.equal(packed.segment_cu_seqlens[: batch + 1], packed.cu_seqlens)
        assert packed.segment_cu_seqlens[-1] == packed.total
        assert (packed.segment_cu_seqlens.diff() <= capacity).all()
        # Padding rows belong to dummy segments (ids >= B), laid out as segment_cu_seqlens says.
        starts = packed.segment_cu_seqlens[:-1].long()[packed.clip_ids]
        assert torch.equal(packed.positions, torch.arange(packed.total) - starts)
        assert (packed.clip_ids[real:] >= batch).all() and (packed.clip_ids[:real] < batch).all()
        assert packed.is_uniform == packed.keeps_all


def test_pad_mean_and_first_tokens_ignore_the_padding():
    keep = random_keep(3, 10, seed=1)
    exact = PackedSequence.from_keep_mask(keep)
    bucketed = PackedSequence.from_keep_mask(keep, buckets=3)
    assert bucketed.total > exact.total
    values = torch.randn(exact.total, 5)
    padded_values = torch.cat([values, torch.full((bucketed.total - exact.total, 5), 1e6)])
    torch.testing.assert_close(bucketed.mean(padded_values), exact.mean(values))
    torch.testing.assert_close(bucketed.first_tokens(padded_values), exact.first_tokens(values))
    padded = bucketed.pad(padded_values)
    assert padded.shape == (3, 10, 5)  # a static pad length: the capacity
    torch.testing.assert_close(padded[:, : exact.max_seqlen], exact.pad(values))
    assert torch.equal(bucketed.padding_mask()[:, : exact.max_seqlen], exact.padding_mask())
    assert not bucketed.padding_mask()[:, exact.max_seqlen :].any()
    unpadded = bucketed.unpad(padded)
    torch.testing.assert_close(unpadded[: exact.total], values)
    assert (unpadded[exact.total :] == 0).all()
    assert [part.shape[0] for part in bucketed.split(padded_values)] == exact.lengths
    torch.testing.assert_close(bucketed.per_token(torch.arange(3.0))[: exact.total], torch.arange(3.0)[exact.clip_ids])


@pytest.mark.parametrize("backend", ["per_clip", "padded", "eager", "flex"])
def test_packed_attention_of_the_clips_ignores_the_padding(backend):
    keep = random_keep(3, 12, seed=2)
    exact = PackedSequence.from_keep_mask(keep)
    bucketed = PackedSequence.from_keep_mask(keep, buckets=4)
    q, k, v = (torch.randn(exact.total, 2, 8) for _ in range(3))
    expected = packed_attention(q, k, v, exact, scaling=0.3, backend="per_clip")
    pad = bucketed.total - exact.total
    q, k, v = (torch.cat([t, torch.randn(pad, 2, 8) * 100]) for t in (q, k, v))
    out = packed_attention(q, k, v, bucketed, scaling=0.3, backend=backend)
    assert out.shape == q.shape
    torch.testing.assert_close(out[: exact.total], expected, atol=1e-5, rtol=1e-5)


def test_pack_buckets_setting_is_validated():
    assert RLTVideoMAEConfig(rlt_pack_buckets=8).rlt_pack_buckets == 8
    for bad in (-1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="rlt_pack_buckets must be a whole number >= 0"):
            RLTVideoMAEConfig(rlt_pack_buckets=bad)


def test_a_clip_without_tokens_is_refused():
    keep = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="clip 1 keeps no token"):
        PackedSequence.from_keep_mask(keep)
    assert PackedSequence.from_keep_mask(keep, num_prefix_tokens=1).lengths == [2, 1]  # a CLS token is a token
