"""One entry per architecture: everything the tools need to know about VideoMAE, ViViT, ...

Token geometry (tubelet, patch, grid, prefix tokens, input name) is not here: every RLT config
answers it as ``rlt_*`` properties, and ``as_rlt_config`` gives such a config for a vanilla one too.
Every tool looks architectures up here; nothing outside this file and the architectures' own model
files tests a ``model_type``. Adding an architecture: its files in ``rlt/models/`` and one
``register`` call below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import transformers

from .models.configuration_rlt_videomae import RLTVideoMAEConfig
from .models.configuration_rlt_vivit import RLTVivitConfig
from .models.configuration_rlt_vjepa2 import RLTVJEPA2Config
from .models.modeling_rlt_videomae import RLTVideoMAEForVideoClassification, RLTVideoMAEModel
from .models.modeling_rlt_vivit import RLTVivitForVideoClassification, RLTVivitModel
from .models.modeling_rlt_vjepa2 import RLTVJEPA2ForVideoClassification, RLTVJEPA2Model

__all__ = [
    "Architecture",
    "ModelShape",
    "UnsupportedArchitectureError",
    "architectures",
    "as_rlt_config",
    "describe_supported",
    "for_config",
    "for_model",
    "for_model_type",
    "get",
    "names",
    "register",
    "register_auto_classes",
    "register_video_llm_auto_classes",
    "video_llm_for_model",
    "video_llms",
]

# Config fields that say what a config is rather than what the model computes: never copied into another config.
NOT_COPIED = ("model_type", "architectures", "auto_map", "transformers_version")


class UnsupportedArchitectureError(ValueError):
    """A model, config or name that no registered architecture covers; the message lists those that are."""


@dataclass(frozen=True)
class ModelShape:
    """A model's size and input geometry, spelled one way for every architecture (VideoMAE's config field names).

    ``Architecture.config_fields(shape)`` spells it in an architecture's own config fields (ViViT's
    ``tubelet_size`` is ``[t, p, p]``, V-JEPA 2 says ``frames_per_clip`` and ``crop_size``).
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_frames: int = 16
    image_size: int = 224
    tubelet_size: int = 2
    patch_size: int = 16


@dataclass(frozen=True, eq=False)
class Architecture:
    """What rlt knows about one architecture.

    Attributes:
        name: short name used by the tools (``--arch``), e.g. ``"videomae"``.
        display_name: for messages, e.g. ``"VideoMAE"``.
        vanilla_model_types: the transformers ``model_type`` (s) this architecture converts.
        config_class, model_class, classifier_class: the RLT classes.
        vanilla_model_class, vanilla_classifier_class: transformers' classes for the same weights.
        processor_defaults: ``RLTVideoProcessor`` settings of the checkpoints people use where they
            differ from its defaults (which are VideoMAE's): the input scale ``rlt.from_model`` assumes
            without a processor, and ``rlt inspect --arch``'s resize and crop.
        config_fields: ``ModelShape -> dict`` of this architecture's config fields (default: the
            shape's own names, which are VideoMAE's).
        position_encoding: how a kept token keeps its place, in words (model cards).
        classifier_pooling: ``config dict -> words``: how the RLT classifier pools a clip (model
            cards); None for the shared heads (the CLS token, or the mean / first token).
        rlt_pooling_applies: ``config -> bool``: whether ``rlt_pooling`` (plain or run-length-weighted)
            changes how this classifier pools (a mean or an attentive head does, a CLS token does not).
    """

    name: str
    display_name: str
    vanilla_model_types: tuple[str, ...]
    config_class: type
    model_class: type
    classifier_class: type
    vanilla_model_class: type
    vanilla_classifier_class: type
    processor_defaults: Mapping[str, Any] = field(default_factory=dict)
    config_fields: Callable[[ModelShape], dict] = asdict
    position_encoding: str = "the position embedding of its original place"
    classifier_pooling: Callable[[Mapping], str] | None = None
    rlt_pooling_applies: Callable[[Any], bool] = field(default=lambda config: False)

    @property
    def model_type(self) -> str:
        """The RLT ``model_type`` (``rlt_videomae``)."""
        return self.config_class.model_type

    @property
    def model_types(self) -> tuple[str, ...]:
        """Every ``model_type`` this entry answers for: the RLT one, then the vanilla ones."""
        return (self.model_type, *self.vanilla_model_types)

    @property
    def legacy_key_mapping(self) -> dict[str, str]:
        """Weight-name mapping for checkpoints saved with older names (``from_pretrained(key_mapping=...)``)."""
        return dict(self.model_class.legacy_key_mapping)

    def rlt_config(self, config, **rlt_settings):
        """The RLT config of a vanilla (or RLT) config object or dict of this architecture, with ``rlt_settings``.

        The fields are copied as they are; RLT settings not given keep the config's or their defaults.
        """
        fields = dict(config) if isinstance(config, Mapping) else config.to_dict()
        model_type = fields.get("model_type")
        if model_type is not None and model_type not in self.model_types:
            raise UnsupportedArchitectureError(f"a {model_type!r} config is not a {self.display_name} config")
        fields = {key: value for key, value in fields.items() if key not in NOT_COPIED}
        return self.config_class(**{**fields, **rlt_settings})

    def vanilla_config(self, shape: ModelShape | None = None, **fields):
        """A transformers config of this architecture: ``shape`` in its field names, then ``fields``."""
        return self.vanilla_model_class.config_class(**{**self.config_fields(shape or ModelShape()), **fields})

    def rlt_class(self, classifier: bool) -> type:
        """The RLT classifier or base model class."""
        return self.classifier_class if classifier else self.model_class

    def processor(self, **overrides):
        """An ``RLTVideoProcessor`` with this architecture's usual settings, ``overrides`` on top."""
        from .models.video_processing_rlt import RLTVideoProcessor

        return RLTVideoProcessor(**{**self.processor_defaults, **overrides})


_ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture, *, exist_ok: bool = False) -> Architecture:
    """Add an architecture; its ``name`` and ``model_type`` s must be new unless ``exist_ok``.

    Registering here does not register the classes with transformers' Auto classes: ``import rlt``
    does that for every entry; call ``register_auto_classes(architecture)`` for one added later.
    """
    if not exist_ok:
        if architecture.name in _ARCHITECTURES:
            raise ValueError(f"an architecture named {architecture.name!r} is already registered")
        taken = {model_type for entry in _ARCHITECTURES.values() for model_type in entry.model_types}
        clash = sorted(set(architecture.model_types) & taken)
        if clash:
            raise ValueError(f"model_type {clash} already belongs to a registered architecture")
    _ARCHITECTURES[architecture.name] = architecture
    return architecture


def register_auto_classes(architecture: Architecture) -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForVideoClassification`` know the RLT classes."""
    from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

    AutoConfig.register(architecture.model_type, architecture.config_class, exist_ok=True)
    AutoModel.register(architecture.config_class, architecture.model_class, exist_ok=True)
    AutoModelForVideoClassification.register(architecture.config_class, architecture.classifier_class, exist_ok=True)


def architectures() -> tuple[Architecture, ...]:
    """Every registered architecture, in registration order."""
    return tuple(_ARCHITECTURES.values())


def names() -> list[str]:
    """The registered architectures' short names (``--arch`` choices)."""
    return list(_ARCHITECTURES)


def describe_supported() -> str:
    """``"VideoMAE (model_type 'videomae'), ViViT (model_type 'vivit')"``: for error messages."""
    return ", ".join(
        f"{entry.display_name} (model_type {' / '.join(repr(t) for t in entry.vanilla_model_types)})"
        for entry in _ARCHITECTURES.values()
    )


def get(name: str) -> Architecture:
    """The architecture called ``name`` (``"videomae"``)."""
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedArchitectureError(f"no architecture named {name!r}; rlt knows {names()}") from None


def for_model_type(model_type: str | None) -> Architecture:
    """The architecture a vanilla or RLT ``model_type`` belongs to."""
    if model_type is None:
        raise UnsupportedArchitectureError(f"the config has no model_type; rlt supports {describe_supported()}")
    for entry in _ARCHITECTURES.values():
        if model_type in entry.model_types:
            return entry
    raise UnsupportedArchitectureError(
        f"rlt has no RLT version of a {model_type!r} model; it supports {describe_supported()}"
    )


def for_config(config) -> Architecture:
    """The architecture of a config object or ``config.json`` dict."""
    model_type = config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    return for_model_type(model_type)


def for_model(model) -> Architecture:
    """The architecture of a model instance (vanilla transformers or RLT)."""
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no config: rlt supports transformers models of {describe_supported()}"
        )
    return for_config(config)


def as_rlt_config(config):
    """A config that answers the ``rlt_*`` token geometry: an RLT config as it is, a vanilla one (object
    or dict) converted with default RLT settings. For reading geometry; the model keeps its own config."""
    if not isinstance(config, Mapping) and hasattr(config, "rlt_token_grid"):
        return config
    return for_config(config).rlt_config(config)


# ---------------------------------------------------------------------------------------- entries


def _vivit_fields(shape: ModelShape) -> dict:
    fields = asdict(shape)
    patch = fields.pop("patch_size")
    return fields | {"tubelet_size": [shape.tubelet_size, patch, patch]}


def _vjepa2_pooling(config: Mapping) -> str:
    weighted = config.get("rlt_pooling") == "length_weighted"
    return (
        "V-JEPA 2's attentive probe over the clip's kept tokens: its self-attention layers, then one learned query's "
        "cross-attention" + (", each token counted its run length times in the query's softmax" if weighted else "")
    )


