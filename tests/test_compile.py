"""The compiled Trainer path (``--compile``) on the CPU: same losses as eager, plain checkpoints, the flags.

torch.compile runs with the ``aot_eager`` backend here (the same tracing, AOTAutograd and graph breaks
as inductor, without generating C++ on two busy cores); CUDA graphs are checked in tests/test_cuda.py.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_VIDEOMAE
from safetensors.torch import load_file
from transformers import TrainingArguments

from rlt import RLTVideoMAEConfig, RLTVideoMAEForVideoClassification
from rlt.collator import ClipCollator
from rlt.common import PixelNormalizer
from rlt.synthetic import SyntheticVideoConfig, SyntheticVideoDataset
from rlt.training import (
    RLTTrainer,
    StepProfiler,
    compile_arguments,
    host_overlap_arguments,
    resolve_compile,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_video_classification.py"
CLASSES = ("static", "camera_pan", "move_left", "move_right")


def _trainer(output_dir: Path, compiled: bool, max_steps: int = 2) -> RLTTrainer:
    """A tiny RLT classifier on 16 generated clips, the same weights and data order for both runs."""
    torch.manual_seed(0)
    config = RLTVideoMAEConfig(
        **{**TINY_VIDEOMAE, "num_labels": len(CLASSES), "num_hidden_layers": 1}, rlt_attention="padded",
        problem_type="single_label_classification", hidden_dropout_prob=0.0,
    )  # fmt: skip
    model = RLTVideoMAEForVideoClassification(config)
    data = SyntheticVideoDataset(16, seed=0, config=SyntheticVideoConfig(num_frames=8, image_size=32, classes=CLASSES))
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=1e-3,
        max_steps=max_steps, logging_steps=1, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
        remove_unused_columns=False, label_names=["labels"], report_to="none", use_cpu=True, seed=0,
        dataloader_num_workers=0, **(compile_arguments("default", "cpu", backend="aot_eager") if compiled else {}),
    )  # fmt: skip
    from rlt.training import compute_metrics

    return RLTTrainer(
        model=model, args=args, train_dataset=data, eval_dataset=data, data_collator=ClipCollator.for_model(config),
        compute_metrics=compute_metrics, normalizer=PixelNormalizer(), tokens_per_clip=16,
    )  # fmt: skip


def test_compiled_training_and_evaluation_match_eager_and_save_plain_checkpoints(tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        trainer = _trainer(tmp_path / str(compiled), compiled)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        runs[compiled] = (trainer, losses, trainer.evaluate())
    (eager, eager_losses, eager_metrics), (compiled, compiled_losses, compiled_metrics) = runs[False], runs[True]
    assert len(compiled_losses) == 2
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    assert compiled_metrics["eval_loss"] == pytest.approx(eager_metrics["eval_loss"], rel=1e-4, abs=1e-5)
    assert compiled_metrics["eval_accuracy"] == eager_metrics["eval_accuracy"]
    assert compiled_metrics["eval_mean_tokens_kept"] == eager_metrics["eval_mean_tokens_kept"]

    # Training and evaluation ran compiled, and the steps that built graphs were timed.
    stats = compiled.compile_stats()
    assert {e["phase"] for e in stats["compile_steps"]} == {"train", "eval"}
    assert stats["compile_s"] == pytest.approx(stats["compile_s_train"] + stats["compile_s_eval"], abs=0.02)
    assert stats["compile_s_train"] > 0 and stats["compile_s_eval"] > 0
    assert eager.compile_stats() == {"compile_s": 0.0}

    # The compiled run's checkpoint holds the model's own keys (no "_orig_mod." prefix) and loads back.
    expected_keys = set(eager.model.state_dict())
    saved = load_file(tmp_path / "True" / "checkpoint-2" / "model.safetensors")
    assert set(saved) == expected_keys
    loaded = RLTVideoMAEForVideoClassification.from_pretrained(tmp_path / "True" / "checkpoint-2").eval()
    clips = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips).logits, compiled.model.eval()(clips).logits)
    torch._dynamo.reset()


def test_compile_choices_map_to_transformers_fields():
    assert resolve_compile("auto", "cpu") == "none" and resolve_compile("auto", "cuda") == "cuda-graphs"
    assert compile_arguments("none", "cuda") == {} and compile_arguments("auto", "cpu") == {}
    assert compile_arguments("cuda-graphs", "cuda") == {"torch_compile": True, "torch_compile_mode": "reduce-overhead"}
    assert compile_arguments("default", "cpu", backend="aot_eager") == {
        "torch_compile": True, "torch_compile_mode": None, "torch_compile_backend": "aot_eager",
    }  # fmt: skip
    with pytest.raises(ValueError, match="compile must be one of"):
        resolve_compile("graphs", "cuda")


def _script():
    spec = importlib.util.spec_from_file_location(EXAMPLE.stem, EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_buckets_rlt_packing_for_cuda_graphs_only():
    script = _script()
    base = ["--synthetic", "8", "--from-scratch", "tiny", "--output-dir", "x"]
    graphs = script.parse_args([*base, "--compile", "cuda-graphs"])
    assert graphs.pack_buckets == 8 and graphs.buckets_for_graphs
    assert script.rlt_settings(graphs)["rlt_pack_buckets"] == 8
    assert script.parse_args([*base, "--compile", "cuda-graphs", "--pack-buckets", "4"]).pack_buckets == 4
    assert script.parse_args([*base, "--compile", "default"]).pack_buckets == 0
    assert script.parse_args([*base, "--compile", "cuda-graphs", "--vanilla"]).pack_buckets == 0  # fixed shapes
    with pytest.raises(SystemExit):
        script.parse_args([*base, "--vanilla", "--pack-buckets", "8"])
    with pytest.raises(SystemExit):
        script.parse_args([*base, "--pack-buckets", "-1"])


def test_host_overlap_arguments_let_the_host_run_ahead_on_cuda_only():
    cuda = host_overlap_arguments("cuda", num_workers=4)
    assert cuda["dataloader_pin_memory"] and cuda["accelerator_config"] == {"non_blocking": True}
    assert cuda["dataloader_num_workers"] == 4 and cuda["dataloader_persistent_workers"]
    cpu = host_overlap_arguments("cpu", num_workers=0)
    assert not cpu["dataloader_pin_memory"] and cpu["accelerator_config"] == {"non_blocking": False}
    assert not cpu["dataloader_persistent_workers"]
    # Clips already on the GPU: nothing to pin or copy, and no loader workers (a worker cannot use GPU memory).
    on_device = host_overlap_arguments("cuda", 4, clips_device="cuda")
    assert not on_device["dataloader_pin_memory"] and on_device["accelerator_config"] == {"non_blocking": False}
    assert on_device["dataloader_num_workers"] == 0 and not on_device["dataloader_persistent_workers"]
    assert host_overlap_arguments("cuda", 4, clips_device="cpu")["dataloader_num_workers"] == 4
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        host_overlap_arguments("cuda", -1)
    # transformers takes them as they are
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none", **cpu)
    assert args.accelerator_config.non_blocking is False


def test_a_non_finite_step_loss_is_logged_as_the_running_mean_without_a_host_read(tmp_path, monkeypatch):
    """logging_nan_inf_filter, done on the device: transformers' loop does not read the loss (its filter is off
    while training), a NaN step loss is logged as the running mean, and the flag is the user's again after."""
    from transformers import Trainer

    step_loss = Trainer.training_step

    def run(filtering: bool):
        trainer = _trainer(tmp_path / str(filtering), compiled=False, max_steps=4)
        trainer.args.eval_strategy, trainer.args.save_strategy, trainer.args.logging_steps = "no", "no", 2
        trainer.args.logging_nan_inf_filter = filtering
        flags, losses = [], []

        def nan_on_the_second_step(self, *args, **kwargs):
            flags.append(self.args.logging_nan_inf_filter)
            loss = step_loss(self, *args, **kwargs)
            losses.append(float(loss) if len(flags) != 2 else float("nan"))
            return torch.full_like(loss, float("nan")) if len(flags) == 2 else loss

        monkeypatch.setattr(Trainer, "training_step", nan_on_the_second_step)
        trainer.train()
        assert flags == [False] * 4 and trainer.args.logging_nan_inf_filter is filtering
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], losses

    logged, losses = run(filtering=True)
    # Steps 1-2: step 1's loss and transformers' stand-in for step 2 (the loss summed since the last log over 1 +
    # the steps since it: here losses[0] / 2); steps 3-4 as they are.
    assert logged == pytest.approx([(losses[0] + losses[0] / 2) / 2, (losses[2] + losses[3]) / 2], rel=1e-3)
    logged, _ = run(filtering=False)  # the user's choice: a NaN step loss is logged as NaN
    assert math.isnan(logged[0])


