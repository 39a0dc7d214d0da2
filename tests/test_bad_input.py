"""Input and settings that used to go through silently wrong are refused, by name (issue 23, items 2 and 3).

- Non-finite pixels: every RLT model (its one host read of the forward), the processor and the collators
  name the clips of the batch that hold NaN or infinite values.
- An empty batch: a clear error (transformers' own VideoMAE, ViViT and V-JEPA 2 fail in a reshape).
- Unknown ``rlt_*`` names: refused with the closest valid name (config, ``from_pretrained``,
  ``rlt.from_model``, ``rlt.convert``); in a saved config.json (a newer ``rlt``), a warning naming them.
"""

import json
import logging

import numpy as np
import pytest
import torch
from model_cases import CASES, GRID, noise_clips

import rlt
from rlt import RLTVideoProcessor, VideoCollator, registry
from rlt.clip_sources import Clip
from rlt.models import modeling_rlt
from rlt.models.configuration_rlt import rlt_setting_names
from rlt.training import ClipCollator


def poisoned_clips() -> torch.Tensor:
    """Four noise clips; clip 1 holds a NaN, clip 3 an infinity."""
    clips = noise_clips(4)
    clips[1, 5, 0, 3, 7] = float("nan")
    clips[3, 0, 2, 31, 0] = float("inf")
    return clips


# -- non-finite pixels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("setting", ["rlt", "keep_mask", "rlt_disabled"])
def test_models_name_the_clips_that_hold_nan_or_inf(case, setting):
    clips = poisoned_clips()
    kwargs = {}
    settings = {"rlt_enabled": setting != "rlt_disabled"}
    if setting == "keep_mask":  # computed ahead on the clips' own device
        kwargs["keep_mask"] = torch.ones(4, *GRID, dtype=torch.bool)
    for base in (False, True):
        model = case.rlt_model(base=base, **settings)
        with pytest.raises(ValueError, match=rf"{case.input_name}: clips 1, 3 of this batch of 4 hold NaN or infinite"):
            model(**case.video(clips), **kwargs)
        clean = {key: value[[0, 2]] for key, value in kwargs.items()}
        with torch.no_grad():  # the clean clips alone still run
            model(**case.video(clips[[0, 2]]), **clean)


def test_the_finite_check_shares_the_forwards_one_host_read(monkeypatch):
    """The counts and the finite flags come back in one read: no second sync for the check."""
    case = CASES[0]
    config = case.rlt_config()
    reads = []
    for method in ("tolist", "item", "cpu"):
        original = getattr(torch.Tensor, method)

        def counting(self, *args, _original=original, _method=method, **kwargs):
            reads.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counting)
    tokens, packed = modeling_rlt.choose_tokens(config, noise_clips(3))
    assert reads == ["tolist"] and packed.lengths == tokens.counts.tolist()[:3]
    reads.clear()
    with pytest.raises(ValueError, match="clips 1, 3"):
        modeling_rlt.choose_tokens(config, poisoned_clips())
    assert reads == ["tolist"]


def test_the_processor_refuses_non_finite_pixels():
    video = np.random.default_rng(0).integers(0, 255, size=(8, 32, 32, 3)).astype(np.float32)
    processor = RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    assert torch.isfinite(processor([video, video])["pixel_values"]).all()
    bad = video.copy()
    bad[2, 5, 5, 1] = np.nan
    with pytest.raises(ValueError, match="pixel_values: clip 1 of this batch of 2 hold NaN or infinite"):
        processor([video, bad])
    bad[2, 5, 5, 1] = np.inf
    with pytest.raises(ValueError, match="clip 0 of this batch of 1 hold NaN or infinite"):
        processor([bad])


@pytest.mark.parametrize("collator", ["VideoCollator", "ClipCollator"])
def test_collators_refuse_non_finite_pixels(collator):
    make = {"VideoCollator": VideoCollator, "ClipCollator": ClipCollator}[collator]
    features = [{"pixel_values": clip, "labels": i} for i, clip in enumerate(poisoned_clips())]
    with pytest.raises(ValueError, match="clips 1, 3 of this batch of 4"):
        make()(features)
    assert make()([features[0], features[2]])["pixel_values"].shape[0] == 2


