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
from transformers.utils.generic import can_return_tuple

from .configuration_rlt_videomae import RLTVideoMAEConfig
from .modeling_rlt import (
    EncodedClips,
    LengthEncoding,
    PackedSelfAttentionMixin,
    RLTModelOutput,
    RLTPreTrainedMixin,
    RLTVideoClassifierOutput,
    choose_tokens,
    classification_output,
    embed_tubelets,
    reject_unsupported,
    run_encoder,
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
        embeddings = embed_tubelets(
            pixel_values,
            self.patch_embeddings.projection,
            tokens,
            packed,
            self.config.rlt_run_embedding,
            positions=self.position_embeddings,
        )
        if self.length_embeddings is not None:
            run_lengths = packed.gather(tokens.lengths.flatten(1))
            embeddings = embeddings + self.length_embeddings(run_lengths).to(embeddings.dtype)
        return embeddings


class RLTVideoMAESelfAttention(PackedSelfAttentionMixin, VideoMAESelfAttention):
    pass


class RLTVideoMAELayer(VideoMAELayer):
    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__(config)
        self.attention.attention = RLTVideoMAESelfAttention(config)


class RLTVideoMAEEncoder(nn.Module):
    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([RLTVideoMAELayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, packed: PackedSequence, output_hidden_states: bool = False):
        return run_encoder(self.layer, hidden_states, packed, output_hidden_states)


class RLTVideoMAEPreTrainedModel(RLTPreTrainedMixin, VideoMAEPreTrainedModel):
    config_class = RLTVideoMAEConfig
    config: RLTVideoMAEConfig
    _no_split_modules: ClassVar[list[str]] = ["RLTVideoMAEEmbeddings", "RLTVideoMAELayer"]
    _can_record_outputs: ClassVar[dict] = {}
    legacy_key_mapping = LEGACY_KEY_MAPPING
    auto_class_names: ClassVar[dict[str, str]] = {
        "AutoModel": "RLTVideoMAEModel",
        "AutoModelForVideoClassification": "RLTVideoMAEForVideoClassification",
    }

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, RLTVideoMAEEmbeddings):
            init.copy_(module.position_embeddings, sinusoid_position_table(module.num_patches, self.config.hidden_size))


class RLTVideoMAEModel(RLTVideoMAEPreTrainedModel):
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

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> RLTModelOutput:
        """
        Args:
            pixel_values: ``(B, T, C, H, W)``, normalised as the checkpoint's processor does.
            keep_mask: optional bool ``(B, T', H', W')`` computed ahead (``rlt.run_length_tokenize``
                in a data loader); by default the model tokenizes with its config's threshold.
            output_hidden_states: also return every layer's packed hidden states.
            return_dict: False (or ``config.return_dict`` False) returns a tuple of the output's fields
                that are set, ``last_hidden_state`` first, as transformers' models do.
        """
        return self.encode(pixel_values, keep_mask, output_hidden_states, **kwargs).to_output()

    def encode(
        self,
        pixel_values: torch.Tensor,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> EncodedClips:
        """The forward pass, returning the packing alongside the states for the heads to pool with."""
        reject_unsupported(kwargs)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        tokens, packed = choose_tokens(self.config, pixel_values, keep_mask)
        hidden_states = self.embeddings(pixel_values, tokens, packed)
        hidden_states, all_hidden_states = self.encoder(hidden_states, packed, output_hidden_states)
        if self.layernorm is not None:
            hidden_states = self.layernorm(hidden_states)
        return EncodedClips(hidden_states, all_hidden_states, tokens, packed)


class RLTVideoMAEForVideoClassification(RLTVideoMAEPreTrainedModel):
    """VideoMAE video classifier over run-length tokens; the head pools each clip's own tokens."""

    def __init__(self, config: RLTVideoMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.videomae = RLTVideoMAEModel(config)
        self.fc_norm = nn.LayerNorm(config.hidden_size) if config.use_mean_pooling else None
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> RLTVideoClassifierOutput:
        """Like ``VideoMAEForVideoClassification.forward``; ``keep_mask`` and ``return_dict`` (a tuple:
        ``(loss, logits, ...)``, or ``(logits, ...)`` without labels) as in ``RLTVideoMAEModel``."""
        encoded = self.videomae.encode(pixel_values, keep_mask, output_hidden_states, **kwargs)
        if self.fc_norm is not None:
            pooled = self.fc_norm(encoded.pool("mean", self.config.rlt_pooling))
        else:
            pooled = encoded.pool("first")
        return classification_output(self, self.classifier(pooled), labels, encoded, kwargs)


RLTVideoMAEModel.register_for_auto_class("AutoModel")
RLTVideoMAEForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
