"""RLT Qwen2.5-VL: transformers' Qwen2.5-VL whose video tokens are the groups RLT keeps.

See ``modeling_rlt_qwen_vl`` for what changes; the vision tower, the LLM and their weights are
transformers' own.
"""

from __future__ import annotations

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from .configuration_rlt_qwen_vl import RLTQwen2_5_VLConfig
from .modeling_rlt_qwen_vl import (
    RLTQwenVLForConditionalGenerationMixin,
    RLTQwenVLModelMixin,
    kept_window_index,
)

__all__ = ["RLTQwen2_5_VLForConditionalGeneration", "RLTQwen2_5_VLModel"]


class RLTQwen2_5_VLModel(RLTQwenVLModelMixin, Qwen2_5_VLModel):
    """``Qwen2_5_VLModel`` that runs the kept groups of a video only (``RLTQwenVLModelMixin``)."""

    config_class = RLTQwen2_5_VLConfig
    config: RLTQwen2_5_VLConfig

    def _placeholder_units(self, video_grid_thw: torch.Tensor) -> list[int]:
        return self._groups_per_video(video_grid_thw)  # one run of placeholders per video

    def _kept_tower_inputs(self, video_grid_thw: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        vision = self.config.vision_config
        window_index, cu_window_seqlens = get_vision_window_index(
            video_grid_thw,
            spatial_merge_size=vision.spatial_merge_size,
            window_size=vision.window_size,
            patch_size=vision.patch_size,
        )
        window_index, cu_window_seqlens = kept_window_index(window_index, cu_window_seqlens, keep, self._merge_unit)
        positions = get_vision_position_ids(video_grid_thw, vision.spatial_merge_size)
        return {
            "position_ids": positions[self._kept_rows(keep).to(positions.device)],
            "cu_seqlens": self._kept_segments(video_grid_thw, keep),
            "window_index": window_index,
            "cu_window_seqlens": cu_window_seqlens,
        }


class RLTQwen2_5_VLForConditionalGeneration(RLTQwenVLForConditionalGenerationMixin, Qwen2_5_VLForConditionalGeneration):
    """``Qwen2_5_VLForConditionalGeneration`` over ``RLTQwen2_5_VLModel``: ``generate(**processor_outputs)``."""

    config_class = RLTQwen2_5_VLConfig
    config: RLTQwen2_5_VLConfig
    rlt_model_class = RLTQwen2_5_VLModel


RLTQwen2_5_VLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
