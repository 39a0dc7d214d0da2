"""Clips too short for the sampling repeat frames; `rlt inspect`, `rlt cache` and `rlt evaluate` say how many.

RLT drops a repeated frame's tubelets like any static content, so without this report a folder with
short or truncated files would show a token reduction its content does not have.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import TINY_VIDEOMAE
from safetensors import safe_open
from transformers import VideoMAEConfig, VideoMAEForVideoClassification

from rlt import RLTVideoProcessor
from rlt.cli import main
from rlt.models.video_decoding import count_padded_frames, decode_video, sample_frame_indices
from rlt.synthetic import write_mp4

av = pytest.importorskip("av")

SIZE, NUM_FRAMES, STRIDE = 32, 16, 2  # 16 frames at stride 2 need 31 frames of video
SAMPLING = ["--num-frames", str(NUM_FRAMES), "--frame-stride", str(STRIDE)]


def noise_frames(count: int, seed: int) -> np.ndarray:
    """``(count, SIZE, SIZE, 3)`` uint8 frames of noise: no two are alike, so a repeat shows in the pixels."""
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def write_truncated_mp4(path, frames: np.ndarray, keep: float = 0.5):
    """An mp4 whose header (moov first) lists every frame but whose data stops at ``keep`` of the file.

    Every frame is a keyframe, so the frames before the cut decode and the rest are missing, as in an
    interrupted download or copy.
    """
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.time_base = Fraction(1, 25)
        stream.options = {"crf": "18", "preset": "veryfast", "g": "1"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def repeats_in(frames: torch.Tensor) -> int:
    """Frames equal to the frame before them, from the pixels: ``(T, C, H, W)``."""
    return sum(bool(torch.equal(frames[i], frames[i - 1])) for i in range(1, len(frames)))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Class folders with a 1-frame file, a 24-frame clip, a truncated file and a clip long enough."""
    root = tmp_path_factory.mktemp("padding")
    (root / "data" / "a").mkdir(parents=True)
    (root / "data" / "b").mkdir(parents=True)
    paths = {
        "one_frame": write_mp4(root / "data" / "a" / "one_frame.mp4", noise_frames(1, 0)),
        "short": write_mp4(root / "data" / "a" / "short.mp4", noise_frames(24, 1)),
        "truncated": write_truncated_mp4(root / "data" / "b" / "truncated.mp4", noise_frames(32, 2)),
        "long": write_mp4(root / "data" / "b" / "long.mp4", noise_frames(40, 3)),
    }
    processor = RLTVideoProcessor(
        num_frames=NUM_FRAMES,
        frame_stride=STRIDE,
        size={"shortest_edge": SIZE},
        crop_size={"height": SIZE, "width": SIZE},
    )
    expected = {}
    for name, path in paths.items():
        frames, padded = processor.load_frames(path, return_padded_frames=True)
        expected[name] = padded
        assert padded == repeats_in(frames), name  # the count is what the pixels show
    return root, paths, processor, expected


def test_sampling_counts_the_frames_that_repeat(videos):
    assert count_padded_frames(sample_frame_indices(24, 16, frame_stride=2)) == 3  # 0, 2 .. 22, 23, 23, 23, 23
    assert count_padded_frames(sample_frame_indices(1, 16, frame_stride=2)) == 15
    assert count_padded_frames(sample_frame_indices(4, 8)) == 4  # uniform: 0 0 1 1 2 2 3 3
    assert count_padded_frames(sample_frame_indices(160, 16)) == 0
    assert count_padded_frames(sample_frame_indices(31, 16, frame_stride=2)) == 0

    _, paths, processor, expected = videos
    assert expected["one_frame"] == 15 and expected["short"] == 3 and expected["long"] == 0
    with av.open(str(paths["truncated"])) as container:
        assert container.streams.video[0].frames == 32  # the header still lists every frame
    assert 0 < expected["truncated"] < 15  # some frames decode, the missing ones repeat the last decoded one

    names = list(paths)
    output = processor([paths[n] for n in names], return_padded_frames=True)
    assert output["padded_frames"].tolist() == [expected[n] for n in names]
    assert "padded_frames" not in processor(paths["short"])  # only when asked for
    assert decode_video(paths["short"], num_frames=16, frame_stride=2, return_padded_frames=True)[1] == 3
    array_frames, padded = processor.load_frames(noise_frames(5, 4), num_frames=8, return_padded_frames=True)
    assert padded == 5 == repeats_in(array_frames)  # arrays too: 0 2 4 4 4 4 4 4


