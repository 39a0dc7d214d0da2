"""RLT VideoMAE: transformers' VideoMAE with run-length tokenization.

Same weight names as ``VideoMAEModel`` / ``VideoMAEForVideoClassification``, so vanilla checkpoints
load as they are; only the length encoding is new. What changes: only kept tubelets are embedded,
each keeps the sinusoidal position of its original slot plus a length encoding, and the clips of a
batch run packed with block-diagonal attention.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import initialization as init
from transformers.models.videomae.modeling_videomae import (
    VideoMAELayer,
    VideoMAEPatchEmbeddings,
    VideoMAEPreTrainedModel,
    VideoMAESelfAttention,
)

from .configuration_rlt_videomae import RLTVideoMAEConfig
from .modeling_rlt import (
    EncodedClips,
    LengthEncoding,
    PackedAttentionLayout,
    PackedSelfAttentionMixin,
    RLTPreTrainedMixin,
    RLTVideoClassifierMixin,
    RLTVideoModelMixin,
    embed_tubelets,
)
from .packing import PackedSequence
from .tokenizer import RunLengthTokens

__all__ = [
    "LEGACY_KEY_MAPPING",
    "RLTVideoMAEForVideoClassification",
    "RLTVideoMAEModel",
    "RLTVideoMAEPreTrainedModel",
    "sinusoid_position_table",
]

# Public VideoMAE checkpoints name the attention biases q_bias / v_bias. transformers renames them
# only for its own model_type (and not at all in some 5.x releases): without this they load as zeros.
LEGACY_KEY_MAPPING = {
    r"attention\.attention\.q_bias": "attention.attention.query.bias",
    r"attention\.attention\.v_bias": "attention.attention.value.bias",
}


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed sin-cos table ``(num_positions, dim)``, computed in float64 like the original."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angles = position / torch.pow(10000.0, exponent)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class RLTVideoMAEEmbeddings(nn.Module):
    """Kept tubelets -> patch embedding + original sinusoidal position + run-length encoding: ``(total, hidden)``."""

    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__()
        self.patch_embeddings = VideoMAEPatchEmbeddings(config)
        self.num_patches = self.patch_embeddings.num_patches
        # Filled by _init_weights (a tensor made here would stay on the meta device under from_pretrained).
        self.register_buffer("position_embeddings", torch.empty(self.num_patches, config.hidden_size), persistent=False)
        max_run = config.rlt_token_grid[0]
        self.length_embeddings = LengthEncoding(max_run, config.hidden_size) if config.rlt_use_length_encoding else None
        self.config = config  # rlt_run_embedding is read per forward: a converted model can switch it

    def forward(self, pixel_values: torch.Tensor, tokens: RunLengthTokens, packed: PackedSequence) -> torch.Tensor:
        return embed_tubelets(
            pixel_values,
            self.patch_embeddings.projection,
            tokens,
            packed,
            run_embedding=self.config.rlt_run_embedding,
            positions=self.position_embeddings,
            length_encoding=self.length_embeddings,
        )


class RLTVideoMAESelfAttention(PackedSelfAttentionMixin, VideoMAESelfAttention):
    def packed_layout(self) -> PackedAttentionLayout:
        # The output projection is VideoMAESelfOutput's, a sibling module: this one returns the context.
        projections = (self.query, self.key, self.value)
        return PackedAttentionLayout(projections, None, self.attention_head_size, self.scaling, self.dropout_prob)


class RLTVideoMAELayer(VideoMAELayer):
    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__(config)
        self.attention.attention = RLTVideoMAESelfAttention(config)


class RLTVideoMAEEncoder(nn.Module):
    """``VideoMAEEncoder``'s layers and weight names; ``RLTVideoModelMixin.encode`` runs them over packed tokens."""

    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([RLTVideoMAELayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False


class RLTVideoMAEPreTrainedModel(RLTPreTrainedMixin, VideoMAEPreTrainedModel):
    config_class = RLTVideoMAEConfig
    config: RLTVideoMAEConfig
    _no_split_modules: ClassVar[list[str]] = ["RLTVideoMAEEmbeddings", "RLTVideoMAELayer"]
    legacy_key_mapping = LEGACY_KEY_MAPPING

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, RLTVideoMAEEmbeddings):
            init.copy_(module.position_embeddings, sinusoid_position_table(module.num_patches, self.config.hidden_size))


class RLTVideoMAEModel(RLTVideoModelMixin, RLTVideoMAEPreTrainedModel):
    """VideoMAE encoder over run-length tokens. Returns packed hidden states (see ``RLTModelOutput``)."""

    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__(config)
        self.embeddings = RLTVideoMAEEmbeddings(config)
        self.encoder = RLTVideoMAEEncoder(config)
        self.layernorm = (
            None if config.use_mean_pooling else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        )
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def encoder_parts(self):
        return self.embeddings, self.encoder.layer, self.layernorm


class RLTVideoMAEForVideoClassification(RLTVideoClassifierMixin, RLTVideoMAEPreTrainedModel):
    """VideoMAE video classifier over run-length tokens; the head pools each clip's own tokens."""

    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.videomae = RLTVideoMAEModel(config)
        self.fc_norm = nn.LayerNorm(config.hidden_size) if config.use_mean_pooling else None
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def clip_logits(self, encoded: EncodedClips) -> torch.Tensor:
        if self.fc_norm is not None:
            return self.classifier(self.fc_norm(encoded.pool("mean", self.config.rlt_pooling)))
        return self.classifier(encoded.pool("first"))


RLTVideoMAEModel.register_for_auto_class("AutoModel")
RLTVideoMAEForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
