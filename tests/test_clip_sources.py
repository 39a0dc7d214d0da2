"""One road for clips: the readers of rlt.clip_sources, the factory that picks them, and ClipCollator over them."""

import numpy as np
import pytest
import torch
from video_helpers import write_video

import rlt
from rlt.cache import write_clip_cache
from rlt.clip_sources import CacheClips, DecodedClips, SyntheticClips, TensorClips, open_clips
from rlt.collator import ClipBatch, ClipCollator
from rlt.synthetic import SyntheticVideoDataset, task_config


def small_processor() -> rlt.RLTVideoProcessor:
    return rlt.RLTVideoProcessor(num_frames=8, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def uint8_clips(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 8, 3, 32, 32), generator=generator, dtype=torch.uint8)


def read_all(source, collator=None, batch_size=2) -> list[ClipBatch]:
    loader = torch.utils.data.DataLoader(
        rlt.ClipDataset(source), batch_size=batch_size, collate_fn=lambda items: (collator or ClipCollator()).collate(
            items, allow_empty=True
        )
    )
    return list(loader)


def test_tensor_clips_map_labels_to_the_model_classes_by_name():
    clips = uint8_clips(3)
    source = open_clips((clips, [0, 1, 0], ["cat", "dog"]), class_names=["dog", "cat", "eel"])
    assert isinstance(source, TensorClips) and source.in_memory and len(source) == 3
    assert [source.clip(i).label for i in range(3)] == [1, 0, 1]
    assert source.class_names == ["dog", "cat", "eel"] and source.clip_shape == (8, 3, 32, 32)
    assert torch.equal(source.clip(2).frames, clips[2]) and source.clip(2).name == "clip-000002"
    with pytest.raises(ValueError, match=r"uint8 \(N, T, C, H, W\)"):
        open_clips((clips.float(), [0, 1, 0]))
    with pytest.raises(ValueError, match="not among the model's labels"):
        open_clips((clips, [0, 1, 0], ["cat", "dog"]), class_names=["eel", "fox"])


def test_synthetic_spec_gives_the_generated_task_at_the_processor_size():
    source = open_clips("synthetic:still:3", small_processor())
    assert isinstance(source, SyntheticClips) and source.kind == "synthetic" and len(source) == 3
    clip = source.clip(0)
    assert clip.frames.dtype == torch.uint8 and tuple(clip.frames.shape) == (8, 3, 32, 32)
    assert 0 <= clip.label < len(source.class_names)
    # The options render what SyntheticVideoDataset renders with them (rlt calibrate --synthetic spells its flags so).
    source = open_clips("synthetic:still:2,seed=3,time_step=0.5,device=cpu", small_processor())
    expected = SyntheticVideoDataset(2, seed=3, config=task_config("still", num_frames=8, image_size=32, time_step=0.5))
    assert torch.equal(source.clips, expected.clips) and source.labels == expected.labels.tolist()
    assert not torch.equal(source.clips, open_clips("synthetic:still:2", small_processor()).clips)
    for spec in ("synthetic:many", "synthetic:2,sed=3", "synthetic:2,seed"):
        with pytest.raises(ValueError, match="synthetic:N or synthetic:VARIANT:N"):
            open_clips(spec, small_processor())
    with pytest.raises(ValueError, match="seed must be an integer"):
        open_clips("synthetic:2,seed=x", small_processor())
    with pytest.raises(ValueError, match="needs the processor"):
        open_clips("synthetic:2")


