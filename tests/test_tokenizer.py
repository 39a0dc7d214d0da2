import pytest
import torch

from rlt import run_length_tokenize
from rlt.models.tokenizer import REFERENCE_INPUT_SCALE, run_lengths_from_keep_mask


def static_clip(frames=8, size=32, seed=0):
    frame = torch.rand(1, 1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return frame.expand(1, frames, 3, size, size).clone()


def test_static_clip_keeps_first_step_with_full_run_length():
    tokens = run_length_tokenize(static_clip(frames=8, size=32), threshold=0.0)
    assert tokens.keep_mask.shape == (1, 4, 2, 2)
    assert tokens.keep_mask[:, 0].all() and not tokens.keep_mask[:, 1:].any()
    assert tokens.counts.tolist() == [4]
    assert (tokens.lengths[:, 0] == 4).all() and (tokens.lengths[:, 1:] == 0).all()


def test_noise_keeps_everything_at_zero_threshold():
    clips = torch.randn(3, 8, 3, 32, 32)
    tokens = run_length_tokenize(clips, threshold=0.0)
    assert tokens.keep_mask.all()
    assert (tokens.lengths == 1).all()
    assert tokens.kept_fraction.tolist() == [1.0, 1.0, 1.0]


def test_known_pattern_of_repeats_gives_each_token_its_own_run_length():
    # Four time steps of 2 frames on a 2x3 grid (32x48 px). The rule compares the last frame of
    # tubelet k with the first frame of tubelet k-1, so a repeat means all four frames match.
    torch.manual_seed(1)
    clip = torch.randn(1, 8, 3, 32, 48)
    # Cell (0, 0): static for time steps 0..2, changes at step 3 -> kept at 0 (L=3) and 3 (L=1).
    clip[0, 1:6, :, 0:16, 0:16] = clip[0, 0, :, 0:16, 0:16]
    # Cell (1, 2): static for the whole clip -> kept at 0 only, L=4.
    clip[0, :, :, 16:32, 32:48] = clip[0, 0, :, 16:32, 32:48]
    # Cell (0, 1): steps 1 and 2 repeat each other but not step 0 -> kept at 0, 1, 3 with L=1, 2, 1.
    clip[0, 3:6, :, 0:16, 16:32] = clip[0, 2, :, 0:16, 16:32]
    tokens = run_length_tokenize(clip, threshold=0.0)
    lengths = tokens.lengths[0]
    assert lengths[:, 0, 0].tolist() == [3, 0, 0, 1]
    assert lengths[:, 1, 2].tolist() == [4, 0, 0, 0]
    assert lengths[:, 0, 1].tolist() == [1, 2, 0, 1]
    for cell in [(0, 2), (1, 0), (1, 1)]:
        assert lengths[:, cell[0], cell[1]].tolist() == [1, 1, 1, 1]
    # Lengths at each place sum to T', and flattened they follow the time-major token order.
    assert (lengths.sum(0) == 4).all()
    keep_flat, lengths_flat = tokens.flat()
    expected = [int(lengths[k, h, w]) for k in range(4) for h in range(2) for w in range(3) if lengths[k, h, w] > 0]
    assert lengths_flat[keep_flat].tolist() == expected


def test_threshold_is_inclusive_and_in_reference_units():
    clip = torch.zeros(1, 4, 3, 16, 16)
    clip[:, 2:] += 0.125  # the second tubelet differs from the first by exactly 0.125 everywhere
    assert not run_length_tokenize(clip, threshold=0.125).keep_mask[0, 1].item()
    assert run_length_tokenize(clip, threshold=0.124).keep_mask[0, 1].item()


def test_same_pixels_under_two_normalisations_give_the_same_keep_mask():
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (2, 16, 3, 32, 32), generator=generator).float()
    # Frames 4-9 repeat frame 3 with noise of a few grey levels (about 0.14 in reference units:
    # kept at tau 0.1, but under 0.1 if read on the 0.5/0.5 scale); frames 10-15 repeat frame 9.
    pixels[:, 4:10] = pixels[:, 3:4] + torch.randint(-12, 13, (2, 6, 3, 32, 32), generator=generator)
    pixels[:, 10:] = pixels[:, 9:10]
    imagenet_mean, imagenet_std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor(REFERENCE_INPUT_SCALE) * 255
    imagenet_std = 1 / imagenet_std
    half_mean, half_std = torch.full((3,), 0.5), torch.full((3,), 0.5)

    def normalise(mean, std):
        return (pixels / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1)

    imagenet = run_length_tokenize(normalise(imagenet_mean, imagenet_std), threshold=0.1)
    half = run_length_tokenize(
        normalise(half_mean, half_std), threshold=0.1, input_scale=[(1 / 255) / 0.5] * 3
    )
    assert torch.equal(imagenet.keep_mask, half.keep_mask)
    assert 0 < imagenet.counts.sum() < imagenet.keep_mask.numel()
    # Without the input scale the 0.5/0.5 input would keep a different set of tokens.
    unscaled = run_length_tokenize(normalise(half_mean, half_std), threshold=0.1)
    assert not torch.equal(unscaled.keep_mask, imagenet.keep_mask)


