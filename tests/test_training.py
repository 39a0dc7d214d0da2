"""Fine-tuning with Trainer: the generated task, random-drop ablation, collator, metrics, a real training run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VIDEOMAE
from transformers import AutoModelForVideoClassification, EvalPrediction, TrainingArguments

import rlt
from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification, RLTVivitConfig, RLTVivitForVideoClassification
from rlt.collator import ClipCollator, random_drop_keep_mask
from rlt.common import PixelNormalizer
from rlt.synthetic import (
    CLASS_NAMES,
    SyntheticVideoConfig,
    SyntheticVideoDataset,
    _clip_parameters,
    generate_clips,
    task_config,
    write_synthetic_cache,
)
from rlt.training import RLTTrainer, compute_metrics

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_video_classification.py"
SMALL = SyntheticVideoConfig(num_frames=8, image_size=32)


def imagenet_normalise(clips: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (clips.float() / 255 - mean) / std


# ------------------------------------------------------------------------------ the generated task


def test_generator_is_deterministic_per_clip_and_seed():
    clips, labels = generate_clips(6, seed=7, config=SMALL)
    assert clips.dtype == torch.uint8 and clips.shape == (6, 8, 3, 32, 32)
    assert labels.tolist() == [0, 1, 2, 3, 4, 5]
    again, _ = generate_clips([4, 5, 0], seed=7, config=SMALL)  # other batch, other order
    torch.testing.assert_close(again, clips[[4, 5, 0]], rtol=0, atol=0)
    other, _ = generate_clips(6, seed=8, config=SMALL)
    assert (other.float() - clips.float()).abs().mean() > 10
    dataset = SyntheticVideoDataset(6, seed=7, config=SMALL, chunk_size=4)
    torch.testing.assert_close(dataset.clips, clips, rtol=0, atol=0)
    assert dataset[3]["labels"] == 3 and dataset.class_names == list(CLASS_NAMES)


def test_classes_move_the_object_as_named():
    config = SyntheticVideoConfig(num_frames=16, image_size=224)
    for index in range(64):
        params = _clip_parameters(0, index, config, num_images=10)
        kind = config.classes[params["label"]]
        target = params["sprites"][1]
        path = target["position"] + params["camera"]  # where it is in the scene
        shift = path[-1] - path[0]
        moved_in_frame = np.abs(target["position"][-1] - target["position"][0]).max()
        if kind in ("static", "zoom", "blink", "camera_pan"):
            assert np.abs(shift).max() < 1e-9, kind  # still in the scene
        if kind == "move_left":
            assert shift[0] < -abs(shift[1]) * 0.5 and shift[0] < -5
        if kind == "move_right":
            assert shift[0] > abs(shift[1]) * 0.5 and shift[0] > 5
        if kind == "move_up":
            assert shift[1] < -abs(shift[0]) * 0.5 and shift[1] < -5
        if kind == "move_down":
            assert shift[1] > abs(shift[0]) * 0.5 and shift[1] > 5
        if kind == "camera_pan":
            assert moved_in_frame > 5  # the whole scene shifts in the frame
        radius = target["radius"][:, 0]
        if kind == "zoom":
            assert max(radius[-1] / radius[0], radius[0] / radius[-1]) > 1.5
        else:
            assert np.ptp(radius) == 0
        assert target["visible"].all() != (kind == "blink")


def test_static_clips_keep_few_tokens_and_pans_keep_many():
    config = SyntheticVideoConfig(num_frames=8, image_size=64, shake_prob=0.0)
    static = [i for i in range(48) if i % 8 == CLASS_NAMES.index("static")]
    pans = [i for i in range(48) if i % 8 == CLASS_NAMES.index("camera_pan")]
    counts = {}
    for name, indices in (("static", static), ("pan", pans)):
        clips, _ = generate_clips(indices, seed=0, config=config)
        counts[name] = rlt.run_length_tokenize(imagenet_normalise(clips), threshold=0.1).kept_fraction
    # 4 x 4 cells x 4 time steps: the first step (25%) is always kept.
    assert counts["static"].mean() < 0.45, counts
    assert counts["pan"].mean() > 0.75, counts
    shaky, _ = generate_clips(static, seed=0, config=SyntheticVideoConfig(num_frames=8, image_size=64, shake_prob=1.0))
    shaky_kept = rlt.run_length_tokenize(imagenet_normalise(shaky), threshold=0.1).kept_fraction
    assert shaky_kept.mean() > counts["static"].mean() + 0.2  # a shaking camera costs RLT tokens


def test_task_variants_and_dense_time_step():
    still = task_config("still", image_size=64, num_frames=8)
    assert (still.distractor_prob, still.occluder_prob, still.shake_prob, still.max_noise) == (0, 0, 0, 0)
    assert task_config("full") == SyntheticVideoConfig()
    with pytest.raises(ValueError, match="unknown synthetic task variant"):
        task_config("noisy")
    with pytest.raises(ValueError, match="time_step"):
        SyntheticVideoConfig(time_step=0)
    dense = task_config("still", image_size=64, num_frames=8, time_step=0.5)
    mover = CLASS_NAMES.index("move_right")
    normal_path = _clip_parameters(0, mover, still, num_images=10)["sprites"][1]["position"]
    dense_path = _clip_parameters(0, mover, dense, num_images=10)["sprites"][1]["position"]
    # Same motion, twice the frame rate: half the distance per frame.
    np.testing.assert_allclose(np.diff(dense_path, axis=0), np.diff(normal_path, axis=0) / 2)


# ---------------------------------------------------------------------------- collator, metrics


def test_random_drop_keeps_rlt_counts_per_clip_at_random_places():
    clips, _ = generate_clips(8, seed=1, config=SMALL)
    collator = ClipCollator(drop="random")
    batch = collator([{"pixel_values": c, "labels": 0} for c in clips])
    rlt_mask = rlt.run_length_tokenize(imagenet_normalise(clips), threshold=0.1).keep_mask
    random_mask = batch["keep_mask"]
    assert batch["pixel_values"].dtype == torch.uint8  # normalised later, on the device
    torch.testing.assert_close(random_mask.flatten(1).sum(1), rlt_mask.flatten(1).sum(1))
    assert random_mask[:, 0].all()
    assert not torch.equal(random_mask, rlt_mask)
    # The RLT collator reproduces the model's own keep mask from uint8 clips.
    assert torch.equal(ClipCollator(drop="rlt")([{"pixel_values": c} for c in clips])["keep_mask"], rlt_mask)
    mask = torch.rand(64, 4, 3, 3) > 0.5
    mask[:, 0] = True
    dropped = random_drop_keep_mask(mask)
    torch.testing.assert_close(dropped.flatten(1).sum(1), mask.flatten(1).sum(1))
    # Random places: over many clips each later tubelet is kept about as often as the mean.
    assert dropped[:, 1:].float().mean(0).std() < 0.15


def test_pixel_normalizer_matches_the_processor():
    processor = rlt.RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    normalizer = PixelNormalizer.from_processor(processor)
    torch.testing.assert_close(normalizer(clip), processor.normalize_frames(clip.float()), atol=1e-5, rtol=1e-5)
    assert normalizer.input_scale == pytest.approx(processor.rlt_input_scale)
    vivit = rlt.RLTVideoProcessor(
        rescale_factor=1 / 127.5, rescale_offset=-1.0, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    torch.testing.assert_close(PixelNormalizer.from_processor(vivit)(clip), vivit.normalize_frames(clip.float()))
    # its (C, 1, 1) mean and scale are made once per device, for instances made either way
    assert set(normalizer._affine) == {clip.device} and normalizer._affine_on(clip.device)[0].shape == (3, 1, 1)
    assert PixelNormalizer()(clip).shape == clip.shape


def test_top1_top5_accuracy():
    logits = np.array([[9, 1, 2, 3, 4, 5, 0], [0, 1, 2, 3, 4, 5, 9], [9, 8, 7, 6, 5, 4, 3]], dtype=np.float32)
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 2, 6])))
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["top5_accuracy"] == pytest.approx(2 / 3)  # label 2 is 5th of row 1; label 6 is last of row 2
    assert compute_metrics(EvalPrediction(predictions=(logits[:, :3], None), label_ids=np.array([0, 2, 1])))[
        "top5_accuracy"
    ] == 1.0


# ------------------------------------------------------------------------- DDP: no unused parameters


@pytest.mark.parametrize(
    "name",
    ["rlt", "rlt_off", "no_length_encoding", "random_drop", "vivit", "vanilla"],
)
def test_every_parameter_gets_a_gradient(name):
    """The example sets ddp_find_unused_parameters=False: a parameter without a gradient would hang DDP."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    clips = imagenet_normalise(generate_clips(4, seed=0, config=SyntheticVideoConfig(num_frames=8, image_size=32))[0])
    labels = torch.tensor([0, 1, 2, 3])
    kwargs = {}
    if name == "vivit":
        config = RLTVivitConfig(
            image_size=32, num_frames=8, tubelet_size=[2, 16, 16], hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, num_labels=5, rlt_length_encoding_init="trunc_normal",
        )
        model = RLTVivitForVideoClassification(config)
    elif name == "vanilla":
        model = VideoMAEForVideoClassification(VideoMAEConfig(**TINY_VIDEOMAE))
    else:
        config = RLTVideoMAEConfig(
            **TINY_VIDEOMAE,
            rlt_enabled=name != "rlt_off",
            rlt_use_length_encoding=name != "no_length_encoding",
            rlt_length_encoding_init="trunc_normal",
        )
        model = RLTVideoMAEForVideoClassification(config)
        if name == "random_drop":
            kwargs["keep_mask"] = ClipCollator(drop="random").keep_mask(clips)
    model.train()
    model(clips, labels=labels, **kwargs).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


