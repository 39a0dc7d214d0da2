"""`rlt calibrate`: the distillation loss falls, only the named parameters move, the teacher is the model
itself, the folder it writes loads and says what was done, and bad input gets a clear error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import SRC, TINY_VIDEOMAE, save_vanilla_checkpoint, tiny_videomae_classifier
from transformers import (
    AutoModelForVideoClassification,
    BertConfig,
    BertModel,
    VideoMAEConfig,
    VideoMAEModel,
)

from rlt.calibration import calibrate, parameters_of_groups
from rlt.cli import main
from rlt.conversion import model_and_processor
from rlt.synthetic import CLASS_NAMES, SyntheticVideoDataset, task_config

FAST = {"batch_size": 8, "workers": 0, "progress": False, "device": "cpu"}


def _save_vanilla(folder, model):
    with torch.no_grad():  # transformers starts biases at zero: random ones show a bias that moved or failed to load
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.1)
        if hasattr(model, "classifier"):  # confident logits, as a trained head gives: a loss worth lowering
            model.classifier.weight.normal_(0, 1.0)
    return save_vanilla_checkpoint(folder, model)


@pytest.fixture(scope="module")
def vanilla(tmp_path_factory):
    """A tiny vanilla VideoMAE classifier of the generated task's classes, saved as a Hub checkpoint is."""
    return _save_vanilla(tmp_path_factory.mktemp("calibrate") / "vanilla", tiny_videomae_classifier(CLASS_NAMES))


@pytest.fixture(scope="module")
def clips():
    """48 clips of the still-camera task, 8 frames of 32 px: most tubelets repeat, so RLT drops many."""
    return SyntheticVideoDataset(48, seed=0, config=task_config("still", num_frames=8, image_size=32), device="cpu")


@pytest.mark.parametrize("groups", [["length_encoding"], ["norms", "biases"]])
def test_calibration_lowers_the_loss_and_moves_only_the_named_parameters(vanilla, clips, groups):
    result = calibrate(vanilla, clips, steps=20, train=groups, lr=2e-2, holdout=16, log_every=5, **FAST)
    curve = [row["loss"] for row in result.loss_curve]
    assert len(curve) == 4 and curve[-1] < 0.7 * curve[0], curve
    held_out = [row["loss"] for row in result.evaluations]
    assert [row["step"] for row in result.evaluations] == [0, 20] and held_out[-1] < 0.8 * held_out[0], held_out

    named = {name for parameters in parameters_of_groups(result.model, groups).values() for name in parameters}
    before, after = model_and_processor(vanilla)[0].state_dict(), result.model.state_dict()
    assert before.keys() == after.keys()
    moved = {name for name, value in after.items() if not torch.equal(value, before[name])}
    assert moved and moved <= named, moved - named  # every other tensor bit for bit as it was
    # The length table starts at zero (training-free) and still gets a gradient.
    table = "videomae.embeddings.length_embeddings.weight"
    assert not before[table].any() and (table in moved) == ("length_encoding" in groups)
    assert result.trained == {group: sum(after[name].numel() for name in parameters)
                              for group, parameters in parameters_of_groups(result.model, groups).items()}
    assert all(p.requires_grad for p in result.model.parameters())  # the flags are given back


def test_the_teacher_is_the_same_module_with_rlt_off_and_its_starting_weights(vanilla, clips):
    model, processor = model_and_processor(vanilla)
    frozen = {name: p.data_ptr() for name, p in model.named_parameters() if "length_embeddings" not in name}
    calls = []

    def record(module, args, kwargs):
        weight = module.videomae.embeddings.patch_embeddings.projection.weight
        table = module.videomae.embeddings.length_embeddings.weight
        calls.append((module.config.rlt_enabled, weight.data_ptr(), float(table.detach().abs().sum())))

    model.register_forward_pre_hook(record, with_kwargs=True)
    result = calibrate(model, clips, steps=6, lr=1e-2, processor=processor, **FAST)
    assert result.model is model
    assert {name: p.data_ptr() for name, p in model.named_parameters() if name in frozen} == frozen
    teacher = [call for call in calls if not call[0]]
    student = [call for call in calls if call[0]]
    assert len(teacher) == len(student) == 6
    weight = frozen["videomae.embeddings.patch_embeddings.projection.weight"]
    assert {call[1] for call in calls} == {weight}  # the same storage: no second copy of the model
    assert all(call[2] == 0.0 for call in teacher)  # the teacher keeps the starting (zero) length table
    assert student[-1][2] > 0


