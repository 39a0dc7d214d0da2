"""What is ViViT's own: the CLS token (its position, no projection, no length encoding), dropout,
the legacy weight names, the [-1, 1] processor scale. The tests every architecture passes are in
test_models_common.py."""

import json

import pytest
import torch
from conftest import assert_same_random_draws_as_vanilla, clips_with_repeats, noise_clips, randomise, vanilla_and_rlt
from safetensors import safe_open
from transformers import AutoModelForVideoClassification, VivitConfig, VivitForVideoClassification, VivitImageProcessor
from transformers.models.vivit.modeling_vivit import VivitEmbeddings

import rlt
from rlt import RLTVivitConfig, RLTVivitForVideoClassification, RLTVivitModel, run_length_tokenize
from rlt.models.configuration_rlt import input_scale_from_processor

# 8 frames of 32x32 in 2x16x16 tubelets: a (T', H', W') = (4, 2, 2) grid, 16 tubelet tokens + CLS.
TINY_VIVIT = {
    "image_size": 32,
    "num_frames": 8,
    "tubelet_size": [2, 16, 16],
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_labels": 5,
}
GRID = (4, 2, 2)


VIVIT_RANDOMISED = ("bias", "cls_token", "position_embeddings")  # vanilla ViViT starts them at zero


def make_pair(**settings):
    """A vanilla ViViT classifier and an RLT one with the same weights (``settings``: config fields)."""
    rlt_settings = {k: v for k, v in settings.items() if k.startswith("rlt_")}
    fields = {**TINY_VIVIT, **{k: v for k, v in settings.items() if not k.startswith("rlt_")}}
    vanilla = randomise(VivitForVideoClassification(VivitConfig(**fields)), VIVIT_RANDOMISED)
    return vanilla_and_rlt(vanilla, RLTVivitForVideoClassification(RLTVivitConfig(**fields, **rlt_settings)))


def test_kept_tokens_keep_their_original_position_and_each_clip_starts_with_cls():
    # The embeddings of a clip whose repeats are dropped equal the vanilla embeddings (CLS + its
    # position, tubelets + their positions) at the kept rows, the CLS row first.
    rlt_model = randomise(RLTVivitModel(RLTVivitConfig(**TINY_VIVIT, rlt_threshold=0.0)), VIVIT_RANDOMISED).eval()
    clips = clips_with_repeats()[1:]
    with torch.no_grad():
        output = rlt_model(clips, output_hidden_states=True)
        full = VivitEmbeddings.forward(rlt_model.embeddings, clips)  # vanilla: (B, 1 + N, hidden)
    keep = run_length_tokenize(clips, threshold=0.0).keep_mask.flatten(1)
    rows = torch.cat([torch.ones(2, 1, dtype=torch.bool), keep], dim=1)
    torch.testing.assert_close(output.hidden_states[0][0], full[rows], atol=1e-5, rtol=1e-5)
    assert output.cu_seqlens.tolist() == [0, 14, 21]


def test_cls_row_does_not_go_through_the_patch_projection():
    # Each clip's first row is exactly CLS token + CLS position (no conv bias), and the Conv3d module
    # itself never runs (only kept tubelets are projected, with its weights).
    rlt_model = RLTVivitModel(RLTVivitConfig(**TINY_VIVIT, rlt_threshold=0.0)).eval()
    inputs = []
    rlt_model.embeddings.patch_embeddings.projection.register_forward_pre_hook(lambda module, args: inputs.append(1))
    clips = clips_with_repeats()
    with torch.no_grad():
        output = rlt_model(clips, output_hidden_states=True)
    embeddings = output.hidden_states[0][0]
    first_rows = output.cu_seqlens[:-1].long()
    expected_cls = rlt_model.embeddings.cls_token[0, 0] + rlt_model.embeddings.position_embeddings[0, 0]
    torch.testing.assert_close(embeddings[first_rows], expected_cls.expand(3, -1))
    assert inputs == []  # the kept tubelets are projected with the conv's weights, the module is not called


def test_length_encoding_is_added_to_tubelet_tokens_only():
    rlt_model = RLTVivitModel(RLTVivitConfig(**TINY_VIVIT, rlt_threshold=0.0)).eval()
    table = rlt_model.embeddings.length_embeddings.weight
    assert torch.equal(table, torch.zeros_like(table))  # zeros by default: training-free
    clips = clips_with_repeats()
    with torch.no_grad():
        before = rlt_model(clips, output_hidden_states=True)
        table.copy_(torch.arange(1, 5, dtype=torch.float32).view(4, 1).expand(4, 32))
        after = rlt_model(clips, output_hidden_states=True)
    added = after.hidden_states[0][0] - before.hidden_states[0][0]
    is_cls = torch.zeros(added.shape[0], dtype=torch.bool)
    is_cls[before.cu_seqlens[:-1].long()] = True
    expected = before.run_lengths[0].float().unsqueeze(1).expand_as(added) * ~is_cls.unsqueeze(1)
    torch.testing.assert_close(added, expected)
    assert sorted(set(before.run_lengths[0][~is_cls].tolist())) == [1, 2, 3, 4]


