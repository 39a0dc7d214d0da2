"""Configurations of the RLT video LLMs: transformers' Qwen2.5-VL / Qwen3-VL configs plus the RLT settings.

The unit RLT drops in a video LLM is one LLM token: a ``spatial_merge_size x spatial_merge_size``
group of patches over one temporal slice (``temporal_patch_size`` frames). Which groups repeat the
one before them in time is decided from pixels by the processor (``RLTQwenVLProcessor``), which
writes exactly as many video placeholders as groups are kept and hands the keep mask to the model;
the model follows that mask. ``rlt_threshold`` and ``rlt_compare_to`` are kept here so that the
setting travels with a checkpoint (``RLTQwenVLProcessor.from_model_config`` reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

from .tokenizer import COMPARE_TO_CHOICES, check_threshold

__all__ = ["RLT_VIDEO_LLM_MODES", "RLTQwen2_5_VLConfig", "RLTQwen3VLConfig", "RLTVideoLLMSettings"]

# before_encoder: the vision tower runs on the kept patches only; after_encoder: the full tower, the
# repeated groups dropped before the LLM (vision features exact, savings in the LLM only).
RLT_VIDEO_LLM_MODES = ("before_encoder", "after_encoder")


@dataclass(repr=False)
class RLTVideoLLMSettings:
    """Run-length tokenization settings of a video LLM (all prefixed ``rlt_``).

    Attributes:
        rlt_threshold: ``tau``: a group whose mean absolute difference from the same group of the
            previous slice is at most this is dropped (reference units: pixels in [0, 1] over the
            ImageNet std, as ``run_length_tokenize``). Read by the processor.
        rlt_compare_to: ``"previous"`` (the published rule) or ``"last_kept"`` (drift-safe). Read by the processor.
        rlt_mode: ``"before_encoder"`` (default) or ``"after_encoder"``, see ``RLT_VIDEO_LLM_MODES``.
        rlt_use_length_encoding: add a learned embedding of each kept token's run length (in slices)
            to the merger's output; zero-initialised, so a converted model computes what it did.
        rlt_max_run_length: rows of that table; longer runs use the last row.
    """

    rlt_threshold: float = 0.1
    rlt_compare_to: str = "previous"
    rlt_mode: str = "before_encoder"
    rlt_use_length_encoding: bool = False
    rlt_max_run_length: int = 64

    def validate_rlt_settings(self) -> None:
        self.rlt_threshold = check_threshold(self.rlt_threshold, name="rlt_threshold")
        for name, value, choices in (
            ("rlt_compare_to", self.rlt_compare_to, COMPARE_TO_CHOICES),
            ("rlt_mode", self.rlt_mode, RLT_VIDEO_LLM_MODES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        length = self.rlt_max_run_length
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"rlt_max_run_length must be a whole number >= 1, got {length!r}")


class RLTQwen2_5_VLConfig(Qwen2_5_VLConfig, RLTVideoLLMSettings):
    """``Qwen2_5_VLConfig`` with run-length tokenization settings (see ``RLTVideoLLMSettings``).

    Example:
        >>> from rlt import RLTQwen2_5_VLConfig
        >>> config = RLTQwen2_5_VLConfig(rlt_threshold=0.05, rlt_mode="after_encoder")
    """

    model_type = "rlt_qwen2_5_vl"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_rlt_settings()


class RLTQwen3VLConfig(Qwen3VLConfig, RLTVideoLLMSettings):
    """``Qwen3VLConfig`` with run-length tokenization settings (see ``RLTVideoLLMSettings``).

    Qwen3-VL writes the placeholders of each slice between a timestamp and its own vision start / end
    tokens, so the processor keeps at least one group per slice (see ``RLTQwenVLProcessor``).
    """

    model_type = "rlt_qwen3_vl"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_rlt_settings()


RLTQwen2_5_VLConfig.register_for_auto_class()
RLTQwen3VLConfig.register_for_auto_class()
