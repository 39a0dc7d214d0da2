"""The decode-once clip cache: exact round trip, unreadable files, resume, in-memory clips, keep-only shards."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SRC
from video_helpers import expected_square_keep_mask, moving_square_frames, write_video

from rlt import RLTVideoProcessor, run_length_tokenize
from rlt.cache import (
    INDEX_FILE,
    CachedClips,
    ClipCache,
    DamagedCacheError,
    TokenSettings,
    cache_clips,
    load_clip_cache,
    write_clip_cache,
)
from rlt.cli import main


def small_processor(**kwargs) -> RLTVideoProcessor:
    return RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, **kwargs)


def make_folder(root, classes=("ant", "bee"), per_class=3, bad_in=None):
    """Class folders of small lossless clips of different sizes (so resizing and cropping matter)."""
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        if name == bad_in:
            (root / name / "0-broken.mp4").write_bytes(b"this is not a video")
        for i in range(per_class):
            height, width = (40, 56) if i % 2 else (48, 36)
            write_video(root / name / f"{i}.mp4", rng.integers(0, 256, (12, height, width, 3), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("videos") / "data")


def test_round_trip_equals_the_processor_output(folder, tmp_path):
    processor = small_processor()
    summary = cache_clips(folder, tmp_path / "cache", processor=processor, workers=2, shard_size=4, progress=False)
    assert summary.complete and summary.clips == 6 and summary.shards_total == 2 and not summary.failed

    dataset = load_clip_cache(tmp_path / "cache")
    assert len(dataset) == 6 and dataset.features["label"].names == ["ant", "bee"]
    index = json.loads((tmp_path / "cache" / INDEX_FILE).read_text())
    assert index["layout"] == "TCHW" and index["clip_shape"] == [8, 3, 32, 32] and index["tokens_per_clip"] == 16
    for i in range(len(dataset)):
        example = dataset[i]
        expected = processor(example["video"])["pixel_values"][0]
        assert torch.equal(example["pixel_values"], expected), example["video"]
        assert dataset.features["label"].names[example["labels"]] in example["video"]
        kept = run_length_tokenize(expected[None], threshold=0.1, input_scale=processor.rlt_input_scale).counts
        assert index["clips"][i]["tokens_kept"] == int(kept[0])
    # Stored as uint8 (T, C, H, W): the raw clip normalises to the same values.
    raw = ClipCache(tmp_path / "cache").clip(0)
    assert raw.dtype == torch.uint8 and raw.shape == (8, 3, 32, 32)


def test_an_unreadable_file_is_named_and_skipped_without_shifting_labels(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=("ant", "bee", "cow"), per_class=2, bad_in="ant")
    out = tmp_path / "cache"
    args = ["cache", str(data), str(out), "--num-frames", "8", "--size", "32", "--workers", "2", "--shard-size", "2",
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    broken = str((data / "ant" / "0-broken.mp4").resolve())
    assert broken in printed and "1 unreadable" in printed

    index = json.loads((out / INDEX_FILE).read_text())
    assert [entry["path"] for entry in index["failed"]] == [broken]
    dataset = load_clip_cache(out)
    assert len(dataset) == 6 and broken not in dataset.with_format(None)["path"]
    names = dataset.features["label"].names
    for example in dataset:
        assert f"/{names[example['labels']]}/" in example["video"]
    cache = ClipCache(out)  # the labels stored in the shards agree with the index
    for shard in range(4):
        clips, labels = cache.shard_clips(shard)
        records = [r for r in cache.records if r["shard"] == shard]
        assert labels.tolist() == [r["label"] for r in records] and len(clips) == len(records)
        assert all(f"/{names[r['label']]}/" in r["path"] for r in records)


def _stat(path):
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("how", ["max_shards", "raising_hook"])
def test_an_interrupted_run_resumes_without_rewriting_finished_shards(folder, tmp_path, how):
    out = tmp_path / "cache"
    settings = {"processor": small_processor(), "workers": 2, "shard_size": 2, "progress": False}
    if how == "max_shards":
        first = cache_clips(folder, out, max_shards=1, **settings)
        assert not first.complete and first.shards_written == 1
    else:
        def stop(shard):
            raise Interrupt(f"killed after shard {shard}")

        with pytest.raises(Interrupt):
            cache_clips(folder, out, on_shard=stop, **settings)
    shards = sorted(out.glob("clips-*.safetensors"))
    assert [p.name for p in shards] == ["clips-00000-of-00003.safetensors"]
    assert not list(out.glob("*.tmp-*"))
    with pytest.raises(ValueError, match="incomplete"):
        ClipCache(out)
    before = _stat(shards[0])

    second = cache_clips(folder, out, **settings)
    assert second.complete and second.shards_reused == 1 and second.shards_written == 2
    assert _stat(shards[0]) == before  # not rewritten
    assert len(list(out.glob("clips-*.safetensors"))) == 3
    fresh = cache_clips(folder, tmp_path / "fresh", **settings)
    resumed, whole = load_clip_cache(out), load_clip_cache(fresh.folder)
    assert resumed.with_format(None)[:] == whole.with_format(None)[:]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(resumed, whole))


def test_resuming_with_other_settings_is_refused_in_one_line(folder, tmp_path, capsys):
    out = tmp_path / "cache"
    common = [str(folder), str(out), "--size", "32", "--workers", "0", "--no-progress"]
    assert main(["cache", *common, "--num-frames", "8"]) == 0
    capsys.readouterr()
    assert main(["cache", *common, "--num-frames", "4"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("rlt cache: error:") and "processor" in error
    assert main(["cache", *common, "--num-frames", "4", "--overwrite"]) == 0
    assert ClipCache(out).clip_shape == (4, 3, 32, 32)


def test_missing_data_folder_is_one_line_exit_2(tmp_path, capsys):
    assert main(["cache", str(tmp_path / "nowhere"), str(tmp_path / "out"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "nowhere" in error


def test_in_memory_clips_need_no_pyav(tmp_path):
    """write_clip_cache from (T, H, W, C) uint8 arrays in a process where `import av` fails."""
    code = f"""
        import sys
        sys.modules["av"] = None  # importing PyAV now raises ImportError
        sys.path.insert(0, {str(SRC)!r})
        import numpy as np, torch
        from rlt.cache import write_clip_cache, load_clip_cache
        clips = np.random.default_rng(0).integers(0, 256, (5, 8, 32, 32, 3), dtype=np.uint8)
        summary = write_clip_cache(iter(clips), [0, 1, 1, 0, 1], {str(tmp_path / "mem")!r}, ["no", "yes"],
                                   shard_size=2, progress=False)
        assert summary.complete and summary.clips == 5, summary
        dataset = load_clip_cache({str(tmp_path / "mem")!r}, normalize=False)
        for i in range(5):
            assert torch.equal(dataset[i]["clip"], torch.from_numpy(clips[i]).permute(0, 3, 1, 2)), i
        assert dataset.with_format(None)["label"] == [0, 1, 1, 0, 1]
        print("ok", "av" in sys.modules and sys.modules["av"] is None)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "True"]