# ------------------------------------------------------------------------------------ Trainer runs


def test_trainer_on_mp4_files_loss_falls_and_checkpoint_loads_back(tmp_path):
    pytest.importorskip("av")
    from rlt.synthetic import write_synthetic_split

    config = SyntheticVideoConfig(num_frames=8, image_size=32, classes=("static", "camera_pan"))
    csv_path = write_synthetic_split(tmp_path / "data", "train", 16, seed=0, config=config, crf=10)
    assert len((tmp_path / "data" / "train" / "camera_pan").glob("*.mp4").__iter__().__next__().name) > 0
    dataset = rlt.load_video_dataset(csv_path)
    assert dataset.features["label"].names == ["camera_pan", "static"]
    processor = rlt.RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    dataset = dataset.with_transform(rlt.VideoTransform(processor))

    names = dataset.features["label"].names
    model_config = RLTVideoMAEConfig(
        **{**TINY_VIDEOMAE, "num_labels": 2},
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        rlt_length_encoding_init="trunc_normal",
    )
    model = RLTVideoMAEForVideoClassification(model_config)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        max_steps=16,
        logging_steps=1,
        save_strategy="steps",
        save_steps=16,
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = RLTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=ClipCollator.for_model(model_config),
        compute_metrics=compute_metrics,
        normalizer=PixelNormalizer.from_processor(processor),
        tokens_per_clip=16,  # 4 time steps x 2 x 2 cells
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] >= 0.75 and np.isfinite(metrics["eval_loss"])
    stats = trainer.training_stats()
    assert stats["train_clips"] == 16 * 8
    assert 4 < stats["mean_tokens_kept"] < 16  # static clips drop tokens, pans keep them
    assert stats["kept_fraction"] == pytest.approx(stats["mean_tokens_kept"] / 16)

    checkpoint = tmp_path / "run" / "checkpoint-16"
    assert (checkpoint / "config.json").is_file()
    loaded = AutoModelForVideoClassification.from_pretrained(checkpoint).eval()
    assert type(loaded) is RLTVideoMAEForVideoClassification
    model.eval()
    clips = torch.stack([dataset[i]["pixel_values"] for i in range(4)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips).logits, model(clips).logits)
    assert loaded.config.id2label[0] == "camera_pan"