def test_last_kept_comparison_catches_slow_drift():
    # Brightness rises by 0.06 per time step: each step is under tau=0.1 from the one before,
    # but drifts away from the tubelet the run reuses.
    clip = torch.zeros(1, 16, 3, 16, 16)
    for step in range(8):
        clip[:, 2 * step : 2 * step + 2] = 0.06 * step
    previous = run_length_tokenize(clip, threshold=0.1, compare_to="previous")
    last_kept = run_length_tokenize(clip, threshold=0.1, compare_to="last_kept")
    assert previous.counts.item() == 1
    assert last_kept.counts.item() > 1
    assert last_kept.keep_mask[0, :, 0, 0].tolist() == [True, False, True, False, True, False, True, False]


def test_run_lengths_from_keep_mask_matches_tokenizer():
    clips = torch.randn(2, 8, 3, 32, 32)
    clips[:, 4:] = clips[:, :1]
    tokens = run_length_tokenize(clips, threshold=0.0)
    assert torch.equal(run_lengths_from_keep_mask(tokens.keep_mask), tokens.lengths)


def test_works_in_half_precision_and_keeps_device():
    clips = torch.randn(2, 8, 3, 32, 32).to(torch.bfloat16)
    tokens = run_length_tokenize(clips, threshold=0.1)
    assert tokens.keep_mask.device == clips.device and tokens.keep_mask.dtype == torch.bool


@pytest.mark.parametrize(
    "shape, message",
    [
        ((8, 3, 32, 32), "5 dimensions"),
        ((1, 7, 3, 32, 32), "7 frames are not a multiple of the tubelet size 2"),
        ((1, 8, 3, 30, 32), "height 30 is not a multiple of the patch size 16"),
        ((1, 8, 3, 32, 40), "width 40"),
        ((1, 8, 32, 32, 3), "channels-last"),
    ],
)
def test_bad_shapes_are_named(shape, message):
    with pytest.raises(ValueError, match=message):
        run_length_tokenize(torch.zeros(shape))


def test_bad_arguments_are_named():
    clip = torch.zeros(1, 8, 3, 32, 32)
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0, got -0.1"):
        run_length_tokenize(clip, threshold=-0.1)
    with pytest.raises(ValueError, match="float tensor"):
        run_length_tokenize(clip.to(torch.uint8))
    with pytest.raises(ValueError, match="compare_to"):
        run_length_tokenize(clip, compare_to="first")
    with pytest.raises(ValueError, match="input_scale must hold 3 positive numbers"):
        run_length_tokenize(clip, input_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="keep_mask must be a bool tensor"):
        run_lengths_from_keep_mask(torch.ones(1, 4, 2, 2))
