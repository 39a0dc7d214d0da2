import pytest
import torch
from conftest import TINY_VIDEOMAE, noise_clips
from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel

from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification, RLTVideoMAEModel, run_length_tokenize


def vanilla_and_rlt(use_mean_pooling=True, **rlt_settings):
    vanilla = VideoMAEForVideoClassification(VideoMAEConfig(use_mean_pooling=use_mean_pooling, **TINY_VIDEOMAE))
    # Non-zero biases, so that a bias that failed to load would show.
    with torch.no_grad():
        for name, parameter in vanilla.named_parameters():
            if name.endswith("bias"):
                parameter.normal_()
    config = RLTVideoMAEConfig(use_mean_pooling=use_mean_pooling, **TINY_VIDEOMAE, **rlt_settings)
    rlt_model = RLTVideoMAEForVideoClassification(config)
    missing, unexpected = rlt_model.load_state_dict(vanilla.state_dict(), strict=False)
    assert missing == ["videomae.embeddings.length_embeddings.weight"] and unexpected == []
    return vanilla.eval(), rlt_model.eval()


def clips_with_repeats():
    """Three noise clips that keep 16, 13 and 6 of their 16 tokens at threshold 0."""
    clips = noise_clips(3)
    clips[1, 3:6] = clips[1, 2]  # time step 2 (frames 4-5) repeats step 1 (frames 2-3) exactly
    clips[1, 5, :, :16, :16] += 1  # ...except in one cell
    clips[2, 1:] = clips[2, 0]  # static
    clips[2, 6:, :, :, 16:] += 1  # the right half changes at the last step
    return clips


@pytest.mark.parametrize("use_mean_pooling", [True, False])
def test_threshold_zero_reproduces_vanilla_logits(use_mean_pooling):
    vanilla, rlt_model = vanilla_and_rlt(use_mean_pooling, rlt_threshold=0.0)
    clips = noise_clips(3)
    with torch.no_grad():
        expected = vanilla(clips).logits
        output = rlt_model(clips)
    assert output.tokens_kept.tolist() == [16, 16, 16]
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)


def test_base_model_hidden_states_match_vanilla():
    vanilla = VideoMAEModel(VideoMAEConfig(**TINY_VIDEOMAE)).eval()
    rlt_model = RLTVideoMAEModel(RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)).eval()
    rlt_model.load_state_dict(vanilla.state_dict(), strict=False)
    clips = noise_clips(2)
    with torch.no_grad():
        expected = vanilla(clips).last_hidden_state
        output = rlt_model(clips, output_hidden_states=True)
    assert output.last_hidden_state.shape == (1, 32, 32)
    torch.testing.assert_close(torch.stack(output.per_clip()), expected, atol=1e-5, rtol=1e-5)
    assert len(output.hidden_states) == TINY_VIDEOMAE["num_hidden_layers"] + 1
    assert output.cu_seqlens.tolist() == [0, 16, 32]
    assert (output.run_lengths == 1).all()


def test_rlt_disabled_runs_every_token_even_on_repeats():
    vanilla, rlt_model = vanilla_and_rlt(rlt_enabled=False)
    clips = clips_with_repeats()
    with torch.no_grad():
        output = rlt_model(clips)
        expected = vanilla(clips).logits
    assert output.tokens_kept.tolist() == [16, 16, 16]
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "per_clip", "padded", "eager", "flex"])
@pytest.mark.parametrize("use_mean_pooling", [True, False])
def test_packed_batch_equals_clips_run_alone(backend, use_mean_pooling):
    _, rlt_model = vanilla_and_rlt(use_mean_pooling, rlt_threshold=0.0, rlt_attention=backend)
    with torch.no_grad():
        rlt_model.videomae.embeddings.length_embeddings.weight.normal_()
    clips = clips_with_repeats()
    with torch.no_grad():
        batch = rlt_model(clips)
        alone = torch.cat([rlt_model(clip[None]).logits for clip in clips])
    assert batch.tokens_kept.tolist() == [16, 13, 6]
    torch.testing.assert_close(batch.logits, alone, atol=1e-5, rtol=1e-5)


def test_dropped_tokens_change_the_output_and_each_token_keeps_its_position():
    # A clip whose repeats are dropped equals the vanilla model run on the kept tokens only,
    # each at its original position: check that through the base model's first hidden state.
    rlt_model = RLTVideoMAEModel(RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)).eval()
    clips = clips_with_repeats()[1:2]
    with torch.no_grad():
        output = rlt_model(clips, output_hidden_states=True)
        tokens = run_length_tokenize(clips, threshold=0.0)
        embeddings = rlt_model.embeddings
        full = embeddings.patch_embeddings(clips)[0] + embeddings.position_embeddings
    kept = tokens.keep_mask.flatten()
    torch.testing.assert_close(output.hidden_states[0][0], full[kept], atol=1e-5, rtol=1e-5)


