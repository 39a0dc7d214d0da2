"""Label-free calibration: a few hundred steps that teach a training-free RLT model to match itself with RLT off.

``calibrate(model, data, steps=200)`` (``rlt calibrate MODEL_DIR OUT --data ...``) distils the model with
RLT off (every token: the vanilla model's function) into the same model with RLT on, on unlabelled clips,
training only a small named set of parameters (``PARAMETER_GROUPS``: the length encoding by default, which
starts at zero in a training-free conversion, and optionally the norms or the biases). Everything else is
frozen and left bit for bit as it was.

The teacher is the same module, not a copy: its forward runs under ``no_grad`` with ``rlt_enabled=False``
and, through ``torch.func.functional_call``, the calibrated parameters at their starting values (a copy
of those few tensors only), so the target stays the vanilla model's output while the student moves.
The loss is the KL divergence between the teacher's and the student's softened class distributions
(temperature ``T``, scaled by ``T**2``); a base model without a head matches the pooled features with MSE.

Data takes the road ``rlt evaluate`` takes (``rlt.evaluation.clip_source``); labels are never used for
training, only to report held-out top-1 where they exist.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .cache import default_workers
from .clip_sources import ClipSource
from .common import PixelNormalizer
from .conversion import OutputNotEmptyError, model_and_processor, write_checkpoint
from .evaluation import class_names, clip_batches, clip_source, resolve_device
from .models.configuration_rlt import check_rlt_setting_names

__all__ = [
    "PARAMETER_GROUPS",
    "CalibrationResult",
    "calibrate",
    "parameters_of_groups",
]

logger = logging.getLogger(__name__)


def _is_length_encoding(name: str, module: nn.Module) -> bool:
    return name.split(".")[-2:-1] == ["length_embeddings"]


def _is_norm(name: str, module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm))


def _is_bias(name: str, module: nn.Module) -> bool:
    return name.endswith(".bias") or name == "bias"


# Group name -> which parameters it holds, decided from the parameter's full name and its owning module.
PARAMETER_GROUPS = {"length_encoding": _is_length_encoding, "norms": _is_norm, "biases": _is_bias}


def parameters_of_groups(model: nn.Module, groups: Sequence[str]) -> dict[str, dict[str, nn.Parameter]]:
    """``{group: {parameter name: parameter}}`` of ``model`` for each named group (``PARAMETER_GROUPS``).

    A parameter in two groups (a norm's bias) is listed under the first. Unknown names, and a group that
    holds no parameter of this model (the length encoding of a model built without one), are errors.
    """
    unknown = [group for group in groups if group not in PARAMETER_GROUPS]
    if unknown or not groups:
        raise ValueError(f"unknown parameter group(s) {unknown or list(groups)}: choose among {sorted(PARAMETER_GROUPS)}")
    chosen: dict[str, dict[str, nn.Parameter]] = {group: {} for group in dict.fromkeys(groups)}
    taken: set[str] = set()
    for module_name, module in model.named_modules():
        for short, parameter in module.named_parameters(recurse=False):
            name = f"{module_name}.{short}" if module_name else short
            for group, members in chosen.items():
                if name not in taken and PARAMETER_GROUPS[group](name, module):
                    members[name] = parameter
                    taken.add(name)
    empty = [group for group, parameters in chosen.items() if not parameters]
    if empty:
        hint = " (rlt_use_length_encoding is off in this model)" if "length_encoding" in empty else ""
        raise ValueError(f"{type(model).__name__} has no parameters in group(s) {empty}{hint}")
    return chosen


# ----------------------------------------------------------------------------------------------
# The model


@contextlib.contextmanager
def _rlt_off(config):
    enabled = config.rlt_enabled
    config.rlt_enabled = False
    try:
        yield
    finally:
        config.rlt_enabled = enabled


def _is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForVideoClassification")


def _pooled(outputs) -> torch.Tensor:
    """A base model's ``(B, hidden)`` clip features: its pooler's output, else the mean of each clip's tokens."""
    if outputs.pooler_output is not None:
        return outputs.pooler_output
    return torch.stack([tokens.mean(0) for tokens in outputs.per_clip()])


def _distillation_loss(student: torch.Tensor, teacher: torch.Tensor, classifier: bool, temperature: float):
    """KL(teacher || student) of the softened distributions times ``T**2`` (logits ``(B, classes)``), or the
    MSE of pooled features ``(B, hidden)``; a float32 scalar."""
    student, teacher = student.float(), teacher.float()
    if not classifier:
        return F.mse_loss(student, teacher)
    return F.kl_div(
        F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
        reduction="batchmean", log_target=True,
    ) * temperature**2


def _head_output(model, outputs) -> torch.Tensor:
    return outputs.logits if _is_classifier(model) else _pooled(outputs)


# ----------------------------------------------------------------------------------------------
# The data


def _source(data, processor, model, dataset_options) -> tuple[ClipSource, bool]:
    """The clips of ``data`` and whether their labels are the model's class ids (then top-1 is reported)."""
    config = model.config
    names = class_names(config) if _is_classifier(model) else None
    try:
        return clip_source(data, processor, config, dataset_options, class_names=names), names is not None
    except ValueError as error:
        if names is None or "not among the model's labels" not in str(error):
            raise
    return clip_source(data, processor, config, dataset_options), False  # labels unused then


def _readable(batches, what: str = "video"):
    """The ``ClipBatch`` es of ``clip_batches`` that hold a clip; unreadable clips are logged and skipped."""
    for batch in batches:
        for entry in batch.failed:
            logger.warning("skipping an unreadable %s: %s", what, entry["error"])
        if len(batch):
            yield batch


def _training_batches(source: ClipSource, indices: list[int], batch_size: int, workers: int, pin: bool, seed: int):
    """Endless uint8 batches ``(B, T, C, H, W)`` of the clips ``indices`` of ``source``, reshuffled every
    pass; unreadable clips are skipped."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        readable = 0
        for batch in _readable(clip_batches(source, batch_size, workers=workers, pin_memory=pin, indices=order)):
            readable += len(batch)
            yield batch.pixel_values
        if readable == 0:
            raise ValueError(f"no readable clip in {source.description}")


# ----------------------------------------------------------------------------------------------
# Running


@dataclass
class CalibrationResult:
    """What ``calibrate`` did: the loss curve, the held-out evaluations, the calibrated parameters."""

    model: nn.Module = field(repr=False)
    steps: int
    trained: dict[str, int]  # group -> number of values trained
    loss: str
    data: str
    settings: dict
    loss_curve: list[dict] = field(default_factory=list)  # {"step", "loss"}: mean over the last log_every steps
    evaluations: list[dict] = field(default_factory=list)  # {"step", "loss", "agreement", "top1"}: held-out
    teacher: dict = field(default_factory=dict)  # the teacher on the held-out clips: {"top1"} where labelled
    seconds: float = 0.0
    output_dir: str | None = None

    @property
    def final_loss(self) -> float | None:
        return self.loss_curve[-1]["loss"] if self.loss_curve else None

    def to_dict(self) -> dict:
        values = asdict(self)  # copies the module's state too: drop it first
        return {**{key: value for key, value in values.items() if key != "model"}, "final_loss": self.final_loss}

    def __str__(self) -> str:
        trained = ", ".join(f"{group} ({count:,} values)" for group, count in self.trained.items())
        lines = [f"calibrated {trained} for {self.steps} steps on {self.data} ({self.loss}), {self.seconds:.0f} s"]
        lines += [f"  step {row['step']:>5}: loss {row['loss']:.4f}" for row in self.loss_curve]
        if self.evaluations:
            lines.append("held-out: step | loss | agreement with RLT off | top-1" + (
                f" (RLT off: {self.teacher['top1']:.4f})" if "top1" in self.teacher else ""))
            for row in self.evaluations:
                top1 = f"{row['top1']:.4f}" if row.get("top1") is not None else "-"
                agreement = f"{row['agreement']:.4f}" if row.get("agreement") is not None else "-"
                lines.append(f"  {row['step']:>5} | {row['loss']:.4f} | {agreement} | {top1}")
        return "\n".join(lines)


def calibrate(
    model,
    data,
    *,
    steps: int = 200,
    train: Sequence[str] = ("length_encoding",),
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    temperature: float = 1.0,
    lr: float = 1e-3,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    bf16: bool = False,
    workers: int | None = None,
    threshold: float | None = None,
    pooling: str | None = None,
    proportional_attention: bool | None = None,
    eval_data=None,
    holdout: int = 0,
    eval_steps: Sequence[int] = (),
    log_every: int = 10,
    seed: int = 0,
    processor=None,
    dataset_options=None,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
    **rlt_settings,
) -> CalibrationResult:
    """Calibrate a training-free RLT model by distilling it with RLT off into itself with RLT on; see the module doc.

    Args:
        model: a checkpoint folder (RLT, or vanilla of a registered architecture: converted on the fly;
            a classifier or a base model) or an RLT model in memory (then give ``processor``); a model
            passed in is calibrated in place.
        data: unlabelled clips (labels, if any, are ignored): what ``rlt evaluate`` takes (see
            ``rlt.evaluation.clip_source``) or a ``rlt.synthetic.SyntheticVideoDataset``.
        steps: optimiser steps (batches).
        train: parameter groups to train (``PARAMETER_GROUPS``); every other parameter is frozen.
        output_dir: write the calibrated checkpoint folder here (config, code, weights, processor,
            model card); must be absent or empty unless ``overwrite``.
        temperature: softening of both distributions in the KL loss (classifiers).
        lr: AdamW learning rate (constant, no weight decay).
        bf16: autocast the forward passes to bfloat16 on CUDA (the trained parameters stay float32).
        threshold, pooling: ``rlt_threshold`` / ``rlt_pooling`` to calibrate for (default: the model's).
        proportional_attention: set ``rlt_proportional_attention`` on the config (default: as it is).
        rlt_settings: other ``rlt_*`` config fields to calibrate for (default: the model's).
        eval_data: labelled or unlabelled held-out clips (as ``data``); or ``holdout`` clips of ``data``
            set aside (never trained on). Evaluated at step 0 (training-free), at ``eval_steps`` and at the end.
        log_every: the loss curve's resolution (mean loss over each ``log_every`` steps).
        json_path: also write the result (without the model) as JSON here.

    Returns:
        ``CalibrationResult``; ``.model`` is the calibrated model, in eval mode on ``device``.
    """
    _check_arguments(steps, train, temperature, lr, batch_size, holdout, eval_steps, log_every)
    check_rlt_setting_names(rlt_settings, what="rlt.calibrate")
    if output_dir is not None:
        OutputNotEmptyError.check(output_dir, overwrite)
    model_name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    model, processor = model_and_processor(model, processor)
    config = model.config
    groups = parameters_of_groups(model, list(train))
    source, labelled = _source(data, processor, model, dataset_options)
    train_indices, held_out, held_indices, held_labelled = list(range(len(source))), None, None, labelled
    if eval_data is not None:
        held_out, held_labelled = _source(eval_data, processor, model, dataset_options)
    elif holdout:
        if holdout >= len(source):
            raise ValueError(f"holdout={holdout} leaves no clip of the {len(source)} to train on")
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed)).tolist()
        held_out, train_indices, held_indices = source, order[holdout:], order[:holdout]

    device = resolve_device(device)
    if bf16 and device.type != "cuda":
        raise ValueError("bf16 autocast is for CUDA; calibrate in float32 on the CPU")
    workers = default_workers() if workers is None else int(workers)
    # What the model is calibrated for: these settings on the config (None: as the model has it), recorded.
    overrides = {"rlt_threshold": threshold, "rlt_pooling": pooling,
                 "rlt_proportional_attention": proportional_attention, **rlt_settings}
    before = {name: getattr(config, name, None) for name in overrides}
    try:
        config.update({name: value for name, value in overrides.items() if value is not None})
        config.validate_rlt_settings()  # the config's own checks, with their messages
    except ValueError:
        config.update(before)
        raise
    config.rlt_enabled = True
    settings = {name: getattr(config, name, None) for name in overrides}
    settings.update(temperature=temperature, lr=lr, batch_size=batch_size, bf16=bf16, seed=seed)

    model.to(device).eval()  # eval: no dropout, so the teacher and the student differ by RLT alone
    trained = {name: parameter for parameters in groups.values() for name, parameter in parameters.items()}
    for name, parameter in trained.items():
        if parameter.dtype != torch.float32:
            raise ValueError(f"{name} is {parameter.dtype}: calibrate a float32 model (bf16=True autocasts it)")
    frozen = {name: p for name, p in model.named_parameters() if name not in trained}
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trained)
    # The teacher's copy of what changes: the calibrated tensors at their start (a few thousand values).
    teacher_parameters = {name: parameter.detach().clone() for name, parameter in trained.items()}
    versions = {name: p._version for name, p in frozen.items()}  # an in-place write bumps the counter
    normalizer = PixelNormalizer.from_processor(processor)
    classifier = _is_classifier(model)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    pin = device.type == "cuda"
    video_name = config.rlt_input_name

    def teacher(pixel_values):
        with torch.no_grad(), _rlt_off(config), autocast:
            outputs = torch.func.functional_call(model, teacher_parameters, kwargs={video_name: pixel_values})
        return _head_output(model, outputs)

    def student(pixel_values):
        with autocast:
            return _head_output(model, model(**{video_name: pixel_values}))

    result = CalibrationResult(
        model, steps, {group: sum(p.numel() for p in ps.values()) for group, ps in groups.items()},
        f"KL divergence of the class distributions at temperature {temperature:g} (x T^2)" if classifier
        else "MSE of the pooled features", source.description, settings,
    )
    reference = None
    if held_out is not None:
        batches = clip_batches(held_out, batch_size, workers=workers, pin_memory=pin, indices=held_indices)
        reference = _teacher_reference(batches, held_out.description, teacher, normalizer, device, held_labelled)
        if "top1" in reference:
            result.teacher = {"top1": reference["top1"]}
        result.evaluations.append(_evaluate(0, reference, student, classifier, temperature))
    checkpoints = set(eval_steps) | {steps}
    optimizer = torch.optim.AdamW(list(trained.values()), lr=lr, weight_decay=0.0)
    from tqdm.auto import tqdm

    start, window = time.perf_counter(), []
    try:
        batches = _training_batches(source, train_indices, batch_size, workers, pin, seed)
        for step in tqdm(range(1, steps + 1), desc="calibrating", unit="step", disable=not progress):
            pixel_values = normalizer(next(batches).to(device, non_blocking=True))
            target = teacher(pixel_values)
            loss = _distillation_loss(student(pixel_values), target, classifier, temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the distillation loss is {loss.item()} at step {step}: lower lr={lr}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window.append(loss.detach())
            if step % log_every == 0 or step == steps:
                result.loss_curve.append({"step": step, "loss": float(torch.stack(window).mean())})
                window = []
            if reference is not None and step in checkpoints:
                result.evaluations.append(_evaluate(step, reference, student, classifier, temperature))
        result.seconds = time.perf_counter() - start
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])
    touched = [name for name, p in frozen.items() if p._version != versions[name]]
    if touched:
        raise RuntimeError(f"calibration changed frozen parameters {touched[:5]}")
    logger.info("%s", result)
    if output_dir is not None:
        _write(model, processor, output_dir, model_name, result)
        result.output_dir = str(output_dir)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _check_arguments(steps, train, temperature, lr, batch_size, holdout, eval_steps, log_every) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(train, str):
        raise TypeError(f"train takes a list of parameter groups, e.g. [{train!r}]")
    for name, value in (("temperature", temperature), ("lr", lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not isinstance(holdout, int) or holdout < 0:
        raise ValueError(f"holdout must be a number of clips >= 0, got {holdout!r}")
    bad = [step for step in eval_steps if not isinstance(step, int) or not 1 <= step <= steps]
    if bad:
        raise ValueError(f"eval_steps must be steps between 1 and steps={steps}, got {bad}")


@torch.no_grad()
def _teacher_reference(batches, description: str, teacher, normalizer, device, labelled) -> dict:
    """The held-out clips (``clip_batches``) on the device (uint8: a quarter of their float size) with the
    teacher's outputs, computed once: the teacher is fixed."""
    clips, targets, labels = [], [], []
    for clip_batch in _readable(batches, "held-out video"):
        clips.append(clip_batch.pixel_values.to(device))
        targets.append(teacher(normalizer(clips[-1])))
        labels.append(clip_batch.labels)
    if not clips:
        raise ValueError(f"no readable clip in the held-out {description}")
    reference = {"clips": clips, "targets": targets, "labels": labels, "normalizer": normalizer}
    if labelled and targets[0].dim() == 2:
        predictions = torch.cat([target.argmax(-1).cpu() for target in targets])
        reference["top1"] = float((predictions == torch.cat(labels)).float().mean())
    return reference


@torch.no_grad()
def _evaluate(step, reference, student, classifier, temperature) -> dict:
    """The student on the held-out clips: mean loss, agreement with the teacher's class, top-1 (if labelled)."""
    loss, agree, correct, count = 0.0, 0, 0, 0
    for clips, target, labels in zip(reference["clips"], reference["targets"], reference["labels"]):
        output = student(reference["normalizer"](clips))
        loss += float(_distillation_loss(output, target, classifier, temperature)) * len(clips)
        count += len(clips)
        if classifier:
            predicted = output.argmax(-1).cpu()
            agree += int((predicted == target.argmax(-1).cpu()).sum())
            correct += int((predicted == labels).sum())
    return {"step": step, "loss": loss / count, "agreement": agree / count if classifier else None,
            "top1": correct / count if "top1" in reference else None}


def _write(model, processor, output_dir, source_name: str, result: CalibrationResult) -> None:
    """A self-contained checkpoint folder, as ``rlt convert`` writes one, whose card says what was calibrated."""
    trained = ", ".join(f"`{group}` ({count:,} values)" for group, count in result.trained.items())
    calibrated_for = ", ".join(f"{name} `{value}`" for name, value in result.settings.items() if name.startswith("rlt_"))
    final = f"{result.final_loss:.4g}" if result.final_loss is not None else "-"
    rows = [
        f"| Parameters trained | {trained}; every other parameter as in the base model |",
        f"| Data (labels not used) | {result.data} |",
        f"| Steps | {result.steps} (batch {result.settings['batch_size']}, AdamW lr {result.settings['lr']:g}) |",
        f"| Loss | {result.loss}, teacher: this model with RLT off |",
        f"| Final loss | {final} (mean of the last logged steps) |",
        f"| Calibrated for | {calibrated_for} |",
    ]
    if result.evaluations:
        first, last = result.evaluations[0], result.evaluations[-1]
        for key, label in (("agreement", "Held-out agreement with RLT off"), ("top1", "Held-out top-1")):
            if last.get(key) is not None:
                rows.append(f"| {label} | {100 * first[key]:.2f}% before, {100 * last[key]:.2f}% after |")
    section = ("## Label-free calibration (`rlt calibrate`)\n\n"
               "| | |\n|---|---|\n" + "\n".join(rows))
    summary = (f"A video transformer with Run-Length Tokenization (RLT), converted training-free from `{source_name}` "
               f"and then calibrated without labels (`rlt calibrate`): {trained} were trained for {result.steps} "
               "steps to match the model's own output with RLT off; every other weight is the base model's.")
    write_checkpoint(output_dir, model, processor, source=source_name if Path(source_name).is_dir() else None,
                     summary=summary, sections=[section], tags=["rlt-calibrated"])
