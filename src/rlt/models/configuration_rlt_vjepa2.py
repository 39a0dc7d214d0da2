"""Configuration of RLT V-JEPA 2: transformers' ``VJEPA2Config`` plus the RLT settings."""

from __future__ import annotations

from typing import ClassVar

from transformers import VJEPA2Config

from .configuration_rlt import RLT_OUTPUT_KEYS, RLTSettings

__all__ = ["RLTVJEPA2Config"]


class RLTVJEPA2Config(VJEPA2Config, RLTSettings):
    """``VJEPA2Config`` with run-length tokenization settings (see ``RLTSettings``).

    V-JEPA 2 has no position table (3D RoPE from token ids), so the model takes clips of any whole
    number of tubelets; ``frames_per_clip`` only sizes the length-encoding table (``frames_per_clip /
    tubelet_size`` run lengths; longer runs in longer clips use its last row). ``num_channels``,
    ``image_size`` and ``num_frames`` read ``in_chans``, ``crop_size`` and ``frames_per_clip`` (the names
    VideoMAE, ViViT and the video-classification pipeline use).

    Example:
        >>> from rlt import RLTVJEPA2Config
        >>> config = RLTVJEPA2Config(frames_per_clip=16, rlt_threshold=0.05)
        >>> config.rlt_token_grid
        (8, 16, 16)
    """

    model_type = "rlt_vjepa2"
    keys_to_ignore_at_inference = RLT_OUTPUT_KEYS
    attribute_map: ClassVar[dict[str, str]] = {
        "num_channels": "in_chans",
        "image_size": "crop_size",
        "num_frames": "frames_per_clip",
    }

    def __post_init__(self, **kwargs):
        super().__post_init__(**self.pop_unknown_rlt_settings(kwargs))
        self.validate_rlt_settings()
        self.validate_tubelet_grid()

    def validate_tubelet_grid(self) -> None:
        """The patch must be one square size that tiles the crop, and the clip whole tubelets."""
        patch = self.patch_size
        if isinstance(patch, (list, tuple)):
            if len(patch) != 2 or patch[0] != patch[1]:
                raise ValueError(
                    f"RLTVJEPA2Config: patch_size must be one int (V-JEPA 2's patches are square), got {list(patch)}"
                )
            # V-JEPA 2's Conv3d and RoPE read patch_size as an int.
            self.patch_size = patch = int(patch[0])
        problems = []
        if self.crop_size % patch:
            problems.append(f"crop_size {self.crop_size} is not a multiple of patch_size {patch}")
        if self.frames_per_clip < self.tubelet_size or self.frames_per_clip % self.tubelet_size:
            problems.append(
                f"frames_per_clip {self.frames_per_clip} is not a multiple of tubelet_size {self.tubelet_size}"
            )
        if problems:
            raise ValueError("RLTVJEPA2Config: " + "; ".join(problems))

    # Token geometry, read by the architecture registry under the same names for every architecture.

    @property
    def rlt_num_frames(self) -> int:
        """Frames per clip the checkpoint was trained with (V-JEPA 2 also runs longer clips)."""
        return self.frames_per_clip

    @property
    def rlt_fixed_num_frames(self) -> bool:
        """False: RoPE has no fixed length, so clips of any whole number of tubelets run."""
        return False

    @property
    def rlt_image_size(self) -> tuple[int, int]:
        return self.crop_size, self.crop_size

    @property
    def rlt_num_channels(self) -> int:
        return self.in_chans

    @property
    def rlt_tubelet_size(self) -> int:
        return self.tubelet_size

    @property
    def rlt_patch_size(self) -> tuple[int, int]:
        return self.patch_size, self.patch_size

    @property
    def rlt_token_grid(self) -> tuple[int, int, int]:
        """``(T', H', W')`` of a ``frames_per_clip`` clip."""
        cells = self.crop_size // self.patch_size
        return self.frames_per_clip // self.tubelet_size, cells, cells

    @property
    def rlt_num_prefix_tokens(self) -> int:
        return 0

    @property
    def rlt_input_name(self) -> str:
        return "pixel_values_videos"


RLTVJEPA2Config.register_for_auto_class()
