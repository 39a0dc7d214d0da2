"""`rlt evaluate`: the table and JSON, identical inputs for every threshold, every data source, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_VIDEOMAE, save_vanilla_checkpoint, tiny_videomae_classifier
from transformers import VideoMAEConfig, VideoMAEForVideoClassification
from video_helpers import write_video

from rlt import RLTVideoProcessor
from rlt.cache import cache_clips, prepare_clip
from rlt.cli import main
from rlt.conversion import model_and_processor
from rlt.evaluation import evaluate

CLASSES = ["left", "still", "up"]


def class_clip(name: str, rng) -> np.ndarray:
    """12 frames of 32x32: a static noise background with a bright square that moves by class."""
    frames = np.repeat(rng.integers(0, 120, (1, 32, 32, 3), dtype=np.uint8), 12, axis=0)
    start = rng.integers(0, 8)
    for f in range(12):
        step = f // 3 if name != "still" else 0
        y, x = (start, start + 3 * step) if name == "left" else (start + 3 * step, start)
        frames[f, y : y + 12, x : x + 12] = 250
    return frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / "data" / name).mkdir(parents=True)
        for i in range(3):
            write_video(root / "data" / name / f"{i}.mp4", class_clip(name, rng))
    vanilla = tiny_videomae_classifier(CLASSES).eval()
    save_vanilla_checkpoint(root / "model", vanilla)
    return root, vanilla


def test_evaluate_prints_the_table_for_two_thresholds_and_writes_json(setup, tmp_path, capsys):
    root, vanilla = setup
    out = tmp_path / "results.json"
    args = ["evaluate", str(root / "model"), str(root / "data"), "--threshold", "0", "0.1", "--pooling", "mean",
            "length_weighted", "--batch-size", "4", "--workers", "0", "--json", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("threshold"))
    for column in ("pooling", "top-1", "top-5", "tokens kept", "model clips/s", "d top-1", "speed-up"):
        assert column in header
    rows = [line.split() for line in printed.splitlines() if line.startswith(("0 (off)", "0.1 "))]
    assert [row[0] for row in rows] == ["0", "0.1", "0.1"] and [rows[1][1], rows[2][1]] == ["mean", "length_weighted"]
    assert "loader:" in printed and "clips/s" in printed

    report = json.loads(out.read_text())
    keys = ("model", "data", "device", "dtype", "num_clips", "loader", "results", "failed", "torch", "transformers")
    assert set(keys) <= set(report)
    assert report["num_clips"] == 9 and report["loader"]["kind"] == "videos" and report["loader"]["clips_per_s"] > 0
    results = report["results"]
    assert [(r["threshold"], r["rlt_enabled"], r["pooling"]) for r in results] == [
        (0.0, False, "-"), (0.1, True, "mean"), (0.1, True, "length_weighted")
    ]
    for r in results:
        assert set(r) >= {"top1", "top5", "tokens_kept_pct", "model_clips_per_s", "delta_top1", "throughput_gain",
                          "agreement"}
    assert results[0]["tokens_kept_pct"] == 100.0 and results[0]["delta_top1"] == 0.0
    assert results[1]["tokens_kept_pct"] < 60  # the static backgrounds are dropped

    # The baseline is the vanilla model on the processor's output.
    processor = RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    paths = sorted((root / "data").rglob("*.mp4"))
    with torch.no_grad():
        predicted = vanilla(processor([str(p) for p in paths])["pixel_values"]).logits.argmax(-1)
    truth = torch.tensor([CLASSES.index(p.parent.name) for p in paths])
    assert results[0]["top1"] == pytest.approx(float((predicted == truth).float().mean()))
    kept = results[1]["tokens_kept_pct"] / 100 * 16 * 9  # 16 tubelets per clip of 8 x 32 x 32
    assert kept == pytest.approx(round(kept))


def test_videos_cache_and_memory_give_identical_results(setup, tmp_path):
    root, _ = setup
    model, processor = model_and_processor(root / "model", classifier_only=True)
    common = {
        "thresholds": [0.05, 0.2],
        "poolings": ["mean", "length_weighted"],
        "batch_size": 4,
        "workers": 0,
        "progress": False,
    }
    from_videos = evaluate(model, root / "data", processor=processor, **common)
    summary = cache_clips(root / "data", tmp_path / "cache", processor=root / "model", workers=2, progress=False)
    assert summary.complete
    from_cache = evaluate(root / "model", tmp_path / "cache", **common)
    paths = sorted((root / "data").rglob("*.mp4"))
    clips = torch.stack([prepare_clip(processor, str(p)) for p in paths])
    labels = [CLASSES.index(p.parent.name) for p in paths]
    in_memory = evaluate(model, (clips, labels, CLASSES), processor=processor, **common)
    streamed = evaluate(model, tmp_path / "cache", processor=processor, max_memory_gb=0, **common)

    assert from_cache.loader["kind"] == "cache" and in_memory.loader["kind"] == "memory"
    assert not streamed.loader["held_in_memory"] and from_cache.loader["held_in_memory"]
    keys = ("threshold", "pooling", "top1", "top5", "tokens_kept_pct", "agreement")
    expected = [[row[k] for k in keys] for row in from_videos.rows]
    assert len(expected) == 5
    for report in (from_cache, in_memory, streamed):
        assert [[row[k] for k in keys] for row in report.rows] == expected
    assert model.config.rlt_enabled and model.config.rlt_threshold == 0.1  # settings restored


def test_an_unreadable_video_is_reported_and_skipped(setup, tmp_path):
    root, _ = setup
    data = tmp_path / "data"
    for name in CLASSES:
        (data / name).mkdir(parents=True)
        for video in (root / "data" / name).iterdir():
            (data / name / video.name).write_bytes(video.read_bytes())
    (data / "left" / "broken.mp4").write_bytes(b"\x00" * 100)
    report = evaluate(root / "model", data, thresholds=[0.1], workers=0, progress=False)
    assert report.num_clips == 9 and [entry["path"] for entry in report.failed] == [str(data / "left" / "broken.mp4")]
    assert "broken.mp4" in str(report)


@pytest.mark.parametrize("missing", ["model", "data"])
def test_a_missing_model_or_data_folder_is_one_line_exit_2(setup, tmp_path, capsys, missing):
    root, _ = setup
    model = tmp_path / "no-model" if missing == "model" else root / "model"
    data = tmp_path / "no-data" if missing == "data" else root / "data"
    assert main(["evaluate", str(model), str(data), "--no-progress", "--workers", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith("rlt evaluate: error:") and f"no-{missing}" in error


def test_data_of_other_classes_or_shapes_is_refused(setup, tmp_path, capsys):
    root, _ = setup
    (tmp_path / "data" / "sideways").mkdir(parents=True)
    write_video(tmp_path / "data" / "sideways" / "0.mp4", class_clip("left", np.random.default_rng(1)))
    assert main(["evaluate", str(root / "model"), str(tmp_path / "data"), "--no-progress", "--workers", "0"]) == 2
    assert "sideways" in capsys.readouterr().err
    clips = torch.zeros(2, 4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="the model takes"):
        evaluate(root / "model", (clips, [0, 1]), progress=False)


def test_a_vanilla_vivit_in_bf16_keeps_the_fp32_tokens(setup, tmp_path):
    from transformers import VivitConfig, VivitForVideoClassification

    root, _ = setup
    config = VivitConfig(image_size=32, num_frames=8, tubelet_size=[2, 16, 16], hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=4, intermediate_size=64, num_labels=3,
                         id2label=dict(enumerate(CLASSES)), label2id={n: i for i, n in enumerate(CLASSES)})
    VivitForVideoClassification(config).save_pretrained(tmp_path / "vivit")
    (tmp_path / "vivit" / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "VivitImageProcessor", "size": {"shortest_edge": 32},
        "crop_size": {"height": 32, "width": 32}, "rescale_factor": 1 / 127.5, "offset": True,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }))
    common = {"thresholds": [0.1], "poolings": ["mean", "length_weighted"], "workers": 0, "progress": False}
    fp32 = evaluate(tmp_path / "vivit", root / "data", **common)
    bf16 = evaluate(tmp_path / "vivit", root / "data", dtype="bf16", **common)
    assert [row["pooling"] for row in fp32.rows] == ["-", "cls"]  # a CLS head: one row per threshold
    assert fp32.rows[0]["tokens_kept_pct"] == 100.0
    # Tau means the same pixel change under ViViT's [-1, 1] scaling as under VideoMAE's ImageNet one.
    videomae = evaluate(root / "model", root / "data", **common)
    tubelets = lambda pct, per_clip, cls: round(pct / 100 * per_clip * 9) - cls * 9
    assert tubelets(fp32.rows[1]["tokens_kept_pct"], 17, 1) == tubelets(videomae.rows[1]["tokens_kept_pct"], 16, 0)
    assert fp32.rows[1]["tokens_kept_pct"] < 70
    assert [row["tokens_kept_pct"] for row in bf16.rows] == [row["tokens_kept_pct"] for row in fp32.rows]
    assert bf16.dtype == "bf16"


def test_a_model_passed_in_is_left_as_it_was(setup):
    """evaluate neither casts a caller's model nor leaves the shared weights of rlt.from_model changed."""
    import rlt

    torch.manual_seed(0)
    vanilla = VideoMAEForVideoClassification(VideoMAEConfig(**TINY_VIDEOMAE)).eval()
    model = rlt.from_model(vanilla, threshold=0.1)
    weights = {name: tensor.clone() for name, tensor in vanilla.state_dict().items()}
    clips = torch.randint(0, 256, (4, 8, 3, 32, 32), dtype=torch.uint8)
    processor = RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with pytest.raises(ValueError, match="cast it yourself first"):
        evaluate(model, (clips, [0, 1, 0, 1]), processor=processor, dtype="bf16", progress=False)
    evaluate(model, (clips, [0, 1, 0, 1]), processor=processor, thresholds=[0.1], progress=False)
    for name, tensor in vanilla.state_dict().items():
        assert tensor.dtype == weights[name].dtype and torch.equal(tensor, weights[name]), name
    assert model.config.rlt_threshold == 0.1 and model.config.rlt_enabled


