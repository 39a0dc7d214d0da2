"""Fine-tuning with transformers' ``Trainer``: ``RLTTrainer``, its metrics (``compute_metrics``, top-1 / top-5
with numpy: ``evaluate.load`` would need the Hub) and its compile settings (``compile_arguments``). Its batches
come from ``rlt.collator.ClipCollator`` (re-exported here with ``PixelNormalizer``).
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch
from torch.utils._pytree import tree_map_only
from transformers import Trainer, TrainerCallback

from .collator import ClipCollator
from .common import PixelNormalizer, compiled_graphs, synchronize

__all__ = [
    "COMPILE_CHOICES",
    "ClipCollator",
    "PixelNormalizer",
    "RLTTrainer",
    "StepProfiler",
    "compile_arguments",
    "compute_metrics",
    "host_overlap_arguments",
    "resolve_compile",
    "top_k_accuracy",
]

logger = logging.getLogger(__name__)

# How the example scripts compile the model: "cuda-graphs" is torch.compile(mode="reduce-overhead"),
# which replays CUDA graphs (an RLT model needs rlt_pack_buckets for it: static packed lengths);
# "auto" is "cuda-graphs" on a GPU and "none" elsewhere.
COMPILE_CHOICES = ("none", "default", "cuda-graphs", "auto")
# torch.compile modes that capture CUDA graphs, whose outputs the next replay overwrites.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# Encoder sizes of the models the example scripts build from scratch: hidden, layers, heads, intermediate.
VIT_SIZES = {
    "vit-b": (768, 12, 12, 3072),
    "vit-s": (384, 12, 6, 1536),
    "tiny": (64, 2, 4, 128),
}


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest logits."""
    k = min(k, logits.shape[-1])
    top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    return float((top == labels[:, None]).any(-1).mean())


def compute_metrics(eval_prediction) -> dict:
    """``Trainer``'s ``compute_metrics``: ``accuracy`` (top-1) and ``top5_accuracy``, with numpy."""
    logits = eval_prediction.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits, labels = np.asarray(logits), np.asarray(eval_prediction.label_ids)
    return {"accuracy": top_k_accuracy(logits, labels, 1), "top5_accuracy": top_k_accuracy(logits, labels, 5)}


