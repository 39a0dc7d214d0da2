"""Property tests (hypothesis): the tokenizer's invariants and the packing's round trip hold for random
shapes, tubelet / patch sizes, thresholds, comparison rules, dtypes, prefix tokens and buckets.

Tensors stay tiny and the example budget small, so that the file runs in seconds on two cores.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlt.models.attention_kernels import packed_attention
from rlt.models.packing import PackedSequence
from rlt.models.tokenizer import COMPARE_TO_CHOICES, run_length_tokenize, run_lengths_from_keep_mask

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CPU_BACKENDS = ("padded", "eager", "per_clip", "dense", "flex")
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@st.composite
def videos(draw):
    """A ``(B, T, C, H, W)`` video with its tubelet and patch size; some tubelets repeat the one before
    (exactly, or within a small drift), so that every rule has something to drop."""
    tubelet = draw(st.integers(1, 3))
    patch_h, patch_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch, steps = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    grid_h, grid_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    channels = draw(st.sampled_from([1, 3]))
    dtype = draw(st.sampled_from(DTYPES))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (batch, steps * tubelet, channels, grid_h * patch_h, grid_w * patch_w)
    video = torch.rand(shape, generator=generator)
    for frame in range(1, shape[1]):  # a frame that holds, or drifts slightly from, the one before it
        hold = draw(st.sampled_from(["new", "repeat", "drift"]))
        if hold != "new":
            drift = 0.02 * torch.rand(shape[0], 1, 1, 1, generator=generator) if hold == "drift" else 0.0
            video[:, frame] = video[:, frame - 1] + drift
    return video.to(dtype), tubelet, (patch_h, patch_w)


@SETTINGS
@given(videos(), st.floats(0, 0.5), st.sampled_from(COMPARE_TO_CHOICES))
def test_tokenizer_invariants(video, threshold, compare_to):
    pixel_values, tubelet, patch = video
    tokens = run_length_tokenize(
        pixel_values, tubelet_size=tubelet, patch_size=patch, threshold=threshold, compare_to=compare_to
    )
    keep, lengths = tokens.keep_mask, tokens.lengths
    batch, frames, _, height, width = pixel_values.shape
    steps = frames // tubelet
    assert keep.shape == lengths.shape == (batch, steps, height // patch[0], width // patch[1])
    assert keep.dtype == torch.bool and lengths.dtype == torch.int64
    assert keep[:, 0].all()  # the first time step is always kept
    assert torch.equal(lengths == 0, ~keep)  # a length exactly where a tubelet is kept
    assert (lengths.sum(1) == steps).all()  # the runs at each cell cover the clip
    # Each kept tubelet stands for itself and the dropped ones up to the next kept one.
    for clip, step, row, col in keep.nonzero().tolist():
        after = keep[clip, step + 1 :, row, col]
        following = int(after.long().argmax()) + 1 if after.any() else steps - step
        assert lengths[clip, step, row, col] == following
    assert torch.equal(run_lengths_from_keep_mask(keep), lengths)
    # Tokenizing clip by clip gives the batch's answer (no clip sees another).
    for clip in range(batch):
        alone = run_length_tokenize(
            pixel_values[clip : clip + 1], tubelet_size=tubelet, patch_size=patch, threshold=threshold,
            compare_to=compare_to,
        )
        assert torch.equal(alone.keep_mask[0], keep[clip])


@SETTINGS
@given(videos(), st.floats(0, 0.3), st.floats(0, 0.3))
def test_a_higher_threshold_never_keeps_more_under_previous(video, low, extra):
    pixel_values, tubelet, patch = video
    keep_low, keep_high = (
        run_length_tokenize(pixel_values, tubelet_size=tubelet, patch_size=patch, threshold=tau).keep_mask
        for tau in (low, low + extra)
    )
    assert not (keep_high & ~keep_low).any()  # every tubelet kept at the higher tau is kept at the lower one


@st.composite
def packings(draw):
    """A keep mask ``(B, N)`` (the first token of each clip kept), prefix tokens, buckets and a dtype."""
    batch, tokens = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=tokens, max_size=tokens), min_size=batch, max_size=batch))
    keep = torch.tensor(rows, dtype=torch.bool)
    keep[:, 0] = True
    prefix = draw(st.integers(0, 1))
    buckets = draw(st.sampled_from([0, 0, 1, 3, 8]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return keep, prefix, buckets, dtype, draw(st.integers(0, 2**31 - 1))


@SETTINGS
@given(packings())
def test_packing_round_trips_for_every_cpu_backend(packing):
    keep, prefix, buckets, dtype, seed = packing
    batch, tokens = keep.shape
    heads, head_dim = 2, 4
    generator = torch.Generator().manual_seed(seed)
    # Unpacked per-clip tokens (prefix columns first), as an embedding would give them.
    q, k, v = (torch.randn(batch, prefix + tokens, heads, head_dim, generator=generator, dtype=dtype) for _ in "qkv")
    packed = PackedSequence.from_keep_mask(keep, prefix, buckets)
    full_keep = torch.cat([keep.new_ones(batch, prefix), keep], dim=1)
    counts = full_keep.sum(1).tolist()
    assert packed.lengths == counts and packed.cu_seqlens.tolist() == [0, *torch.tensor(counts).cumsum(0).tolist()]
    assert packed.total >= sum(counts) and packed.bucketed == bool(buckets)
    # Packing then splitting gives each clip's kept tokens, in order.
    packed_q, packed_k, packed_v = (packed.gather(t) for t in (q, k, v))
    for clip, part in enumerate(packed.split(packed_q)):
        assert torch.equal(part, q[clip][full_keep[clip]])
    # Each clip's attention over its own kept tokens, run alone.
    expected = []
    for clip in range(batch):
        qc, kc, vc = (t[clip][full_keep[clip]].transpose(0, 1) for t in (q, k, v))
        expected.append(F.scaled_dot_product_attention(qc, kc, vc, scale=head_dim**-0.5).transpose(0, 1))
    # The per-clip mean of the packed tokens is each clip's own mean.
    means = packed.mean(packed_v.flatten(1))
    for clip in range(batch):
        torch.testing.assert_close(means[clip], v[clip][full_keep[clip]].flatten(1).mean(0))
    for backend in CPU_BACKENDS:
        if backend == "dense" and not packed.is_uniform:
            with pytest.raises(ValueError, match="same number of tokens"):
                packed_attention(packed_q, packed_k, packed_v, packed, scaling=head_dim**-0.5, backend=backend)
            continue
        out = packed_attention(packed_q, packed_k, packed_v, packed, scaling=head_dim**-0.5, backend=backend)
        assert out.shape == packed_q.shape
        for clip, (got, want) in enumerate(zip(packed.split(out), expected)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=f"{backend}, clip {clip}")
