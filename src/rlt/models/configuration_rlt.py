"""The RLT settings every RLT architecture config carries, their checks, and the token geometry.

Kept apart from the architecture configs so that VideoMAE and ViViT declare them once. The fields
are a dataclass so that transformers' config dataclasses pick them up and serialise them.

Token geometry: every RLT config answers the same ``rlt_*`` properties (frames, image size,
channels, tubelet and patch size, token grid, prefix tokens, input name) whatever its own fields
are called, and the shared model code and the tools read only those. ``RLTSettings`` derives the
grid from the others and reads the field names most transformers video configs use
(``num_frames``, ``image_size``, ``num_channels``); each architecture's config defines
``rlt_tubelet_size`` and ``rlt_patch_size`` and overrides whatever its fields name differently.
"""

from __future__ import annotations

import difflib
import logging
import math
from dataclasses import dataclass, fields

from .attention_kernels import check_backend
from .tokenizer import COMPARE_TO_CHOICES, check_threshold, pixel_affine, to_pair

__all__ = [
    "LENGTH_ENCODING_INITS",
    "POOLING_CHOICES",
    "RLT_OUTPUT_KEYS",
    "RUN_EMBEDDING_CHOICES",
    "RLTSettings",
    "check_rlt_setting_names",
    "input_scale_from_processor",
    "rlt_setting_names",
]

logger = logging.getLogger(__name__)

LENGTH_ENCODING_INITS = ("zeros", "trunc_normal")
POOLING_CHOICES = ("mean", "length_weighted")
RUN_EMBEDDING_CHOICES = ("first", "mean")

# Output fields that Trainer must not collect as predictions (the configs' keys_to_ignore_at_inference).
RLT_OUTPUT_KEYS = ["hidden_states", "tokens_kept", "cu_seqlens", "keep_mask", "run_lengths"]