def test_in_memory_clips_through_a_processor_match_decoded_ones(tmp_path):
    processor = small_processor()
    frames = np.random.default_rng(2).integers(0, 256, (12, 40, 56, 3), dtype=np.uint8)
    write_clip_cache([frames], ["x"], tmp_path / "mem", ["x"], processor=processor, progress=False)
    path = write_video(tmp_path / "x.mp4", frames)
    assert torch.equal(load_clip_cache(tmp_path / "mem")[0]["pixel_values"], processor(str(path))["pixel_values"][0])


def test_keep_only_shards_store_the_kept_tubelets_and_feed_the_model_the_same_tokens(tmp_path):
    import rlt

    square = moving_square_frames()  # (8, 64, 64, 3): 22 of 64 tubelets kept at tau 0.1
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, square.shape, dtype=np.uint8)  # every tubelet kept
    jitter = np.clip(square.astype(int) + rng.integers(0, 3, square.shape), 0, 255).astype(np.uint8)  # tiny changes
    clips = [square, noise, jitter]
    write_clip_cache(clips, [0, 1, 1], tmp_path / "full", ["a", "b"], progress=False)
    write_clip_cache(clips, [0, 1, 1], tmp_path / "kept", ["a", "b"], keep_only_threshold=0.1, progress=False)
    full, kept = ClipCache(tmp_path / "full"), ClipCache(tmp_path / "kept")
    assert torch.equal(kept.keep_mask(0), torch.from_numpy(expected_square_keep_mask()))
    assert kept.keep_mask(1).all() and torch.equal(kept.clip(1), full.clip(1))
    assert not torch.equal(kept.clip(2), full.clip(2))  # the dropped tubelets were not stored
    size = lambda folder: sum(p.stat().st_size for p in folder.glob("clips-*"))
    assert size(tmp_path / "kept") < 0.8 * size(tmp_path / "full")

    config = rlt.RLTVideoMAEConfig(image_size=64, patch_size=16, num_frames=8, tubelet_size=2, hidden_size=32,
                                   num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, num_labels=2,
                                   rlt_threshold=0.1, rlt_length_encoding_init="trunc_normal")
    model = rlt.RLTVideoMAEForVideoClassification(config).eval()
    normalize = full.processor.normalize_frames
    with torch.no_grad():
        reference = model(torch.stack([normalize(full.clip(i).float()) for i in range(3)]))
        keep_mask = torch.stack([kept.keep_mask(i) for i in range(3)])
        from_kept = model(torch.stack([normalize(kept.clip(i).float()) for i in range(3)]), keep_mask=keep_mask)
    assert reference.tokens_kept.tolist()[:2] == [22, 64]
    assert from_kept.tokens_kept.tolist() == keep_mask.flatten(1).sum(1).tolist()
    torch.testing.assert_close(from_kept.logits, reference.logits)
    # Through datasets and the collator, the stored keep masks reach the model's keep_mask=.
    dataset = load_clip_cache(tmp_path / "kept")
    batch = rlt.VideoCollator(threshold=0.5)([dataset[i] for i in range(3)])
    assert torch.equal(batch["keep_mask"], keep_mask) and batch["labels"].tolist() == [0, 1, 1]
    with torch.no_grad():
        torch.testing.assert_close(model(batch["pixel_values"], keep_mask=batch["keep_mask"]).logits, reference.logits)


