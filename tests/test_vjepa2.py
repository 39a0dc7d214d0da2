import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_random_draws_as_vanilla, noise_clips, randomise, run_without_rlt, vanilla_and_rlt
from conftest import clips_with_repeats as _clips_with_repeats
from safetensors import safe_open
from transformers import AutoModelForVideoClassification, VJEPA2Config, VJEPA2ForVideoClassification, VJEPA2Model
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Embeddings, VJEPA2Layer, VJEPA2PoolerCrossAttentionLayer

import rlt
from rlt import RLTVJEPA2Config, RLTVJEPA2ForVideoClassification, RLTVJEPA2Model, run_length_tokenize
from rlt.cli import main as cli_main
from rlt.models.modeling_rlt_vjepa2 import RLTVJEPA2PoolerCrossAttentionLayer
from rlt.models.packing import PackedSequence

# 8 frames of 32x32 in 2x8x8 tubelets: a (T', H', W') = (4, 4, 4) grid, 64 tokens. A head of 20 dims
# rotates 3 x 6 of them by (t, h, w) and leaves 2 unrotated, so both of RoPE's branches run.
TINY_VJEPA2 = {
    "crop_size": 32,
    "patch_size": 8,
    "frames_per_clip": 8,
    "tubelet_size": 2,
    "hidden_size": 40,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "mlp_ratio": 2.0,
    "num_pooler_layers": 1,
    "pred_hidden_size": 32,
    "pred_num_attention_heads": 2,
    "pred_num_hidden_layers": 1,
    "num_labels": 5,
}
GRID = (4, 4, 4)
TOKENS = 64
HIDDEN = TINY_VJEPA2["hidden_size"]


def make_pair(**settings):
    """A vanilla V-JEPA 2 classifier and an RLT one with the same weights (``settings``: config fields)."""
    rlt_settings = {k: v for k, v in settings.items() if k.startswith("rlt_")}
    fields = {**TINY_VJEPA2, **{k: v for k, v in settings.items() if not k.startswith("rlt_")}}
    vanilla = randomise(VJEPA2ForVideoClassification(VJEPA2Config(**fields)))
    return vanilla_and_rlt(vanilla, RLTVJEPA2ForVideoClassification(RLTVJEPA2Config(**fields, **rlt_settings)))


def vanilla_and_rlt_encoders():
    vanilla = randomise(VJEPA2Model(VJEPA2Config(**TINY_VJEPA2))).eval()
    rlt_model = RLTVJEPA2Model(RLTVJEPA2Config(**TINY_VJEPA2, rlt_threshold=0.0)).eval()
    missing, unexpected = rlt_model.load_state_dict(vanilla.state_dict(), strict=False)
    assert missing == ["encoder.embeddings.length_embeddings.weight"]
    assert all(key.startswith("predictor.") for key in unexpected)
    return vanilla, rlt_model


def clips_with_repeats():
    """Three noise clips that keep 64, 49 and 24 of their 64 tubelets at threshold 0 (8x8 cells)."""
    return _clips_with_repeats(cell=8)


KEPT_WITH_REPEATS = [64, 49, 24]


