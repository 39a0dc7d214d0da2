"""Turn a vanilla transformers video checkpoint into an RLT checkpoint folder (training-free)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoConfig
from transformers.utils import cached_file

from .configuration_rlt import input_scale_from_processor
from .configuration_rlt_videomae import RLTVideoMAEConfig
from .configuration_rlt_vivit import RLTVivitConfig
from .modeling_rlt_videomae import RLTVideoMAEForVideoClassification, RLTVideoMAEModel
from .modeling_rlt_vivit import RLTVivitForVideoClassification, RLTVivitModel
from .video_processing_rlt import RLTVideoProcessor

logger = logging.getLogger(__name__)

# Vanilla model_type -> (RLT config, RLT base model, RLT classifier).
ARCHITECTURES = {
    "videomae": (RLTVideoMAEConfig, RLTVideoMAEModel, RLTVideoMAEForVideoClassification),
    "vivit": (RLTVivitConfig, RLTVivitModel, RLTVivitForVideoClassification),
}
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
_NOT_COPIED = ("model_type", "architectures", "auto_map", "transformers_version")


def _architecture_of(model_type: str):
    for vanilla, classes in ARCHITECTURES.items():
        if model_type in (vanilla, classes[0].model_type):
            return classes
    supported = ", ".join(sorted(ARCHITECTURES))
    raise ValueError(f"cannot convert a {model_type!r} checkpoint: rlt converts {supported} checkpoints")


def read_processor_config(source: str | Path, **hub_kwargs) -> tuple[str | None, dict]:
    """The first processor config found in a checkpoint (file name, contents), or (None, {})."""
    for name in PROCESSOR_FILES:
        path = cached_file(
            str(source),
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )
        if path:
            return name, json.loads(Path(path).read_text())
    return None, {}


def convert(
    source: str | Path,
    output_dir: str | Path,
    *,
    threshold: float = 0.1,
    overwrite: bool = False,
    **rlt_settings,
):
    """Convert a VideoMAE or ViViT checkpoint (a folder or a Hub id) into an RLT checkpoint folder.

    The weights are copied unchanged; the length encoding starts at zero, so the converted model
    computes what the original does on the tokens RLT keeps. The folder holds the config (with
    ``auto_map``), the modeling code for ``trust_remote_code``, safetensors weights and the
    processor config, and loads without ``rlt`` installed.

    Args:
        source: checkpoint folder or Hub model id.
        output_dir: folder to write; must not exist or be empty unless ``overwrite``.
        threshold: ``rlt_threshold`` of the converted model.
        rlt_settings: other ``rlt_*`` config fields (e.g. ``rlt_pooling="length_weighted"``).

    Returns:
        The converted model (already saved to ``output_dir``).
    """
    output_dir = Path(output_dir)
    if Path(source).exists() and output_dir.resolve() == Path(source).resolve():
        raise ValueError(f"output folder {output_dir} is the source checkpoint; choose another folder")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {output_dir} is not empty; pass overwrite=True (--overwrite) to replace it")
    bad = [key for key in rlt_settings if not key.startswith("rlt_")]
    if bad:
        raise TypeError(f"unknown conversion settings {bad}; RLT settings start with 'rlt_'")

    vanilla_config = AutoConfig.from_pretrained(str(source))
    config_class, model_class, classifier_class = _architecture_of(vanilla_config.model_type)
    processor_file, processor_config = read_processor_config(source)
    fields = {k: v for k, v in vanilla_config.to_dict().items() if k not in _NOT_COPIED}
    fields.setdefault("rlt_input_scale", input_scale_from_processor(processor_config, vanilla_config.num_channels))
    if processor_file is None:
        logger.warning("%s has no processor config: rlt_threshold assumes ImageNet-normalised input", source)
    config = config_class(**{**fields, "rlt_threshold": threshold, "rlt_length_encoding_init": "zeros", **rlt_settings})

    architectures = vanilla_config.architectures or []
    is_classifier = any(name.endswith("ForVideoClassification") for name in architectures)
    target_class = classifier_class if is_classifier else model_class
    model, info = target_class.from_pretrained(str(source), config=config, output_loading_info=True)
    missing = [key for key in info["missing_keys"] if "length_embeddings" not in key]
    if missing:
        raise ValueError(f"{source} lacks weights the RLT model needs: {missing[:5]}")

    # An RLT video processor (PyAV decoding, no torchvision) with the source's mean/std/sizes, so that
    # AutoVideoProcessor and pipeline("video-classification") work from the folder.
    processor = RLTVideoProcessor.from_source_config(
        processor_config, num_frames=config.num_frames, image_size=config.image_size
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    from .hub import write_model_card  # the Hub-ready card (README.md)

    write_model_card(output_dir, source=source)
    return model