def resolve_compile(choice: str, device: torch.device | str) -> str:
    """``--compile``'s value on ``device``: ``"auto"`` becomes ``"cuda-graphs"`` on CUDA, ``"none"`` elsewhere."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"compile must be one of {COMPILE_CHOICES}, got {choice!r}")
    if choice == "auto":
        return "cuda-graphs" if torch.device(device).type == "cuda" else "none"
    return choice


def compile_arguments(choice: str, device: torch.device | str, backend: str | None = None) -> dict:
    """``TrainingArguments`` fields for a ``--compile`` choice (``COMPILE_CHOICES``).

    transformers' own fields: accelerate compiles the training model after wrapping it (DDP included),
    and ``RLTTrainer`` compiles evaluation with the same settings. ``backend`` overrides inductor
    (``"aot_eager"`` checks the compiled path quickly on a CPU).
    """
    choice = resolve_compile(choice, device)
    if choice == "none":
        return {}
    fields = {"torch_compile": True, "torch_compile_mode": "reduce-overhead" if choice == "cuda-graphs" else None}
    if backend is not None:
        fields["torch_compile_backend"] = backend
    return fields


def host_overlap_arguments(device: torch.device | str, num_workers: int, clips_device: torch.device | str = "cpu") -> dict:
    """``TrainingArguments`` fields that let the host prepare the next step while the device runs this one.

    Clips on the CPU: ``num_workers`` loader workers and, on CUDA, batches in pinned memory copied to the
    device without waiting (accelerate's ``non_blocking``). Clips held on an accelerator
    (``clips_device``): no workers (a worker process cannot use its memory; the main process gathers the
    batches there, which costs the host nothing) and nothing to pin. ``RLTTrainer`` does the rest (the
    logged loss's NaN/inf filter on the device).
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    on_device = torch.device(clips_device).type != "cpu"
    if on_device and num_workers:
        logger.info("the clips are on %s: batches are gathered there without loader workers", clips_device)
        num_workers = 0
    pinned = torch.device(device).type == "cuda" and not on_device
    return {
        "dataloader_num_workers": num_workers,
        "dataloader_persistent_workers": num_workers > 0,
        "dataloader_pin_memory": pinned,
        "accelerator_config": {"non_blocking": pinned},
    }


class _EpochTimer(TrainerCallback):
    """Wall-clock of each training epoch (evaluation excluded), synchronised with the device."""

    def __init__(self, trainer: RLTTrainer):
        self.trainer = trainer
        self.start = None
        self.clips_at_start = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        synchronize(args.device)
        self.start = time.perf_counter()
        self.clips_at_start = self.trainer._train_clips

    def on_epoch_end(self, args, state, control, **kwargs):
        synchronize(args.device)
        wall = time.perf_counter() - self.start
        clips = self.trainer._train_clips - self.clips_at_start
        self.trainer.epoch_stats.append(
            {"epoch": len(self.trainer.epoch_stats) + 1, "wall_s": wall, "clips": clips, "clips_per_s": clips / wall}
        )


def _input_name(model) -> str:
    """The model's video argument (the batch key of the clips): ``pixel_values`` unless its architecture
    says otherwise."""
    from . import registry

    try:
        return registry.as_rlt_config(model.config).rlt_input_name
    except registry.UnsupportedArchitectureError:
        return "pixel_values"


class StepProfiler(TrainerCallback):
    """Where a training step's time goes: torch.profiler over ``steps`` optimizer steps after step ``after``.

    ``report`` (None until the window ends) holds per step: wall-clock, the device's busy time (union
    of its kernel intervals; CUDA only), kernels launched, host syncs, the loader wait, graphs compiled
    in the window, and the top device kernels and host ops by time. The window runs from the first
    profiled step's forward to the last one's optimizer step (the later steps' batch fetches inside);
    logs, evaluations and saves inside it are counted in ``interruptions``. A run that ends first
    reports the steps it had.
    """

    def __init__(self, trainer: RLTTrainer, steps: int = 5, after: int = 20, top: int = 12):
        if steps < 1 or after < 0:
            raise ValueError(f"profile steps must be >= 1 and the first step >= 0, got {steps} after {after}")
        self.trainer, self.steps, self.after, self.top = trainer, steps, after, top
        self.profiler, self.report = None, None
        self.interruptions = {"log": 0, "evaluate": 0, "save": 0}

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.after and self.profiler is None and self.report is None:
            from torch.profiler import ProfilerActivity, profile

            synchronize(args.device)
            cuda = torch.device(args.device).type == "cuda"
            self.profiler = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
            self.profiler.__enter__()
            self.marks = (time.perf_counter(), self.trainer._loader_wait, len(self.trainer.compile_events))

    def on_step_end(self, args, state, control, **kwargs):
        last = self.after + self.steps
        if self.profiler is not None and (state.global_step >= last or state.global_step >= state.max_steps):
            self._finish(args, state.global_step - self.after)

    def on_log(self, args, state, control, **kwargs):
        self._interrupted("log")

    def on_evaluate(self, args, state, control, **kwargs):
        self._interrupted("evaluate")

    def on_save(self, args, state, control, **kwargs):
        self._interrupted("save")

    def _interrupted(self, event: str) -> None:
        if self.profiler is not None:
            self.interruptions[event] += 1

    def on_train_end(self, args, state, control, **kwargs):
        if self.profiler is not None:  # stopped inside the window (e.g. by a callback)
            self._finish(args, state.global_step - self.after)
        elif self.report is None:
            logger.warning("no training step was profiled: the run ended at step %d, before step %d",
                           state.global_step, self.after + 1)

    def _finish(self, args, steps: int) -> None:
        synchronize(args.device)
        wall = time.perf_counter() - self.marks[0]
        self.profiler.__exit__(None, None, None)
        self.report = self._summary(self.profiler.events(), wall, max(steps, 1))
        self.profiler = None
        logger.info("profiled steps %d-%d: %s", *self.report["steps"],
                    {k: v for k, v in self.report.items() if not k.startswith("top_")})

    def _summary(self, events, wall: float, steps: int) -> dict:
        from .benchmark.timing import HOST_SYNC_CALLS, covered_time

        per_step = 1e-3 / steps  # profiler microseconds in all -> milliseconds a step
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        host = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
        busy_us = covered_time([(e.time_range.start, e.time_range.end) for e in kernels])

        def top(rows, time_of):
            totals = {}
            for e in rows:
                count, us = totals.get(e.name, (0, 0.0))
                totals[e.name] = (count + 1, us + time_of(e))
            ranked = sorted(totals.items(), key=lambda item: -item[1][1])[: self.top]
            return [{"name": name[:120], "calls_per_step": count / steps, "ms_per_step": us * per_step}
                    for name, (count, us) in ranked]

        return {
            "steps": [self.after + 1, self.after + steps],  # the first and last profiled step
            "wall_ms_per_step": 1e3 * wall / steps,
            "device_busy_ms_per_step": busy_us * per_step if kernels else None,
            "device_busy_fraction": min(1.0, busy_us / (wall * 1e6)) if kernels else None,
            "kernels_per_step": len(kernels) / steps,
            "host_syncs_per_step": sum(e.name in HOST_SYNC_CALLS for e in host) / steps,
            "host_syncs_by_call": {name: sum(e.name == name for e in host) / steps for name in HOST_SYNC_CALLS},
            "loader_wait_ms_per_step": 1e3 * (self.trainer._loader_wait - self.marks[1]) / steps,
            "graphs_built": len(self.trainer.compile_events) - self.marks[2],
            "interruptions": dict(self.interruptions),  # logs, evaluations, saves inside the window
            "top_kernels": top(kernels, lambda e: e.time_range.elapsed_us()),
            "top_host_ops": top([e for e in host if e.name.startswith("aten::")], lambda e: e.self_cpu_time_total),
        }


class RLTTrainer(Trainer):
    """``Trainer`` for video classifiers fed uint8 clips, with token-budget batching and timing.

    Args:
        normalizer: a ``PixelNormalizer`` applied on the device to uint8 ``pixel_values`` (the model's
            video argument; training and evaluation). Float ``pixel_values`` pass through.
        train_batch_sampler: a batch sampler for the training set (e.g. ``TokenBudgetBatchSampler``),
            used instead of the fixed ``per_device_train_batch_size``.
        tokens_per_clip: tokens a clip has without RLT, to count kept tokens for models that do not
            report them (vanilla transformers models).

    Compiled (``args.torch_compile``, e.g. from ``compile_arguments``): transformers compiles the model
    it trains (accelerate, after the DDP wrapper) but evaluates the plain model; this trainer evaluates
    a compiled one, with the same backend and mode. With CUDA graphs (``torch_compile_mode``
    ``"reduce-overhead"``) a graph's outputs live in memory the next replay overwrites, so every step
    starts with ``torch.compiler.cudagraph_mark_step_begin()``, the loss and the evaluation outputs are
    cloned out of the graphs' memory, and under gradient accumulation the gradients of a micro-batch
    are made the parameters' own before the next one replays (a graph's gradient output becomes a
    parameter's ``.grad`` as it is: https://github.com/pytorch/pytorch/issues/169545). Steps that
    compiled a graph are timed and logged (``compile_stats()``).

    ``logging_nan_inf_filter`` (on by default: a NaN or infinite step loss is logged as the running mean)
    is applied on the device: transformers reads every step's loss on the host for it, a sync that keeps
    the host from preparing the next step while the device runs this one.
    """

    def __init__(self, *args, normalizer=None, train_batch_sampler=None, tokens_per_clip: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.normalizer = normalizer
        self.train_batch_sampler = train_batch_sampler
        self.tokens_per_clip = tokens_per_clip
        self.epoch_stats: list[dict] = []
        self._train_clips = 0
        self._train_tokens = None  # a device tensor: adding to it needs no host sync
        self._eval_tokens, self._eval_clips = None, 0
        self._loader_wait = 0.0
        self._train_wall = 0.0
        self.input_name = _input_name(self.model)
        self.compile_events: list[dict] = []  # one per step that built a graph: phase, step, seconds
        self._eval_compiled = None  # (the model, its compiled wrapper) for evaluation
        self._finite_loss_filter = False  # logging_nan_inf_filter done in training_step (while training)
        self.add_callback(_EpochTimer(self))

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled model replays CUDA graphs (their outputs are overwritten by the next replay)."""
        return bool(self.args.torch_compile) and self.args.torch_compile_mode in CUDA_GRAPH_MODES

    # -- data ---------------------------------------------------------------------------------

    def get_train_dataloader(self):
        if self.train_batch_sampler is None:
            return super().get_train_dataloader()
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=self.train_batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor if self.args.dataloader_num_workers > 0 else None,
        )
        # Under DDP every rank builds the same batches; accelerate deals them out (BatchSamplerShard).
        return self.accelerator.prepare(loader)

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        if self.normalizer is not None and self.input_name in inputs:
            inputs[self.input_name] = self.normalizer(inputs[self.input_name])
        return inputs

    def get_batch_samples(self, *args, **kwargs):
        start = time.perf_counter()  # the training loop fetches each step's batches here: the loader wait
        batches = super().get_batch_samples(*args, **kwargs)
        self._loader_wait += time.perf_counter() - start
        return batches

    # -- compiled steps ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _step(self, phase: str):
        """One training or evaluation step: a new CUDA-graph step, and its host time if it compiled."""
        if not self.args.torch_compile:
            yield
            return
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        graphs, start = compiled_graphs(), time.perf_counter()
        yield
        built = compiled_graphs() - graphs
        if built:
            seconds = time.perf_counter() - start
            event = {"phase": phase, "step": self.state.global_step, "graphs": built, "s": round(seconds, 2)}
            self.compile_events.append(event)
            logger.info("torch.compile: %s step %d built %d graph(s) in %.1f s", phase, event["step"], built, seconds)

    def training_step(self, model, inputs, num_items_in_batch=None):
        with self._step("train"):
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self._finite_loss_filter:  # transformers' filter, without reading the loss on the host
            running = self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
            loss = torch.where(torch.isfinite(loss), loss, running.to(loss.dtype))
        if self.cuda_graphs and self.args.gradient_accumulation_steps > 1 and not self.accelerator.sync_gradients:
            # The next micro-batch replays the backward graph into the memory these gradients may live in.
            with torch.no_grad():
                for parameter in self.model.parameters():
                    if parameter.grad is not None:
                        parameter.grad = parameter.grad.clone()
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if self.args.torch_compile:
            model = self._compiled_for_evaluation(model)
        with self._step("eval"):
            outputs = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        # The Trainer keeps the logits of every step for the metrics: out of the graphs' memory with them.
        return tree_map_only(torch.Tensor, torch.clone, outputs) if self.cuda_graphs else outputs

    def _compiled_for_evaluation(self, model):
        """``model`` compiled as the training model is (transformers evaluates its uncompiled model)."""
        from accelerate.utils import is_compiled_module

        if is_compiled_module(model):
            return model
        if self._eval_compiled is None or self._eval_compiled[0] is not model:
            compiled = torch.compile(
                model, backend=self.args.torch_compile_backend or "inductor", mode=self.args.torch_compile_mode
            )
            self._eval_compiled = (model, compiled)
        return self._eval_compiled[1]

    def compile_stats(self) -> dict:
        """Seconds of the steps that compiled (the graph builds, plus the step they ran in), by phase."""
        if not self.args.torch_compile:
            return {"compile_s": 0.0}
        by_phase = {
            f"compile_s_{phase}": round(sum(e["s"] for e in self.compile_events if e["phase"] == phase), 2)
            for phase in ("train", "eval")
        }
        from torch._dynamo.utils import counters

        return {
            "compile_s": round(sum(by_phase.values()), 2),
            **by_phase,
            "compile_steps": list(self.compile_events),
            "graph_breaks": int(sum(counters["graph_break"].values())),
        }

    # -- counting -------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if self.cuda_graphs:
            loss = loss.clone()  # logged after later steps replayed the graph that returned it
        batch = inputs[self.input_name].shape[0]
        kept = outputs.get("tokens_kept") if hasattr(outputs, "get") else None
        if kept is not None:
            tokens = kept.detach().sum().to(loss.device)
        else:  # made on the device: a host tensor's copy there would wait for the step (a host sync)
            tokens = torch.full((), batch * (self.tokens_per_clip or 0), device=loss.device, dtype=torch.long)
        if model.training:
            self._train_tokens = tokens if self._train_tokens is None else self._train_tokens + tokens
            self._train_clips += batch
        else:
            self._eval_tokens = tokens if self._eval_tokens is None else self._eval_tokens + tokens
            self._eval_clips += batch
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        """``Trainer.evaluate``, adding ``eval_mean_tokens_kept`` (over the processes) to the metrics."""
        self._eval_tokens, self._eval_clips = None, 0
        filtering = self.args.logging_nan_inf_filter
        if self._finite_loss_filter:  # evaluating during training: transformers' own filter of eval losses
            self.args.logging_nan_inf_filter = True
        try:
            metrics = super().evaluate(*args, **kwargs)
        finally:
            self.args.logging_nan_inf_filter = filtering
        clips, tokens = self._summed(self._eval_clips, self._eval_tokens)
        if clips:
            prefix = kwargs.get("metric_key_prefix", "eval")
            metrics[f"{prefix}_mean_tokens_kept"] = tokens / clips
        return metrics

    def _summed(self, clips: int, tokens: torch.Tensor | None) -> tuple[float, float]:
        """``(clips, tokens)`` summed over the processes; ``tokens`` is a device tensor (or None: no step yet)."""
        totals = torch.tensor([float(clips), float(tokens.item() if tokens is not None else 0)],
                              device=self.args.device, dtype=torch.float64)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        return tuple(totals.tolist())

    def train(self, *args, **kwargs):
        synchronize(self.args.device)
        start = time.perf_counter()
        with self._loss_filter_on_device():
            result = super().train(*args, **kwargs)
        synchronize(self.args.device)
        self._train_wall += time.perf_counter() - start
        return result

    @contextlib.contextmanager
    def _loss_filter_on_device(self):
        """Training with ``logging_nan_inf_filter`` done by ``training_step`` instead of transformers' loop."""
        wanted = self.args.logging_nan_inf_filter
        self._finite_loss_filter, self.args.logging_nan_inf_filter = wanted, False
        try:
            yield
        finally:
            self._finite_loss_filter, self.args.logging_nan_inf_filter = False, wanted

    def training_stats(self) -> dict:
        """Throughput and token counts of the training so far, summed over processes (call on all ranks)."""
        clips, tokens = self._summed(self._train_clips, self._train_tokens)
        epochs = self.epoch_stats
        train_time = sum(e["wall_s"] for e in epochs) or self._train_wall
        stats = {
            "world_size": self.args.world_size,
            "train_wall_s": self._train_wall,
            "epoch_wall_s": [round(e["wall_s"], 3) for e in epochs],
            "mean_epoch_wall_s": float(np.mean([e["wall_s"] for e in epochs])) if epochs else None,
            "train_clips": int(clips),
            "train_clips_per_s": clips / train_time if train_time else None,
            "loader_wait_s": self._loader_wait,
            "loader_wait_fraction": self._loader_wait / train_time if train_time else None,
            "step_s": train_time - self._loader_wait,
            "mean_tokens_kept": tokens / clips if clips else None,
        }
        if self.tokens_per_clip and clips:
            stats["tokens_per_clip"] = self.tokens_per_clip
            stats["kept_fraction"] = tokens / clips / self.tokens_per_clip
        if self.args.world_size > 1:
            stats["note"] = (
                "times and epoch clip counts are this process's; train_clips and tokens are summed over ranks"
            )
        return stats