def test_video_files_decode_and_an_unreadable_one_is_listed_not_raised(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_video(tmp_path / name / "clip.mp4", rng.integers(0, 256, (4, 40, 48, 3), dtype=np.uint8))
    (tmp_path / "b" / "broken.mp4").write_bytes(b"not a video")
    source = open_clips(tmp_path, small_processor())
    assert isinstance(source, DecodedClips) and source.kind == "videos" and source.class_names == ["a", "b"]
    batches = read_all(source, batch_size=3)
    batch = batches[0]
    assert len(batch) == 2 and batch.labels.tolist() == [0, 1] and batch.pixel_values.dtype == torch.uint8
    assert [entry["path"].endswith("broken.mp4") for entry in batch.failed] == [True]
    # 4 frames sampled as 8 at stride 1 repeat the last one: counted as padded frames.
    assert [entry["padded_frames"] for entry in batch.padded] == [4, 4]


def test_cache_clips_read_what_was_written(tmp_path):
    clips = uint8_clips(3, seed=1)
    write_clip_cache(clips, [1, 0, 1], tmp_path / "cache", class_names=["x", "y"], progress=False)
    source = open_clips(tmp_path / "cache", class_names=["y", "x"])
    assert isinstance(source, CacheClips) and len(source) == 3
    assert [source.clip(i).label for i in range(3)] == [0, 1, 0]
    assert torch.equal(source.clip(1).frames, clips[1])


def test_one_collator_for_dicts_and_clips_with_rlt_and_random_keep_masks():
    clips = uint8_clips(4)
    clips[1, 2:] = clips[1, 1]  # repeats: RLT drops tubelets of clip 1
    source = open_clips((clips, [0, 1, 2, 3]))
    collator = ClipCollator(drop="rlt", threshold=0.0)
    from_clips = collator.collate([source.clip(i) for i in range(4)])
    from_dicts = collator([{"pixel_values": clips[i], "labels": i} for i in range(4)])
    assert set(from_dicts) == {"pixel_values", "labels", "keep_mask"}
    assert torch.equal(from_clips.keep_mask, from_dicts["keep_mask"])
    expected = rlt.run_length_tokenize(clips.float(), threshold=0.0, input_scale=[1.0, 1.0, 1.0]).keep_mask
    assert torch.equal(from_clips.keep_mask, expected) and from_clips.keep_mask[1].sum() < expected[0].sum()
    random = ClipCollator(drop="random", threshold=0.0).collate([source.clip(i) for i in range(4)]).keep_mask
    assert torch.equal(random.flatten(1).sum(1), expected.flatten(1).sum(1)) and random[:, 0].all()
    with pytest.raises(ValueError, match="drop must be one of"):
        ClipCollator(drop="some")
    with pytest.raises(ValueError, match="no readable video"):
        collator([{"pixel_values": None, "video": "x.mp4"}])


def test_collator_keep_mask_clip_by_clip_equals_the_whole_batch_at_a_threshold():
    """On the CPU the collator tokenizes clip by clip (a whole batch in float32 is slow to go through): the
    keep masks are those of the batch at once, for uint8 clips and for normalised float ones."""
    clips = uint8_clips(3, seed=1)
    clips[0, 2:] = clips[0, 1]
    clips[2, 4:, :, :16] = clips[2, 3, :, :16]
    clips[2, 4:, :, :16] += (torch.arange(16) % 3).to(torch.uint8).view(1, 1, 16, 1)  # small changes, near tau
    scale = [0.02, 0.03, 0.04]
    collator = ClipCollator(drop="rlt", threshold=0.1, input_scale=scale)
    expected = rlt.run_length_tokenize(clips.float(), threshold=0.1, input_scale=[1.0, 1.0, 1.0]).keep_mask
    assert torch.equal(collator.keep_mask(clips), expected) and 0 < expected.sum() < expected.numel()
    normalised = clips.float() * torch.tensor(scale).view(1, 1, 3, 1, 1)
    expected = rlt.run_length_tokenize(normalised, threshold=0.1, input_scale=scale).keep_mask
    assert torch.equal(collator.keep_mask(normalised), expected)


def test_for_model_takes_a_model_or_its_config():
    config = rlt.RLTVideoMAEConfig(
        image_size=32, num_frames=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, rlt_threshold=0.3, rlt_input_scale=[0.1, 0.2, 0.3],
    )
    model = rlt.RLTVideoMAEForVideoClassification(config)
    for collator in (ClipCollator.for_model(model), ClipCollator.for_model(config)):
        assert collator.drop == "rlt" and collator.threshold == 0.3
        assert collator.settings.rlt_input_scale == (0.1, 0.2, 0.3)
    config.rlt_enabled = False
    assert ClipCollator.for_model(config).threshold is None
    assert ClipCollator.for_model(config, drop="random").drop == "random"