@pytest.mark.parametrize("frames", [16, 1])
def test_threshold_zero_reproduces_vanilla_logits_on_other_clip_lengths(frames):
    # frames_per_clip (8) is in the common tests. 16 frames: twice frames_per_clip (RoPE has no fixed
    # length); 1 frame: an image, repeated to fill one tubelet as transformers does.
    vanilla, rlt_model = make_pair(rlt_threshold=0.0)
    clips, labels = noise_clips(3, frames=frames), torch.tensor([0, 3, 4])
    with torch.no_grad():
        expected = vanilla(clips, labels=labels)
        output = rlt_model(clips, labels=labels)
    assert output.tokens_kept.tolist() == [max(frames // 2, 1) * 16] * 3
    torch.testing.assert_close(output.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_encoder_states_match_vanilla_on_a_clip_longer_than_frames_per_clip():
    frames = 16  # twice frames_per_clip; frames_per_clip itself is in the common tests
    vanilla, rlt_model = vanilla_and_rlt_encoders()
    clips = noise_clips(2, frames=frames)
    tokens = frames // 2 * 16
    with torch.no_grad():
        expected = vanilla(clips, skip_predictor=True, output_hidden_states=True)
        output = rlt_model(clips, output_hidden_states=True)
    assert output.last_hidden_state.shape == (1, 2 * tokens, HIDDEN)
    torch.testing.assert_close(torch.stack(output.per_clip()), expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    # The same layout as transformers': the embeddings, then every layer's output (before the last norm).
    assert len(output.hidden_states) == len(expected.hidden_states) == TINY_VJEPA2["num_hidden_layers"] + 1
    for ours, theirs in zip(output.hidden_states, expected.hidden_states):
        torch.testing.assert_close(ours[0].view(2, tokens, HIDDEN), theirs, atol=1e-5, rtol=1e-5)
    assert output.cu_seqlens.tolist() == [0, tokens, 2 * tokens]
    assert (output.run_lengths == 1).all()


def test_kept_tokens_are_rotated_by_their_original_positions():
    # A clip whose repeats are dropped equals transformers' own layers run on the kept tokens alone
    # with position_mask = their original token ids (the way V-JEPA 2's predictor runs a subset).
    _, rlt_model = vanilla_and_rlt_encoders()
    with torch.no_grad():  # sharp attention (V-JEPA 2's init makes it almost uniform), so positions show
        for layer in rlt_model.encoder.layer:
            for projection in (layer.attention.query, layer.attention.key, layer.attention.proj):
                projection.weight.normal_(std=0.5)
    clips = clips_with_repeats()[1:]
    keep = run_length_tokenize(clips, patch_size=8, threshold=0.0).keep_mask.flatten(1)
    with torch.no_grad():
        output = rlt_model(clips, output_hidden_states=True)
        full = VJEPA2Embeddings.forward(rlt_model.encoder.embeddings, clips)  # vanilla: (B, N, hidden)
        expected, unrotated = [], []
        for clip_embeddings, clip_keep in zip(full, keep):
            ids = clip_keep.nonzero().view(1, -1)
            for position_mask, results in ((ids, expected), (None, unrotated)):
                states = clip_embeddings[clip_keep].unsqueeze(0)
                for layer in rlt_model.encoder.layer:
                    states = VJEPA2Layer.forward(layer, states, position_mask=position_mask)[0]
                results.append(rlt_model.encoder.layernorm(states)[0])
    assert output.tokens_kept.tolist() == KEPT_WITH_REPEATS[1:]
    torch.testing.assert_close(output.hidden_states[0][0], full[keep], atol=1e-5, rtol=1e-5)  # (T', H', W') order
    for ours, theirs, wrong in zip(output.per_clip(), expected, unrotated):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        assert (ours - wrong).abs().max() > 0.1  # positions 0, 1, 2, ... would be wrong


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_rotation_is_transformers_rotation_to_the_bit(dtype):
    """The rotation tables computed once per forward give exactly what transformers' rotation, which
    recomputes the angles in every layer, gives for the same token ids (head dims left over included)."""
    from rlt.models.modeling_rlt_vjepa2 import rope_positions, rope_tables, rotate_packed

    config = RLTVJEPA2Config(**{**TINY_VJEPA2, "hidden_size": 4 * 20, "num_attention_heads": 4})  # 20 = 3 * 6 + 2
    attention = RLTVJEPA2Model(config).encoder.layer[0].attention
    grid = attention.grid_size
    ids = torch.tensor([0, 1, grid, grid * grid + 3, 2 * grid * grid - 1, 3 * grid * grid + grid + 1])
    queries = torch.randn(len(ids), 4, 20, generator=torch.Generator().manual_seed(0)).to(dtype)
    dims = (attention.d_dim, attention.h_dim, attention.w_dim)
    ours = rotate_packed(queries, rope_tables(ids, grid, dims, dtype))
    theirs = attention.apply_rotary_embeddings(queries.unsqueeze(2), rope_positions(ids, grid)).squeeze(2)
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, queries)


def test_length_encoding_is_added_per_token_run_length():
    rlt_model = RLTVJEPA2Model(RLTVJEPA2Config(**TINY_VJEPA2, rlt_threshold=0.0)).eval()
    table = rlt_model.encoder.embeddings.length_embeddings.weight
    assert table.shape == (4, HIDDEN) and torch.equal(table, torch.zeros_like(table))  # zeros: training-free
    clips = clips_with_repeats()
    with torch.no_grad():
        before = rlt_model(clips, output_hidden_states=True)
        table.copy_(torch.arange(4, dtype=torch.float32).view(4, 1).expand(4, HIDDEN))
        after = rlt_model(clips, output_hidden_states=True)
    added = after.hidden_states[0][0] - before.hidden_states[0][0]
    expected = (before.run_lengths[0] - 1).float().unsqueeze(1).expand_as(added)
    torch.testing.assert_close(added, expected)
    assert sorted(set(before.run_lengths[0].tolist())) == [1, 2, 3, 4]


def test_runs_longer_than_the_length_table_use_its_last_row():
    # A static clip of 16 frames (twice frames_per_clip) has runs of 8 time steps; the table has 4 rows.
    rlt_model = RLTVJEPA2Model(RLTVJEPA2Config(**TINY_VJEPA2)).eval()
    table = rlt_model.encoder.embeddings.length_embeddings.weight
    clip = noise_clips(1, frames=16)[:, :1].expand(1, 16, 3, 32, 32)
    with torch.no_grad():
        before = rlt_model(clip, output_hidden_states=True)
        table.copy_(torch.arange(4, dtype=torch.float32).view(4, 1).expand(4, HIDDEN))
        after = rlt_model(clip, output_hidden_states=True)
    assert before.run_lengths.unique().tolist() == [8]
    added = after.hidden_states[0] - before.hidden_states[0]
    torch.testing.assert_close(added, torch.full_like(added, 3.0))


def test_length_weighted_query_attention_counts_each_token_run_length_times():
    # The probe's query attending to a token with weight L equals attending to L copies of it.
    config = RLTVJEPA2Config(**TINY_VJEPA2)
    layer = randomise(RLTVJEPA2PoolerCrossAttentionLayer(config)).eval()
    generator = torch.Generator().manual_seed(1)
    keep = torch.tensor([[True, True, False, True, True], [True, False, False, True, False]])
    packed = PackedSequence.from_keep_mask(keep)
    tokens = torch.randn(packed.total, HIDDEN, generator=generator)
    run_lengths = torch.tensor([1, 2, 1, 1, 3, 2])
    queries = torch.randn(1, 1, HIDDEN, generator=generator).expand(2, 1, HIDDEN)
    with torch.no_grad():
        pooled = layer(queries, tokens, packed=packed, key_weights=run_lengths.float())
        clips = zip(packed.split(tokens), packed.split(run_lengths))
        repeated = [clip.repeat_interleave(lengths, 0) for clip, lengths in clips]
        expected = [VJEPA2PoolerCrossAttentionLayer.forward(layer, queries[:1], clip[None])[0] for clip in repeated]
        plain = layer(queries, tokens, packed=packed)
    torch.testing.assert_close(pooled, torch.cat(expected), atol=1e-5, rtol=1e-5)
    assert (pooled - plain).abs().max() > 1e-3


def test_length_weighted_pooling_changes_only_clips_with_runs():
    _, mean_model = make_pair(rlt_threshold=0.0)
    config = RLTVJEPA2Config(**TINY_VJEPA2, rlt_threshold=0.0, rlt_pooling="length_weighted")
    weighted = RLTVJEPA2ForVideoClassification(config)
    weighted.load_state_dict(mean_model.state_dict())
    clips = clips_with_repeats()
    with torch.no_grad():
        mean_logits, weighted_logits = mean_model(clips).logits, weighted.eval()(clips).logits
    torch.testing.assert_close(weighted_logits[0], mean_logits[0])  # nothing dropped: every run is 1
    assert (weighted_logits[1:] - mean_logits[1:]).abs().amax(1).min() > 1e-4


def test_pixel_values_is_an_alias_of_pixel_values_videos():
    # rlt's processor, collators and the other architectures name the clips pixel_values.
    _, rlt_model = make_pair(rlt_threshold=0.0)
    clips, labels = clips_with_repeats(), torch.tensor([0, 1, 2])
    with torch.no_grad():
        output = rlt_model(pixel_values_videos=clips, labels=labels)
        aliased = rlt_model(pixel_values=clips, labels=labels)
        base = rlt_model.vjepa2(pixel_values_videos=clips)
        base_tuple = rlt_model.vjepa2(pixel_values=clips, return_dict=False)
    torch.testing.assert_close(aliased.logits, output.logits)
    torch.testing.assert_close(aliased.loss, output.loss)
    torch.testing.assert_close(base_tuple[0], base.last_hidden_state)
    assert base_tuple[1].tolist() == base.cu_seqlens.tolist()


def test_dropout_and_drop_path_in_training_match_vanilla():
    # Encoder attention dropout, stochastic depth (one draw per clip) and the probe's attention dropout:
    # with the same seed and nothing dropped, the RLT model draws what vanilla V-JEPA 2 draws.
    settings = {
        "attention_probs_dropout_prob": 0.3,
        "attention_dropout": 0.3,
        "drop_path_rate": 0.5,
        "rlt_threshold": 0.0,
    }
    vanilla, rlt_model = make_pair(**settings)
    assert_same_random_draws_as_vanilla(vanilla, rlt_model, noise_clips(4))


@pytest.fixture(scope="module")
def vanilla_folders(tmp_path_factory):
    """A vanilla V-JEPA 2 classifier and encoder as transformers saves them (predictor weights included),
    with their outputs on noise clips."""
    root = tmp_path_factory.mktemp("vanilla_vjepa2")
    torch.manual_seed(0)
    classifier = randomise(VJEPA2ForVideoClassification(VJEPA2Config(**TINY_VJEPA2))).eval()
    classifier.save_pretrained(root / "classifier")
    classifier.vjepa2.save_pretrained(root / "encoder")
    clips = noise_clips(2)
    with torch.no_grad():
        logits = classifier(clips).logits
        states = classifier.vjepa2(clips, skip_predictor=True).last_hidden_state
    torch.save({"clips": clips, "logits": logits, "states": states}, root / "reference.pt")
    return root


def test_vanilla_checkpoints_load_into_the_rlt_classes(vanilla_folders, caplog):
    reference = torch.load(vanilla_folders / "reference.pt")
    with safe_open(vanilla_folders / "classifier" / "model.safetensors", "pt") as weights:
        # A safe_open handle has keys() but no __contains__/__iter__.
        assert any(".predictor." in key for key in weights.keys())  # noqa: SIM118
    with caplog.at_level("WARNING"):
        model = RLTVJEPA2ForVideoClassification.from_pretrained(vanilla_folders / "classifier", rlt_threshold=0.0)
        model.eval()
        encoder = RLTVJEPA2Model.from_pretrained(vanilla_folders / "encoder", rlt_threshold=0.0).eval()
    assert "predictor" not in caplog.text  # skipped on purpose, not reported as unexpected
    assert not any("predictor" in name for name, _ in model.named_parameters())
    assert model.vjepa2.encoder.layer[0].attention.query.bias.abs().sum() > 0
    for embeddings in (model.vjepa2.encoder.embeddings, encoder.encoder.embeddings):
        table = embeddings.length_embeddings.weight
        assert table.device.type == "cpu" and torch.equal(table, torch.zeros_like(table))
    with torch.no_grad():
        torch.testing.assert_close(model(reference["clips"]).logits, reference["logits"], atol=1e-5, rtol=1e-5)
        states = torch.stack(encoder(reference["clips"]).per_clip())
    torch.testing.assert_close(states, reference["states"], atol=1e-5, rtol=1e-5)


def test_alias_and_predictor_arguments_are_named():
    _, rlt_model = make_pair()
    clips = noise_clips(1)
    with pytest.raises(ValueError, match="not both"):
        rlt_model(clips, pixel_values=clips)
    with pytest.raises(ValueError, match="pass the clips as pixel_values_videos"):
        rlt_model(labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="context_mask is an argument of V-JEPA 2's JEPA predictor"):
        rlt_model.vjepa2(clips, context_mask=[torch.arange(TOKENS)[None]])
    with pytest.raises(ValueError, match="skip_predictor=False"):
        rlt_model.vjepa2(clips, skip_predictor=False)
    rlt_model.vjepa2(clips, skip_predictor=True)  # what transformers' classifier passes: accepted


def test_config_geometry_aliases_and_checks():
    config = RLTVJEPA2Config(**TINY_VJEPA2)
    assert config.rlt_num_frames == 8 and config.rlt_image_size == (32, 32) and config.rlt_num_channels == 3
    assert config.rlt_tubelet_size == 2 and config.rlt_patch_size == (8, 8) and config.rlt_token_grid == GRID
    assert config.rlt_num_prefix_tokens == 0 and config.rlt_input_name == "pixel_values_videos"
    assert config.rlt_fixed_num_frames is False  # RoPE: any whole number of tubelets
    assert rlt.RLTVideoMAEConfig().rlt_fixed_num_frames is True  # a position table of num_frames
    # The names VideoMAE, ViViT and the video-classification pipeline read.
    assert (config.num_frames, config.image_size, config.num_channels) == (8, 32, 3)
    assert RLTVJEPA2Config(patch_size=[16, 16]).patch_size == 16
    with pytest.raises(ValueError, match="crop_size 36 is not a multiple of patch_size 8"):
        RLTVJEPA2Config(**{**TINY_VJEPA2, "crop_size": 36})
    with pytest.raises(ValueError, match="frames_per_clip 7 is not a multiple of tubelet_size 2"):
        RLTVJEPA2Config(**{**TINY_VJEPA2, "frames_per_clip": 7})
    with pytest.raises(ValueError, match="patch_size must be one int"):
        RLTVJEPA2Config(patch_size=[16, 8])
    assert rlt.RLTVJEPA2Config is RLTVJEPA2Config and "RLTVJEPA2Model" in rlt.__all__


def test_long_clip_example_counts_what_the_model_keeps(capsys):
    # The example's tokenizer call keeps exactly the tokens the model keeps on the same processed clip,
    # and a clip too short for the stride is reported with its padding.
    path = Path(__file__).resolve().parents[1] / "examples" / "long_clip_tokens.py"
    spec = importlib.util.spec_from_file_location("long_clip_tokens", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    video = Path(rlt.__file__).parent / "assets" / "bigbuckbunny_sample.mp4"  # 132 frames
    config = RLTVJEPA2Config(**{**TINY_VJEPA2, "frames_per_clip": 16, "crop_size": 64, "patch_size": 16})
    row = example.measure_clip(video, stride=16, threshold=0.1, config=config)
    assert row["source_frames"] == 132 and row["padded_frames"] == 16 - 9  # frames 0, 16, ..., 128 are real
    assert row["tokens"] == 8 * 4 * 4 and row["real_tokens"] == 4 * 4 * 4
    processor = rlt.RLTVideoProcessor(num_frames=16, frame_stride=16, size={"shortest_edge": 73}, crop_size=64)
    model = RLTVJEPA2Model(config).eval()
    with torch.no_grad():
        output = model(**processor(str(video)))  # the processor's pixel_values: accepted as an alias
    assert output.tokens_kept.tolist() == [row["kept"]]
    example.main([str(video), "--frames", "16", "--crop", "64", "--strides", "4"])
    assert "| bigbuckbunny_sample | 132 | 4 | 0 |" in capsys.readouterr().out


@pytest.fixture(scope="module")
def convertible_folders(vanilla_folders):
    """The vanilla folders with the ``video_preprocessor_config.json`` transformers' VJEPA2VideoProcessor
    writes (short side int(crop * 256 / 224), centre crop, ImageNet statistics). The class is imported from
    its module: transformers' top-level name demands torchvision, which saving a config does not use."""
    from transformers.models.vjepa2.video_processing_vjepa2 import VJEPA2VideoProcessor

    for kind in ("classifier", "encoder"):
        VJEPA2VideoProcessor(crop_size=TINY_VJEPA2["crop_size"]).save_pretrained(vanilla_folders / kind)
    return vanilla_folders


def test_convert_both_kinds_and_load_them_without_rlt(convertible_folders, tmp_path):
    source = convertible_folders
    with safe_open(source / "encoder" / "model.safetensors", "pt") as weights:
        # The JEPA predictor is in the encoder; safe_open handles have keys() but no __contains__/__iter__.
        assert any(key.startswith("predictor.") for key in weights.keys())  # noqa: SIM118
    classifier = rlt.convert(source / "classifier", tmp_path / "classifier", threshold=0.0)
    assert cli_main(["convert", str(source / "encoder"), str(tmp_path / "encoder"), "--threshold", "0"]) == 0
    assert type(classifier) is RLTVJEPA2ForVideoClassification
    imagenet_std = (0.229, 0.224, 0.225)
    for kind in ("classifier", "encoder"):
        out = tmp_path / kind
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == "rlt_vjepa2" and config["rlt_threshold"] == 0.0
        assert config["rlt_input_scale"] == pytest.approx([1 / 255 / std for std in imagenet_std])
        with safe_open(out / "model.safetensors", "pt") as weights:
            # A safe_open handle has keys() but no __contains__/__iter__.
            assert not any("predictor" in key for key in weights.keys())  # noqa: SIM118
        processor = json.loads((out / "video_preprocessor_config.json").read_text())
        assert processor["video_processor_type"] == "RLTVideoProcessor"
        assert processor["size"] == {"shortest_edge": 36}  # int(32 * 256 / 224), as V-JEPA 2 resizes
        assert processor["crop_size"] == {"height": 32, "width": 32} and processor["num_frames"] == 8
        assert processor["image_std"] == pytest.approx(imagenet_std) and processor["rescale_offset"] == 0.0
        assert processor["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
        assert rlt.RLTVideoProcessor.from_pretrained(out).rlt_input_scale == pytest.approx(config["rlt_input_scale"])
    card = (tmp_path / "classifier" / "README.md").read_text()
    assert "3D RoPE" in card and "attentive probe" in card and "any multiple of 2 frames" in card
    assert "pipeline_tag: video-classification" in card
    encoder_card = (tmp_path / "encoder" / "README.md").read_text()
    assert "AutoModel.from_pretrained(" in encoder_card and "pipeline_tag" not in encoder_card
    assert json.loads((tmp_path / "encoder" / "config.json").read_text())["architectures"] == ["RLTVJEPA2Model"]
    code = f"""
        import torch
        from transformers import AutoModel, AutoModelForVideoClassification, AutoProcessor
        reference = torch.load({str(source / "reference.pt")!r})
        classifier = AutoModelForVideoClassification.from_pretrained({str(tmp_path / "classifier")!r},
                                                                     trust_remote_code=True).eval()
        encoder = AutoModel.from_pretrained({str(tmp_path / "encoder")!r}, trust_remote_code=True).eval()
        assert type(classifier).__name__ == "RLTVJEPA2ForVideoClassification", type(classifier)
        assert type(encoder).__name__ == "RLTVJEPA2Model", type(encoder)
        processor = AutoProcessor.from_pretrained({str(tmp_path / "encoder")!r}, trust_remote_code=True)
        assert type(processor).__name__ == "RLTVideoProcessor", type(processor)
        with torch.no_grad():
            logits = classifier(pixel_values_videos=reference["clips"]).logits
            states = torch.stack(encoder(pixel_values_videos=reference["clips"]).per_clip())
        torch.testing.assert_close(logits, reference["logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(states, reference["states"], atol=1e-5, rtol=1e-5)
        print("vanilla reproduced")
    """
    assert "vanilla reproduced" in run_without_rlt(code, cwd=tmp_path)


def _labelled_videos(root: Path) -> Path:
    """Two classes of 12-frame 32x32 clips: a still noise background with a bright square, still or moving."""
    from video_helpers import write_video

    rng = np.random.default_rng(0)
    for label in ("still", "moving"):
        (root / label).mkdir(parents=True)
        for index in range(2):
            frames = np.repeat(rng.integers(0, 120, (1, 32, 32, 3), dtype=np.uint8), 12, axis=0)
            for frame in range(12):
                step = frame // 3 if label == "moving" else 0
                frames[frame, 4 : 16, 4 + 4 * step : 16 + 4 * step] = 250
            write_video(root / label / f"{index}.mp4", frames)
    return root


def test_rlt_evaluate_takes_a_vanilla_or_converted_vjepa2_classifier(convertible_folders, tmp_path, capsys):
    data = _labelled_videos(tmp_path / "data")
    converted = tmp_path / "converted"
    rlt.convert(convertible_folders / "classifier", converted)
    reports = {}
    for name, folder in (("vanilla", convertible_folders / "classifier"), ("converted", converted)):
        out = tmp_path / f"{name}.json"
        argv = ["evaluate", str(folder), str(data), "--threshold", "0", "0.1", "--pooling", "mean", "length_weighted",
                "--batch-size", "2", "--workers", "0", "--no-progress", "--json", str(out)]  # fmt: skip
        assert cli_main(argv) == 0, capsys.readouterr().err
        reports[name] = json.loads(out.read_text())["results"]
    rows = reports["vanilla"]
    # The attentive probe takes rlt_pooling (its query counts a token run-length times), so both poolings run.
    assert [(r["threshold"], r["rlt_enabled"], r["pooling"]) for r in rows] == [
        (0.0, False, "-"), (0.1, True, "mean"), (0.1, True, "length_weighted")
    ]  # fmt: skip
    assert rows[0]["tokens_kept_pct"] == 100.0 and rows[1]["tokens_kept_pct"] < 60.0
    for vanilla, converted_row in zip(rows, reports["converted"]):  # the same model, whichever folder
        assert (
            vanilla["top1"] == converted_row["top1"] and vanilla["tokens_kept_pct"] == converted_row["tokens_kept_pct"]
        )


@pytest.mark.parametrize("source", ["from-scratch", "vanilla-folder"])
def test_training_script_trains_vjepa2(source, convertible_folders, tmp_path):
    path = Path(__file__).resolve().parents[1] / "examples" / "train_video_classification.py"
    spec = importlib.util.spec_from_file_location("train_video_classification", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = ["--arch", "vjepa2", "--from-scratch", "tiny"]
    if source == "vanilla-folder":
        model = ["--model", str(convertible_folders / "classifier")]
    out = tmp_path / "run"
    summary = script.main([
        "--synthetic", "16", "--synthetic-eval", "8", *model, "--image-size", "32", "--num-frames", "8",
        "--batch-size", "8", "--num-workers", "0", "--output-dir", str(out), "--epochs", "1",
        "--eval-strategy", "epoch", "--save-strategy", "no",
    ])  # fmt: skip
    assert summary["steps"] == 2 and 0 <= summary["eval_accuracy"] <= 1
    assert summary["mean_tokens_kept"] < summary["tokens_per_clip"]  # the generated clips repeat
    trained = AutoModelForVideoClassification.from_pretrained(out)
    assert type(trained) is RLTVJEPA2ForVideoClassification and trained.config.num_labels == 8
    table = trained.vjepa2.encoder.embeddings.length_embeddings.weight
    assert table.abs().sum() > 0  # trained (from scratch: initialised trunc-normal; from a checkpoint: zeros)
    assert (out / "video_preprocessor_config.json").is_file()