def test_token_settings_of_a_checkpoint_set_the_recorded_counts(tmp_path):
    clip = moving_square_frames()
    write_clip_cache([clip], [0], tmp_path / "c", ["a"], tokens=TokenSettings(threshold=1000.0), progress=False)
    index = json.loads((tmp_path / "c" / INDEX_FILE).read_text())
    assert index["clips"][0]["tokens_kept"] == 16  # only the first time step survives a huge tau


def test_caches_written_apart_are_relabelled_by_class_name(tmp_path):
    """A validation split without one class numbers the others differently; class_names maps them by name."""
    clips = np.random.default_rng(0).integers(0, 256, (3, 4, 3, 16, 16), dtype=np.uint8)
    write_clip_cache(clips, ["archery", "cycling", "cycling"], tmp_path / "val", ["archery", "cycling"])
    as_written = load_clip_cache(tmp_path / "val", normalize=False).with_format(None)
    assert as_written["label"] == [0, 1, 1]  # "cycling" is 1 here...
    train_names = ["archery", "bowling", "cycling"]  # ...and 2 in training
    relabelled = load_clip_cache(tmp_path / "val", normalize=False, class_names=train_names)
    assert relabelled.with_format(None)["label"] == [0, 2, 2]
    assert relabelled.features["label"].names == train_names and relabelled[1]["labels"] == 2
    with pytest.raises(ValueError, match=r"classes \['cycling'\] that are not among"):
        load_clip_cache(tmp_path / "val", class_names=["archery", "bowling"])


def test_cached_clips_is_a_torch_dataset_of_the_cache(tmp_path):
    import pickle

    from rlt.training import ClipCollator

    clips = np.random.default_rng(0).integers(0, 256, (4, 8, 3, 32, 32), dtype=np.uint8)
    clips[1, 2:] = clips[1, 1]  # static after its first time step: a keep-only cache stores one step of it
    labels = ["bee", "ant", "bee", "ant"]
    write_clip_cache(clips, labels, tmp_path / "full", ["ant", "bee"], progress=False)
    write_clip_cache(clips, labels, tmp_path / "kept", ["ant", "bee"], keep_only_threshold=0.1, progress=False)
    full, kept = ClipCache(tmp_path / "full"), ClipCache(tmp_path / "kept")

    some = CachedClips(tmp_path / "full", indices=[2, 1])
    assert len(some) == 2 and set(some[0]) == {"pixel_values", "labels"}
    assert torch.equal(some[0]["pixel_values"], full.clip(2)) and torch.equal(some[1]["pixel_values"], full.clip(1))
    assert [some[i]["labels"] for i in range(2)] == [1, 0]
    assert some.tokens_kept == [full.records[2]["tokens_kept"], full.records[1]["tokens_kept"]]
    assert some.record(1)["path"] == full.records[1]["path"]
    # Relabelled by class name, as load_clip_cache does.
    relabelled = CachedClips(full, class_names=["cat", "bee", "ant"])
    expected = load_clip_cache(tmp_path / "full", class_names=["cat", "bee", "ant"]).with_format(None)["label"]
    assert [relabelled[i]["labels"] for i in range(4)] == expected == [1, 2, 1, 2]
    with pytest.raises(ValueError, match=r"classes \['bee'\] that are not among"):
        CachedClips(full, class_names=["ant"])
    with pytest.raises(IndexError, match="indices must lie in 0..3"):
        CachedClips(full, indices=[0, 4])

    # A keep-only cache gives its stored keep masks, which ClipCollator passes on; pretraining takes the clips alone.
    with_masks = pickle.loads(pickle.dumps(CachedClips(kept)))  # as DataLoader workers receive it
    assert torch.equal(with_masks[1]["keep_mask"], kept.keep_mask(1)) and not kept.keep_mask(1).all()
    batch = ClipCollator()([with_masks[i] for i in range(4)])
    assert torch.equal(batch["keep_mask"], torch.stack([kept.keep_mask(i) for i in range(4)]))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["labels"].tolist() == [1, 0, 1, 0]
    assert set(CachedClips(kept, with_labels=False, with_keep_masks=False)[1]) == {"pixel_values"}


