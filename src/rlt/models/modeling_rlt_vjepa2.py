"""RLT V-JEPA 2: transformers' V-JEPA 2 encoder and attentive-probe classifier with run-length tokenization.

Same weight names as ``VJEPA2Model`` / ``VJEPA2ForVideoClassification``, so vanilla checkpoints load as
they are; only the length encoding is new. What changes:

- only kept tubelets go through the Conv3d patch embedding, plus a run-length encoding;
- the encoder runs the clips of a batch packed (block-diagonal attention), and its 3D RoPE rotates
  each kept token by its ORIGINAL (t, h, w) position: V-JEPA 2 has no position table, its RoPE reads
  token ids, and the packing's ``source_positions`` are exactly those ids;
- the attentive pooler's self-attention layers run packed over each clip's own tokens, and its learned
  query attends to its own clip's tokens only.

The JEPA predictor (masked-latent prediction, used in pre-training) is not built: ``RLTVJEPA2Model`` is
the encoder, as ``VJEPA2Model(..., skip_predictor=True)`` runs it. A vanilla checkpoint's
``predictor.*`` weights are skipped on load and an RLT checkpoint does not save them.

V-JEPA 2 takes clips of any whole number of tubelets (RoPE has no fixed length), so these models do
too; frames must be a multiple of ``tubelet_size`` (transformers' Conv3d would silently drop the rest)
and frames must be ``crop_size`` square (RoPE splits token ids on that grid). Fewer frames than one
tubelet (an image) are repeated to fill it, as transformers does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers.models.vjepa2.modeling_vjepa2 import (
    VJEPA2AttentivePooler,
    VJEPA2Embeddings,
    VJEPA2Layer,
    VJEPA2PoolerCrossAttention,
    VJEPA2PoolerCrossAttentionLayer,
    VJEPA2PoolerSelfAttention,
    VJEPA2PoolerSelfAttentionLayer,
    VJEPA2PreTrainedModel,
    VJEPA2RopeAttention,
)
from transformers.utils.generic import can_return_tuple

from .attention_kernels import packed_cross_attention
from .configuration_rlt_vjepa2 import RLTVJEPA2Config
from .modeling_rlt import (
    EncodedClips,
    LengthEncoding,
    PackedAttentionLayout,
    PackedSelfAttentionMixin,
    RLTModelOutput,
    RLTPreTrainedMixin,
    RLTVideoClassifierMixin,
    RLTVideoClassifierOutput,
    RLTVideoModelMixin,
    embed_tubelets,
)
from .packing import PackedSequence
from .tokenizer import RunLengthTokens

__all__ = [
    "RLTVJEPA2ForVideoClassification",
    "RLTVJEPA2Model",
    "RLTVJEPA2PreTrainedModel",
]


def reject_predictor_arguments(kwargs: dict) -> None:
    """V-JEPA 2's predictor arguments, which the RLT encoder cannot honour: a clear error, not a silent skip."""
    for name in ("context_mask", "target_mask"):
        if kwargs.get(name) is not None:
            raise ValueError(
                f"{name} is an argument of V-JEPA 2's JEPA predictor, which RLT V-JEPA 2 does not include "
                "(it runs the encoder only); use transformers' VJEPA2Model for masked prediction"
            )
    if kwargs.get("skip_predictor", True) is False:
        raise ValueError(
            "skip_predictor=False asks for V-JEPA 2's JEPA predictor, which RLT V-JEPA 2 does not include "
            "(it runs the encoder only, as skip_predictor=True does)"
        )
    kwargs.pop("skip_predictor", None)


