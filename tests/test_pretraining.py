"""examples/pretrain_videomae.py: tube masks, a tiny pretraining run whose encoder fine-tuning loads, bad input."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import VideoMAEForVideoClassification

from rlt.synthetic import CLASS_NAMES, SyntheticVideoConfig, generate_clips, write_mp4, write_synthetic_cache

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_MODEL = ["--from-scratch", "tiny", "--batch-size", "8", "--num-workers", "0", "--save-strategy", "no",
              "--logging-steps", "1", "--lr", "1e-3"]
TINY_RUN = [*TINY_MODEL, "--image-size", "64", "--num-frames", "8"]
HEAD_KEYS = {"classifier.weight", "classifier.bias", "fc_norm.weight", "fc_norm.bias"}
# What pretraining saves and a classifier does not use: the decoder and the pretraining encoder's final norm.
PRETRAINING_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token", "videomae.layernorm.")


def _script(name: str):
    path = EXAMPLES / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pretrain():
    return _script("pretrain_videomae.py")


@pytest.fixture(scope="module")
def pretrained(pretrain, tmp_path_factory):
    """One epoch over 48 generated 8 x 64 px clips: (output folder, summary)."""
    out = tmp_path_factory.mktemp("mae")
    summary = pretrain.main(["--synthetic", "48", "--epochs", "1", "--output-dir", str(out), *TINY_RUN])
    return out, summary


def _stored_encoder(folder: Path) -> dict[str, torch.Tensor]:
    """The encoder weights as saved, under transformers' current names (the file may use q_bias / v_bias)."""
    renamed = {}
    for key, value in load_file(str(folder / "model.safetensors")).items():
        if key.startswith("videomae.") and not key.startswith(PRETRAINING_ONLY):
            key = key.replace("attention.q_bias", "attention.query.bias").replace(
                "attention.v_bias", "attention.value.bias"
            )
            renamed[key] = value
    return renamed


def _assert_encoder_loaded(model, stored: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    encoder = {key for key in state if key.startswith("videomae.") and "length_embeddings" not in key}
    assert encoder == set(stored), encoder ^ set(stored)
    for key, value in stored.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


# ------------------------------------------------------------------------------------------- masks


def test_tube_masks_hide_the_same_cells_at_every_step_exactly_round_ratio_of_them(pretrain):
    generator = torch.Generator().manual_seed(0)
    for ratio, cells, expected in ((0.9, 16, 14), (0.75, 49, 37), (0.5, 4, 2)):
        mask = pretrain.tube_mask(32, 4, cells, ratio, generator=generator)
        assert mask.shape == (32, 4 * cells) and mask.dtype == torch.bool
        grid = mask.view(32, 4, cells)  # VideoMAE's token order: time step major
        assert torch.equal(grid, grid[:, :1].expand_as(grid)), "a tube: the same cells at every time step"
        assert (grid.sum(-1) == expected).all()
        assert len({tuple(row.tolist()) for row in grid[:, 0]}) > 1, "each clip draws its own cells"
    # The cells are spread uniformly: over many clips every cell is hidden about ratio of the time.
    frequency = pretrain.tube_mask(4000, 1, 16, 0.75, generator=generator).float().mean(0)
    assert frequency.sub(0.75).abs().max() < 0.04


def test_the_trainer_gives_every_batch_a_fresh_mask_on_the_device(pretrain, pretrained):
    out, _ = pretrained
    from transformers import VideoMAEForPreTraining

    model = VideoMAEForPreTraining.from_pretrained(out)
    trainer = pretrain.TubeMaskingTrainer(
        model=model, args=pretrain.TrainingArguments(str(out / "probe"), use_cpu=True, report_to="none"),
        data_collator=pretrain.ClipCollator(), normalizer=pretrain.PixelNormalizer(), mask_ratio=0.9, grid=(4, 16),
    )
    clips = generate_clips(4, config=SyntheticVideoConfig(num_frames=8, image_size=64))[0]
    first = trainer._prepare_inputs({"pixel_values": clips})
    second = trainer._prepare_inputs({"pixel_values": clips})
    assert first["pixel_values"].dtype == torch.float32  # normalised from uint8
    assert first["bool_masked_pos"].shape == (4, 64) and (first["bool_masked_pos"].sum(1) == 4 * 14).all()
    assert not torch.equal(first["bool_masked_pos"], second["bool_masked_pos"])


def test_gradient_accumulation_gives_the_gradient_of_the_whole_batch(pretrain, tmp_path):
    """VideoMAE's loss ignores num_items_in_batch: Trainer must divide it by the accumulation steps."""
    args = pretrain.parse_args(["--synthetic", "8", "--output-dir", str(tmp_path), *TINY_RUN])
    clips = generate_clips(8, config=SyntheticVideoConfig(num_frames=8, image_size=64))[0]
    dataset = [{"pixel_values": clip} for clip in clips]
    masks = pretrain.tube_mask(8, 4, 16, 0.9, generator=torch.Generator().manual_seed(1))
    gradients = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        model = pretrain.build_model(args)
        trainer = pretrain.TubeMaskingTrainer(
            model=model, train_dataset=dataset, data_collator=pretrain.ClipCollator(),
            normalizer=pretrain.PixelNormalizer(), mask_ratio=0.9, grid=(4, 16),
            args=pretrain.TrainingArguments(
                str(tmp_path / "run"), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                max_steps=1, learning_rate=0.0, max_grad_norm=0, use_cpu=True, report_to="none", save_strategy="no",
                remove_unused_columns=False, label_names=[], dataloader_num_workers=0, data_seed=0, seed=0,
            ),
        )
        trainer.get_train_dataloader = lambda size=batch_size: torch.utils.data.DataLoader(
            dataset, batch_size=size, collate_fn=pretrain.ClipCollator()
        )
        seen = []  # the same masks in both runs: clip i always gets masks[i]

        def fixed_masks(inputs, trainer=trainer, seen=seen):
            inputs = pretrain.RLTTrainer._prepare_inputs(trainer, inputs)
            count = inputs["pixel_values"].shape[0]
            inputs["bool_masked_pos"] = masks[sum(seen) : sum(seen) + count]
            seen.append(count)
            return inputs

        trainer._prepare_inputs = fixed_masks
        total = []
        model.decoder.head.weight.register_hook(lambda grad, total=total: total.append(grad.clone()))
        trainer.train()
        gradients.append(sum(total))
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-4, atol=1e-9)


