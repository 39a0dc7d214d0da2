"""Configuration of RLT ViViT: transformers' ``VivitConfig`` plus the RLT settings."""

from __future__ import annotations

from transformers import VivitConfig

from .configuration_rlt import RLT_OUTPUT_KEYS, RLTSettings
from .tokenizer import to_pair

__all__ = ["RLTVivitConfig"]


class RLTVivitConfig(VivitConfig, RLTSettings):
    """``VivitConfig`` with run-length tokenization settings (see ``RLTSettings``).

    ``tubelet_size`` is ViViT's ``[t, p_h, p_w]``: ``t`` frames by ``p_h x p_w`` pixels per token.

    Example:
        >>> from rlt import RLTVivitConfig
        >>> config = RLTVivitConfig(rlt_threshold=0.05)
    """

    model_type = "rlt_vivit"
    keys_to_ignore_at_inference = RLT_OUTPUT_KEYS

    def __post_init__(self, **kwargs):
        super().__post_init__(**self.pop_unknown_rlt_settings(kwargs))
        self.validate_rlt_settings()
        self.validate_tubelet_grid()

    @property
    def rlt_tubelet_size(self) -> int:
        return int(self.tubelet_size[0])

    @property
    def rlt_patch_size(self) -> tuple[int, int]:
        return int(self.tubelet_size[1]), int(self.tubelet_size[2])

    @property
    def rlt_num_prefix_tokens(self) -> int:
        return 1  # the CLS token

    def validate_tubelet_grid(self) -> None:
        """The frames and image must split into whole tubelets (RLT drops tubelets, it does not crop)."""
        if len(self.tubelet_size) != 3:
            raise ValueError(f"tubelet_size must be [frames, height, width], got {list(self.tubelet_size)}")
        frames, patch_h, patch_w = (int(size) for size in self.tubelet_size)
        image_h, image_w = to_pair(self.image_size)
        problems = []
        if self.num_frames % frames:
            problems.append(f"num_frames {self.num_frames} is not a multiple of tubelet_size[0] {frames}")
        if image_h % patch_h or image_w % patch_w:
            problems.append(f"image_size {image_h}x{image_w} is not a multiple of the tubelet's {patch_h}x{patch_w}")
        if problems:
            raise ValueError("RLTVivitConfig: " + "; ".join(problems))


RLTVivitConfig.register_for_auto_class()
