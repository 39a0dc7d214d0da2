"""A keep mask computed on the host (a data loader, `VideoCollator`) lets the forward skip its device sync.

The video sits on the ``meta`` device here, which holds no data: any read of a device value (the sync
a CUDA forward would make) raises, so passing these tests means the packing was laid out from host
values alone.
"""

import pytest
import torch
from conftest import TINY_VIDEOMAE

from rlt import RLTVideoMAEConfig
from rlt.models.modeling_rlt import choose_tokens
from rlt.models.packing import PackedSequence


def host_keep_mask(batch=3, grid=(4, 2, 2), seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(batch, *grid, generator=generator) > 0.5
    keep[:, 0] = True
    return keep


@pytest.mark.parametrize("buckets", [0, 4])
def test_host_keep_mask_packs_a_device_video_without_reading_the_device(buckets):
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_pack_buckets=buckets)
    video = torch.empty(3, 8, 3, 32, 32, device="meta")
    keep = host_keep_mask()
    tokens, packed = choose_tokens(config, video, keep)
    assert packed.lengths == keep.flatten(1).sum(1).tolist()
    assert tokens.keep_mask.device.type == "meta" and packed.cu_seqlens.device.type == "meta"
    assert packed.total >= sum(packed.lengths) and packed.bucketed == bool(buckets)


def test_device_keep_mask_is_read_for_its_counts():
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE)
    video = torch.empty(3, 8, 3, 32, 32, device="meta")
    with pytest.raises(NotImplementedError):  # meta holds no data: the one read is attempted
        choose_tokens(config, video, host_keep_mask().to("meta"))


def test_host_counts_give_the_same_packing_as_counting_on_the_device():
    keep = host_keep_mask(batch=4, seed=1).flatten(1)
    counts = keep.sum(1).tolist()
    for prefix in (0, 1):
        counted = PackedSequence.from_keep_mask(keep, prefix)
        given = PackedSequence.from_keep_mask(keep, prefix, counts=counts)
        assert given.lengths == counted.lengths
        for name in ("cu_seqlens", "token_index", "source_positions", "clip_ids", "positions"):
            assert torch.equal(getattr(given, name), getattr(counted, name)), name


def test_host_keep_mask_without_its_first_time_step_is_refused():
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE)
    keep = host_keep_mask()
    keep[1, 0, 0, 1] = False
    with pytest.raises(ValueError, match="first time step"):
        choose_tokens(config, torch.empty(3, 8, 3, 32, 32, device="meta"), keep)


def test_counts_for_another_batch_are_refused():
    keep = host_keep_mask().flatten(1)
    with pytest.raises(ValueError, match="counts has 2 entries for a keep mask of 3 clips"):
        PackedSequence.from_keep_mask(keep, counts=[1, 2])


def test_tokenizing_ahead_with_the_config_matches_the_model_and_rejects_bad_input():
    from rlt.models.modeling_rlt import run_length_tokenize_for

    config = RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)
    clips = torch.rand(3, 8, 3, 32, 32)
    clips[1, 3:] = clips[1, 2]
    ahead = run_length_tokenize_for(config, clips).keep_mask
    tokens, _ = choose_tokens(config, clips)
    assert torch.equal(ahead, tokens.keep_mask) and ahead[1].sum() < ahead[0].sum()
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        run_length_tokenize_for(config, clips, threshold=-0.1)
    with pytest.raises(ValueError, match="not a multiple of the tubelet size"):
        run_length_tokenize_for(config, clips[:, :7])