def rope_positions(token_ids: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Original (frame, height, width) of tokens from their ids: int64 ``(total,)`` -> three ``(total, 1, 1)``.

    V-JEPA 2 numbers a clip's tokens ``t * g^2 + h * g + w`` (``g = crop_size // patch_size``), which are
    the packing's ``source_positions``. The trailing dims broadcast over heads against packed queries
    ``(total, heads, head_dim)``.
    """
    ids = token_ids.view(-1, 1, 1)
    tokens_per_frame = grid_size * grid_size
    within_frame = ids % tokens_per_frame
    return ids // tokens_per_frame, within_frame // grid_size, within_frame % grid_size


def rope_tables(
    token_ids: torch.Tensor, grid_size: int, dims: tuple[int, int, int], dtype: torch.dtype
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """V-JEPA 2's rotation, ``(cos, sin)`` per axis (frame, height, width), each ``(total, 1, dim)``.

    The angles depend on the positions only, so they are computed once per forward (per dtype) and the
    layers share them, where transformers' ``rotate_queries_or_keys`` recomputes them for the queries
    and keys of every layer. Its operations, in its order and dtype, so that the values are its values.
    """
    tables = []
    for positions, dim in zip(rope_positions(token_ids, grid_size), dims):
        omega = torch.arange(dim // 2, dtype=dtype, device=token_ids.device)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        angles = positions * omega  # (total, 1, dim / 2)
        tables.append((angles.cos().repeat(1, 1, 2), angles.sin().repeat(1, 1, 2)))
    return tables


def rotate_packed(x: torch.Tensor, tables: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``rope_tables``' rotation of packed queries or keys ``(total, heads, head_dim)``: the leading head
    dims split into the frame, height and width parts, each turned as ``rotate_queries_or_keys`` does; the
    dims left over stay as they are."""
    parts, start = [], 0
    for cos, sin in tables:
        part = x[..., start : start + cos.shape[-1]]
        first, second = part.unflatten(-1, (-1, 2)).unbind(dim=-1)
        turned = torch.stack((-second, first), dim=-1).flatten(-2)
        parts.append((part * cos) + (turned * sin))
        start += cos.shape[-1]
    if start < x.shape[-1]:
        parts.append(x[..., start:])
    return torch.cat(parts, dim=-1)


class RLTVJEPA2Embeddings(VJEPA2Embeddings):
    """Kept tubelets -> Conv3d patch embedding + run-length encoding: ``(total, hidden)``. No position
    term: V-JEPA 2's positions enter through RoPE in every attention layer."""

    def __init__(self, config: RLTVJEPA2Config, hidden_size: int):
        super().__init__(config, hidden_size=hidden_size)
        max_run = config.frames_per_clip // config.tubelet_size
        self.length_embeddings = LengthEncoding(max_run, hidden_size) if config.rlt_use_length_encoding else None

    def forward(
        self, pixel_values_videos: torch.Tensor, tokens: RunLengthTokens, packed: PackedSequence
    ) -> torch.Tensor:
        return embed_tubelets(
            pixel_values_videos,
            self.patch_embeddings.proj,
            tokens,
            packed,
            run_embedding=self.config.rlt_run_embedding,
            length_encoding=self.length_embeddings,
        )


class RLTVJEPA2RopeAttention(PackedSelfAttentionMixin, VJEPA2RopeAttention):
    """V-JEPA 2's RoPE self-attention over packed tokens: ``(total, hidden) -> (total, hidden)``,
    block-diagonal per clip, each token rotated by its original (t, h, w) position."""

    def packed_layout(self) -> PackedAttentionLayout:
        projections = (self.query, self.key, self.value)
        return PackedAttentionLayout(projections, self.proj, self.attention_head_size, self.scaling, self.dropout_prob)

    def rotate(self, query: torch.Tensor, key: torch.Tensor, packed: PackedSequence):
        dims = (self.d_dim, self.h_dim, self.w_dim)
        cache_key = ("rope_tables", self.grid_size, dims, query.dtype)
        tables = packed.cached(
            cache_key, lambda: rope_tables(packed.source_positions, self.grid_size, dims, query.dtype)
        )
        return rotate_packed(query, tables), rotate_packed(key, tables)


def drop_clip_path(hidden_states: torch.Tensor, drop_path: nn.Module, packed: PackedSequence) -> torch.Tensor:
    """V-JEPA 2's stochastic depth on packed ``(total, hidden)`` tokens: one draw per CLIP, as the vanilla
    model draws one per sample (same draws in the same order, so a seeded run matches it)."""
    drop_prob = getattr(drop_path, "drop_prob", 0.0)
    if drop_prob == 0.0 or not drop_path.training:
        return hidden_states
    keep_prob = 1 - drop_prob
    draws = torch.rand((packed.batch_size, 1), dtype=hidden_states.dtype, device=hidden_states.device)
    keep = torch.floor(draws + keep_prob)
    return hidden_states.div(keep_prob) * packed.per_token(keep)


class RLTVJEPA2Layer(VJEPA2Layer):
    def __init__(
        self,
        config: RLTVJEPA2Config,
        drop_path_rate: float,
        hidden_size: int,
        num_attention_heads: int,
        mlp_ratio: float,
    ):
        super().__init__(config, drop_path_rate, hidden_size, num_attention_heads, mlp_ratio)
        self.attention = RLTVJEPA2RopeAttention(config, hidden_size, num_attention_heads)

    def forward(self, hidden_states: torch.Tensor, packed: PackedSequence) -> torch.Tensor:
        """``(total, hidden) -> (total, hidden)``."""
        attention_output, _ = self.attention(self.norm1(hidden_states), packed=packed)
        hidden_states = drop_clip_path(attention_output, self.drop_path, packed) + hidden_states
        mlp_output = self.mlp(self.norm2(hidden_states))
        return drop_clip_path(mlp_output, self.drop_path, packed) + hidden_states


class RLTVJEPA2Encoder(nn.Module):
    """``VJEPA2Encoder``'s modules and weight names (``embeddings``, ``layer``, ``layernorm``);
    ``RLTVideoModelMixin.encode`` runs them over packed tokens."""

    def __init__(self, config: RLTVJEPA2Config):
        super().__init__()
        self.config = config
        self.embeddings = RLTVJEPA2Embeddings(config, hidden_size=config.hidden_size)
        layers = config.num_hidden_layers
        drop_path_rates = [config.drop_path_rate * i / (layers - 1) if layers > 1 else 0.0 for i in range(layers)]
        self.layer = nn.ModuleList(
            [
                RLTVJEPA2Layer(config, rate, config.hidden_size, config.num_attention_heads, config.mlp_ratio)
                for rate in drop_path_rates
            ]
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False


class RLTVJEPA2PoolerSelfAttention(PackedSelfAttentionMixin, VJEPA2PoolerSelfAttention):
    """The pooler's self-attention (no RoPE) over packed tokens, block-diagonal per clip."""

    def packed_layout(self) -> PackedAttentionLayout:
        projections = (self.q_proj, self.k_proj, self.v_proj)
        return PackedAttentionLayout(projections, self.out_proj, self.head_dim, self.scale, self.dropout)


class RLTVJEPA2PoolerCrossAttention(VJEPA2PoolerCrossAttention):
    """The pooler's query cross-attention: each clip's query attends to its own packed tokens."""

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        packed: PackedSequence | None = None,
        key_weights: torch.Tensor | None = None,
    ):
        """Packed: ``queries`` ``(B, 1, hidden)``, ``keys``/``values`` ``(total, hidden)`` -> ``(B, 1, hidden)``."""
        if packed is None:
            return super().forward(queries, keys, values, attention_mask=attention_mask)
        batch = queries.shape[0]
        query = self.q_proj(queries).view(batch, self.num_heads, self.head_dim)
        shape = (keys.shape[0], self.num_heads, self.head_dim)
        context = packed_cross_attention(
            query,
            self.k_proj(keys).view(shape),
            self.v_proj(values).view(shape),
            packed,
            scaling=self.scale,
            dropout=self.dropout if self.training else 0.0,
            key_weights=key_weights,
        )
        return context.reshape(batch, 1, self.embed_dim), None


class RLTVJEPA2PoolerSelfAttentionLayer(VJEPA2PoolerSelfAttentionLayer):
    def __init__(self, config: RLTVJEPA2Config):
        super().__init__(config)
        self.self_attn = RLTVJEPA2PoolerSelfAttention(config)

    def forward(self, hidden_states: torch.Tensor, packed: PackedSequence) -> torch.Tensor:
        """``(total, hidden) -> (total, hidden)``."""
        attention_output, _ = self.self_attn(self.layer_norm1(hidden_states), packed=packed)
        hidden_states = hidden_states + attention_output
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class RLTVJEPA2PoolerCrossAttentionLayer(VJEPA2PoolerCrossAttentionLayer):
    def __init__(self, config: RLTVJEPA2Config):
        super().__init__(config)
        self.cross_attn = RLTVJEPA2PoolerCrossAttention(config)

    def forward(
        self,
        queries: torch.Tensor,
        hidden_states: torch.Tensor,
        packed: PackedSequence,
        key_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``queries`` ``(B, 1, hidden)``, ``hidden_states`` ``(total, hidden)`` -> ``(B, 1, hidden)``."""
        tokens = self.layer_norm1(hidden_states)  # as in V-JEPA 2, the query itself is not normalised
        attention_output, _ = self.cross_attn(queries, tokens, tokens, packed=packed, key_weights=key_weights)
        hidden_states = queries + attention_output
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class RLTVJEPA2AttentivePooler(VJEPA2AttentivePooler):
    """V-JEPA 2's attentive probe over packed clips: ``(total, hidden) -> (B, hidden)``."""

    def __init__(self, config: RLTVJEPA2Config):
        super().__init__(config)
        self.cross_attention_layer = RLTVJEPA2PoolerCrossAttentionLayer(config)
        self.self_attention_layers = nn.ModuleList(
            [RLTVJEPA2PoolerSelfAttentionLayer(config) for _ in range(config.num_pooler_layers)]
        )

    def forward(
        self, hidden_states: torch.Tensor, packed: PackedSequence, key_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``key_weights`` ``(total,)``: each token's weight in the query's softmax (its run length for
        ``rlt_pooling="length_weighted"``), or None for plain attention over the kept tokens."""
        for layer in self.self_attention_layers:
            hidden_states = layer(hidden_states, packed=packed)
        queries = self.query_tokens.expand(packed.batch_size, -1, -1)
        return self.cross_attention_layer(queries, hidden_states, packed=packed, key_weights=key_weights).squeeze(1)


class RLTVJEPA2PreTrainedModel(RLTPreTrainedMixin, VJEPA2PreTrainedModel):
    config_class = RLTVJEPA2Config
    config: RLTVJEPA2Config
    _no_split_modules: ClassVar[list[str]] = [
        "RLTVJEPA2Embeddings",
        "RLTVJEPA2Layer",
        "RLTVJEPA2PoolerSelfAttentionLayer",
        "RLTVJEPA2PoolerCrossAttentionLayer",
    ]
    # The JEPA predictor is not built (see the module docstring): its weights are skipped on load.
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"(^|\.)predictor\."]


class RLTVJEPA2Model(RLTVideoModelMixin, RLTVJEPA2PreTrainedModel):
    """V-JEPA 2 encoder over run-length tokens. Returns packed hidden states (see ``RLTModelOutput``)."""

    def __init__(self, config: RLTVJEPA2Config):
        super().__init__(config)
        self.encoder = RLTVJEPA2Encoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.encoder.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> RLTModelOutput:
        """
        Args:
            pixel_values_videos: ``(B, T, C, crop_size, crop_size)``, normalised as the checkpoint's
                processor does; ``T`` any multiple of ``tubelet_size``. ``pixel_values=`` is accepted too.
            keep_mask: optional bool ``(B, T', H', W')`` computed ahead (``rlt.run_length_tokenize``
                in a data loader); by default the model tokenizes with its config's threshold.
            output_hidden_states: also return the packed embeddings and every layer's output.
            return_dict: False (or ``config.return_dict`` False) returns a tuple of the output's fields
                that are set, ``last_hidden_state`` first, as transformers' models do.
        """
        return self.encode(pixel_values_videos, keep_mask, output_hidden_states, **kwargs).to_output()

    def encoder_parts(self):
        return self.encoder.embeddings, self.encoder.layer, self.encoder.layernorm

    def take_video(self, clips: torch.Tensor | None, kwargs: dict) -> torch.Tensor:
        """The clips, under transformers' V-JEPA 2 name or under ``pixel_values`` (what ``rlt``'s video
        processor, collators and the VideoMAE / ViViT models use), which is accepted as an alias."""
        alias = kwargs.pop("pixel_values", None)
        if clips is not None and alias is not None:
            raise ValueError(
                "pass the clips once: as pixel_values_videos (V-JEPA 2's name) or as pixel_values, not both"
            )
        clips = super().take_video(clips if clips is not None else alias, kwargs)
        reject_predictor_arguments(kwargs)
        if isinstance(clips, torch.Tensor) and clips.dim() == 5 and clips.shape[1] < self.config.tubelet_size:
            clips = clips.repeat(1, self.config.tubelet_size, 1, 1, 1)  # as transformers does for images
        return clips


class RLTVJEPA2ForVideoClassification(RLTVideoClassifierMixin, RLTVJEPA2PreTrainedModel):
    """V-JEPA 2 video classifier over run-length tokens: the attentive probe pools each clip's own tokens.

    With ``rlt_pooling="length_weighted"`` a token counts ``L`` times in the probe's query attention
    (its run length), as if the repeats it stands for were there.
    """

    def __init__(self, config: RLTVJEPA2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vjepa2 = RLTVJEPA2Model(config)
        self.pooler = RLTVJEPA2AttentivePooler(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels, bias=True)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> RLTVideoClassifierOutput:
        """Like ``VJEPA2ForVideoClassification.forward``; ``keep_mask`` as in ``RLTVJEPA2Model``.
        ``return_dict=False`` returns ``RLTVideoClassifierOutput.to_tuple()``: ``(loss, logits, ...)``
        with labels, ``(logits, ...)`` without, as transformers does."""
        encoded = self.vjepa2.encode(pixel_values_videos, keep_mask, output_hidden_states, **kwargs)
        return self.classification_output(encoded, labels, kwargs)

    def clip_logits(self, encoded: EncodedClips) -> torch.Tensor:
        key_weights = encoded.run_lengths().float() if self.config.rlt_pooling == "length_weighted" else None
        return self.classifier(self.pooler(encoded.last_hidden_state, encoded.packed, key_weights=key_weights))


RLTVJEPA2Model.register_for_auto_class("AutoModel")
RLTVJEPA2ForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