FIXTURE_CACHE = Path(__file__).parent / "fixtures" / "clip_cache_v1"


def fixture_clip(i: int) -> torch.Tensor:
    """Clip ``i`` of the fixture cache, uint8 ``(4, 3, 32, 32)``, as tests/fixtures/README.md made it."""
    t, c, h, w = torch.meshgrid(*(torch.arange(n) for n in (4, 3, 32, 32)), indexing="ij")
    return ((t * 37 + c * 11 + h * 5 + w * 3 + i * 50) % 256).to(torch.uint8)


def test_a_cache_written_by_rlt_0_1_loads_with_its_pixels_and_labels():
    """tests/fixtures/clip_cache_v1: 3 clips in 2 shards, written by `write_clip_cache` before the cache package."""
    with pytest.warns(UserWarning, match="written before rlt recorded shard sizes and checksums"):
        cache = ClipCache(FIXTURE_CACHE)
    assert len(cache) == 3 and cache.class_names == ["cat", "dog"] and cache.labels == [0, 1, 0]
    assert cache.clip_shape == (4, 3, 32, 32)
    for i in range(3):
        assert torch.equal(cache.clip(i), fixture_clip(i)), i
    dataset = load_clip_cache(FIXTURE_CACHE)
    assert dataset.with_format(None)["label"] == [0, 1, 0] and dataset.features["label"].names == ["cat", "dog"]
    normalize = cache.processor.normalize_frames
    assert torch.equal(dataset[2]["pixel_values"], normalize(fixture_clip(2).float()))
    items = CachedClips(FIXTURE_CACHE, class_names=["bird", "cat", "dog"])
    assert [items[i]["labels"] for i in range(3)] == [1, 2, 1]
    assert torch.equal(items[1]["pixel_values"], fixture_clip(1))


def _damage(path: Path, how: str) -> None:
    """Zero 4 KiB inside a shard's tensor data (a bad disk, an interrupted copy), or cut it to half its size."""
    data = bytearray(path.read_bytes())
    if how == "zeroed":
        data[-8192:-4096] = bytes(4096)
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))


def test_damaged_shards_are_named_with_the_repair_and_a_rerun_rewrites_only_them(folder, tmp_path, capsys):
    out = tmp_path / "cache"
    settings = {"processor": small_processor(), "workers": 0, "shard_size": 2, "progress": False}
    cache_clips(folder, out, **settings)
    before = [ClipCache(out).clip(i).clone() for i in range(6)]
    shards = sorted(out.glob("clips-*.safetensors"))
    zeroed, intact, cut = shards
    _damage(zeroed, "zeroed")
    _damage(cut, "cut")
    repair = f"`rlt cache {folder} {out}` again"

    with pytest.raises(DamagedCacheError) as opened:  # the size check on open finds the cut shard, not safetensors
        ClipCache(out)
    assert cut.name in str(opened.value) and zeroed.name not in str(opened.value) and repair in str(opened.value)
    assert main(["cache", "--verify", str(out)]) == 2  # the CRC-32 finds the zeroed one too
    error = capsys.readouterr().err
    assert zeroed.name in error and cut.name in error and intact.name not in error and repair in error
    with pytest.raises(DamagedCacheError, match=zeroed.name):
        load_clip_cache(out, verify=True)

    untouched = _stat(intact)
    summary = cache_clips(folder, out, **settings)
    assert summary.shards_written == 2 and summary.shards_reused == 1
    assert set(summary.repaired) == {zeroed.name, cut.name}
    assert "(2 written now, 1 already done; 2 damaged or missing shards rewritten)" in str(summary)
    assert f"{zeroed.name} was rewritten: its contents changed" in str(summary)
    assert re.search(rf"{cut.name} was rewritten: \d+ bytes where \d+ were written", str(summary))
    assert _stat(intact) == untouched
    repaired = ClipCache(out, verify=True)
    assert all(torch.equal(repaired.clip(i), before[i]) for i in range(6))
    assert main(["cache", "--verify", str(out)]) == 0 and "6 clips in 3 shards as recorded" in capsys.readouterr().out