def _example(path: Path = EXAMPLE):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_script_random_drop_token_budget_and_resume(tmp_path):
    script = _example()
    out = tmp_path / "run"
    argv = [
        "--synthetic", "48", "--synthetic-eval", "16", "--from-scratch", "tiny", "--image-size", "32",
        "--num-frames", "8", "--batch-size", "8", "--token-budget", "200", "--random-drop",
        "--num-workers", "0", "--output-dir", str(out), "--save-strategy", "epoch", "--epochs", "1",
        "--eval-strategy", "no", "--logging-steps", "1", "--profile-steps", "1", "--profile-after", "1",
    ]  # fmt: skip
    summary = script.main(argv)
    assert summary["mode"] == "random-drop" and summary["token_budget"] == 200
    assert summary["profile"]["steps"] == [2, 2] and summary["profile"]["wall_ms_per_step"] > 0
    assert summary["train_clips"] == 48  # one epoch: every clip once
    assert summary["steps"] < 48 // 8  # RLT keeps < 32 of 64 tokens here: more than 8 clips fit 200 tokens
    assert 0 <= summary["eval_accuracy"] <= 1 and len(summary["epoch_wall_s"]) == 1
    assert summary["loader_wait_s"] >= 0 and summary["mean_tokens_kept"] < 64
    assert json.loads((out / "summary.json").read_text())["mode"] == "random-drop"
    assert (out / "video_preprocessor_config.json").is_file() and (out / "README.md").is_file()
    # The card carries this run's own held-out figures, as a Hub reader sees them (model-index).
    from huggingface_hub import ModelCard

    results = {r.metric_type: r for r in ModelCard.load(out / "README.md").data.eval_results}
    assert results["accuracy"].metric_value == round(summary["eval_accuracy"], 4)
    assert results["top_5_accuracy"].metric_value == round(summary["eval_top5_accuracy"], 4)
    assert results["accuracy"].dataset_type == "rlt-synthetic-motion"
    assert results["accuracy"].dataset_split == "validation"
    loaded = AutoModelForVideoClassification.from_pretrained(out)
    assert loaded.config.num_labels == len(CLASS_NAMES)

    resumed = script.main([*argv[:-10], "--epochs", "2", "--eval-strategy", "no", "--resume-from-checkpoint", "last"])
    assert resumed["steps"] > summary["steps"] and resumed["train_clips"] == 48  # only the second epoch ran


