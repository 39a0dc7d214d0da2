"""The ``rlt`` command as a new user meets it (issue 23, item 6): mistyped flags and commands get the
sub-command's usage and the closest valid name; a path that does not exist is "not found" at once (no
Hub call); a video where a checkpoint belongs is named; each interface words its own arguments; counts
take the right number; ``--no-progress`` is quiet; README marks what needs the Hub."""

import importlib.util
import re
from pathlib import Path

import pytest
import transformers
from video_helpers import moving_square_frames, write_video

import rlt
from rlt import conversion, evaluation
from rlt.cli import main
from rlt.common import plural

ROOT = Path(__file__).resolve().parents[1]


def usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def error_of(argv, capsys) -> tuple[str, str]:
    """``(stdout, the one-line error)`` of a command that fails on what the user gave it."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.out, captured.err.strip()


@pytest.fixture
def no_loading(monkeypatch):
    """Conversion and evaluation that fail the test if reached: the CLI must refuse before loading anything."""

    def reached(*args, **kwargs):
        raise AssertionError("the command went on to load the model (and would have asked the Hub)")

    monkeypatch.setattr(conversion, "convert", reached)
    monkeypatch.setattr(evaluation, "evaluate", reached)


# -- flags and commands -----------------------------------------------------------------------------------


def test_a_mistyped_flag_gets_the_sub_commands_usage_and_the_closest_flag(capsys):
    err = usage_error(["inspect", "--treshold", "0.2"], capsys)
    assert err.startswith("usage: rlt inspect") and "usage: rlt [-h] COMMAND" not in err
    assert err.strip().endswith("rlt inspect: error: unrecognized arguments: --treshold; did you mean --threshold?")
    err = usage_error(["cache", "in", "out", "--no-progess"], capsys)
    assert err.startswith("usage: rlt cache") and "did you mean --no-progress?" in err


def test_a_flag_named_after_a_metavar_points_at_its_flag(capsys):
    err = usage_error(["evaluate", "model", "data", "--tau", "0.1"], capsys)
    assert err.startswith("usage: rlt evaluate") and err.strip().endswith("did you mean --threshold?")


def test_an_unknown_flag_without_a_close_one_gets_no_guess(capsys):
    err = usage_error(["inspect", "--zzzz"], capsys)
    assert "unrecognized arguments: --zzzz" in err and "did you mean" not in err


def test_a_mistyped_command_gets_the_closest_command(capsys):
    err = usage_error(["inspekt"], capsys)
    assert "unknown command 'inspekt' (did you mean 'inspect'?)" in err and "convert, push, inspect" in err


# -- paths that do not exist, and files where a checkpoint belongs ----------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "./no-such-folder", "out"], "no such file or folder: ./no-such-folder (the checkpoint to convert)"),
        (["convert", "../up/nope", "out"], "no such file or folder: ../up/nope (the checkpoint to convert)"),
        (["convert", "a/b/c", "out"], "no such file or folder: a/b/c (the checkpoint to convert)"),
        (["evaluate", "./nope", "data"], "no such file or folder: ./nope (the classifier to evaluate)"),
        (["push", "nope", "user/name"], "no such file or folder: nope (the checkpoint folder to upload)"),
    ],
)
def test_a_path_that_does_not_exist_is_not_found_at_once(argv, message, capsys, tmp_path, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)
    _, err = error_of(argv, capsys)
    assert err == f"rlt {argv[0]}: error: {message}"


def test_evaluate_names_missing_data_after_a_good_model(capsys, tmp_path, monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(evaluation, "model_and_processor", reached)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    for data, options in (("./clips.csv", []), ("./videos", ["--split", "test"]), ("a/b/c", [])):
        _, err = error_of(["evaluate", "model", data, *options], capsys)
        assert err == f"rlt evaluate: error: no such clip cache, video folder or list: {data}"


def test_a_video_where_a_checkpoint_belongs_is_named(capsys, tmp_path, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)
    _, err = error_of(["convert", "bikes.mp4", "out"], capsys)  # whether the file exists or not
    assert err.startswith("rlt convert: error: bikes.mp4 is a video file, not the checkpoint to convert")
    (tmp_path / "config.json").write_text("{}")
    _, err = error_of(["evaluate", "config.json", "data"], capsys)
    assert err.startswith("rlt evaluate: error: config.json is a file, not the classifier to evaluate")


def test_a_hub_id_is_left_to_the_hub(capsys, tmp_path, monkeypatch):
    """``user/name`` that is no local folder goes on to the loader (here stopped before any network)."""
    seen = []
    monkeypatch.setattr(conversion, "convert", lambda source, *args, **kwargs: seen.append(source) or 1 / 0)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZeroDivisionError):
        main(["convert", "MCG-NJU/videomae-base", "out"])
    assert seen == ["MCG-NJU/videomae-base"]


def test_inspect_of_a_missing_video_errors_before_the_table(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, err = error_of(["inspect", "nosuch.mp4", "--no-png"], capsys)
    assert out == "" and err == "rlt inspect: error: video file not found: nosuch.mp4"


# -- one wording per interface ----------------------------------------------------------------------------


def test_a_non_empty_output_folder_is_named_in_each_interfaces_words(capsys, tmp_path):
    source, output = tmp_path / "source", tmp_path / "out"
    source.mkdir()
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    _, err = error_of(["convert", str(source), str(output)], capsys)
    assert err == f"rlt convert: error: output folder {output} is not empty; add --overwrite to replace it"
    _, err = error_of(["calibrate", str(source), str(output), "--data", str(source), "--steps", "1"], capsys)
    assert err == f"rlt calibrate: error: output folder {output} is not empty; add --overwrite to replace it"
    with pytest.raises(FileExistsError) as error:
        rlt.convert(source, output)
    assert "pass overwrite=True to replace it" in str(error.value) and "--overwrite" not in str(error.value)
    assert (output / "keep.txt").read_text() == "mine"


# -- plurals ----------------------------------------------------------------------------------------------


def test_counts_take_the_right_number(capsys, tmp_path):
    assert [plural(n, "clip") for n in (0, 1, 2)] == ["0 clips", "1 clip", "2 clips"]
    assert plural(1, "PNG file") == "1 PNG file" and plural(3, "video") == "3 videos"
    clip = write_video(tmp_path / "square.mp4", moving_square_frames())
    args = ["--num-frames", "8", "--frame-stride", "1", "--size", "64"]
    assert main(["inspect", str(clip), "--out", str(tmp_path / "one"), *args]) == 0
    assert f"wrote 1 PNG file to {tmp_path / 'one'}" in capsys.readouterr().out
    assert main(["inspect", str(clip), "--threshold", "0.1", "0.2", "--out", str(tmp_path / "three"), *args]) == 0
    assert "wrote 3 PNG files" in capsys.readouterr().out


def test_the_evaluation_report_counts_in_the_right_number():
    loader = {"clips_per_s": 2.0, "clips": 1, "seconds": 0.5, "workers": 1, "held_in_memory": True, "kind": "videos"}
    report = evaluation.EvaluationReport(
        model="m", data="d", device="cpu", dtype="fp32", batch_size=1, num_clips=1, num_classes=2, loader=loader,
        failed=[{"path": "bad.mp4", "error": "cannot decode"}], padded=[{"path": "a.mp4", "padded_frames": None}],
    )
    text = str(report)
    assert text.startswith("1 clip from d (videos)") and "(1 clip in 0.50 s, 1 worker," in text
    assert "1 unreadable video skipped:" in text and "padded: unknown for 1 clip (" in text
    assert not re.search(r"\b1 (clips|workers|videos)\b", text)


# -- quiet, workers, README -------------------------------------------------------------------------------


def test_no_progress_also_silences_transformers_weight_loading_bar(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluation, "evaluate", lambda *args, **kwargs: "report")
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    transformers.utils.logging.enable_progress_bar()
    try:
        assert main(["evaluate", str(tmp_path / "model"), str(tmp_path / "data")]) == 0
        assert transformers.utils.logging.is_progress_bar_enabled()
        assert main(["evaluate", str(tmp_path / "model"), str(tmp_path / "data"), "--no-progress"]) == 0
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        transformers.utils.logging.enable_progress_bar()


def test_the_training_scripts_default_workers_fit_the_machine(monkeypatch):
    path = ROOT / "examples" / "train_video_classification.py"
    spec = importlib.util.spec_from_file_location("train_video_classification", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--synthetic", "8", "--from-scratch", "tiny", "--output-dir", "out"]
    for cores, workers in ((2, 1), (1, 0), (16, 4)):
        monkeypatch.setattr(script.os, "cpu_count", lambda cores=cores: cores)
        assert script.parse_args(argv).num_workers == workers


def test_readme_marks_the_python_blocks_that_need_the_hub():
    """A block that names a Hub id or a folder made from one says so on its first line: run offline,
    each waits on Hub retries and then fails."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    hub_only = re.compile(
        r"videomae-base-rlt|vjepa2-vitl-rlt|push_to_hub\(|from_pretrained\(\"[\w-]+/[\w.-]+\""
    )
    needing = [block for block in blocks if hub_only.search(block)]
    assert len(needing) >= 4
    for block in needing:
        assert block.startswith("# Needs the Hub"), block.splitlines()[0]
    for block in blocks:
        if not hub_only.search(block):
            assert not block.startswith("# Needs the Hub"), block.splitlines()[0]