def test_a_shard_cut_after_opening_raises_our_error_not_safetensors(tmp_path):
    clips = np.zeros((2, 4, 3, 32, 32), dtype=np.uint8)
    write_clip_cache(clips, [0, 1], tmp_path / "c", ["a", "b"], shard_size=1, progress=False)
    cache = ClipCache(tmp_path / "c")
    _damage(tmp_path / "c" / "clips-00001-of-00002.safetensors", "cut")
    with pytest.raises(DamagedCacheError, match=r"clips-00001-of-00002\.safetensors.*write_clip_cache\(\.\.\."):
        cache.clip(1)


def test_an_old_cache_loads_with_a_note_and_a_rerun_records_its_checksums(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FIXTURE_CACHE, old)
    with pytest.warns(UserWarning, match="before rlt recorded shard sizes and checksums.*call write_clip_cache"):
        assert torch.equal(ClipCache(old, verify=True).clip(2), fixture_clip(2))
    mtimes = {path.name: _stat(path) for path in old.glob("clips-*")}

    summary = write_clip_cache([fixture_clip(i) for i in range(3)], ["cat", "dog", "cat"], old, ["cat", "dog"],
                               shard_size=2, progress=False)
    assert summary.checksums_added == 2 and summary.shards_written == 0
    assert "recorded the size and CRC-32" in str(summary)
    assert {path.name: _stat(path) for path in old.glob("clips-*")} == mtimes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note any more
        ClipCache(old, verify=True)
    _damage(old / "clips-00000-of-00002.safetensors", "zeroed")
    with pytest.raises(DamagedCacheError, match=r"clips-00000-of-00002\.safetensors"):
        ClipCache(old, verify=True)

    cut = tmp_path / "cut"  # an old shard cut short fails its own header's size: our error, not safetensors'
    shutil.copytree(FIXTURE_CACHE, cut)
    _damage(cut / "clips-00001-of-00002.safetensors", "cut")
    with pytest.raises(DamagedCacheError, match=r"clips-00001-of-00002\.safetensors"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ClipCache(cut)


def test_a_damaged_shard_of_a_streamed_dataset_is_rewritten_alone_under_its_name(folder, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    videos = sorted(folder.glob("*/*.mp4"))
    features = datasets.Features({"video": datasets.Video(), "label": datasets.ClassLabel(names=["ant", "bee"])})
    rows = {"video": [{"path": None, "bytes": path.read_bytes()} for path in videos],
            "label": [int(path.parent.name == "bee") for path in videos]}
    (tmp_path / "parquet" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "parquet" / "data" / "train.parquet"))
    out = tmp_path / "cache"
    settings = {"processor": small_processor(), "workers": 0, "shard_size": 2, "progress": False,
                "dataset_options": {"streaming": True}}
    cache_clips(tmp_path / "parquet", out, **settings)
    names = sorted(path.name for path in out.glob("clips-*"))
    assert names == ["clips-00000.safetensors", "clips-00001.safetensors", "clips-00002.safetensors"]
    before = [ClipCache(out).clip(i).clone() for i in range(6)]
    _damage(out / names[1], "zeroed")
    untouched = {name: _stat(out / name) for name in (names[0], names[2])}

    summary = cache_clips(tmp_path / "parquet", out, **settings)
    assert list(summary.repaired) == [names[1]] and summary.shards_written == 1 and summary.processed == 2
    assert sorted(path.name for path in out.glob("clips-*")) == names
    assert {name: _stat(out / name) for name in (names[0], names[2])} == untouched
    repaired = ClipCache(out, verify=True)
    assert all(torch.equal(repaired.clip(i), before[i]) for i in range(6)) and repaired.labels == rows["label"]