def test_step_profiler_reports_the_profiled_steps(tmp_path):
    trainer = _trainer(tmp_path, compiled=False, max_steps=4)
    trainer.args.eval_strategy, trainer.args.save_strategy = "no", "no"
    profiler = StepProfiler(trainer, steps=2, after=1, top=3)
    trainer.add_callback(profiler)
    trainer.train()
    report = profiler.report
    assert report["steps"] == [2, 3] and profiler.profiler is None
    assert report["wall_ms_per_step"] > 0 and report["loader_wait_ms_per_step"] >= 0
    assert report["device_busy_fraction"] is None and report["kernels_per_step"] == 0  # no CUDA here
    assert report["graphs_built"] == 0 and report["host_syncs_per_step"] == 0
    assert report["interruptions"] == {"log": 1, "evaluate": 0, "save": 0}  # step 2's log (logging_steps 1)
    ops = report["top_host_ops"]
    assert 0 < len(ops) <= 3 and all(op["name"].startswith("aten::") for op in ops)
    assert ops == sorted(ops, key=lambda op: -op["ms_per_step"])
    assert sum(op["ms_per_step"] for op in ops) <= report["wall_ms_per_step"]  # self times within the wall-clock
    with pytest.raises(ValueError, match="profile steps must be >= 1"):
        StepProfiler(trainer, steps=0)
    # Training that ends inside the window reports the steps it had, and leaves no profiler running.
    trainer = _trainer(tmp_path / "short", compiled=False, max_steps=4)
    trainer.args.eval_strategy, trainer.args.save_strategy = "no", "no"
    cut, never, first = StepProfiler(trainer, steps=10, after=2), StepProfiler(trainer, after=4), StepProfiler(trainer, 1, 0)
    for profiler in (cut, never, first):
        trainer.add_callback(profiler)
    trainer.train()
    assert cut.report["steps"] == [3, 4] and cut.profiler is None
    assert never.report is None and never.profiler is None  # after the last step: nothing to profile
    assert first.report["steps"] == [1, 1]


def test_compiled_training_under_ddp_on_two_processes(tmp_path):
    """The training script compiled under DDP (torchrun, two CPU processes over gloo): accelerate compiles
    after the DDP wrapper, each rank takes half the clips, and the counts are summed over the ranks."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(EXAMPLE),
        "--synthetic", "32", "--synthetic-eval", "16", "--from-scratch", "tiny", "--image-size", "32",
        "--num-frames", "8", "--batch-size", "4", "--epochs", "1", "--num-workers", "0", "--save-strategy", "no",
        "--compile", "default", "--compile-backend", "aot_eager", "--attention", "padded", "--output-dir", str(out),
    ]  # fmt: skip
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4  # 32 clips / (4 a rank x 2 ranks)
    assert summary["train_clips"] == 32 and summary["compile_s_train"] > 0
    assert 0 < summary["mean_tokens_kept"] < 16
    assert RLTVideoMAEForVideoClassification.from_pretrained(out).config.rlt_enabled
