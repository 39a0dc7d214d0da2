"""GPU-only checks of the packed attention kernels (skipped where there is no CUDA device)."""

import pytest
import torch
from conftest import TINY_VIDEOMAE, noise_clips

from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification
from rlt.models.packing import PackedSequence, packed_attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def packed_inputs(lengths, heads=4, head_dim=64, capacity=200, dtype=torch.bfloat16):
    keep = torch.zeros(len(lengths), capacity, dtype=torch.bool, device="cuda")
    for row, length in enumerate(lengths):
        keep[row, torch.randperm(capacity, device="cuda")[:length]] = True
    packed = PackedSequence.from_keep_mask(keep)
    q, k, v = (torch.randn(sum(lengths), heads, head_dim, device="cuda", dtype=dtype) for _ in range(3))
    return q, k, v, packed


@pytest.mark.parametrize("backend", ["varlen", "padded", "flex"])
def test_cuda_backends_match_per_clip_reference(backend):
    q, k, v, packed = packed_inputs([200, 37, 150, 1])
    reference = packed_attention(q.float(), k.float(), v.float(), packed, scaling=0.125, backend="per_clip")
    out = packed_attention(q, k, v, packed, scaling=0.125, backend=backend)
    error = (out.float() - reference).norm() / reference.norm()
    assert error < 1e-2, f"{backend}: relative error {error:.2e}"


def test_varlen_backward_matches_padded():
    q, k, v, packed = packed_inputs([120, 64, 200])
    grads = {}
    for backend in ("varlen", "padded"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        packed_attention(*leaves, packed, scaling=0.125, backend=backend).float().square().sum().backward()
        grads[backend] = [leaf.grad.float() for leaf in leaves]
    for got, expected in zip(grads["varlen"], grads["padded"]):
        assert (got - expected).norm() / expected.norm() < 2e-2


def test_model_auto_backend_in_bf16_matches_fp32():
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)
    model = RLTVideoMAEForVideoClassification(config).cuda().eval()
    clips = noise_clips(3).cuda()
    clips[1, 3:] = clips[1, 2]  # time steps 2 and 3 repeat step 1
    with torch.no_grad():
        expected = model(clips).logits
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = model(clips)
    assert output.tokens_kept.tolist() == [16, 8, 16]
    assert (output.logits.float() - expected).norm() / expected.norm() < 2e-2


def test_compiled_model_does_not_recompile_per_batch():
    import torch._dynamo

    torch._dynamo.reset()
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)
    model = RLTVideoMAEForVideoClassification(config).cuda().eval()
    compiled = torch.compile(model)
    frames_compiled = []
    for step in range(6):
        clips = noise_clips(4, seed=step).cuda()
        clips[step % 4, 2 + step % 3 :] = clips[step % 4, :1]  # a different kept count every batch
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            compiled(clips)
        frames_compiled.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    # After the second batch (where the packed length becomes dynamic) nothing new compiles.
    assert frames_compiled[-1] == frames_compiled[2], frames_compiled


@pytest.mark.parametrize("lengths", [[200, 37, 150, 1], [200, 200, 200, 40], [100, 100, 100, 100]])
def test_bucketed_varlen_matches_exact_packing_with_empty_padding_segments(lengths):
    """Bucketed packing on the varlen kernel: the clips' rows equal exact packing's, forward and backward,
    also when the padding is empty (the last case lands on a bucket: zero-length dummy segments)."""
    capacity = 200
    keep = torch.zeros(len(lengths), capacity, dtype=torch.bool, device="cuda")
    for row, length in enumerate(lengths):
        keep[row, :length] = True
    exact, bucketed = PackedSequence.from_keep_mask(keep), PackedSequence.from_keep_mask(keep, buckets=8)
    real = exact.total
    q, k, v = (torch.randn(bucketed.total, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = packed_attention(*leaves, bucketed, scaling=0.125, backend="varlen")
    out[:real].float().square().sum().backward()
    exact_leaves = [t[:real].clone().requires_grad_() for t in (q, k, v)]
    reference = packed_attention(*exact_leaves, exact, scaling=0.125, backend="varlen")
    reference.float().square().sum().backward()
    torch.testing.assert_close(out[:real], reference, atol=2e-2, rtol=2e-2)
    assert not out.isnan().any()
    for leaf, exact_leaf in zip(leaves, exact_leaves):
        assert not leaf.grad.isnan().any()
        torch.testing.assert_close(leaf.grad[:real], exact_leaf.grad, atol=2e-2, rtol=2e-2)


def test_cuda_graphs_over_bucketed_packing_give_the_exact_logits():
    """torch.compile(mode="reduce-overhead") over bucketed packing replays CUDA graphs with the logits of
    exact packing, over batches with different kept counts."""
    import torch._dynamo

    model = RLTVideoMAEForVideoClassification(RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)).cuda().eval()
    batches = []
    for seed, steps_kept in enumerate([(4, 1, 2, 3), (3, 3, 2, 2), (2, 3, 4, 1)]):
        clips = noise_clips(4, seed=seed)
        for clip, kept in zip(clips, steps_kept):
            clip[2 * kept - 2 :] = clip[2 * kept - 2].clone()
        batches.append(clips.cuda().to(torch.bfloat16))
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        expected = [model(c).logits.float() for c in batches]
        model.config.rlt_pack_buckets = 4
        torch._dynamo.reset()
        compiled = torch.compile(model, mode="reduce-overhead")
        for _ in range(2):  # record, then replay
            for clips, reference in zip(batches, expected):
                torch.testing.assert_close(compiled(clips).logits.float().clone(), reference, atol=3e-2, rtol=3e-2)
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])  # varlen and padded attention
def test_host_keep_mask_forward_makes_no_device_sync(dtype):
    """A keep mask computed on the host (a loader's) spares the forward its one device sync: torch's sync
    debug mode raises on any sync, and the logits equal those of the model choosing its own tokens."""
    from rlt import run_length_tokenize

    model = RLTVideoMAEForVideoClassification(RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0))
    model = model.cuda().to(dtype).eval()
    clips = noise_clips(3)
    clips[1, 3:] = clips[1, 2]  # time steps 2 and 3 repeat step 1
    keep = run_length_tokenize(clips, threshold=0.0).keep_mask  # on the host
    video = clips.cuda().to(dtype)
    with torch.no_grad():
        expected = model(video)
        model(video, keep_mask=keep)  # warm-up: kernels loaded, pinned staging block cached
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            output = model(video, keep_mask=keep)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert output.tokens_kept.tolist() == expected.tokens_kept.tolist() == [16, 8, 16]
    torch.testing.assert_close(output.logits, expected.logits)