def test_dropout_in_training_matches_vanilla():
    # Embedding, attention and hidden dropout: with the same random seed and nothing dropped, the
    # RLT model draws the same masks as vanilla ViViT, and dropout is really on.
    vanilla, rlt_model = make_pair(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, rlt_threshold=0.0)
    assert_same_random_draws_as_vanilla(vanilla, rlt_model, noise_clips(2))


@pytest.fixture(scope="module")
def vanilla_folder(tmp_path_factory):
    """A vanilla ViViT classifier as transformers saves it (the legacy ViT-style weight names), with the
    ViViT image processor's config ([-1, 1] pixels), and its logits on noise clips."""
    folder = tmp_path_factory.mktemp("vanilla_vivit")
    torch.manual_seed(0)
    model = randomise(VivitForVideoClassification(VivitConfig(**TINY_VIVIT)), VIVIT_RANDOMISED).eval()
    model.save_pretrained(folder)
    with safe_open(folder / "model.safetensors", "pt") as weights:
        # A safe_open handle has keys() but no __contains__/__iter__.
        assert any("encoder.layer.0.attention.attention.query" in key for key in weights.keys())  # noqa: SIM118
    VivitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    clips = noise_clips(2)
    with torch.no_grad():
        logits = model(clips).logits
    torch.save({"clips": clips, "logits": logits}, folder / "reference.pt")
    return folder


def test_legacy_weight_names_load_into_the_rlt_classes(vanilla_folder):
    reference = torch.load(vanilla_folder / "reference.pt")
    model = RLTVivitForVideoClassification.from_pretrained(vanilla_folder, rlt_threshold=0.0).eval()
    assert model.vivit.layers[0].attention.q_proj.bias.abs().sum() > 0
    assert model.vivit.layers[1].mlp.fc2.bias.abs().sum() > 0
    table = model.vivit.embeddings.length_embeddings.weight
    assert table.device.type == "cpu" and torch.equal(table, torch.zeros_like(table))
    with torch.no_grad():
        torch.testing.assert_close(model(reference["clips"]).logits, reference["logits"], atol=1e-5, rtol=1e-5)


def test_vanilla_checkpoint_converts(vanilla_folder, tmp_path):
    reference = torch.load(vanilla_folder / "reference.pt")
    model = rlt.convert(vanilla_folder, tmp_path / "rlt", threshold=0.0).eval()
    assert type(model) is RLTVivitForVideoClassification
    assert model.config.rlt_input_scale == pytest.approx([(1 / 127.5) / 0.5] * 3)  # [-1, 1] then 0.5/0.5
    saved = json.loads((tmp_path / "rlt" / "config.json").read_text())
    assert saved["model_type"] == "rlt_vivit" and saved["tubelet_size"] == [2, 16, 16]
    assert saved["auto_map"]["AutoModelForVideoClassification"].endswith("RLTVivitForVideoClassification")
    loaded = AutoModelForVideoClassification.from_pretrained(tmp_path / "rlt", trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(reference["clips"]).logits, reference["logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(reference["clips"]).logits, reference["logits"], atol=1e-5, rtol=1e-5)


def test_processor_scale_makes_the_threshold_mean_the_same_pixel_change():
    # One video through the ViViT processor ([-1, 1], then 0.5/0.5) and through an ImageNet one keeps
    # the same tubelets once the RLT config records each processor's input scale.
    vivit_scale = input_scale_from_processor(VivitImageProcessor().to_dict(), 3)
    assert vivit_scale == pytest.approx([(1 / 127.5) / 0.5] * 3)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 250, (1, 8, 3, 32, 32), generator=generator).float()
    # Frame 3 (the last of time step 1) is frame 0 (the first of step 0) brightened by 2, 6, 12 and 3
    # grey levels in the four cells: tau = 0.1 is about 5.8 grey levels in reference units.
    brighten = torch.tensor([[2.0, 6.0], [12.0, 3.0]]).repeat_interleave(16, 0).repeat_interleave(16, 1)
    pixels[:, 3] = pixels[:, 0] + brighten
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    imagenet = (pixels / 255 - mean) / std
    vivit = (pixels / 127.5 - 1 - 0.5) / 0.5
    imagenet_keep = run_length_tokenize(imagenet, threshold=0.1).keep_mask
    vivit_keep = run_length_tokenize(vivit, threshold=0.1, input_scale=vivit_scale).keep_mask
    assert torch.equal(vivit_keep, imagenet_keep)
    assert imagenet_keep[0, 1].tolist() == [[False, True], [True, False]]
    unscaled = run_length_tokenize(vivit, threshold=0.1).keep_mask
    assert not torch.equal(unscaled, imagenet_keep)


def test_bad_settings_and_arguments_are_named():
    # The settings and inputs every architecture checks are in test_models_common.py; these are ViViT's.
    with pytest.raises(ValueError, match="num_frames 7 is not a multiple of tubelet_size\\[0\\] 2"):
        RLTVivitConfig(**{**TINY_VIVIT, "num_frames": 7})
    with pytest.raises(ValueError, match="image_size 40x40 is not a multiple"):
        RLTVivitConfig(**{**TINY_VIVIT, "image_size": 40})
    _, rlt_model = make_pair()
    with pytest.raises(ValueError, match="interpolate_pos_encoding is not supported"):
        rlt_model.vivit(noise_clips(1), interpolate_pos_encoding=True)