@dataclass(repr=False)
class RLTSettings:
    """Run-length tokenization settings (all prefixed ``rlt_``).

    Attributes:
        rlt_enabled: drop repeated tubelets; False runs every token (the vanilla model's function).
        rlt_threshold: ``tau``: a tubelet whose mean absolute difference from the one before it is at
            most this is dropped. In reference units (pixels in [0, 1] normalised with the ImageNet std).
        rlt_compare_to: ``"previous"`` (the published rule) or ``"last_kept"`` (drift-safe).
        rlt_input_scale: per channel, how much one grey level moves ``pixel_values``
            (``rescale_factor / std_c`` of the checkpoint's processor); None means the ImageNet scale.
            Lets ``rlt_threshold`` mean the same pixel change whatever the checkpoint's normalisation.
        rlt_use_length_encoding: add a learned embedding of each token's run length.
        rlt_length_encoding_init: ``"zeros"`` (training-free use: the model's function is unchanged)
            or ``"trunc_normal"`` (std 0.02, as the reference does for training).
        rlt_pooling: how mean-pooling heads average a clip's tokens: ``"mean"`` over kept tokens, or
            ``"length_weighted"`` (a token that stands for a run of 4 counts 4 times).
        rlt_proportional_attention: every self-attention softmax adds ``log L`` to the score of a key
            that stands for a run of ``L`` tubelets (ToMe's proportional attention; prefix tokens such
            as CLS weigh 1): the kept token weighs what its ``L`` repeats did in the vanilla model.
            False (default) attends to each kept token once, as the paper does.
        rlt_run_embedding: what a kept token carries into the encoder: ``"first"`` (default, the paper) the
            embedding of the first tubelet of its run at that tubelet's position; ``"mean"`` the mean of its
            run's tubelet embeddings, each with its own position (V-JEPA 2: the first's RoPE position), as
            ToMe merges tokens: what the vanilla model's ``L`` near-copies average to. Measured training-free on
            a still camera it was worse than ``"first"`` (benchmarks/RESULTS.md): an experiment.
        rlt_attention: attention backend for packed batches, see ``attention_kernels.py``.
        rlt_pack_buckets: 0 (default) packs exactly the kept tokens; ``k > 0`` rounds the packed length
            up to one of ``k`` sizes per batch size (multiples of ``B * tokens_per_clip / k``), the
            padding in dummy attention segments that no clip sees and no head pools. Outputs are the
            same; the packed length takes only those sizes, so CUDA graphs
            (``torch.compile(mode="reduce-overhead")``) are recorded once per size and replayed after
            (dynamo itself keeps one graph with the length symbolic). Pays off with the variable-length
            kernels (``varlen`` / ``flash_attn``): ``padded`` / ``eager`` pad every clip to its full length.
    """

    rlt_enabled: bool = True
    rlt_threshold: float = 0.1
    rlt_compare_to: str = "previous"
    rlt_input_scale: list[float] | None = None
    rlt_use_length_encoding: bool = True
    rlt_length_encoding_init: str = "zeros"
    rlt_pooling: str = "mean"
    rlt_proportional_attention: bool = False
    rlt_run_embedding: str = "first"
    rlt_attention: str = "auto"
    rlt_pack_buckets: int = 0

    def pop_unknown_rlt_settings(self, kwargs: dict) -> dict:
        """``kwargs`` (the extra keyword arguments ``__post_init__`` gets) without ``rlt_*`` names that are no
        RLT setting. Constructed directly (``RLTVideoMAEConfig(rlt_treshold=0.5)``), such a name is refused with
        the closest valid one; loaded from a saved dict (``from_dict`` / ``from_pretrained`` of a config.json,
        which records ``transformers_version``), it is a setting of a newer ``rlt`` and is dropped with a warning.
        """
        unknown = [name for name in kwargs if name.startswith("rlt_") and name not in rlt_setting_names()]
        if not unknown:
            return kwargs
        if self.transformers_version is None:  # not from a saved config: a typo (or a setting of another version)
            check_rlt_setting_names(unknown, what=type(self).__name__)
        logger.warning(
            "%s: the saved config has settings this version of rlt does not know, ignored: %s (saved by a newer "
            "rlt? upgrade rlt to use them)",
            type(self).__name__,
            ", ".join(f"{name}={kwargs[name]!r}" for name in unknown),
        )
        return {name: value for name, value in kwargs.items() if name not in unknown}

    def validate_rlt_settings(self) -> None:
        self.rlt_threshold = check_threshold(self.rlt_threshold, name="rlt_threshold")
        check_backend(self.rlt_attention)
        if not isinstance(self.rlt_proportional_attention, bool):
            # ValueError like every other bad setting here (transformers' config checks raise it too).
            raise ValueError(  # noqa: TRY004
                f"rlt_proportional_attention must be True or False, got {self.rlt_proportional_attention!r}"
            )
        buckets = self.rlt_pack_buckets
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 0:
            raise ValueError(
                f"rlt_pack_buckets must be a whole number >= 0 (0 = exact packing; e.g. 8 for CUDA graphs), "
                f"got {buckets!r}"
            )
        for name, value, choices in (
            ("rlt_compare_to", self.rlt_compare_to, COMPARE_TO_CHOICES),
            ("rlt_length_encoding_init", self.rlt_length_encoding_init, LENGTH_ENCODING_INITS),
            ("rlt_pooling", self.rlt_pooling, POOLING_CHOICES),
            ("rlt_run_embedding", self.rlt_run_embedding, RUN_EMBEDDING_CHOICES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if self.rlt_input_scale is not None:
            scale = [float(s) for s in self.rlt_input_scale]
            if len(scale) != self.rlt_num_channels or any(s <= 0 for s in scale):
                raise ValueError(
                    f"rlt_input_scale must hold {self.rlt_num_channels} positive numbers, got {self.rlt_input_scale}"
                )
            self.rlt_input_scale = scale

    # -- token geometry (properties, not fields: derived from the architecture's own fields) ----------

    @property
    def rlt_num_frames(self) -> int:
        """Frames per clip the model takes (see ``rlt_fixed_num_frames``)."""
        return int(self.num_frames)

    @property
    def rlt_fixed_num_frames(self) -> bool:
        """Whether the model takes exactly ``rlt_num_frames`` frames (True: a position table of that
        length, VideoMAE and ViViT) or any whole number of tubelets (False: V-JEPA 2's RoPE)."""
        return True

    @property
    def rlt_image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames the model takes."""
        return to_pair(self.image_size)

    @property
    def rlt_num_channels(self) -> int:
        return int(self.num_channels)

    @property
    def rlt_tubelet_size(self) -> int:
        """Frames per tubelet (per token)."""
        raise NotImplementedError(f"{type(self).__name__} must define rlt_tubelet_size")

    @property
    def rlt_patch_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels of a tubelet."""
        raise NotImplementedError(f"{type(self).__name__} must define rlt_patch_size")

    @property
    def rlt_token_grid(self) -> tuple[int, int, int]:
        """``(T', H', W')``: tubelet time steps and the spatial grid of one clip."""
        (height, width), (patch_h, patch_w) = self.rlt_image_size, self.rlt_patch_size
        return self.rlt_num_frames // self.rlt_tubelet_size, height // patch_h, width // patch_w

    @property
    def rlt_num_prefix_tokens(self) -> int:
        """Tokens each clip has before its tubelet tokens, never dropped (ViViT's CLS token: 1)."""
        return 0

    @property
    def rlt_tokens_per_clip(self) -> int:
        """Tokens a clip runs with when nothing is dropped, prefix tokens included."""
        return self.rlt_num_prefix_tokens + math.prod(self.rlt_token_grid)

    @property
    def rlt_input_name(self) -> str:
        """The name of the video argument of the model's ``forward``."""
        return "pixel_values"


def rlt_setting_names() -> list[str]:
    """The names of the RLT settings (the fields of ``RLTSettings``), in declaration order."""
    return [field.name for field in fields(RLTSettings)]


def check_rlt_setting_names(names, what: str = "RLT settings") -> None:
    """Raise a TypeError naming each of ``names`` that is no RLT setting, with the closest valid name."""
    valid = rlt_setting_names()
    unknown = [name for name in names if name not in valid]
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1) or difflib.get_close_matches(f"rlt_{name}", valid, n=1)
        problems.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"{what}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(problems)}; "
        f"the RLT settings are {', '.join(valid)}"
    )


def input_scale_from_processor(processor_config: dict, num_channels: int) -> list[float] | None:
    """``rescale_factor / std_c`` per channel from a (video or image) processor config dict (``pixel_affine``).

    None when the config does not say how it normalises.
    """
    affine = pixel_affine(processor_config, num_channels)
    return None if affine is None else affine[0]
