import json
import logging
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_VIDEOMAE
from torch.utils.data import DataLoader
from video_helpers import write_video

from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification, RLTVideoProcessor, run_length_tokenize
from rlt.data import VideoCollator, VideoTransform, find_unreadable_videos, list_labelled_videos, load_video_dataset

# Class "bright" videos are white-ish, "dark" ones black-ish: a clip's pixels tell its true class.
LEVEL = {"bright": 220, "dark": 20}


def clip(level: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.full((8, 32, 32, 3), level, np.uint8)
    frames[:, :8, :8] = rng.integers(0, 255, size=(8, 8, 8, 3), dtype=np.uint8)  # some motion in one patch
    return frames


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """root/bright/{0,1}.mp4, root/dark/{0,1}.mp4 and a corrupt root/bright/broken.mp4."""
    root = tmp_path_factory.mktemp("videos")
    for name, level in LEVEL.items():
        (root / name).mkdir()
        for i in range(2):
            write_video(root / name / f"{i}.mp4", clip(level, i))
    (root / "bright" / "broken.mp4").write_bytes(b"definitely not a video" * 40)
    (root / "bright" / "notes.txt").write_text("not a video file, ignored")
    return root


def processor():
    return RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def is_bright(pixel_values: torch.Tensor) -> bool:
    return pixel_values[:, :, 16:, 16:].mean().item() > 0  # ImageNet-normalised: bright > 0 > dark


def test_dataset_from_class_folders(video_folder):
    dataset = load_video_dataset(video_folder)
    assert dataset.features["label"].names == ["bright", "dark"]
    assert len(dataset) == 5 and all(path.endswith(".mp4") for path in dataset["video"])
    assert dataset.features["label"].int2str(dataset["label"]) == ["bright"] * 3 + ["dark"] * 2
    ordered = load_video_dataset(video_folder, class_names=["dark", "bright"])
    assert ordered.features["label"].names == ["dark", "bright"] and ordered["label"][0] == 1


def test_decoding_is_lazy_and_a_corrupt_file_is_named(video_folder, monkeypatch):
    calls = []
    transform = VideoTransform(processor())
    original = transform.processor.load_frames
    monkeypatch.setattr(transform.processor, "load_frames", lambda *a, **k: calls.append(a) or original(*a, **k))
    dataset = load_video_dataset(video_folder).with_transform(transform)
    assert calls == []  # nothing decoded up front
    names = dataset.features["label"].names
    for i in range(len(dataset)):
        path = load_video_dataset(video_folder)["video"][i]
        if path.endswith("broken.mp4"):
            with pytest.raises(ValueError, match="broken.mp4"):
                dataset[i]
            continue
        example = dataset[i]
        assert example["pixel_values"].shape == (8, 3, 32, 32)
        assert is_bright(example["pixel_values"]) == (names[example["labels"]] == "bright")
    assert len(calls) == 5


def test_skipping_a_corrupt_file_never_shifts_labels(video_folder, caplog):
    dataset = load_video_dataset(video_folder).with_transform(VideoTransform(processor(), on_error="skip"))
    names = dataset.features["label"].names
    loader = DataLoader(dataset, batch_size=5, collate_fn=VideoCollator(), num_workers=1)
    with caplog.at_level(logging.WARNING):
        [batch] = list(loader)
    assert batch["pixel_values"].shape == (4, 8, 3, 32, 32) and batch["labels"].shape == (4,)
    for pixels, label in zip(batch["pixel_values"], batch["labels"]):
        assert is_bright(pixels) == (names[label] == "bright")
    assert find_unreadable_videos(load_video_dataset(video_folder))[0][0].endswith("broken.mp4")
    assert len(find_unreadable_videos(load_video_dataset(video_folder))) == 1


def test_dataset_from_csv_and_json_lists(video_folder, tmp_path):
    rows = [("bright/0.mp4", "bright"), ("dark/1.mp4", "dark"), ("bright/broken.mp4", "bright"), ("dark/0.mp4", "dark")]
    csv_file = video_folder / "list.csv"
    csv_file.write_text("path,label\n" + "\n".join(f"{p},{label}" for p, label in rows) + "\n")
    dataset = load_video_dataset(csv_file)
    assert dataset.features["label"].int2str(dataset["label"]) == ["bright", "dark", "bright", "dark"]
    assert dataset["video"][1] == str(video_folder / "dark" / "1.mp4")
    json_file = tmp_path / "list.json"
    json_file.write_text(json.dumps([{"path": str(video_folder / p), "label": label} for p, label in rows]))
    assert load_video_dataset(json_file)["label"] == dataset["label"]
    transformed = dataset.with_transform(VideoTransform(processor()))
    assert transformed[3]["pixel_values"].shape == (8, 3, 32, 32)
    with pytest.raises(ValueError, match="broken.mp4"):
        transformed[2]
    with pytest.raises(ValueError, match="not one of the classes"):
        load_video_dataset(csv_file, class_names=["bright"])


def test_bad_lists_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such video folder"):
        load_video_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_video_dataset(tmp_path)
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\nmissing.mp4,a\n")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        load_video_dataset(listing)
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(ValueError, match=".csv, .json or .jsonl"):
        load_video_dataset(tmp_path / "list.txt")


def test_collator_computes_the_keep_mask_the_model_takes(video_folder):
    config = RLTVideoMAEConfig(**TINY_VIDEOMAE, rlt_threshold=0.1)
    config.num_labels = 2
    model = RLTVideoMAEForVideoClassification(config).eval()
    dataset = load_video_dataset(video_folder).select([0, 1, 3, 4]).with_transform(VideoTransform(processor()))
    collator = VideoCollator.for_model(config)
    batch = collator([dataset[i] for i in range(4)])
    assert set(batch) == {"pixel_values", "labels", "keep_mask"}
    expected = run_length_tokenize(batch["pixel_values"], threshold=0.1, input_scale=None).keep_mask
    assert torch.equal(batch["keep_mask"], expected) and batch["keep_mask"].shape == (4, 4, 2, 2)
    assert not batch["keep_mask"].all()  # the static area is dropped
    with torch.no_grad():
        given = model(**batch)
        computed = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
    torch.testing.assert_close(given.logits, computed.logits)
    assert given.loss is not None and torch.equal(given.tokens_kept, batch["keep_mask"].flatten(1).sum(1))
    assert "keep_mask" not in VideoCollator()([dataset[0]])


def test_trainer_runs_on_the_lazy_dataset_with_workers(video_folder, tmp_path):
    from transformers import Trainer, TrainingArguments

    config = RLTVideoMAEConfig(**{**TINY_VIDEOMAE, "num_labels": 2})
    model = RLTVideoMAEForVideoClassification(config)
    dataset = load_video_dataset(video_folder).with_transform(VideoTransform(processor(), on_error="skip"))
    args = TrainingArguments(
        tmp_path, per_device_train_batch_size=5, per_device_eval_batch_size=5, num_train_epochs=1,
        remove_unused_columns=False, label_names=["labels"], use_cpu=True, report_to=[],
        dataloader_num_workers=1, save_strategy="no", disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset,
                      data_collator=VideoCollator.for_model(config))
    assert np.isfinite(trainer.train().training_loss)
    assert np.isfinite(trainer.evaluate()["eval_loss"])


def test_listing_videos_needs_no_datasets(video_folder, monkeypatch):
    """rlt cache / rlt evaluate list a folder on hosts without `datasets` (e.g. a bare GPU image)."""
    expected = load_video_dataset(video_folder)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    paths, labels, names = list_labelled_videos(video_folder)
    assert paths == list(expected["video"]) and labels == list(expected["label"])
    assert names == expected.features["label"].names
    with pytest.raises(ImportError):
        load_video_dataset(video_folder)
