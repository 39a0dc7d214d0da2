"""What is VideoMAE's own: its first-token head, the sinusoidal positions, the run-length-weighted mean.
The tests every architecture passes are in test_models_common.py."""

import pytest
import torch
from conftest import TINY_VIDEOMAE, clips_with_repeats, noise_clips, randomise, vanilla_and_rlt
from transformers import VideoMAEConfig, VideoMAEForVideoClassification

from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification, RLTVideoMAEModel, run_length_tokenize


def make_pair(use_mean_pooling=True, **rlt_settings):
    config = VideoMAEConfig(use_mean_pooling=use_mean_pooling, **TINY_VIDEOMAE)
    vanilla = randomise(VideoMAEForVideoClassification(config))  # non-zero biases: one that failed to load shows
    config = RLTVideoMAEConfig(use_mean_pooling=use_mean_pooling, **TINY_VIDEOMAE, **rlt_settings)
    return vanilla_and_rlt(vanilla, RLTVideoMAEForVideoClassification(config))


def test_first_token_head_at_threshold_zero_reproduces_vanilla_logits():
    # The mean-pooling head is in the common suite (test_models_common.py); this is VideoMAE's other head.
    vanilla, rlt_model = make_pair(use_mean_pooling=False, rlt_threshold=0.0)
    clips = noise_clips(3)
    with torch.no_grad():
        expected = vanilla(clips).logits
        output = rlt_model(clips)
    assert output.tokens_kept.tolist() == [16, 16, 16]
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "per_clip", "padded", "eager", "flex"])
def test_first_token_head_packed_batch_equals_clips_run_alone(backend):
    _, rlt_model = make_pair(use_mean_pooling=False, rlt_threshold=0.0, rlt_attention=backend)
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


def test_length_weighted_pooling_weights_tokens_by_run_length():
    _, rlt_model = make_pair(rlt_threshold=0.0, rlt_pooling="length_weighted")
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