# -------------------------------------------------------------------------------------- the checkpoint


def test_pretraining_writes_a_checkpoint_whose_encoder_a_classifier_loads(pretrained):
    out, summary = pretrained
    assert summary["steps"] == 6 and summary["train_clips"] == 48
    assert summary["tokens_per_clip"] == 64 and summary["visible_tokens_per_clip"] == 4 * 2
    assert len(summary["loss_curve"]) == 6 and all(math.isfinite(e["loss"]) for e in summary["loss_curve"])
    assert summary["train_clips_per_s"] > 0 and len(summary["epoch_wall_s"]) == 1
    assert json.loads((out / "summary.json").read_text())["final_loss"] == pytest.approx(summary["final_loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEForPreTraining"] and config["use_mean_pooling"] is True
    assert (out / "video_preprocessor_config.json").is_file()

    stored = _stored_encoder(out)
    query_bias = stored["videomae.encoder.layer.0.attention.attention.query.bias"]
    assert query_bias.abs().sum() > 0, "trained biases are not zero, so a bias that fails to load shows"
    classifier, info = VideoMAEForVideoClassification.from_pretrained(out, num_labels=8, output_loading_info=True)
    assert set(info["missing_keys"]) == HEAD_KEYS
    assert info["unexpected_keys"] and all(key.startswith(PRETRAINING_ONLY) for key in info["unexpected_keys"])
    assert not info["mismatched_keys"]
    _assert_encoder_loaded(classifier, stored)


def test_the_fine_tuning_script_loads_the_encoder_and_trains(pretrained, tmp_path):
    out, _ = pretrained
    fine_tune = _script("train_video_classification.py")
    argv = [
        "--model", str(out), "--synthetic", "32", "--synthetic-eval", "16", "--num-frames", "8", "--image-size", "64",
        "--max-steps", "2", "--batch-size", "8", "--num-workers", "0", "--eval-strategy", "no", "--save-strategy", "no",
        "--output-dir", str(tmp_path / "fine-tuned"),
    ]  # fmt: skip
    stored = _stored_encoder(out)
    id2label = dict(enumerate(CLASS_NAMES))
    for extra in ([], ["--vanilla"]):  # the RLT class and transformers' own
        args = fine_tune.parse_args([*argv, *extra])
        model = fine_tune.build_model(args, id2label, fine_tune.make_processor(args))
        _assert_encoder_loaded(model, stored)
        assert model.fc_norm is not None  # mean pooling, as VideoMAE fine-tunes

    summary = fine_tune.main(argv)
    assert summary["steps"] == 2
    assert math.isfinite(summary["final_loss"]) and math.isfinite(summary["eval_loss"])
    # transformers' own class: every clip counted with all its tokens (4 time steps x 4 x 4 patches)
    vanilla = fine_tune.main([*argv, "--vanilla", "--output-dir", str(tmp_path / "vanilla")])
    assert vanilla["mean_tokens_kept"] == vanilla["tokens_per_clip"] == 64 and vanilla["kept_fraction"] == 1


def test_pretraining_reads_clip_caches_and_video_files(pretrain, tmp_path, caplog):
    config = SyntheticVideoConfig(num_frames=8, image_size=64)
    write_synthetic_cache(tmp_path / "cache", 8, config=config)
    from_cache = pretrain.main(["--cache", str(tmp_path / "cache"), "--max-steps", "1",
                                "--output-dir", str(tmp_path / "c"), *TINY_MODEL])
    assert from_cache["data"]["data"] == "cache" and from_cache["clip_shape"] == [8, 3, 64, 64]

    clips, _ = generate_clips(4, config=SyntheticVideoConfig(num_frames=16, image_size=64))
    for i, clip in enumerate(clips):  # files at the top and in a sub-folder: no class folders needed
        folder = tmp_path / "videos" / ("nested" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        write_mp4(folder / f"clip{i}.mp4", clip)
    broken = tmp_path / "videos" / "nested" / "broken.mp4"  # skipped with a warning naming it, as elsewhere
    broken.write_bytes(b"not a video")
    with caplog.at_level("WARNING", logger="rlt.collator"):
        from_videos = pretrain.main(["--train", str(tmp_path / "videos"), "--frame-stride", "2", "--max-steps", "1",
                                     "--output-dir", str(tmp_path / "v"), *TINY_RUN])
    assert from_videos["data"]["train_clips"] == 5 and math.isfinite(from_videos["final_loss"])
    skipped = [record.getMessage() for record in caplog.records if "unreadable" in record.getMessage()]
    assert len(skipped) == 1 and str(broken) in skipped[0], skipped
    saved = json.loads((tmp_path / "v" / "video_preprocessor_config.json").read_text())
    assert saved["frame_stride"] == 2 and saved["num_frames"] == 8


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mask-ratio", "0"], "--mask-ratio must lie strictly between 0 and 1"),
        (["--mask-ratio", "1"], "--mask-ratio must lie strictly between 0 and 1"),
        (["--mask-ratio", "1.5"], "--mask-ratio must lie strictly between 0 and 1"),
        (["--mask-ratio", "0.02"], "hides 0 of the 16 cells"),
        (["--num-frames", "7"], "7 frames per clip (--num-frames) are not divisible by the tubelet size 2"),
        (["--image-size", "60"], "frames of 60 px (--image-size) are not divisible by the patch size 16"),
    ],
)
def test_bad_flags_are_argparse_errors_naming_the_problem(pretrain, capsys, flags, message):
    argv = ["--synthetic", "8", "--from-scratch", "tiny", "--image-size", "64", "--num-frames", "8",
            "--output-dir", "unused", *flags]
    with pytest.raises(SystemExit):
        pretrain.parse_args(argv)
    assert message in capsys.readouterr().err


def test_bad_data_is_a_clear_error(pretrain, tmp_path):
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    (tmp_path / "empty" / "class_a" / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match="no video files .* under .*empty"):
        pretrain.main(["--train", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out"), *TINY_RUN])
    with pytest.raises(FileNotFoundError, match="no such video folder or list"):
        pretrain.main(["--train", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out"), *TINY_RUN])

    write_synthetic_cache(tmp_path / "odd", 2, config=SyntheticVideoConfig(num_frames=7, image_size=64))
    with pytest.raises(
        ValueError, match=r"7 frames per clip \(the clip cache .*odd\) are not divisible by the tubelet"
    ):
        pretrain.main(
            ["--cache", str(tmp_path / "odd"), "--output-dir", str(tmp_path / "out"), "--from-scratch", "tiny"]
        )
    with pytest.raises(ValueError, match="holds clips with --image-size 64, not 48"):
        pretrain.main(["--cache", str(tmp_path / "odd"), "--image-size", "48", "--output-dir", str(tmp_path / "out"),
                       "--from-scratch", "tiny"])
