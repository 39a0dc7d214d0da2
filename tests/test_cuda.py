"""GPU-only checks of the packed attention kernels (skipped where there is no CUDA device)."""

import pytest
import torch
from conftest import TINY_VIDEOMAE, noise_clips

from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification
from rlt.models.attention_kernels import packed_attention
from rlt.models.packing import PackedSequence

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


@pytest.mark.parametrize("backend", ["varlen", "flash_attn", "flex", "padded"])
def test_key_bias_on_cuda_kernels_matches_the_float32_reference(backend):
    """Proportional attention's key bias (folded into one more head block for varlen / flash_attn,
    flex's score_mod, padded's additive mask) gives the float32 per_clip result, forward and backward."""
    if backend == "flash_attn":
        pytest.importorskip("flash_attn")
    q, k, v, packed = packed_inputs([200, 37, 150, 1])
    packed.key_bias = torch.randint(1, 9, (packed.total,), device="cuda").float().log()
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    reference = packed_attention(*leaves, packed, scaling=0.125, backend="per_clip")
    reference.square().sum().backward()
    plain = packed_attention(q, k, v, PackedSequence.from_keep_mask(packed.padding_mask()), scaling=0.125)
    assert (plain.float() - reference).norm() / reference.norm() > 5e-2  # the bias matters at these sizes
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = packed_attention(*inputs, packed, scaling=0.125, backend=backend)
    out.float().square().sum().backward()
    assert out.shape == q.shape
    assert (out.float() - reference).norm() / reference.norm() < 1e-2, backend
    for got, leaf in zip(inputs, leaves):
        assert (got.grad.float() - leaf.grad).norm() / leaf.grad.norm() < 3e-2, backend


# ---- CUDA graphs through torch.compile(mode="reduce-overhead") and RLTTrainer (issue 21) -------------------


def _clips_keeping(steps_kept, seed):
    """Noise clips of which clip i keeps its first ``steps_kept[i]`` time steps (4 tokens each) at tau 0."""
    clips = noise_clips(len(steps_kept), seed=seed)
    for clip, kept in zip(clips, steps_kept):
        clip[2 * kept - 2 :] = clip[2 * kept - 2].clone()
    return clips


def _graph_config(**overrides):
    return RLTVideoMAEConfig(
        **TINY_VIDEOMAE, rlt_threshold=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        problem_type="single_label_classification", **overrides,
    )  # fmt: skip


def test_cuda_graph_training_steps_in_one_bucket_give_the_eager_gradients():
    """Two steps whose batches keep different token counts that round up to the same bucket replay one
    graph; each step's gradients equal those of eager exact packing (bf16 autocast, the Trainer's setting)."""
    import torch._dynamo

    from rlt.models.packing import bucketed_length

    steps = [(4, 1, 2, 3), (3, 3, 2, 3)]  # 40 and 44 of 64 tokens: both in the 48-token bucket of 4
    assert bucketed_length(40, 64, 4) == bucketed_length(44, 64, 4) == 48
    batches = [(_clips_keeping(kept, seed).cuda(), torch.tensor([0, 1, 2, 3], device="cuda")) for seed, kept in
               enumerate(steps)]  # fmt: skip
    torch.manual_seed(0)
    model = RLTVideoMAEForVideoClassification(_graph_config()).cuda().train()

    def step(forward, clips, labels):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs = forward(clips, labels=labels)
        loss = outputs.loss.clone()
        loss.backward()
        return loss.detach(), outputs.tokens_kept.clone(), {n: p.grad.clone() for n, p in model.named_parameters()}

    expected = [step(model, *batch) for batch in batches]
    assert [kept.sum().item() for _, kept, _ in expected] == [40, 44]
    model.config.rlt_pack_buckets = 4
    torch._dynamo.reset()
    compiled = torch.compile(model, mode="reduce-overhead")
    for _ in range(3):  # warm-up, record, replay
        for batch, (loss_ref, kept_ref, grads_ref) in zip(batches, expected):
            torch.compiler.cudagraph_mark_step_begin()
            loss, kept, grads = step(compiled, *batch)
            torch.testing.assert_close(loss, loss_ref, atol=2e-2, rtol=2e-2)
            assert kept.tolist() == kept_ref.tolist()
            # A key bias adds the same score to every key of a query, which softmax ignores: its true gradient is
            # zero and what the kernels give is rounding noise, so each error is taken relative to the larger of
            # the parameter's own gradient and a thousandth of the whole gradient's norm.
            floor = 1e-3 * torch.stack([g.norm() for g in grads_ref.values()]).norm()
            for name, grad in grads.items():
                error = (grad - grads_ref[name]).norm() / torch.maximum(grads_ref[name].norm(), floor)
                assert error < 3e-2, f"{name}: relative gradient error {error:.2e}"
    torch._dynamo.reset()


class _Clips(torch.utils.data.Dataset):
    def __init__(self, clips, labels):
        self.clips, self.labels = clips, labels

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        return {"pixel_values": self.clips[index], "labels": int(self.labels[index])}


