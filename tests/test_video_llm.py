"""RLT for video LLMs (Qwen2.5-VL, Qwen3-VL): tiny random models built from configs, a tiny tokenizer, no download."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from conftest import run_without_rlt
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import rlt
from rlt.models.modeling_rlt_qwen_vl import use_packed_vision_attention
from rlt.models.processing_rlt_qwen_vl import RLTQwenVLProcessor, patchify, unpatchify

SPECIAL = ["<pad>", "<unk>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
WORDS = ["describe", "the", "video", "and", "image", "what", "moves", "?", "a", "b", "c", "d", "e", "f", "g", "h"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[3:]})
    tokenizer.padding_side = "left"
    return tokenizer


TOKENIZER = tiny_tokenizer()
IDS = {token: TOKENIZER.convert_tokens_to_ids(token) for token in SPECIAL}
FAMILIES = {
    "qwen2_5_vl": (transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration, 14),
    "qwen3_vl": (transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration, 16),
}


def tiny_config(family: str) -> dict:
    _, _, patch = FAMILIES[family]
    vision = {"depth": 2, "hidden_size": 32, "num_heads": 2, "out_hidden_size": 32, "intermediate_size": 64,
              "patch_size": patch, "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3}
    text = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 64, "vocab_size": len(SPECIAL + WORDS), "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}}
    if family == "qwen2_5_vl":
        vision |= {"fullatt_block_indexes": [1], "window_size": 4 * patch}  # windows of 2x2 groups: several per slice
    else:
        vision |= {"num_position_embeddings": 16, "deepstack_visual_indexes": [0]}
        text["rope_parameters"] |= {"mrope_interleaved": True}
    return {"vision_config": vision, "text_config": text, "image_token_id": IDS["<|image_pad|>"],
            "video_token_id": IDS["<|video_pad|>"], "vision_start_token_id": IDS["<|vision_start|>"],
            "vision_end_token_id": IDS["<|vision_end|>"], "bos_token_id": None, "eos_token_id": IDS["<|im_end|>"],
            "pad_token_id": IDS["<pad>"], "tie_word_embeddings": False}


def vanilla_model(family: str):
    config_class, model_class, _ = FAMILIES[family]
    torch.manual_seed(0)
    return model_class(config_class(**tiny_config(family))).eval()


def moving_video(frames: int = 8, size: int = 56, seed: int = 0) -> torch.Tensor:
    """uint8 (T, H, W, 3) noise: no two frames alike."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, size, size, 3), generator=generator, dtype=torch.uint8)