def test_both_comparison_rules_in_one_table(setup, capsys):
    """--compare-to previous last_kept runs every threshold under each rule: a slow fade, under tau per step,
    is all dropped by "previous" and partly kept by "last_kept"; the table shows the rule column."""
    root, _ = setup
    model, processor = model_and_processor(root / "model", classifier_only=True)
    fade = torch.linspace(0, 42, 8).view(1, 8, 1, 1, 1)  # +6 grey levels a frame: 18 (0.31 in tau units) a step
    clips = (torch.full((2, 8, 3, 32, 32), 100.0) + fade).to(torch.uint8)
    report = evaluate(
        model, (clips, [0, 1]), processor=processor, thresholds=[0.5], compare_to=["previous", "last_kept"],
        progress=False,
    )
    rows = {row["compare_to"]: row for row in report.rows}
    assert set(rows) == {"-", "previous", "last_kept"} and not rows["-"]["rlt_enabled"]
    assert rows["previous"]["tokens_kept_pct"] == 25.0  # the first time step only
    assert rows["last_kept"]["tokens_kept_pct"] > 25.0  # the drift adds up past tau and is kept
    print(report)
    assert "compare_to" in capsys.readouterr().out.splitlines()[2]
    with pytest.raises(ValueError, match="compare_to must be among"):
        evaluate(model, (clips, [0, 1]), processor=processor, compare_to=["first"], progress=False)
    assert model.config.rlt_compare_to == "previous"  # restored