def test_example_script_renders_clips_in_the_checkpoints_shape(tmp_path):
    """With --model, generated clips take the checkpoint's frames and size; a contradicting flag is an error."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    folder = tmp_path / "vanilla"
    VideoMAEForVideoClassification(VideoMAEConfig(**TINY_VIDEOMAE)).save_pretrained(folder)
    script = _example()
    argv = ["--model", str(folder), "--synthetic", "16", "--synthetic-eval", "8", "--batch-size", "8",
            "--num-workers", "0", "--max-steps", "1", "--eval-strategy", "no", "--save-strategy", "no",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    summary = script.main(argv)
    assert summary["clip_shape"] == [
        TINY_VIDEOMAE["num_frames"], 3, TINY_VIDEOMAE["image_size"], TINY_VIDEOMAE["image_size"]
    ]
    with pytest.raises(ValueError, match="leave --num-frames out"):
        script.main([*argv, "--num-frames", str(2 * TINY_VIDEOMAE["num_frames"])])


def test_example_script_rejects_contradictory_switches(capsys):
    script = _example()
    with pytest.raises(SystemExit):
        script.parse_args(
            ["--synthetic", "8", "--from-scratch", "tiny", "--output-dir", "x", "--vanilla", "--random-drop"]
        )
    assert "--vanilla runs transformers' own class" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--cache", "c", "--synthetic-on-device", "--from-scratch", "tiny", "--output-dir", "x"])
    assert "--synthetic-on-device go with --synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--synthetic", "8", "--from-scratch", "tiny", "--output-dir", "x", "--profile-steps", "-1"])
    assert "--profile-steps and --profile-after must be >= 0" in capsys.readouterr().err


def test_example_writes_the_generated_task_as_clip_caches(tmp_path):
    """make_synthetic_dataset.py --cache: the clips --synthetic renders, with their labels, readable by rlt evaluate."""
    from rlt.cache import ClipCache, load_clip_cache

    module = _example(EXAMPLE.parent / "make_synthetic_dataset.py")
    module.main(
        [str(tmp_path), "--train", "0", "--validation", "10", "--image-size", "32", "--num-frames", "4", "--cache"]
    )

    assert not (tmp_path / "train").exists()
    cache = load_clip_cache(tmp_path / "validation", normalize=False)
    config = SyntheticVideoConfig(num_frames=4, image_size=32)
    clips, labels = generate_clips(10, seed=module.VALIDATION_SEED_OFFSET, config=config)
    assert ClipCache(tmp_path / "validation").class_names == list(CLASS_NAMES)
    assert [cache[i]["labels"] for i in range(10)] == labels.tolist()
    torch.testing.assert_close(torch.stack([cache[i]["clip"] for i in range(10)]), clips)
    with pytest.raises(ValueError, match="num_clips and chunk_size must be at least 1"):
        write_synthetic_cache(tmp_path / "none", 0, config=config)


def test_example_script_trains_on_clip_caches(tmp_path, monkeypatch):
    """--cache: a keep-only cache's stored keep masks reach the model and its stored counts make the token
    budget; --eval-cache written apart is relabelled by class name; without it the cache is split by class."""
    from rlt.cache import CachedClips, ClipCache, write_clip_cache

    names = list(CLASS_NAMES)
    clips, labels = generate_clips(16, config=SMALL)
    write_clip_cache(clips, labels.tolist(), tmp_path / "kept", names, keep_only_threshold=0.1, progress=False)
    eval_clips, eval_labels = generate_clips(range(16, 20), config=SMALL)
    eval_names = sorted({names[label] for label in eval_labels.tolist()})  # numbered otherwise than in training
    eval_as_names = [names[label] for label in eval_labels.tolist()]
    write_clip_cache(eval_clips, eval_as_names, tmp_path / "val", eval_names, progress=False)
    script = _example()
    batches, collate = [], ClipCollator.__call__

    def recorded(collator, features):
        batches.append(collate(collator, features))
        return batches[-1]

    monkeypatch.setattr(ClipCollator, "__call__", recorded)
    argv = ["--cache", str(tmp_path / "kept"), "--eval-cache", str(tmp_path / "val"), "--from-scratch", "tiny",
            "--image-size", "32", "--num-frames", "8", "--token-budget", "200", "--num-workers", "0",
            "--max-steps", "2", "--eval-strategy", "no", "--save-strategy", "no",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    summary = script.main(argv)
    data = summary["data"]
    assert data["data"] == "cache" and data["train_clips"] == 16 and data["eval_clips"] == 4
    # Two training steps over the keep-only cache (all 16 clips fit the budget), then the full eval cache.
    assert [(len(batch["labels"]), "keep_mask" in batch) for batch in batches] == [(16, True), (16, True), (4, False)]
    stored = ClipCache(tmp_path / "kept")
    stored_kept = sum(int(stored.keep_mask(i).sum()) for i in range(16))
    assert [int(batch["keep_mask"].sum()) for batch in batches[:2]] == [stored_kept, stored_kept]

    args = script.parse_args(argv)
    train, evaluation, class_names, _ = script.load_data(args, stored.processor, "cpu")
    assert isinstance(train, CachedClips) and class_names == names
    assert [evaluation[i]["labels"] for i in range(4)] == eval_labels.tolist()  # the training cache's ids

    # No --eval-cache: a tenth of the cache, stratified by class (two classes here, one clip of each).
    write_clip_cache(clips, [i % 2 for i in range(16)], tmp_path / "two", ["odd", "even"], progress=False)
    args = script.parse_args([argv[0], str(tmp_path / "two"), *argv[4:]])
    train, evaluation, _, _ = script.load_data(args, stored.processor, "cpu")
    assert sorted(train.indices + evaluation.indices) == list(range(16))
    assert sorted(evaluation[i]["labels"] for i in range(len(evaluation))) == [0, 1]