def half_static_video(frames: int = 8, size: int = 56) -> torch.Tensor:
    video = moving_video(frames, size)
    video[frames // 2 :] = video[frames // 2]
    return video


def processor_for(model, threshold: float, **kwargs) -> RLTQwenVLProcessor:
    settings = {"min_pixels": 16, "max_pixels": 10**7}  # keep the tiny frames at their size
    return RLTQwenVLProcessor.from_model_config(TOKENIZER, model.config, threshold=threshold, **settings, **kwargs)


class KeepEverything(RLTQwenVLProcessor):
    """The vanilla processor's inputs: every group kept, one placeholder each."""

    def keep_mask(self, pixel_values_videos, video_grid_thw):
        keep, _ = super().keep_mask(pixel_values_videos, video_grid_thw)
        ones = torch.ones_like(keep)
        per_slice = video_grid_thw[:, 1] * video_grid_thw[:, 2] // 4
        groups_per_slice = torch.repeat_interleave(per_slice, video_grid_thw[:, 0])
        lengths = torch.cat([torch.ones(int(g), dtype=torch.long) for g in groups_per_slice])
        return ones, lengths


PROMPT = "describe the video <|vision_start|><|video_pad|><|vision_end|> what moves ?"


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def vanilla(family):
    return vanilla_model(family)


@pytest.mark.parametrize("mode", ["before_encoder", "after_encoder"])
def test_tau_zero_is_the_vanilla_model(vanilla, mode):
    model = rlt.from_model(vanilla, threshold=0.0, rlt_mode=mode)
    assert model.model.visual is vanilla.model.visual  # shared, not copied
    processor = processor_for(model, 0.0)
    inputs = processor([PROMPT, "a b " + PROMPT], videos=[moving_video(), moving_video(seed=1)])
    assert bool(inputs["video_keep_mask"].all())
    vanilla_inputs = {k: v for k, v in inputs.items() if k not in ("video_keep_mask", "video_run_lengths")}
    with torch.no_grad():
        expected = vanilla(**vanilla_inputs).logits
        got = model(**inputs).logits
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert torch.equal(generated, vanilla.generate(**vanilla_inputs, max_new_tokens=4, do_sample=False))


def test_static_half_drops_groups_before_the_tower(vanilla, family):
    model = rlt.from_model(vanilla, threshold=0.1)
    processor = processor_for(model, 0.1)
    inputs = processor(PROMPT, videos=[half_static_video()])
    keep, grid = inputs["video_keep_mask"], inputs["video_grid_thw"][0]
    groups_per_slice = int(grid[1] * grid[2] // 4)
    per_slice = keep.view(int(grid[0]), groups_per_slice).sum(1).tolist()
    # 8 frames = 4 slices; frames 4..7 equal: slices 0, 1, 2 change, slice 3 repeats slice 2.
    expected_last = 1 if family == "qwen3_vl" else 0  # Qwen3-VL keeps one group so the slice keeps its timestamp
    assert per_slice == [groups_per_slice] * 3 + [expected_last]
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == int(keep.sum())
    lengths = inputs["video_run_lengths"].view(int(grid[0]), groups_per_slice)
    # every place's runs cover the clip
    assert torch.equal(lengths.sum(0), torch.full((groups_per_slice,), int(grid[0])))
    assert bool((lengths[keep.view_as(lengths)] > 0).all()) and bool((lengths[~keep.view_as(lengths)] == 0).all())
    rows_seen = []
    hook = model.model.visual.patch_embed.register_forward_hook(lambda m, args, out: rows_seen.append(out.shape[0]))
    try:
        with torch.no_grad():
            model(**inputs)
            generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    assert rows_seen[0] == int(keep.sum()) * 4 and rows_seen[0] < inputs["pixel_values_videos"].shape[0]
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
    # The kept tokens' positions are the vanilla positions at those places.
    full = KeepEverything.from_model_config(TOKENIZER, model.config, min_pixels=16, max_pixels=10**7)(
        PROMPT, videos=[half_static_video()])
    assert full["input_ids"].shape[1] - inputs["input_ids"].shape[1] == int((~keep).sum())
    vanilla_positions, vanilla_deltas = vanilla.model.get_rope_index(
        full["input_ids"], full["mm_token_type_ids"], video_grid_thw=full["video_grid_thw"],
        **{k: full[k] for k in ("second_per_grid_ts",) if k in full})
    positions, deltas = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        video_keep_mask=keep, **{k: inputs[k] for k in ("second_per_grid_ts",) if k in inputs})
    kept_places = kept_token_places(full["input_ids"][0], model.config.video_token_id, keep)
    assert torch.equal(positions[:, 0], vanilla_positions[:, 0, kept_places])
    assert int(deltas) == int(vanilla_deltas) + int((~keep).sum())


def test_batch_positions_are_the_vanilla_positions_at_kept_places(vanilla):
    # Left-padded prompts of different lengths, videos with different kept counts (Qwen3-VL: a run per slice).
    model = rlt.from_model(vanilla, threshold=0.1)
    videos = [half_static_video(), moving_video(seed=3), half_static_video(frames=6)]
    prompts = [PROMPT, "a b c " + PROMPT, PROMPT + " " + PROMPT]
    videos.append(moving_video(frames=6, seed=4))
    inputs = processor_for(model, 0.1)(prompts, videos=videos)
    full = KeepEverything.from_model_config(TOKENIZER, model.config, min_pixels=16, max_pixels=10**7)(
        prompts, videos=videos)
    extra = {k: inputs[k] for k in ("second_per_grid_ts",) if k in inputs}
    positions, deltas = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        attention_mask=inputs["attention_mask"], video_keep_mask=inputs["video_keep_mask"], **extra)
    vanilla_positions, vanilla_deltas = vanilla.model.get_rope_index(
        full["input_ids"], full["mm_token_type_ids"], video_grid_thw=full["video_grid_thw"],
        attention_mask=full["attention_mask"], **extra)
    per_prompt = model.model._groups_per_prompt(inputs["input_ids"], inputs["video_keep_mask"],
                                                inputs["video_grid_thw"])
    video_token = model.config.video_token_id
    for row, keep in enumerate(torch.split(inputs["video_keep_mask"], per_prompt)):
        ours = inputs["attention_mask"][row].bool()
        theirs = full["attention_mask"][row].bool()
        places = kept_token_places(full["input_ids"][row][theirs], video_token, keep)
        assert torch.equal(positions[:, row][:, ours], vanilla_positions[:, row][:, theirs][:, places])
        assert int(deltas[row]) == int(vanilla_deltas[row]) + int((~keep).sum())