def test_the_written_folder_loads_with_auto_classes_and_its_card_says_what_was_calibrated(vanilla, clips, tmp_path):
    out = tmp_path / "calibrated"
    result = calibrate(vanilla, clips, steps=5, lr=1e-2, output_dir=out, pooling="length_weighted", **FAST)
    loaded = AutoModelForVideoClassification.from_pretrained(out, trust_remote_code=True).eval()
    assert type(loaded).__name__ == "RLTVideoMAEForVideoClassification" and loaded.config.rlt_pooling == "length_weighted"
    pixel_values = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixel_values).logits, result.model(pixel_values=pixel_values).logits)
    card = (out / "README.md").read_text()
    assert "rlt calibrate" in card and "`length_encoding`" in card and "rlt-calibrated" in card
    assert "| Steps | 5 " in card and "48 generated clips" in card and "KL divergence" in card
    assert (out / "video_preprocessor_config.json").is_file() and "auto_map" in json.loads((out / "config.json").read_text())
    with pytest.raises(FileExistsError, match="overwrite"):
        calibrate(vanilla, clips, steps=1, output_dir=out, **FAST)
    calibrate(vanilla, clips, steps=1, output_dir=out, overwrite=True, **FAST)


def test_a_base_model_matches_pooled_features(tmp_path, clips):
    torch.manual_seed(0)
    folder = _save_vanilla(tmp_path / "base", VideoMAEModel(VideoMAEConfig(**TINY_VIDEOMAE)))
    result = calibrate(folder, clips, steps=20, lr=2e-2, holdout=8, log_every=5, **FAST)
    assert result.loss.startswith("MSE") and type(result.model).__name__ == "RLTVideoMAEModel"
    assert result.loss_curve[-1]["loss"] < result.loss_curve[0]["loss"]
    assert result.evaluations[-1]["agreement"] is None and result.evaluations[-1]["loss"] < result.evaluations[0]["loss"]


def test_proportional_attention_is_passed_to_the_config(vanilla, clips):
    result = calibrate(vanilla, clips, steps=1, proportional_attention=True, **FAST)
    assert result.model.config.rlt_proportional_attention is True
    assert result.settings["rlt_proportional_attention"] is True


def test_run_embedding_is_passed_to_the_config_and_checked(vanilla, clips):
    result = calibrate(vanilla, clips, steps=1, rlt_run_embedding="mean", **FAST)
    assert result.model.config.rlt_run_embedding == "mean"
    assert result.settings["rlt_run_embedding"] == "mean"
    with pytest.raises(ValueError, match="rlt_run_embedding must be one of"):
        calibrate(vanilla, clips, steps=1, rlt_run_embedding="median", **FAST)


@pytest.mark.parametrize("steps", [0, -3])
def test_a_step_count_below_one_is_refused(vanilla, clips, steps):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        calibrate(vanilla, clips, steps=steps, **FAST)


def test_an_unknown_parameter_group_is_refused(vanilla, clips):
    with pytest.raises(ValueError, match=r"unknown parameter group.*'attention'.*choose among"):
        calibrate(vanilla, clips, steps=1, train=["attention"], **FAST)


def test_an_empty_data_folder_is_refused(vanilla, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        calibrate(vanilla, tmp_path / "empty", steps=1, **FAST)
    with pytest.raises(FileNotFoundError, match="no such clip cache"):
        calibrate(vanilla, tmp_path / "missing", steps=1, **FAST)


def test_a_model_without_rlt_settings_is_refused(tmp_path, clips):
    bert = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(bert)
    with pytest.raises(ValueError, match=r"'bert' model, which has no RLT settings and cannot be converted"):
        calibrate(bert, clips, steps=1, **FAST)
    with pytest.raises(TypeError, match="has no RLT settings"):
        calibrate(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32)), clips, steps=1, **FAST)


def test_the_cli_end_to_end_on_the_generated_task(vanilla, tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "calibration.json"
    code = main(["calibrate", str(vanilla), str(out), "--synthetic", "24", "--synthetic-variant", "still",
                 "--synthetic-device", "cpu", "--steps", "4", "--holdout", "8", "--eval-steps", "2",
                 "--batch-size", "8", "--workers", "0", "--log-every", "2", "--lr", "1e-2", "--json", str(report),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    written = json.loads(report.read_text())
    assert [row["step"] for row in written["loss_curve"]] == [2, 4]
    assert [row["step"] for row in written["evaluations"]] == [0, 2, 4]
    assert written["teacher"]["top1"] is not None and written["trained"] == {"length_encoding": 4 * 32}  # T' = 4 run lengths x hidden 32
    assert (out / "model.safetensors").is_file() and "wrote the calibrated checkpoint" in capsys.readouterr().out
    assert main(["calibrate", str(vanilla), str(tmp_path / "x"), "--synthetic", "8", "--steps", "0"]) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err


def test_importing_calibration_needs_neither_pyav_nor_datasets():
    code = "import sys, rlt.calibration, rlt.cli; print(sorted({'av', 'datasets'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)}, capture_output=True,
                            text=True, check=True).stdout
    assert output.strip() == "[]"
