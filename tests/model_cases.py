"""One case per RLT architecture for the common model tests (transformers' ``ModelTesterMixin`` habit).

A case knows how to build a tiny vanilla transformers model and the RLT model with the same weights.
Every case uses the same token geometry (8 frames of 32x32 in 2x16x16 tubelets: a (4, 2, 2) grid of
16 tubelet tokens, plus the architecture's prefix tokens), so that ``clips_with_repeats`` keeps
known counts for all of them. Adding an architecture to the suite = adding a case to ``CASES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from conftest import clips_with_repeats, noise_clips, randomise, vanilla_and_rlt

from rlt import registry

GRID = (4, 2, 2)
TUBELETS = 16  # T' * H' * W'
REPEAT_COUNTS = [16, 13, 6]  # tubelets each clip of clips_with_repeats keeps at threshold 0
__all__ = [
    "CASES",
    "GRID",
    "REPEAT_COUNTS",
    "SHAPE",
    "TUBELETS",
    "clips_repeating_in_time",
    "clips_with_repeats",
    "noise_clips",
    "without_positions",
]
SHAPE = registry.ModelShape(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_frames=8, image_size=32
)


@dataclass(frozen=True)
class ModelCase:
    """A tiny model pair of one registered architecture.

    Attributes:
        name: the architecture's ``rlt.registry`` name.
        randomised: parameter name endings drawn from a normal distribution after construction
            (transformers starts biases, ViViT's CLS token and position table at zero), so that a
            weight that failed to load, or a row taken from the wrong place, shows.
        config_fields: extra vanilla config fields.
        rotary_attention: ``(module, class name, method)`` of each attention class that rotates queries
            and keys by position (V-JEPA 2's RoPE: transformers' ``apply_rotary_embeddings`` for the
            vanilla model, the RLT class's ``rotate`` for the packed one), which a test without positions
            replaces with the identity; empty for architectures with a position table.
    """

    name: str
    randomised: tuple[str, ...] = ("bias",)
    config_fields: tuple[tuple[str, object], ...] = ()
    rotary_attention: tuple[tuple[str, str, str], ...] = ()

    def __str__(self) -> str:
        return self.name

    @property
    def architecture(self) -> registry.Architecture:
        return registry.get(self.name)

    def vanilla_config(self, **fields):
        return self.architecture.vanilla_config(SHAPE, **{"num_labels": 5, **dict(self.config_fields), **fields})

    def rlt_config(self, **settings):
        """The RLT config; ``settings`` may mix ``rlt_*`` settings and other config fields."""
        fields = {key: value for key, value in settings.items() if not key.startswith("rlt_")}
        rlt_settings = {key: value for key, value in settings.items() if key.startswith("rlt_")}
        return self.architecture.rlt_config(self.vanilla_config(**fields), **rlt_settings)

    def randomise(self, model):
        return randomise(model, self.randomised)

    def vanilla_and_rlt(self, base: bool = False, **settings):
        """A vanilla model (classifier, or ``base`` model) and the RLT one with its weights, both in eval mode."""
        rlt_model = self.rlt_model(base, **settings)
        vanilla_class = self.architecture.vanilla_model_class if base else self.architecture.vanilla_classifier_class
        fields = {key: value for key, value in settings.items() if not key.startswith("rlt_")}
        return vanilla_and_rlt(self.randomise(vanilla_class(self.vanilla_config(**fields))), rlt_model)

    def rlt_model(self, base: bool = False, **settings):
        return self.architecture.rlt_class(not base)(self.rlt_config(**settings)).eval()

    @property
    def prefix(self) -> int:
        return self.rlt_config().rlt_num_prefix_tokens

    @property
    def input_name(self) -> str:
        return self.rlt_config().rlt_input_name

    def video(self, clips: torch.Tensor) -> dict:
        """``{input name: clips}`` for the model's forward."""
        return {self.input_name: clips}


def clips_repeating_in_time(ragged: bool = True) -> torch.Tensor:
    """Two noise clips whose tubelets repeat exactly in time, never across space, at threshold 0:

    - clip 0: cell (0, 0) is static (one run of 4 steps), cell (0, 1) holds still over steps 0-1 and
      over steps 2-3 (two runs of 2), the other cells change every frame: it keeps 11 of its 16 tubelets;
    - clip 1 (``ragged``): static, keeps 4; otherwise another clip like clip 0 (both keep 11: a uniform batch).

    A repeat is one frame held still: RLT compares a tubelet's last frame with the first frame of the
    one before, so a tubelet is both dropped and identical to the one it repeats only when its frames
    are too. A time step is 2 frames; cell (h, w) is pixels ``[16h:16h+16, 16w:16w+16]``.
    """
    clips = noise_clips(2, seed=1)
    for index in range(1 if ragged else 2):
        clip = clips[index]
        clip[1:, :, :16, :16] = clip[0, :, :16, :16]
        clip[1:4, :, :16, 16:] = clip[0, :, :16, 16:]
        clip[5:8, :, :16, 16:] = clip[4, :, :16, 16:]
    if ragged:
        clips[1, 1:] = clips[1, 0]
    return clips


def without_positions(model):
    """``model`` with every position table zeroed (VideoMAE's sinusoid table, ViViT's learned one), in place."""
    with torch.no_grad():
        for module in model.modules():
            table = getattr(module, "position_embeddings", None)
            if isinstance(table, torch.Tensor):
                table.zero_()
    return model


CASES = [
    ModelCase("videomae"),
    ModelCase("vivit", randomised=("bias", "cls_token", "position_embeddings")),
    # V-JEPA 2 with a one-layer attentive pooler and a small JEPA predictor (which RLT does not build).
    ModelCase(
        "vjepa2",
        randomised=("bias", "query_tokens"),
        config_fields=(
            ("num_pooler_layers", 1),
            ("pred_hidden_size", 16),
            ("pred_num_hidden_layers", 1),
            ("pred_num_attention_heads", 2),
        ),
        rotary_attention=(
            ("transformers.models.vjepa2.modeling_vjepa2", "VJEPA2RopeAttention", "apply_rotary_embeddings"),
            ("rlt.models.modeling_rlt_vjepa2", "RLTVJEPA2RopeAttention", "rotate"),
        ),
    ),
]
