"""RLT Qwen3-VL: transformers' Qwen3-VL whose video tokens are the groups RLT keeps.

Qwen3-VL differs from Qwen2.5-VL where RLT meets it: no window attention, an interpolated learned
position embedding (restricted to the kept rows like the rotary positions), DeepStack features
(taken at the kept groups like the merger's output), and placeholders written per slice.

See ``modeling_rlt_qwen_vl`` for what changes; the vision tower, the LLM and their weights are
transformers' own.
"""

from __future__ import annotations

import torch
from transformers import Qwen3VLForConditionalGeneration, Qwen3VLModel
from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

from .configuration_rlt_qwen_vl import RLTQwen3VLConfig
from .modeling_rlt_qwen_vl import (
    RLTQwenVLForConditionalGenerationMixin,
    RLTQwenVLModelMixin,
    splits_deepstack_per_video,
)

__all__ = ["RLTQwen3VLForConditionalGeneration", "RLTQwen3VLModel"]


class RLTQwen3VLModel(RLTQwenVLModelMixin, Qwen3VLModel):
    """``Qwen3VLModel`` that runs the kept groups of a video only (``RLTQwenVLModelMixin``)."""

    config_class = RLTQwen3VLConfig
    config: RLTQwen3VLConfig
    _deepstack_per_video = splits_deepstack_per_video(Qwen3VLModel.get_image_features)

    def _placeholder_units(self, video_grid_thw: torch.Tensor) -> list[int]:
        # Qwen3-VL writes each slice's placeholders between its timestamp and vision start / end tokens.
        return self._groups_per_slice(video_grid_thw).tolist()

    def _kept_tower_inputs(self, video_grid_thw: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        visual = self.visual
        interp_indices, interp_weights = get_vision_interpolation_indices_and_weights(
            video_grid_thw,
            num_grid_per_side=visual.num_grid_per_side,
            mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners,
            spatial_merge_size=self.config.vision_config.spatial_merge_size,
        )
        positions = get_vision_position_ids(video_grid_thw, self.config.vision_config.spatial_merge_size)
        rows = self._kept_rows(keep).to(positions.device)
        return {
            "position_ids": positions[rows],
            "cu_seqlens": self._kept_segments(video_grid_thw, keep),
            "interp_indices": interp_indices[rows],
            "interp_weights": interp_weights[rows],
        }


class RLTQwen3VLForConditionalGeneration(RLTQwenVLForConditionalGenerationMixin, Qwen3VLForConditionalGeneration):
    """``Qwen3VLForConditionalGeneration`` over ``RLTQwen3VLModel``: ``generate(**processor_outputs)``."""

    config_class = RLTQwen3VLConfig
    config: RLTQwen3VLConfig
    rlt_model_class = RLTQwen3VLModel


RLTQwen3VLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