def _vjepa2_fields(shape: ModelShape) -> dict:
    renamed = ("intermediate_size", "num_frames", "image_size")
    fields = {name: value for name, value in asdict(shape).items() if name not in renamed}
    return fields | {
        "mlp_ratio": shape.intermediate_size / shape.hidden_size,
        "frames_per_clip": shape.num_frames,
        "crop_size": shape.image_size,
    }


def _processor_defaults(num_frames: int, short_side: int, crop: int, **settings) -> dict:
    """``num_frames`` frames, short side resized to ``short_side``, square centre crop ``crop``, then other
    ``RLTVideoProcessor`` ``settings`` (rescaling, mean / std)."""
    crop_size = {"height": crop, "width": crop}
    return {"num_frames": num_frames, "size": {"shortest_edge": short_side}, "crop_size": crop_size, **settings}


register(
    Architecture(
        "videomae", "VideoMAE", ("videomae",),
        RLTVideoMAEConfig, RLTVideoMAEModel, RLTVideoMAEForVideoClassification,
        transformers.VideoMAEModel, transformers.VideoMAEForVideoClassification,
        # processor_defaults: the public checkpoints (MCG-NJU/videomae-*) use RLTVideoProcessor's defaults.
        rlt_pooling_applies=lambda config: bool(getattr(config, "use_mean_pooling", True)),
    )
)
register(
    Architecture(
        "vivit", "ViViT", ("vivit",),
        RLTVivitConfig, RLTVivitModel, RLTVivitForVideoClassification,
        transformers.VivitModel, transformers.VivitForVideoClassification,
        # google/vivit-b-16x2-kinetics400: pixels to [-1, 1] (1/127.5, offset -1), then mean = std = 0.5.
        processor_defaults=_processor_defaults(32, 256, 224, rescale_factor=1 / 127.5, rescale_offset=-1.0,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3),
        config_fields=_vivit_fields,
    )
)
register(
    Architecture(
        "vjepa2", "V-JEPA 2", ("vjepa2",),
        RLTVJEPA2Config, RLTVJEPA2Model, RLTVJEPA2ForVideoClassification,
        transformers.VJEPA2Model, transformers.VJEPA2ForVideoClassification,
        # facebook/vjepa2-*-256: short side int(256 * 256 / 224) = 292, centre crop 256, ImageNet statistics;
        # the encoders take 64 frames (fpc64), the SSv2 / Diving-48 classifiers 16 / 32.
        processor_defaults=_processor_defaults(64, 292, 256),
        config_fields=_vjepa2_fields,
        rlt_pooling_applies=lambda config: True,  # the probe's query counts each token its run length times
        position_encoding="its original (t, h, w) place in every layer's 3D RoPE (V-JEPA 2 has no position table)",
        classifier_pooling=_vjepa2_pooling,
    )
)


# -------------------------------------------------------------------------------------- video LLMs


@dataclass(frozen=True, eq=False)
class VideoLLMArchitecture:
    """A video LLM rlt makes an RLT version of (``rlt.from_model``): its vanilla transformers
    generation class and the RLT config and generation classes (``rlt/models/*qwen*``)."""

    name: str
    display_name: str
    vanilla_class: type
    config_class: type
    model_class: type


def video_llms() -> tuple[VideoLLMArchitecture, ...]:
    """The video LLMs rlt supports."""
    from .models.configuration_rlt_qwen_vl import RLTQwen2_5_VLConfig, RLTQwen3VLConfig
    from .models.modeling_rlt_qwen2_5_vl import RLTQwen2_5_VLForConditionalGeneration
    from .models.modeling_rlt_qwen3_vl import RLTQwen3VLForConditionalGeneration

    return (
        VideoLLMArchitecture("qwen2_5_vl", "Qwen2.5-VL", transformers.Qwen2_5_VLForConditionalGeneration,
                             RLTQwen2_5_VLConfig, RLTQwen2_5_VLForConditionalGeneration),
        VideoLLMArchitecture("qwen3_vl", "Qwen3-VL", transformers.Qwen3VLForConditionalGeneration,
                             RLTQwen3VLConfig, RLTQwen3VLForConditionalGeneration),
    )


def video_llm_for_model(model) -> VideoLLMArchitecture | None:
    """The video LLM entry of a vanilla or RLT generation model, None for other models."""
    for entry in video_llms():
        if isinstance(model, entry.vanilla_class):
            return entry
    return None


def register_video_llm_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForImageTextToText`` know the RLT video LLMs in this process."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    for entry in video_llms():
        AutoConfig.register(entry.config_class.model_type, entry.config_class, exist_ok=True)
        AutoModelForImageTextToText.register(entry.config_class, entry.model_class, exist_ok=True)