def test_the_rlt_setting_flags_offer_exactly_the_configs_choices():
    """--run-embedding, --compare-to and --pooling take their choices from the settings' own tuples, so a
    choice added to a setting reaches every command's flag (and none lists one the config refuses)."""
    from rlt.cli import build_parser
    from rlt.models.configuration_rlt import POOLING_CHOICES, RUN_EMBEDDING_CHOICES
    from rlt.models.tokenizer import COMPARE_TO_CHOICES

    expected = {"--run-embedding": RUN_EMBEDDING_CHOICES, "--compare-to": COMPARE_TO_CHOICES,
                "--pooling": POOLING_CHOICES}
    commands = next(action for action in build_parser()._actions if action.choices and "convert" in action.choices)
    seen = set()
    for name, parser in commands.choices.items():
        for action in parser._actions:
            flag = next((option for option in action.option_strings if option in expected), None)
            if flag is not None:
                assert tuple(action.choices) == tuple(expected[flag]), (name, flag)
                seen.add((name, flag))
    assert {("convert", "--run-embedding"), ("evaluate", "--run-embedding"), ("calibrate", "--run-embedding"),
            ("inspect", "--compare-to"), ("evaluate", "--compare-to"), ("convert", "--pooling"),
            ("evaluate", "--pooling"), ("calibrate", "--pooling")} <= seen


def test_inspect_video_llm_refuses_the_flags_it_would_ignore(capsys):
    """The video LLM's processor decides resize and grouping: --size or --dataset with --video-llm is an error, not
    silently dropped."""
    _, err = error_of(["inspect", "--video-llm", "qwen2_5_vl", "--size", "112", "--arch", "videomae"], capsys)
    assert err.startswith("rlt inspect: error: --arch, --size do not apply with --video-llm")
    _, err = error_of(["inspect", "--video-llm", "qwen3_vl", "--split", "train"], capsys)
    assert "the dataset options do not apply with --video-llm" in err
