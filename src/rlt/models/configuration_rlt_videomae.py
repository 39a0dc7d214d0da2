"""Configuration of RLT VideoMAE: transformers' ``VideoMAEConfig`` plus the RLT settings."""

from __future__ import annotations

from transformers import VideoMAEConfig

from .configuration_rlt import RLT_OUTPUT_KEYS, RLTSettings
from .tokenizer import to_pair

__all__ = ["RLTVideoMAEConfig"]


class RLTVideoMAEConfig(VideoMAEConfig, RLTSettings):
    """``VideoMAEConfig`` with run-length tokenization settings (see ``RLTSettings``).

    Example:
        >>> from rlt import RLTVideoMAEConfig
        >>> config = RLTVideoMAEConfig(rlt_threshold=0.05)
    """

    model_type = "rlt_videomae"
    keys_to_ignore_at_inference = RLT_OUTPUT_KEYS

    def __post_init__(self, **kwargs):
        super().__post_init__(**self.pop_unknown_rlt_settings(kwargs))
        self.validate_rlt_settings()

    @property
    def rlt_tubelet_size(self) -> int:
        return int(self.tubelet_size)

    @property
    def rlt_patch_size(self) -> tuple[int, int]:
        return to_pair(self.patch_size)


RLTVideoMAEConfig.register_for_auto_class()
