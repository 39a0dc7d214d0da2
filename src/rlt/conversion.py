"""Turn a vanilla transformers video model into an RLT one, training-free.

- ``convert(source, output_dir)`` (``rlt convert``): a checkpoint folder or Hub id -> an RLT
  checkpoint folder that loads with ``trust_remote_code`` where ``rlt`` is not installed.
- ``from_model(model)``: a model already in memory (e.g. the one a pipeline loaded) -> the matching
  RLT model sharing its weights, with no disk round trip.
- ``load_rlt(source)``: the one vanilla -> RLT load from a checkpoint, behind ``convert``, ``rlt evaluate``,
  ``rlt calibrate`` (through ``model_and_processor``) and the training script.
- ``write_checkpoint``: the self-contained folder ``convert`` and ``rlt calibrate`` write.

Which RLT classes a model maps to comes from ``rlt.registry``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from itertools import chain
from pathlib import Path

import torch
from transformers import AutoConfig
from transformers.utils import cached_file

from . import registry
from .models import CHECKPOINT_FILES, code_closure
from .models.configuration_rlt import check_rlt_setting_names, input_scale_from_processor
from .models.video_processing_rlt import RLTVideoProcessor

__all__ = [
    "PROCESSOR_FILES",
    "OutputNotEmptyError",
    "check_loaded_keys",
    "checkpoint_file",
    "code_files_of",
    "convert",
    "from_model",
    "load_rlt",
    "model_and_processor",
    "read_processor_config",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


class OutputNotEmptyError(FileExistsError):
    """The output folder of a conversion holds files and replacing them was not asked for.

    ``folder`` is that folder; the message names the Python argument (the CLI names its flag)."""

    def __init__(self, folder: Path):
        super().__init__(f"output folder {folder} is not empty; pass overwrite=True to replace it")
        self.folder = folder

    @classmethod
    def check(cls, folder: str | Path, overwrite: bool) -> None:
        """Raise unless ``folder`` is absent or empty, or ``overwrite`` allows replacing what it holds."""
        folder = Path(folder)
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise cls(folder)


def code_files_of(*objects) -> list[str]:
    """The files of ``rlt/models`` that travel with these classes or instances: their modules and
    every module those import (single-dot relative imports), as ``save_pretrained`` copies them."""
    modules = [(obj if isinstance(obj, type) else type(obj)).__module__.rsplit(".", 1)[-1] + ".py" for obj in objects]
    files, missing = code_closure(modules)
    if missing or not files <= set(CHECKPOINT_FILES):
        outside = sorted(missing | (files - set(CHECKPOINT_FILES)))
        raise ValueError(f"{outside} are not files of rlt/models (the code that travels with a checkpoint)")
    return sorted(files)


def checkpoint_file(source: str | Path, name: str, **hub_kwargs) -> Path | None:
    """The file ``name`` of a checkpoint folder or Hub repo (downloaded), or None where it has none or the Hub
    cannot be reached."""
    path = cached_file(str(source), name, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    return Path(path) if path else None


def read_processor_config(source: str | Path, **hub_kwargs) -> tuple[str | None, dict]:
    """The first processor config found in a checkpoint (file name, contents), or (None, {})."""
    for name in PROCESSOR_FILES:
        path = checkpoint_file(source, name, **hub_kwargs)
        if path:
            return name, json.loads(path.read_text())
    return None, {}


def _rlt_config(architecture: registry.Architecture, config, processor_config: dict | None, rlt_settings: dict):
    """The RLT config of ``config`` with ``rlt_settings``. A vanilla config starts from a zero length table
    (the model's function unchanged) and the input scale of the processor it was trained with (an RLT
    config has its own)."""
    defaults = {}
    if not hasattr(config, "rlt_input_scale"):
        channels = registry.as_rlt_config(config).rlt_num_channels
        scale = input_scale_from_processor(processor_config or {}, channels)
        defaults = {"rlt_length_encoding_init": "zeros", "rlt_input_scale": scale}
    return architecture.rlt_config(config, **{**defaults, **rlt_settings})


def check_loaded_keys(rlt_class: type, missing, source, *, unexpected=None) -> None:
    """Errors for weights a vanilla -> RLT load left out: only what RLT adds
    (``_keys_to_ignore_on_load_missing``: the length table) may be missing, or it would start random,
    unnoticed; with ``unexpected``, only what the RLT class leaves out on purpose
    (``_keys_to_ignore_on_load_unexpected``: V-JEPA 2's JEPA predictor) may be left over."""

    def beyond(keys, attribute):
        patterns = [re.compile(pattern) for pattern in getattr(rlt_class, attribute, None) or ()]
        return [key for key in keys if not any(pattern.search(key) for pattern in patterns)]

    extra = beyond(unexpected or [], "_keys_to_ignore_on_load_unexpected")
    if extra:
        raise ValueError(f"{source} has weights {rlt_class.__name__} does not know: {extra[:5]}")
    lacking = beyond(missing, "_keys_to_ignore_on_load_missing")
    if lacking:
        raise ValueError(f"{source} lacks weights {rlt_class.__name__} needs: {lacking[:5]}")


def load_rlt(source: str | Path, *, processor_config: dict | None = None, classifier_only=False, **rlt_settings):
    """A checkpoint (folder or Hub id; vanilla of a registered architecture, or RLT) loaded into its RLT class:
    the one vanilla -> RLT load behind ``convert``, ``rlt evaluate``, ``rlt calibrate`` and the training script.

    A vanilla checkpoint gets a zero length table and the input scale of ``processor_config`` (its
    processor's config dict); ``rlt_settings`` override the config's RLT fields. ``classifier_only``
    refuses a checkpoint that holds no video classifier. Returns the model in eval mode.
    """
    vanilla_config = AutoConfig.from_pretrained(str(source))
    try:
        architecture = registry.for_model_type(vanilla_config.model_type)
    except registry.UnsupportedArchitectureError:
        raise registry.UnsupportedArchitectureError(
            f"{source} holds a {vanilla_config.model_type!r} model, which has no RLT settings and cannot be converted: "
            f"rlt converts {registry.describe_supported()} checkpoints"
        ) from None
    is_classifier = any(name.endswith("ForVideoClassification") for name in vanilla_config.architectures or [])
    if classifier_only and not is_classifier:
        raise ValueError(
            f"{source} holds no video classifier (architectures {vanilla_config.architectures}); give a fine-tuned one"
        )
    config = _rlt_config(architecture, vanilla_config, processor_config, rlt_settings)
    rlt_class = architecture.rlt_class(is_classifier)
    model, info = rlt_class.from_pretrained(str(source), config=config, output_loading_info=True)
    check_loaded_keys(rlt_class, info["missing_keys"], source)
    return model.eval()


def model_and_processor(model, processor=None, *, classifier_only: bool = False) -> tuple:
    """``(RLT model, its processor)`` from what a tool was given (``rlt evaluate``, ``rlt calibrate``).

    ``model``: a checkpoint folder (RLT, or vanilla of a registered architecture: ``load_rlt`` with its
    processor's input scale) or an RLT model in memory (then give ``processor``). ``processor``: an
    ``RLTVideoProcessor`` or a processor folder; default the checkpoint's.
    """
    from .cache import load_processor  # the processor a checkpoint folder implies (vanilla ones translated)

    checkpoint_processor = None
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
        checkpoint_processor, _ = load_processor(folder)
        model = load_rlt(folder, processor_config=checkpoint_processor.to_dict(), classifier_only=classifier_only)
    elif not hasattr(getattr(model, "config", None), "rlt_enabled"):
        raise TypeError(
            f"{type(model).__name__} has no RLT settings: pass a checkpoint folder, or an RLT model "
            "(rlt.from_model(model) makes one of a transformers model)"
        )
    if isinstance(processor, (str, os.PathLike)):
        processor, _ = load_processor(processor)
    processor = processor or checkpoint_processor
    if processor is None:
        raise ValueError("give the processor the model expects (processor=...)")
    return model, processor


def convert(
    source: str | Path,
    output_dir: str | Path,
    *,
    threshold: float = 0.1,
    overwrite: bool = False,
    **rlt_settings,
):
    """Convert a checkpoint (folder or Hub id; a base model or a video classifier of a registered architecture)
    into an RLT checkpoint folder of the same kind (``write_checkpoint``), and return the converted model.

    The weights are copied unchanged and the length encoding starts at zero, so the converted model computes
    what the original does on the tokens RLT keeps. ``output_dir`` must be absent or empty unless ``overwrite``;
    ``threshold`` and ``rlt_settings`` set the config's ``rlt_*`` fields (``rlt_pooling="length_weighted"``).
    """
    check_rlt_setting_names(rlt_settings, what="rlt.convert")
    output_dir = Path(output_dir)
    if Path(source).exists() and output_dir.resolve() == Path(source).resolve():
        raise ValueError(f"output folder {output_dir} is the source checkpoint; choose another folder")
    OutputNotEmptyError.check(output_dir, overwrite)

    processor_file, processor_config = read_processor_config(source)
    if processor_file is None:
        logger.warning("%s has no processor config: rlt_threshold assumes ImageNet-normalised input", source)
    model = load_rlt(source, processor_config=processor_config, rlt_threshold=threshold, **rlt_settings)
    config = model.config

    # An RLT video processor (PyAV decoding, no torchvision) with the source's mean/std/sizes, so that
    # AutoVideoProcessor and pipeline("video-classification") work from the folder.
    processor = RLTVideoProcessor.from_source_config(
        processor_config, num_frames=config.rlt_num_frames, image_size=config.rlt_image_size
    )
    write_checkpoint(output_dir, model, processor, source=source)
    return model


def write_checkpoint(output_dir: str | Path, model, processor, **card) -> None:
    """Save ``model`` and ``processor`` as a self-contained RLT folder (config with ``auto_map``, the code
    for ``trust_remote_code``, safetensors weights, processor config) with its model card (``card``: the
    arguments of ``rlt.hub.write_model_card``)."""
    from .hub import write_model_card  # the Hub-ready card (README.md)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    missing_code = [name for name in code_files_of(model, processor) if not (output_dir / name).is_file()]
    if missing_code:  # save_pretrained copies them; a folder without them fails only on the user's machine
        raise RuntimeError(f"{output_dir} lacks the code files {missing_code} that trust_remote_code loading needs")
    write_model_card(output_dir, **card)


def from_model(model, threshold: float = 0.1, *, processor=None, **rlt_settings):
    """The RLT version of a transformers video model in memory (a base model or video classifier of a registered
    architecture, or a video LLM), whose parameters ARE the model's (same tensors: training one trains the other),
    with a zero length table, so that it computes what the model does on the tokens RLT keeps. It comes on the
    model's device, in its dtype and train / eval mode.

    ``processor``: the one whose output the model gets (a transformers image / video processor or
    ``RLTVideoProcessor``); its ``rescale_factor / image_std`` sets ``rlt_input_scale`` so that ``threshold``
    means the same pixel change for every checkpoint. Default: ``Architecture.processor_defaults``.
    ``rlt_settings``: other ``rlt_*`` config fields (``rlt_pooling="length_weighted"``, ...).
    """
    if hasattr(getattr(model, "config", None), "rlt_threshold"):
        raise TypeError(
            f"{type(model).__name__} is already an RLT model: change model.config.rlt_threshold (or other rlt_* "
            "settings) instead"
        )
    video_llm = registry.video_llm_for_model(model)
    if video_llm is not None:
        if processor is not None:
            raise TypeError(
                "a video LLM's RLT processor is RLTQwenVLProcessor.from_model_config(tokenizer, rlt_model.config)"
            )
        return _video_llm_from_model(model, video_llm, threshold=threshold, **rlt_settings)
    architecture = registry.for_model(model)
    classifier = isinstance(model, architecture.vanilla_classifier_class)
    if not classifier and not isinstance(model, architecture.vanilla_model_class):
        raise registry.UnsupportedArchitectureError(
            f"rlt.from_model takes {architecture.vanilla_model_class.__name__} or "
            f"{architecture.vanilla_classifier_class.__name__} for {architecture.display_name}, "
            f"got {type(model).__name__}"
        )
    rlt_class = architecture.rlt_class(classifier)
    check_rlt_setting_names(rlt_settings, what="rlt.from_model")
    if processor is None:
        processor = architecture.processor()
    processor_config = processor if isinstance(processor, dict) else processor.to_dict()
    config = _rlt_config(architecture, model.config, processor_config, {"rlt_threshold": threshold, **rlt_settings})
    kwargs = {"attn_implementation": model.config._attn_implementation}
    if "add_pooling_layer" in inspect.signature(rlt_class.__init__).parameters:  # transformers' base models
        kwargs["add_pooling_layer"] = getattr(model, "pooler", None) is not None
    # On the meta device nothing is allocated; load_state_dict(assign=True) then puts the model's own
    # Parameter objects in place, and only what the model lacks is made and initialised.
    with torch.device("meta"):
        rlt_model = rlt_class._from_config(config, **kwargs)
    missing, unexpected = rlt_model.load_state_dict(model.state_dict(keep_vars=True), strict=False, assign=True)
    check_loaded_keys(rlt_class, missing, type(model).__name__, unexpected=unexpected)
    _materialise_meta_tensors(rlt_model, device=model.device, dtype=model.dtype)
    return rlt_model.train(model.training)


def _materialise_meta_tensors(model, device: torch.device, dtype: torch.dtype) -> None:
    """Allocate the tensors still on the meta device (the length table, non-persistent buffers such as
    VideoMAE's sinusoid table) on ``device`` and initialise them with the model's ``_init_weights``."""
    for module in model.modules():
        direct = list(chain(module.named_parameters(recurse=False), module.named_buffers(recurse=False)))
        meta = [name for name, tensor in direct if tensor.is_meta]
        if not meta:
            continue
        if len(meta) != len(direct):  # _init_weights(module) would overwrite the weights shared with the model
            raise RuntimeError(f"{type(module).__name__} mixes shared and new tensors {meta}: cannot initialise them")
        for name, tensor in direct:
            new = torch.empty_like(tensor, device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
            if isinstance(tensor, torch.nn.Parameter):
                new = torch.nn.Parameter(new, requires_grad=tensor.requires_grad)
            setattr(module, name, new)  # a buffer stays a buffer (persistent or not), a parameter a parameter
        model._init_weights(module)


def _video_llm_from_model(model, entry: registry.VideoLLMArchitecture, threshold: float, **rlt_settings):
    """``from_model`` for a video LLM (Qwen2.5-VL, Qwen3-VL): the RLT generation model whose vision
    tower, LLM and head ARE the model's modules (the RLT classes change only how they are called)."""
    bad = [key for key in rlt_settings if not key.startswith("rlt_")]
    if bad:
        raise TypeError(f"unknown settings {bad}; RLT settings start with 'rlt_'")
    fields = {key: value for key, value in model.config.to_dict().items() if key not in registry.NOT_COPIED}
    config = entry.config_class(**{**fields, "rlt_threshold": threshold, **rlt_settings})
    with torch.device("meta"):
        rlt_model = entry.model_class._from_config(config, attn_implementation=model.config._attn_implementation)
    rlt_model.model.visual = model.model.visual
    rlt_model.model.language_model = model.model.language_model
    rlt_model.lm_head = model.lm_head
    # The sub-configs the shared modules read: one object each, so attention settings reach both models.
    rlt_model.config.vision_config = model.model.visual.config
    rlt_model.config.text_config = model.model.language_model.config
    rlt_model.generation_config = model.generation_config
    _materialise_meta_tensors(rlt_model, device=model.device, dtype=model.dtype)
    return rlt_model.train(model.training)