def test_the_attention_axis_runs_every_rlt_setting_under_each_choice(setup, capsys):
    """--attention plain proportional: one row per choice, the column shown, the config switch set per row
    (it changes the attention, not the tokens kept) and restored afterwards."""
    root, _ = setup
    model, processor = model_and_processor(root / "model", classifier_only=True)
    clips = torch.randint(0, 256, (1, 8, 3, 32, 32), dtype=torch.uint8).expand(4, -1, -1, -1, -1).clone()
    clips[:, 4:] = clips[:, :1]  # later frames repeat the first: runs longer than 1, so the switch matters
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.config.rlt_proportional_attention))
    report = evaluate(model, (clips, [0, 1, 2, 0]), processor=processor, thresholds=[0.1],
                      attentions=["plain", "proportional"], warmup=0, progress=False)
    rows = {row["attention"]: row for row in report.rows}
    assert set(rows) == {"-", "plain", "proportional"} and seen == [False, False, True]
    assert rows["plain"]["tokens_kept_pct"] == rows["proportional"]["tokens_kept_pct"] < 100
    print(report)
    assert "attention" in capsys.readouterr().out.splitlines()[2]
    assert model.config.rlt_proportional_attention is False  # restored
    with pytest.raises(ValueError, match=r"attention must be among \('plain', 'proportional'\)"):
        evaluate(model, (clips, [0, 1, 2, 0]), processor=processor, attentions=["ToMe"], progress=False)


def test_the_run_embedding_axis_runs_every_rlt_setting_under_each_choice(setup):
    """--run-embedding first mean (beside --attention): one row per combination, rlt_run_embedding set per row
    and restored afterwards, a bad choice named."""
    root, _ = setup
    model, processor = model_and_processor(root / "model", classifier_only=True)
    clips = torch.randint(0, 256, (1, 8, 3, 32, 32), dtype=torch.uint8).expand(4, -1, -1, -1, -1).clone()
    clips[:, 4:] = clips[:, :1]
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.config.rlt_run_embedding))
    report = evaluate(model, (clips, [0, 1, 2, 0]), processor=processor, thresholds=[0.1],
                      attentions=["plain", "proportional"], run_embeddings=["first", "mean"], warmup=0, progress=False)
    combos = [(row["attention"], row["run_embedding"]) for row in report.rows]
    assert sorted(combos[1:]) == [("plain", "first"), ("plain", "mean"), ("proportional", "first"),
                                  ("proportional", "mean")] and combos[0] == ("-", "-")
    assert sorted(seen[1:]) == ["first", "first", "mean", "mean"]
    header = next(line for line in str(report).splitlines() if line.startswith("threshold"))
    assert "attention" in header and "run_embedding" in header
    assert model.config.rlt_run_embedding == "first"  # restored
    with pytest.raises(ValueError, match=r"run_embedding must be among \('first', 'mean'\)"):
        evaluate(model, (clips, [0, 1, 2, 0]), processor=processor, run_embeddings=["median"], progress=False)