def test_length_encoding_is_added_per_token_run_length():
    rlt_model = RLTVideoMAEModel(RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)).eval()
    table = rlt_model.embeddings.length_embeddings.weight
    assert torch.equal(table, torch.zeros_like(table))  # zeros by default: training-free
    clips = clips_with_repeats()
    with torch.no_grad():
        before = rlt_model(clips, output_hidden_states=True)
        table.copy_(torch.arange(4, dtype=torch.float32).view(4, 1).expand(4, 32))
        after = rlt_model(clips, output_hidden_states=True)
    added = after.hidden_states[0][0] - before.hidden_states[0][0]
    expected = (before.run_lengths[0] - 1).float().unsqueeze(1).expand_as(added)
    torch.testing.assert_close(added, expected)
    assert sorted(set(before.run_lengths[0].tolist())) == [1, 2, 3, 4]


def test_keep_mask_computed_in_a_loader_gives_the_same_output():
    _, rlt_model = vanilla_and_rlt(rlt_threshold=0.0)
    clips = clips_with_repeats()
    keep_mask = run_length_tokenize(clips, threshold=0.0).keep_mask
    with torch.no_grad():
        own = rlt_model(clips)
        given = rlt_model(clips, keep_mask=keep_mask)
    torch.testing.assert_close(given.logits, own.logits)
    assert given.tokens_kept.tolist() == [16, 13, 6]


def test_length_weighted_pooling_weights_tokens_by_run_length():
    _, rlt_model = vanilla_and_rlt(rlt_threshold=0.0, rlt_pooling="length_weighted")
    clips = clips_with_repeats()
    with torch.no_grad():
        base = rlt_model.videomae(clips)
        weights = base.run_lengths[0].float().unsqueeze(1)
        pooled = [
            (states * w).sum(0) / w.sum()
            for states, w in zip(base.per_clip(), weights.split(base.tokens_kept.tolist()))
        ]
        expected = rlt_model.classifier(rlt_model.fc_norm(torch.stack(pooled)))
        logits = rlt_model(clips).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_training_step_reduces_loss_with_rlt_on():
    config = RLTVideoMAEConfig(
        **{**TINY_VIDEOMAE, "num_labels": 2}, rlt_threshold=0.0, rlt_length_encoding_init="trunc_normal"
    )
    model = RLTVideoMAEForVideoClassification(config).train()
    clips = clips_with_repeats()[:2].repeat(2, 1, 1, 1, 1)
    labels = torch.tensor([0, 1, 0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        output = model(clips, labels=labels)
        optimizer.zero_grad()
        output.loss.backward()
        losses.append(output.loss.item())
        optimizer.step()
    grad = model.videomae.embeddings.length_embeddings.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.videomae.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    assert losses[-1] < losses[0] * 0.5


def test_gradient_checkpointing_gives_the_same_gradients():
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.0)
    model = RLTVideoMAEForVideoClassification(config).train()
    clips, labels = clips_with_repeats(), torch.tensor([0, 1, 2])
    model(clips, labels=labels).loss.backward()
    expected = model.videomae.encoder.layer[0].attention.attention.query.weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(clips, labels=labels).loss.backward()
    torch.testing.assert_close(model.videomae.encoder.layer[0].attention.attention.query.weight.grad, expected)


def test_trainer_num_items_in_batch_reaches_the_loss():
    _, rlt_model = vanilla_and_rlt(rlt_threshold=0.0)
    clips, labels = noise_clips(2), torch.tensor([1, 3])
    mean_loss = rlt_model(clips, labels=labels).loss
    summed_over_4 = rlt_model(clips, labels=labels, num_items_in_batch=torch.tensor(4)).loss
    torch.testing.assert_close(summed_over_4, mean_loss / 2)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((8, 3, 32, 32), "shape \\(batch, frames, channels, height, width\\)"),
        ((1, 3, 8, 32, 32), "looks like \\(batch, channels, frames"),
        ((1, 8, 32, 32, 3), "channels-last"),
        ((1, 7, 3, 32, 32), "7 frames of 32x32; this model takes 8 frames"),
        ((1, 8, 3, 48, 48), "48x48"),
    ],
)
def test_bad_input_is_named(shape, message):
    _, rlt_model = vanilla_and_rlt()
    with pytest.raises(ValueError, match=message):
        rlt_model(torch.zeros(shape))


def test_bad_settings_and_arguments_are_named():
    with pytest.raises(ValueError, match="rlt_threshold must be a finite number >= 0"):
        RLTVideoMAEConfig(rlt_threshold=-0.5)
    with pytest.raises(ValueError, match="unknown RLT attention backend 'xformers'"):
        RLTVideoMAEConfig(rlt_attention="xformers")
    with pytest.raises(ValueError, match="rlt_pooling"):
        RLTVideoMAEConfig(rlt_pooling="max")
    _, rlt_model = vanilla_and_rlt()
    clips = noise_clips(1)
    with pytest.raises(ValueError, match="output_attentions"):
        rlt_model(clips, output_attentions=True)
    with pytest.raises(ValueError, match="attention_mask is not supported"):
        rlt_model(clips, attention_mask=torch.ones(1, 16))
    with pytest.raises(ValueError, match="keep_mask has grid"):
        rlt_model(clips, keep_mask=torch.ones(1, 2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="first time step"):
        rlt_model(clips, keep_mask=torch.zeros(1, 4, 2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="pixel_values must be a torch.Tensor"):
        rlt_model(clips.numpy())
    rlt_model.config.rlt_attention = "varlen"
    with pytest.raises((ValueError, RuntimeError), match="CUDA"):
        rlt_model(clips_with_repeats())