def test_clip_batches_refuse_non_finite_pixels_and_pass_uint8():
    """``collate`` (the road of ``rlt evaluate`` and calibration) checks ``Clip`` items as well as dicts."""
    items = [Clip(clip, 0, f"clip-{i}") for i, clip in enumerate(poisoned_clips())]
    with pytest.raises(ValueError, match="clips 1, 3"):
        ClipCollator().collate(items, allow_empty=True)
    uint8 = [Clip(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), 0, "a")]
    assert ClipCollator().collate(uint8).pixel_values.shape == (1, 8, 3, 32, 32)


# -- an empty batch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_an_empty_batch_is_named(case):
    """transformers' own classes give no empty output for an empty batch (they fail in a reshape:
    "cannot reshape tensor of 0 elements"), so the RLT ones refuse it clearly instead."""
    vanilla, _ = case.vanilla_and_rlt()
    empty = torch.zeros(0, 8, 3, 32, 32)
    with pytest.raises(RuntimeError, match="reshape"):
        vanilla(**case.video(empty))
    for base in (False, True):
        with pytest.raises(ValueError, match=rf"{case.input_name} holds no clip \(shape \(0, 8, 3, 32, 32\)\)"):
            case.rlt_model(base=base)(**case.video(empty))


# -- unknown rlt_* names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_misspelled_setting_is_refused_with_the_closest_name(case):
    config_class = case.architecture.config_class
    with pytest.raises(TypeError, match=r"unknown setting 'rlt_treshold' \(did you mean 'rlt_threshold'\?\)"):
        config_class(rlt_treshold=0.5)
    with pytest.raises(TypeError, match=r"'rlt_polling' \(did you mean 'rlt_pooling'\?\)"):
        case.rlt_config(rlt_polling="mean")
    assert config_class(rlt_threshold=0.5).rlt_threshold == 0.5


def test_valid_names_are_the_declared_fields():
    """Read from the dataclass, not a list: a setting added to RLTSettings is valid at once."""
    names = rlt_setting_names()
    assert "rlt_threshold" in names and "rlt_pack_buckets" in names
    config = registry.get("videomae").config_class()
    assert all(hasattr(config, name) for name in names)
    assert not any(name.startswith("rlt_") and name not in names for name in config.to_dict())


def test_from_model_and_convert_refuse_misspelled_settings(tmp_path):
    vanilla, _ = CASES[0].vanilla_and_rlt()
    with pytest.raises(TypeError, match=r"rlt.from_model: unknown setting 'rlt_treshold' \(did you mean 'rlt_thresh"):
        rlt.from_model(vanilla, rlt_treshold=0.5)
    with pytest.raises(TypeError, match=r"'pooling' \(did you mean 'rlt_pooling'\?\)"):
        rlt.from_model(vanilla, pooling="length_weighted")
    vanilla.save_pretrained(tmp_path / "vanilla")
    with pytest.raises(TypeError, match=r"rlt.convert: unknown setting 'rlt_treshold' \(did you mean 'rlt_thresh"):
        rlt.convert(tmp_path / "vanilla", tmp_path / "out", rlt_treshold=0.5)
    assert not (tmp_path / "out").exists()  # refused before anything was read or written


@pytest.mark.parametrize("case", CASES, ids=str)
def test_from_pretrained_refuses_a_misspelled_setting(case, tmp_path):
    _, model = case.vanilla_and_rlt()
    model.save_pretrained(tmp_path)
    with pytest.raises(TypeError, match=r"from_pretrained: unknown setting 'rlt_x'"):
        type(model).from_pretrained(tmp_path, rlt_x=1)
    with pytest.raises(TypeError, match=r"'rlt_treshold' \(did you mean 'rlt_threshold'\?\)"):
        type(model).from_pretrained(tmp_path, rlt_treshold=0.5)
    assert type(model).from_pretrained(tmp_path, rlt_threshold=0.5).config.rlt_threshold == 0.5


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_config_from_a_newer_rlt_loads_with_a_warning_naming_its_new_settings(case, tmp_path, caplog):
    _, model = case.vanilla_and_rlt(rlt_threshold=0.3)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.update(rlt_future_setting=7, rlt_other="x")
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING):
        loaded = type(model).from_pretrained(tmp_path)
    warning = [record.getMessage() for record in caplog.records if "does not know" in record.getMessage()]
    assert len(warning) == 1 and "rlt_future_setting=7" in warning[0] and "rlt_other='x'" in warning[0]
    assert loaded.config.rlt_threshold == 0.3 and not hasattr(loaded.config, "rlt_future_setting")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        from_dict = case.architecture.config_class.from_dict(saved)
    assert any("rlt_future_setting=7" in record.getMessage() for record in caplog.records)
    assert from_dict.rlt_threshold == 0.3