def test_rlt_inspect_reports_the_padded_clips(videos, capsys):
    _, paths, _, expected = videos
    names = list(paths)
    code = main(["inspect", *[str(paths[n]) for n in names], "--size", str(SIZE), "--no-png", *SAMPLING])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("clip"))
    assert header.split()[-1] == "padded"
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0].endswith(".mp4")}
    assert {name: int(rows[f"{name}.mp4"][-1]) for name in names} == expected
    total = sum(expected.values())
    assert (
        f"padded: 3 of 4 clips are shorter than the sampling needs (16 frames); {total} sampled frames"
        in "\n".join(lines)
    )


def test_rlt_cache_records_the_padding_per_clip_and_in_all(videos, tmp_path, capsys):
    root, _, _, expected = videos
    out = tmp_path / "cache"
    assert main(["cache", str(root / "data"), str(out), "--size", str(SIZE), *SAMPLING, "--workers", "0",
                 "--no-progress"]) == 0
    total = sum(expected.values())
    assert f"3 of 4 clips are shorter than the sampling needs: {total} sampled frames repeat" in capsys.readouterr().out

    index = json.loads((out / "clip_cache.json").read_text())
    per_clip = {record["path"].rsplit("/", 1)[-1][:-4]: record["padded_frames"] for record in index["clips"]}
    assert per_clip == expected
    assert index["padded"] == {"clips": 3, "frames": total}
    shard = index["shards"]["0"]
    assert shard["padded_clips"] == 3 and shard["padded_frames"] == total
    with safe_open(str(out / shard["file"]), framework="pt") as handle:
        assert sorted(handle.get_tensor("padded_frames").tolist()) == sorted(expected.values())


@pytest.fixture(scope="module")
def model_folder(videos):
    root, _, processor, _ = videos
    config = VideoMAEConfig(**{**TINY_VIDEOMAE, "num_frames": NUM_FRAMES, "num_labels": 2},
                            id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    VideoMAEForVideoClassification(config).save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model"


def test_rlt_evaluate_reports_the_padded_clips_in_the_table_and_json(videos, model_folder, tmp_path, capsys):
    root, paths, _, expected = videos
    total = sum(expected.values())
    results = tmp_path / "videos.json"
    assert main(["evaluate", str(model_folder), str(root / "data"), "--threshold", "0.1", "--batch-size", "2",
                 "--workers", "0", "--no-progress", "--json", str(results)]) == 0
    printed = capsys.readouterr().out
    assert f"padded: 3 of 4 clips are shorter than the sampling needs; {total} of their sampled frames" in printed
    padded = json.loads(results.read_text())["padded"]
    assert padded["clips"] == 3 and padded["frames"] == total and padded["unknown"] == 0
    assert {entry["path"]: entry["padded_frames"] for entry in padded["videos"]} == {
        str(paths[name].resolve()): count for name, count in expected.items() if count
    }

    # From a clip cache the counts come from its index: the same report without decoding.
    cache = tmp_path / "cache"
    assert main(["cache", str(root / "data"), str(cache), "--size", str(SIZE), *SAMPLING, "--workers", "0",
                 "--no-progress"]) == 0
    from_cache = tmp_path / "cache.json"
    assert main(["evaluate", str(model_folder), str(cache), "--threshold", "0.1", "--batch-size", "2",
                 "--workers", "0", "--no-progress", "--json", str(from_cache)]) == 0
    assert json.loads(from_cache.read_text())["padded"] == padded
