"""RLT ViViT: transformers' ViViT with run-length tokenization.

Same weight names as ``VivitModel`` / ``VivitForVideoClassification``, so vanilla checkpoints load as
they are; only the length encoding is new. What changes: only kept tubelets are embedded, each keeps
the learned position of its original slot plus a length encoding, every clip starts with its own CLS
token (CLS position, no length encoding), and the clips of a batch run packed with block-diagonal
attention. The classifier reads each clip's CLS token.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers.models.vivit.modeling_vivit import (
    VivitAttention,
    VivitEmbeddings,
    VivitLayer,
    VivitPooler,
    VivitPreTrainedModel,
)

from .configuration_rlt_vivit import RLTVivitConfig
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
    "RLTVivitForVideoClassification",
    "RLTVivitModel",
    "RLTVivitPreTrainedModel",
]

# Checkpoints written by transformers (google/vivit-*, and save_pretrained of current versions) use the
# older ViT layout. transformers renames them by class name (VivitModel), which our classes do not get.
LEGACY_KEY_MAPPING = {
    r"encoder\.layer\.": "layers.",
    r"attention\.attention\.query\.": "attention.q_proj.",
    r"attention\.attention\.key\.": "attention.k_proj.",
    r"attention\.attention\.value\.": "attention.v_proj.",
    r"attention\.output\.dense\.": "attention.o_proj.",
    r"intermediate\.dense\.": "mlp.fc1.",
    r"output\.dense\.": "mlp.fc2.",  # after attention.output.dense, which no longer matches
}


class RLTVivitEmbeddings(VivitEmbeddings):
    """Each clip's CLS token, then its kept tubelets: patch embedding + learned position of the original
    slot + run-length encoding; ``(total, hidden)``."""

    def __init__(self, config: RLTVivitConfig):
        super().__init__(config)
        max_run = config.rlt_token_grid[0]
        self.length_embeddings = LengthEncoding(max_run, config.hidden_size) if config.rlt_use_length_encoding else None
        self.config = config  # rlt_run_embedding is read per forward: a converted model can switch it

    def forward(self, pixel_values: torch.Tensor, tokens: RunLengthTokens, packed: PackedSequence) -> torch.Tensor:
        # Row 0 of the table is the CLS position, row 1 + i tubelet i's.
        table = self.position_embeddings[0]
        embeddings = embed_tubelets(
            pixel_values,
            self.patch_embeddings.projection,
            tokens,
            packed,
            run_embedding=self.config.rlt_run_embedding,
            positions=table[1:],
            prefix_tokens=self.cls_token[0] + table[:1],
            length_encoding=self.length_embeddings,
        )
        return self.dropout(embeddings)


class RLTVivitAttention(PackedSelfAttentionMixin, VivitAttention):
    def packed_layout(self) -> PackedAttentionLayout:
        projections = (self.q_proj, self.k_proj, self.v_proj)
        return PackedAttentionLayout(projections, self.o_proj, self.head_dim, self.scaling, self.attention_dropout)


class RLTVivitLayer(VivitLayer):
    def __init__(self, config: RLTVivitConfig):
        super().__init__(config)
        self.attention = RLTVivitAttention(config)


class RLTVivitPreTrainedModel(RLTPreTrainedMixin, VivitPreTrainedModel):
    config_class = RLTVivitConfig
    config: RLTVivitConfig
    _no_split_modules: ClassVar[list[str]] = ["RLTVivitEmbeddings", "RLTVivitLayer"]
    legacy_key_mapping = LEGACY_KEY_MAPPING


class RLTVivitModel(RLTVideoModelMixin, RLTVivitPreTrainedModel):
    """ViViT encoder over run-length tokens. Returns packed hidden states (see ``RLTModelOutput``):
    each clip's CLS token first, then its kept tokens; ``pooler_output`` from the CLS tokens."""

    def __init__(self, config: RLTVivitConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = RLTVivitEmbeddings(config)
        self.layers = nn.ModuleList([RLTVivitLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = VivitPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def encoder_parts(self):
        return self.embeddings, self.layers, self.layernorm

    def output_extras(self, encoded: EncodedClips) -> dict:
        pooled = self.pooler(encoded.pool("first").unsqueeze(1)) if self.pooler is not None else None
        return {"pooler_output": pooled}


class RLTVivitForVideoClassification(RLTVideoClassifierMixin, RLTVivitPreTrainedModel):
    """ViViT video classifier over run-length tokens; the head reads each clip's own CLS token."""

    def __init__(self, config: RLTVivitConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vivit = RLTVivitModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def clip_logits(self, encoded: EncodedClips) -> torch.Tensor:
        return self.classifier(encoded.pool("first"))


RLTVivitModel.register_for_auto_class("AutoModel")
RLTVivitForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