def test_trainer_with_cuda_graphs_matches_eager_with_accumulation_and_keeps_eval_logits(tmp_path):
    """RLTTrainer, torch_compile_mode "reduce-overhead" over bucketed packing: with gradient accumulation
    (2 micro-batches per step, SGD so that the update is the gradient itself) the weights after training
    equal the eager run's, and predict() returns every batch's logits, not those of the last replay."""
    import torch._dynamo
    from transformers import TrainingArguments

    from rlt.training import ClipCollator, RLTTrainer, compile_arguments

    clips = torch.cat([_clips_keeping(kept, seed) for seed, kept in enumerate(
        [(4, 1, 2, 3), (3, 3, 2, 3), (1, 1, 2, 4), (4, 4, 4, 2)])])  # fmt: skip
    labels = torch.arange(len(clips)) % TINY_VIDEOMAE["num_labels"]
    data = _Clips(clips, labels)
    runs = {}
    for name, compile_fields in (("eager", {}), ("graphs", compile_arguments("cuda-graphs", "cuda"))):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = RLTVideoMAEForVideoClassification(_graph_config(rlt_pack_buckets=4 if compile_fields else 0))
        args = TrainingArguments(
            output_dir=str(tmp_path / name), per_device_train_batch_size=4, per_device_eval_batch_size=4,
            gradient_accumulation_steps=2, max_steps=4, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
            warmup_steps=0, tf32=False, logging_steps=1, save_strategy="no", eval_strategy="no",
            remove_unused_columns=False, label_names=["labels"], report_to="none", seed=0, dataloader_num_workers=0,
            **compile_fields,
        )  # fmt: skip
        collator = ClipCollator.for_model(model.config)
        trainer = RLTTrainer(model=model, args=args, train_dataset=data, data_collator=collator)
        trainer.train()
        predictions = trainer.predict(data).predictions
        logits = predictions[0] if isinstance(predictions, tuple) else predictions
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        runs[name] = (trainer, torch.as_tensor(logits), losses)
    (eager, eager_logits, eager_losses), (graphs, graph_logits, graph_losses) = runs["eager"], runs["graphs"]
    assert graphs.compile_stats()["compile_s_train"] > 0 and graphs.compile_stats()["compile_s_eval"] > 0
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-4)
    for (name, parameter), reference in zip(graphs.model.named_parameters(), eager.model.parameters()):
        torch.testing.assert_close(parameter, reference, atol=1e-4, rtol=1e-3, msg=f"{name} after training")
    # predict() kept one row of logits per clip, each its own batch's: compare with the eager model's.
    eager.model.eval()
    with torch.no_grad():
        reference = torch.cat([eager.model(clips[i : i + 4].cuda()).logits.cpu() for i in range(0, len(clips), 4)])
    # The same model through predict() and called directly: on an H100 one logit of 80 came out 2e-4 apart
    # (float32, TF32 off; cause not found), so both runs get the compiled run's tolerance.
    torch.testing.assert_close(eager_logits, reference, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(graph_logits, reference, atol=1e-3, rtol=1e-3)
    assert len({tuple(row.tolist()) for row in graph_logits.round(decimals=3)}) > 4  # not one batch repeated
    torch._dynamo.reset()


def test_synthetic_clips_kept_on_the_gpu_train_without_loader_workers(tmp_path):
    """--synthetic-on-device: the clips stay on the training GPU, the loader runs no workers and pins nothing,
    and they are the clips a CPU copy holds."""
    import importlib.util
    from pathlib import Path

    from rlt.synthetic import SyntheticVideoConfig, SyntheticVideoDataset

    config = SyntheticVideoConfig(num_frames=8, image_size=32)
    on_gpu = SyntheticVideoDataset(6, config=config, device="cuda", clips_device="cuda")
    on_cpu = SyntheticVideoDataset(6, config=config, device="cuda")
    assert on_gpu.device.type == "cuda" and on_cpu.device.type == "cpu"
    assert torch.equal(on_gpu.clips.cpu(), on_cpu.clips) and torch.equal(on_gpu.labels, on_cpu.labels)

    path = Path(__file__).resolve().parents[1] / "examples" / "train_video_classification.py"
    spec = importlib.util.spec_from_file_location("train_video_classification", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    summary = script.main([
        "--synthetic", "16", "--synthetic-eval", "8", "--synthetic-on-device", "--from-scratch", "tiny",
        "--image-size", "32", "--num-frames", "8", "--batch-size", "8", "--epochs", "1", "--num-workers", "4",
        "--eval-strategy", "no", "--save-strategy", "no", "--output-dir", str(tmp_path),
    ])  # fmt: skip
    assert summary["data"]["clips_device"].startswith("cuda") and summary["train_clips"] == 16
    assert 0 <= summary["eval_accuracy"] <= 1


def test_pixel_normalizer_makes_no_device_sync_after_its_first_call():
    """The Trainer normalises every batch on the GPU: its mean and scale are copied there once, not per batch
    (a copy from the host waits for the device: one host sync per step each)."""
    from rlt.common import PixelNormalizer

    normalizer = PixelNormalizer()
    clips = torch.randint(0, 256, (2, 4, 3, 16, 16), dtype=torch.uint8)
    expected = normalizer(clips)
    video = clips.cuda()
    normalizer(video)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        output = normalizer(video)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(output.cpu(), expected)