def kept_token_places(full_ids: torch.Tensor, video_token: int, keep: torch.Tensor) -> torch.Tensor:
    """Indices into a full prompt of the tokens an RLT prompt keeps (every text token, the kept placeholders)."""
    is_video = full_ids == video_token
    kept = torch.ones_like(full_ids, dtype=torch.bool)
    kept[is_video] = keep
    return kept.nonzero().flatten()


def test_after_encoder_matches_vanilla_features_at_kept_groups(vanilla):
    model = rlt.from_model(vanilla, threshold=0.1, rlt_mode="after_encoder")
    inputs = processor_for(model, 0.1)(PROMPT, videos=[half_static_video()])
    with torch.no_grad():
        full = vanilla.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        kept = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                              video_keep_mask=inputs["video_keep_mask"])
    torch.testing.assert_close(kept.pooler_output[0], full.pooler_output[0][inputs["video_keep_mask"]])


def test_batch_with_different_kept_counts_matches_one_by_one(vanilla):
    model = rlt.from_model(vanilla, threshold=0.1)
    processor = processor_for(model, 0.1)
    videos = [half_static_video(), moving_video(seed=3)]
    prompts = [PROMPT, "a " + PROMPT]
    batch = processor(prompts, videos=videos)
    counts = [int(k.sum()) for k in torch.split(batch["video_keep_mask"], [len(batch["video_keep_mask"]) // 2] * 2)]
    assert counts[0] < counts[1]
    with torch.no_grad():
        batched = model.generate(**batch, max_new_tokens=3, do_sample=False)
        for row, (prompt, video) in enumerate(zip(prompts, videos)):
            single = model.generate(**processor(prompt, videos=[video]), max_new_tokens=3, do_sample=False)
            assert torch.equal(batched[row, -3:], single[0, -3:])


@pytest.mark.parametrize("expansion", [{"do_sample": True, "top_k": 1, "num_return_sequences": 2},
                                       {"num_beams": 2, "num_return_sequences": 2, "do_sample": False}])
def test_generation_expands_each_prompts_keep_mask(vanilla, expansion):
    # num_return_sequences and beam search repeat every prompt: its videos' groups must be repeated with it.
    model = rlt.from_model(vanilla, threshold=0.1)
    processor = processor_for(model, 0.1)
    inputs = processor([PROMPT, "a " + PROMPT], videos=[half_static_video(), moving_video(seed=3)])
    assert not bool(inputs["video_keep_mask"].all())
    settings = {"max_new_tokens": 2, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        single = model.generate(**inputs, do_sample=False, **settings)
        repeated = model.generate(**inputs, **expansion, **settings)
    # The first step sees each prompt's own video in every copy of it.
    torch.testing.assert_close(repeated.logits[0], single.logits[0].repeat_interleave(2, 0))
    if expansion.get("do_sample"):  # top-1 sampling is greedy
        assert torch.equal(repeated.sequences, single.sequences.repeat_interleave(2, 0))


def test_video_and_image_in_one_prompt_and_text_only(vanilla, family):
    model = rlt.from_model(vanilla, threshold=0.1)
    processor = processor_for(model, 0.1)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(patch_size=model.config.vision_config.patch_size, merge_size=2,
                                               temporal_patch_size=2, min_pixels=16, max_pixels=10**7)
    processor = processor_for(model, 0.1, image_processor=image_processor)
    prompt = "the image <|vision_start|><|image_pad|><|vision_end|> and " + PROMPT
    image = moving_video(1, 64)[0].numpy()
    inputs = processor(prompt, videos=[half_static_video()], images=[image])
    assert int((inputs["input_ids"] == IDS["<|image_pad|>"]).sum()) == int(inputs["image_grid_thw"].prod() // 4)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
        text = processor("describe the video")
        assert "video_keep_mask" not in text
        assert torch.equal(model.generate(**text, max_new_tokens=3, do_sample=False),
                           vanilla.generate(**text, max_new_tokens=3, do_sample=False))


def test_bad_input_errors(vanilla):
    model = rlt.from_model(vanilla, threshold=0.1)
    inputs = processor_for(model, 0.1)(PROMPT, videos=[half_static_video()])
    wrong = dict(inputs)
    wrong["video_keep_mask"] = torch.ones_like(inputs["video_keep_mask"])  # more kept than placeholders
    with pytest.raises(ValueError, match="video placeholder tokens but video_keep_mask keeps"):
        model(**wrong)
    wrong["video_keep_mask"] = inputs["video_keep_mask"][:-1]
    with pytest.raises(ValueError, match="video_keep_mask must be a bool tensor of shape"):
        model(**wrong)
    with pytest.raises(ValueError, match="threshold must be"):
        processor_for(model, -0.1)
    with pytest.raises(ValueError, match="rlt_threshold must be"):
        rlt.from_model(vanilla, threshold=-1.0)
    with pytest.raises(ValueError, match="more video placeholders"):
        processor_for(model, 0.1)(PROMPT + " " + PROMPT, videos=[half_static_video()])


def test_processor_rows_round_trip(family):
    patch = FAMILIES[family][2]
    video = torch.randn(4, 3, 4 * patch, 6 * patch)
    rows = patchify(video, patch, 2, 2)
    assert torch.equal(unpatchify(rows, (2, 4, 6), patch, 2, 2), video)


@pytest.mark.parametrize("compare_to", ["previous", "last_kept"])
def test_keep_mask_from_rows_is_run_length_tokenize_on_frames(family, compare_to):
    # The processor reads the rule from its rows; run_length_tokenize applies it to the frames themselves.
    processor = RLTQwenVLProcessor(None, family, threshold=0.1, compare_to=compare_to, min_pixels=16,
                                   max_pixels=10**7)
    video = half_static_video(frames=12, size=64)
    video[3:6, :32] = video[2, :32]  # still top half for a while: per-place runs within slices that change
    video[7] = video[6] // 2 + 64  # a small change the rule may or may not keep
    prepared = processor.prepare_videos([video, moving_video(4, 64, seed=5)])
    keep, lengths = processor.keep_mask(**prepared)
    settings = processor.video_settings
    patch, slice_frames, merge = settings["patch_size"], settings["temporal_patch_size"], settings["merge_size"]
    expected_keep, expected_lengths, start = [], [], 0
    for grid in prepared["video_grid_thw"].tolist():
        rows = prepared["pixel_values_videos"][start : start + grid[0] * grid[1] * grid[2]]
        start += len(rows)
        frames = unpatchify(rows, grid, patch, slice_frames, merge)
        tokens = rlt.run_length_tokenize(frames.unsqueeze(0), tubelet_size=slice_frames, patch_size=patch * merge,
                                         threshold=0.1, input_scale=processor.input_scale, compare_to=compare_to)
        mask = tokens.keep_mask.clone()
        if family == "qwen3_vl":
            mask[..., 0, 0] |= ~mask.flatten(2).any(-1)
        expected_keep.append(mask.flatten())
        expected_lengths.append(rlt.models.tokenizer.run_lengths_from_keep_mask(mask).flatten())
    assert torch.equal(keep, torch.cat(expected_keep))
    assert torch.equal(lengths, torch.cat(expected_lengths))
    assert 0 < int(keep.sum()) < len(keep)


def test_processor_matches_transformers_video_processor(family):
    pytest.importorskip("torchvision")
    video_processor_class = {"qwen2_5_vl": "Qwen2VLVideoProcessor", "qwen3_vl": "Qwen3VLVideoProcessor"}[family]
    reference = getattr(transformers, video_processor_class)(size={"shortest_edge": 16, "longest_edge": 10**7},
                                                           do_sample_frames=False)
    ours = RLTQwenVLProcessor(TOKENIZER, family, threshold=0.1, min_pixels=16, max_pixels=10**7)
    video = moving_video(8, 64)  # not a multiple of the patch grid: resized
    expected = reference(videos=[video.numpy()], return_tensors="pt")
    got = ours.prepare_videos([video])
    assert torch.equal(got["video_grid_thw"], expected["video_grid_thw"])
    torch.testing.assert_close(got["pixel_values_videos"], expected["pixel_values_videos"], atol=2e-2, rtol=0)


def test_packed_vision_attention_is_exact_on_cpu(vanilla):
    model = rlt.from_model(vanilla, threshold=0.0)
    inputs = processor_for(model, 0.0)(PROMPT, videos=[moving_video()])
    with torch.no_grad():
        expected = model(**inputs).logits
        use_packed_vision_attention(model)
        try:
            got = model(**inputs).logits
        finally:
            use_packed_vision_attention(model, enabled=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_run_length_embedding_starts_at_zero(vanilla):
    # Zero-initialised: a converted model with the table computes what it did without it.
    model = rlt.from_model(vanilla, threshold=0.1, rlt_use_length_encoding=True)
    assert torch.equal(model.model.rlt_length_embedding.weight, torch.zeros_like(model.model.rlt_length_embedding.weight))
    inputs = processor_for(model, 0.1)(PROMPT, videos=[half_static_video()])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, rlt.from_model(vanilla, threshold=0.1)(**inputs).logits)


def test_saved_folder_loads_without_rlt(vanilla, tmp_path):
    model = rlt.from_model(vanilla, threshold=0.1, rlt_use_length_encoding=True)
    model.save_pretrained(tmp_path)
    inputs = processor_for(model, 0.1)(PROMPT, videos=[half_static_video()])
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(**inputs).logits, tmp_path / "logits.pt")
    stdout = run_without_rlt(
        f"""
        import torch
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            logits = model(**inputs).logits
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
        torch.testing.assert_close(logits, torch.load({str(tmp_path / "logits.pt")!r}))
        print(type(model).__name__)
        """,
        cwd=tmp_path,
    )
    assert "RLTQwen" in stdout


def test_inspect_video_llm_on_the_sample_clip(tmp_path):
    from rlt.inspection import run_video_llm_inspection

    results = run_video_llm_inspection(None, [0.1], family="qwen2_5_vl", num_frames=8, out_dir=tmp_path)
    (name, tau, per_slice), = results
    assert tau == 0.1 and len(per_slice) == 4
    assert per_slice[0] == max(per_slice) and sum(per_slice) < 4 * per_slice[0]  # slice 0 whole, some dropped later
    assert (tmp_path / f"{Path(name).stem}_qwen2_5_vl_tau0.1.png").is_file()
