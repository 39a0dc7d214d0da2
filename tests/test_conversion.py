import json

import pytest
import torch
from conftest import IMAGENET_PROCESSOR, TINY_VIDEOMAE, noise_clips, randomise, run_without_rlt
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    ViTConfig,
    ViTModel,
)

import rlt
from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification, RLTVideoMAEModel
from rlt.cli import main


@pytest.fixture(scope="module")
def vanilla_folder(tmp_path_factory):
    """A vanilla VideoMAE classifier saved with the legacy q_bias / v_bias weight names."""
    folder = tmp_path_factory.mktemp("vanilla")
    torch.manual_seed(0)
    model = randomise(VideoMAEForVideoClassification(VideoMAEConfig(**TINY_VIDEOMAE)).eval())
    model.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    legacy = {
        (
            key.replace("attention.query.bias", "attention.q_bias").replace("attention.value.bias", "attention.v_bias")
        ): value
        for key, value in weights.items()
    }
    assert any(key.endswith("q_bias") for key in legacy)
    save_file(legacy, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "preprocessor_config.json").write_text(json.dumps(IMAGENET_PROCESSOR))
    clips = noise_clips(2)
    with torch.no_grad():
        logits = model(clips).logits
    torch.save({"clips": clips, "logits": logits}, folder / "reference.pt")
    return folder


def test_legacy_bias_names_load_into_the_rlt_classes(vanilla_folder):
    reference = torch.load(vanilla_folder / "reference.pt")
    model = RLTVideoMAEForVideoClassification.from_pretrained(vanilla_folder, rlt_threshold=0.0).eval()
    bias = model.videomae.encoder.layer[0].attention.attention.query.bias
    assert bias.abs().sum() > 0
    table = model.videomae.embeddings.length_embeddings.weight
    assert torch.equal(table, torch.zeros_like(table))
    positions = model.videomae.embeddings.position_embeddings
    assert positions.device.type == "cpu" and positions.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(model(reference["clips"]).logits, reference["logits"], atol=1e-5, rtol=1e-5)


def test_converted_folder_loads_without_rlt_installed(vanilla_folder, tmp_path):
    out = tmp_path / "rlt-checkpoint"
    model = rlt.convert(vanilla_folder, out, threshold=0.0)
    assert isinstance(model, RLTVideoMAEForVideoClassification)
    files = {path.name for path in out.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_rlt_videomae.py", "tokenizer.py", "packing.py"} <= files
    assert {"attention_kernels.py", "token_choice.py", "video_decoding.py"} <= files  # split out of the three above
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "rlt_videomae"
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForVideoClassification"}
    assert config["rlt_input_scale"] == pytest.approx([1 / 255 / s for s in IMAGENET_PROCESSOR["image_std"]])
    code = f"""
        import torch
        from transformers import AutoModel, AutoModelForVideoClassification
        reference = torch.load({str(vanilla_folder / "reference.pt")!r})
        model = AutoModelForVideoClassification.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "RLTVideoMAEForVideoClassification", type(model)
        with torch.no_grad():
            logits = model(reference["clips"]).logits
        torch.testing.assert_close(logits, reference["logits"], atol=1e-5, rtol=1e-5)
        base = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)
        assert type(base).__name__ == "RLTVideoMAEModel", type(base)
        print("max diff", (logits - reference["logits"]).abs().max().item())
    """
    assert "max diff" in run_without_rlt(code, cwd=tmp_path)


def test_auto_classes_know_rlt_once_imported(tmp_path):
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE)
    assert type(AutoConfig.for_model("rlt_videomae")) is RLTVideoMAEConfig
    assert type(AutoModel.from_config(config)) is RLTVideoMAEModel
    classifier = AutoModelForVideoClassification.from_config(config)
    assert type(classifier) is RLTVideoMAEForVideoClassification
    classifier.save_pretrained(tmp_path)
    reloaded = AutoModelForVideoClassification.from_pretrained(tmp_path)
    assert type(reloaded) is RLTVideoMAEForVideoClassification
    for name, tensor in classifier.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor)


def test_converter_rejects_other_architectures_and_protects_output(vanilla_folder, tmp_path):
    vit = tmp_path / "vit"
    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(vit)
    with pytest.raises(ValueError, match="'vit' model, which has no RLT settings and cannot be converted"):
        rlt.convert(vit, tmp_path / "out")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        rlt.convert(vanilla_folder, occupied)
    assert (occupied / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="rlt_threshold must be a finite number >= 0"):
        rlt.convert(vanilla_folder, tmp_path / "negative", threshold=-1)


def test_cli_convert_reports_user_errors_in_one_line(vanilla_folder, tmp_path, capsys):
    assert main(["convert", str(vanilla_folder), str(tmp_path / "ok"), "--threshold", "0.05"]) == 0
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["rlt_threshold"] == 0.05
    capsys.readouterr()
    assert main(["convert", str(vanilla_folder), str(tmp_path / "ok")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("rlt convert: error:") and "not empty" in error and "\n" not in error
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
