"""What every RLT architecture shares on the model side: embedding only the kept tubelets, the length
encoding, packed self-attention, pooling and output types. Which tokens are kept is chosen before, in
``token_choice.py`` (its names are re-exported here).

The architecture files (``modeling_rlt_videomae.py``, ``modeling_rlt_vivit.py``,
``modeling_rlt_vjepa2.py``) subclass transformers' own modules, and their models run the templates
here (``RLTVideoModelMixin``, ``RLTVideoClassifierMixin``) with per-architecture hooks. Single-dot relative imports
only: this file travels into checkpoint folders for ``trust_remote_code``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .attention_kernels import packed_attention
from .configuration_rlt import RLTSettings, check_rlt_setting_names
from .packing import PackedSequence
from .token_choice import (  # re-exported: their old import path
    check_pixel_values,
    choose_tokens,
    packed_run_lengths,
    run_length_tokenize_for,
    with_proportional_attention,
)
from .tokenizer import RunLengthTokens, to_pair

__all__ = [
    "EncodedClips",
    "LengthEncoding",
    "PackedAttentionLayout",
    "PackedSelfAttentionMixin",
    "RLTModelOutput",
    "RLTPreTrainedMixin",
    "RLTVideoClassifierMixin",
    "RLTVideoClassifierOutput",
    "RLTVideoModelMixin",
    "check_pixel_values",
    "choose_tokens",
    "embed_kept_tubelets",
    "embed_tubelets",
    "packed_run_lengths",
    "reject_unsupported",
    "run_encoder",
    "run_length_tokenize_for",
    "tubelet_patches",
    "with_proportional_attention",
]

logger = logging.getLogger(__name__)


@dataclass
class RLTModelOutput(ModelOutput):
    """Output of an RLT base model. Token tensors are packed: all clips' kept tokens end to end.

    Args:
        last_hidden_state: ``(1, total, hidden)``; clip ``i`` is ``[cu_seqlens[i], cu_seqlens[i+1])``.
        hidden_states: per layer (embeddings first), each ``(1, total, hidden)``, if asked for.
        cu_seqlens: int32 ``(B + 1,)``.
        tokens_kept: int64 ``(B,)``, tokens each clip kept (ViViT's CLS token included).
        keep_mask: bool ``(B, T', H', W')``, which tubelets were kept.
        run_lengths: int64 ``(1, total)``, time steps each packed token stands for (1 for a CLS token).
        pooler_output: ``(B, hidden)``, the pooler's output for architectures that have one (ViViT).
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    cu_seqlens: torch.Tensor | None = None
    tokens_kept: torch.Tensor | None = None
    keep_mask: torch.Tensor | None = None
    run_lengths: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None

    def per_clip(self) -> list[torch.Tensor]:
        """``last_hidden_state`` split into one ``(tokens_i, hidden)`` tensor per clip."""
        lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).tolist()
        return list(self.last_hidden_state[0].split(lengths))


@dataclass
class RLTVideoClassifierOutput(ModelOutput):
    """Output of an RLT video classifier: the usual ``loss``/``logits``, plus tokens kept per clip."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    tokens_kept: torch.Tensor | None = None


class RLTPreTrainedMixin:
    """What every RLT ``PreTrainedModel`` adds: legacy weight names, length-table init, a full ``auto_map``.

    Mixed in before the transformers ``...PreTrainedModel`` class. Subclasses set ``legacy_key_mapping``;
    the model classes of the modeling file register for their Auto class (``register_for_auto_class``).
    """

    legacy_key_mapping: ClassVar[dict[str, str]] = {}
    _can_record_outputs: ClassVar[dict] = {}  # the packed layers' outputs are collected by ``run_encoder``
    # Vanilla checkpoints have no length table; it starts as configured (zeros: training-free).
    _keys_to_ignore_on_load_missing: ClassVar[list[str]] = [r"length_embeddings"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, also mapping the architecture's legacy weight names.

        A checkpoint whose config lacks the RLT settings (a vanilla one) loads with their defaults,
        with one warning saying so. An ``rlt_*`` keyword argument that is no RLT setting is refused, with
        the closest valid name (transformers would hand it to the model's ``__init__``).
        """
        rlt_kwargs = [key for key in kwargs if key.startswith("rlt_")]
        check_rlt_setting_names(rlt_kwargs, what=f"{cls.__name__}.from_pretrained")
        kwargs["key_mapping"] = {**cls.legacy_key_mapping, **(kwargs.get("key_mapping") or {})}
        checkpoint = kwargs.get("config") or (args[0] if args else kwargs.get("pretrained_model_name_or_path"))
        if checkpoint is not None and not hasattr(checkpoint, "to_dict"):  # no config object given
            _warn_if_rlt_settings_missing(cls, checkpoint, kwargs)
        return super().from_pretrained(*args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Each class registers for one Auto class; a checkpoint folder must serve all of them.
        module = type(self).__module__
        models = [model for model in vars(sys.modules[module]).values() if _registered_rlt_model(model, module)]
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.update({model._auto_class: f"{module.rsplit('.', 1)[-1]}.{model.__name__}" for model in models})
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LengthEncoding):
            if self.config.rlt_length_encoding_init == "zeros":
                init.zeros_(module.weight)
            else:
                init.trunc_normal_(module.weight, std=0.02)


def _registered_rlt_model(value, module: str) -> bool:
    """``value`` is an RLT model class of ``module`` registered for an Auto class (``register_for_auto_class``)."""
    return (
        isinstance(value, type)
        and issubclass(value, RLTPreTrainedMixin)
        and value.__module__ == module
        and bool(vars(value).get("_auto_class"))
    )


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


def _warn_if_rlt_settings_missing(cls, checkpoint, kwargs: dict) -> None:
    """One warning when ``checkpoint``'s config lacks RLT settings that ``kwargs`` do not set either."""
    try:
        config_dict, _ = cls.config_class.get_config_dict(
            checkpoint, **{key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        )
    except (OSError, ValueError):
        return  # the load itself reports the problem
    # Settings added later whose default is the behaviour before them (rlt_pack_buckets only changes shapes;
    # rlt_proportional_attention off is plain attention, rlt_run_embedding "first" the paper's): a checkpoint
    # saved before they existed is complete.
    later = ("rlt_pack_buckets", "rlt_proportional_attention", "rlt_run_embedding")
    defaults = {field.name: field.default for field in fields(RLTSettings) if field.name not in later}
    missing = [name for name in defaults if name not in config_dict and name not in kwargs]
    if missing:
        settings = ", ".join(f"{name}={defaults[name]!r}" for name in missing)
        logger.warning(
            "%s: its config (model_type %r) lacks RLT settings; %s uses the defaults %s. "
            "rlt.convert (rlt convert) writes an RLT checkpoint that records them, with the processor's input scale.",
            checkpoint,
            config_dict.get("model_type"),
            cls.__name__,
            settings,
        )


class LengthEncoding(nn.Embedding):
    """Learned embedding of a token's run length ``L`` (``1 <= L <= max_length``), added like a position encoding.

    A length outside that range gets a zero row, not an error (checking would cost a host sync every
    forward): ``embed_tubelets`` clamps runs longer than the table to its last row before calling."""

    def forward(self, run_lengths: torch.Tensor) -> torch.Tensor:
        # One-hot times the table: the backward is a small matmul, where an embedding lookup's
        # backward would scatter tens of thousands of rows into a handful of table rows. The one-hot
        # is made by one comparison, straight in the dtype the matmul runs in (autocast's, if on).
        device_type = run_lengths.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else self.weight.dtype
        lengths = torch.arange(1, self.num_embeddings + 1, device=run_lengths.device)
        one_hot = (run_lengths.unsqueeze(-1) == lengths).to(dtype)
        return one_hot @ self.weight


def tubelet_patches(pixel_values: torch.Tensor, tubelet_size: int, patch_size) -> torch.Tensor:
    """``(B, T, C, H, W) -> (B, N, C * t * ph * pw)``, tokens in (T', H', W') order, values in Conv3d weight order."""
    patch_h, patch_w = to_pair(patch_size)
    batch, frames, channels, height, width = pixel_values.shape
    grid_t, grid_h, grid_w = frames // tubelet_size, height // patch_h, width // patch_w
    patches = pixel_values.reshape(batch, grid_t, tubelet_size, channels, grid_h, patch_h, grid_w, patch_w)
    patches = patches.permute(0, 1, 4, 6, 3, 2, 5, 7)
    return patches.reshape(batch, grid_t * grid_h * grid_w, channels * tubelet_size * patch_h * patch_w)


def embed_kept_tubelets(
    pixel_values: torch.Tensor,
    projection: nn.Conv3d,
    packed: PackedSequence,
    prefix_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """The Conv3d tubelet embedding applied to kept tubelets only: ``-> (total, hidden)``.

    When the packing has prefix tokens, ``prefix_tokens`` ``(num_prefix_tokens, hidden)`` (ViViT's CLS
    token) fill each clip's leading rows; they do not go through the projection.
    """
    tubelet_size, patch_h, patch_w = projection.kernel_size
    weight = projection.weight.flatten(1)
    if packed.keeps_all and not packed.num_prefix_tokens:
        patches = tubelet_patches(pixel_values, tubelet_size, (patch_h, patch_w))  # (B, N, K)
        return F.linear(patches.flatten(0, 1).to(weight.dtype), weight, projection.bias)
    # One gather of the kept tubelets straight out of the video, already in Conv3d weight order
    # (C, t, ph, pw): no copy of the whole re-laid-out video, and the cast touches kept pixels only.
    batch, frames, channels, height, width = pixel_values.shape
    grid = (frames // tubelet_size, height // patch_h, width // patch_w)
    video = pixel_values.reshape(batch, grid[0], tubelet_size, channels, grid[1], patch_h, grid[2], patch_w)
    video = video.permute(0, 1, 4, 6, 3, 2, 5, 7)  # (B, T', H', W', C, t, ph, pw), a view
    kept = video[packed.tubelet_coordinates(grid)].flatten(1)  # (content rows, K)
    return _with_prefix_rows(F.linear(kept.to(weight.dtype), weight, projection.bias), packed, prefix_tokens)


def _with_prefix_rows(content: torch.Tensor, packed: PackedSequence, prefix_tokens) -> torch.Tensor:
    """Content rows ``(content rows, hidden)`` laid into the packing, ``prefix_tokens`` in each clip's
    leading rows; as they are when the packing has no prefix tokens."""
    prefix = packed.num_prefix_tokens
    if not prefix:
        return content
    if prefix_tokens is None or prefix_tokens.shape[0] != prefix:
        raise ValueError(f"the packing has {prefix} prefix tokens per clip; pass their embeddings as prefix_tokens")
    prefix_rows = prefix_tokens.to(content.dtype)[packed.positions.clamp(max=prefix - 1)]  # (total, hidden)
    return prefix_rows.index_copy(0, packed.content_rows(), content)


def embed_tubelets(
    pixel_values: torch.Tensor,
    projection: nn.Conv3d,
    tokens: RunLengthTokens,
    packed: PackedSequence,
    *,
    run_embedding: str = "first",
    positions: torch.Tensor | None = None,
    prefix_tokens: torch.Tensor | None = None,
    length_encoding: LengthEncoding | None = None,
) -> torch.Tensor:
    """The kept tokens' input embeddings, ``(total, hidden)``: the Conv3d tubelet embedding plus
    ``positions`` (``(N, hidden)``, one row per tubelet slot of a clip; None where positions enter
    elsewhere, as V-JEPA 2's RoPE) plus the run-length encoding (``length_encoding``, None without one), and
    prefix tokens (``(num_prefix_tokens, hidden)``, ViViT's CLS with its position, no length encoding) in
    each clip's leading rows. A run longer than the length table (V-JEPA 2 on a clip longer than
    ``frames_per_clip``) takes its last row, the longest run the checkpoint was trained to encode.

    ``run_embedding`` ``"first"``: a kept token is its own tubelet at its own slot (the paper).
    ``"mean"``: the mean over its run of every tubelet's embedding plus position, so that a token standing
    for ``L`` near-copies enters as what they average to (ToMe's merge); the whole video is embedded for
    that, then one cumulative sum over time gives every run's sum (no loop over runs).
    """
    if run_embedding == "first" or packed.keeps_all:  # without drops every run is its own tubelet
        embeddings = embed_kept_tubelets(pixel_values, projection, packed, prefix_tokens)
        if positions is not None:
            slots = packed.source_positions - packed.num_prefix_tokens  # prefix rows: -1, never added
            embeddings = _add_to_content_rows(embeddings, packed, positions[slots])
    elif run_embedding == "mean":
        embeddings = _run_means(pixel_values, projection, tokens, packed, positions, prefix_tokens)
    else:
        raise ValueError(f"run_embedding must be 'first' or 'mean', got {run_embedding!r}")
    if length_encoding is not None:
        lengths = packed_run_lengths(tokens, packed).clamp(max=length_encoding.num_embeddings)
        embeddings = _add_to_content_rows(embeddings, packed, length_encoding(lengths))
    return embeddings


def _add_to_content_rows(embeddings: torch.Tensor, packed: PackedSequence, values: torch.Tensor) -> torch.Tensor:
    """``embeddings + values`` (both ``(total, hidden)``) on the tubelet rows; prefix rows keep theirs."""
    values = values.to(embeddings.dtype)
    if not packed.num_prefix_tokens:
        return embeddings + values
    rows = packed.content_rows()
    return embeddings.index_add(0, rows, values[rows])


def _run_means(pixel_values, projection: nn.Conv3d, tokens: RunLengthTokens, packed: PackedSequence, positions,
               prefix_tokens) -> torch.Tensor:
    """``embed_tubelets``' ``"mean"`` rows: each kept token the mean of its run's tubelet embeddings plus positions."""
    tubelet_size, patch_h, patch_w = projection.kernel_size
    weight = projection.weight.flatten(1)
    batch, frames, _, height, width = pixel_values.shape
    grid = (frames // tubelet_size, height // patch_h, width // patch_w)
    patches = tubelet_patches(pixel_values, tubelet_size, (patch_h, patch_w)).to(weight.dtype)
    every = F.linear(patches, weight, projection.bias).float()  # (B, N, hidden)
    if positions is not None:
        every = every + positions.float()
    # sums[b, t] = sum of time steps < t at each slot; a run [t, t + L) sums to sums[t + L] - sums[t].
    sums = F.pad(every.view(batch, grid[0], grid[1] * grid[2], -1).cumsum(1), (0, 0, 0, 0, 1, 0))
    clips, steps, rows_h, rows_w = packed.tubelet_coordinates(grid)
    cells, lengths = rows_h * grid[2] + rows_w, tokens.lengths[clips, steps, rows_h, rows_w]
    means = (sums[clips, steps + lengths, cells] - sums[clips, steps, cells]) / lengths.unsqueeze(-1)
    return _with_prefix_rows(means.to(weight.dtype), packed, prefix_tokens)


class PackedAttentionLayout(NamedTuple):
    """Where a transformers attention module keeps what packed self-attention needs (their names
    differ between architectures, the computation does not)."""

    projections: tuple[nn.Module, nn.Module, nn.Module]  # query, key, value
    output_projection: nn.Module | None  # None where transformers projects in a sibling module (VideoMAE)
    head_dim: int
    scaling: float
    dropout: float  # the training-time attention dropout


class PackedSelfAttentionMixin:
    """Self-attention over packed tokens, for transformers' attention modules.

    Mixed in before the transformers class (``class X(PackedSelfAttentionMixin, VideoMAESelfAttention)``),
    it keeps that class's projection layers and weight names and replaces only how attention is
    computed: ``(total, hidden) -> (total, hidden)``, block-diagonal per clip. The subclass says where
    its class keeps the projections (``packed_layout``) and, for rotary positions, rotates queries and
    keys (``rotate``). Without ``packed`` the transformers forward runs unchanged.

    Not a function registered in transformers' ``AttentionInterface``, because that interface does not
    fit the packed layout: a registered function is called from transformers' own attention forward,
    which (1) takes no packing: VideoMAE's ``VideoMAESelfAttention.forward(hidden_states)`` and its layer
    pass nothing further, so the packing could reach the function only through state left on the module
    between calls; (2) hands it ``(batch, heads, tokens, head_dim)`` views of ``(batch, tokens, hidden)``
    states, where the packed states are ``(total, hidden)``; (3) in V-JEPA 2 recomputes the RoPE angles
    in every layer, where the packed path computes them once per forward (``rope_tables``); and (4) is
    chosen by ``config._attn_implementation``, one key for the whole model, which is the user's choice of
    kernel family: ``rlt_attention="auto"`` follows it (``attention_kernels.resolve_backend``) and the unpacked
    path (``packed=None``) runs with it, so registering an RLT function under it would take it over.
    """

    def packed_layout(self) -> PackedAttentionLayout:
        raise NotImplementedError(f"{type(self).__name__} must say where its projections are (packed_layout)")

    def rotate(self, query: torch.Tensor, key: torch.Tensor, packed: PackedSequence):
        """Rotary position embedding of ``(total, heads, head_dim)`` queries and keys; none by default."""
        return query, key

    def forward(self, hidden_states: torch.Tensor, *args, packed: PackedSequence | None = None, **kwargs):
        if packed is None:
            return super().forward(hidden_states, *args, **kwargs)
        layout = self.packed_layout()
        shape = (hidden_states.shape[0], -1, layout.head_dim)
        query, key, value = (projection(hidden_states).view(shape) for projection in layout.projections)
        query, key = self.rotate(query, key, packed)
        context = packed_attention(
            query,
            key,
            value,
            packed,
            scaling=layout.scaling,
            dropout=layout.dropout if self.training else 0.0,
            backend=self.config.rlt_attention,
            attn_implementation=self.config._attn_implementation,
        )
        context = context.reshape(hidden_states.shape[0], -1)
        if layout.output_projection is not None:
            context = layout.output_projection(context)
        return context, None


@dataclass
class EncodedClips:
    """What an RLT encoder hands its heads: packed states plus the token choice and packing."""

    last_hidden_state: torch.Tensor  # (total, hidden)
    hidden_states: tuple[torch.Tensor, ...] | None
    tokens: RunLengthTokens
    packed: PackedSequence

    def pool(self, how: str, weighting: str = "mean") -> torch.Tensor:
        """One vector per clip, ``(B, hidden)``: ``how`` is "mean" (``weighting`` "mean" or
        "length_weighted") or "first" (the first token: ViViT's CLS, VideoMAE's non-mean head)."""
        if how == "first":
            return self.packed.first_tokens(self.last_hidden_state)
        weights = self.run_lengths() if weighting == "length_weighted" else None
        return self.packed.mean(self.last_hidden_state, weights)

    def run_lengths(self) -> torch.Tensor:
        """Time steps each packed token stands for, ``(total,)`` (1 for a prefix token such as CLS)."""
        return packed_run_lengths(self.tokens, self.packed)

    @property
    def tokens_kept(self) -> torch.Tensor:
        """Tokens each clip ran with, prefix (CLS) tokens included, int64 ``(B,)``."""
        return self.packed.device_lengths

    def to_output(self, **extra) -> RLTModelOutput:
        """The base model's output; ``extra`` sets further fields (``pooler_output``)."""
        drop_padding = self.packed.drop_padding
        return RLTModelOutput(
            last_hidden_state=drop_padding(self.last_hidden_state).unsqueeze(0),
            hidden_states=self.unpadded_hidden_states(),
            cu_seqlens=self.packed.cu_seqlens,
            tokens_kept=self.tokens_kept,
            keep_mask=self.tokens.keep_mask,
            run_lengths=drop_padding(self.run_lengths()).unsqueeze(0),
            **extra,
        )

    def unpadded_hidden_states(self) -> tuple[torch.Tensor, ...] | None:
        """``hidden_states`` without a bucketed packing's padding rows: each ``(1, real tokens, hidden)``.

        Outputs never show the padding, so a bucketed model returns what an unbucketed one does."""
        if self.hidden_states is None or not self.packed.bucketed:
            return self.hidden_states
        return tuple(state[:, : self.packed.num_real_tokens] for state in self.hidden_states)


def run_encoder(
    layers: nn.ModuleList, hidden_states: torch.Tensor, packed: PackedSequence, output_hidden_states: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run transformer layers over packed ``(total, hidden)`` tokens; returns the last state and, if asked, all."""
    all_states = [hidden_states] if output_hidden_states else None
    for layer in layers:
        hidden_states = layer(hidden_states, packed=packed)
        if all_states is not None:
            all_states.append(hidden_states)
    return hidden_states, (tuple(s.unsqueeze(0) for s in all_states) if all_states is not None else None)


class RLTVideoModelMixin:
    """The base model's ``forward`` and ``encode``: one template for every architecture.

    Mixed in before the architecture's ``RLT...PreTrainedModel``. The architecture says where its
    modules are (``encoder_parts``), and where it needs to, how it takes its video (``take_video``)
    and what its output adds (``output_extras``).
    """

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
        encoded = self.encode(pixel_values, keep_mask, output_hidden_states, **kwargs)
        return encoded.to_output(**self.output_extras(encoded))

    def encode(
        self,
        clips: torch.Tensor | None = None,
        /,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> EncodedClips:
        """The forward pass, returning the packing alongside the states for the heads to pool with.

        ``clips`` positionally or under the model's input name (``config.rlt_input_name``)."""
        clips = self.take_video(clips, kwargs)
        reject_unsupported(kwargs)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        tokens, packed = choose_tokens(self.config, clips, keep_mask)
        embeddings, layers, final_norm = self.encoder_parts()
        hidden_states = embeddings(clips, tokens, packed)
        hidden_states, all_hidden_states = run_encoder(layers, hidden_states, packed, output_hidden_states)
        if final_norm is not None:
            hidden_states = final_norm(hidden_states)
        return EncodedClips(hidden_states, all_hidden_states, tokens, packed)

    def encoder_parts(self) -> tuple[nn.Module, nn.ModuleList, nn.Module | None]:
        """The modules ``encode`` runs in turn: the embeddings (``(clips, tokens, packed) -> (total,
        hidden)``), the transformer layers, and the final norm (None where the model has none)."""
        raise NotImplementedError(f"{type(self).__name__} must say where its modules are (encoder_parts)")

    def take_video(self, clips: torch.Tensor | None, kwargs: dict) -> torch.Tensor:
        """The clips ``encode`` runs on: given positionally or under ``config.rlt_input_name`` in ``kwargs``."""
        name = self.config.rlt_input_name
        named = kwargs.pop(name, None)
        if clips is not None and named is not None:
            raise ValueError(f"pass the clips once: positionally or as {name}, not both")
        clips = clips if clips is not None else named
        if clips is None:
            raise ValueError(f"pass the clips as {name}: a float tensor (batch, frames, channels, height, width)")
        return clips

    def output_extras(self, encoded: EncodedClips) -> dict:
        """Further ``RLTModelOutput`` fields the architecture sets (ViViT: ``pooler_output``)."""
        return {}


class RLTVideoClassifierMixin:
    """The video classifier's ``forward``: one template for every architecture.

    Mixed in before the architecture's ``RLT...PreTrainedModel``; the base model is the one
    transformers' ``base_model`` names, and the architecture's head turns encoded clips into logits
    (``clip_logits``).
    """

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        keep_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> RLTVideoClassifierOutput:
        """Like transformers' ``...ForVideoClassification.forward``; ``keep_mask`` and ``return_dict`` (a
        tuple: ``(loss, logits, ...)``, or ``(logits, ...)`` without labels) as in the base model."""
        encoded = self.base_model.encode(pixel_values, keep_mask, output_hidden_states, **kwargs)
        return self.classification_output(encoded, labels, kwargs)

    def clip_logits(self, encoded: EncodedClips) -> torch.Tensor:
        """``(B, num_labels)`` from the encoded clips: the architecture's pooling and head."""
        raise NotImplementedError(f"{type(self).__name__} must define its head (clip_logits)")

    def classification_output(self, encoded: EncodedClips, labels, kwargs: dict) -> RLTVideoClassifierOutput:
        """The logits, the loss as transformers computes it (with Trainer's ``num_items_in_batch`` when
        given), and the tokens each clip kept."""
        logits = self.clip_logits(encoded)
        loss = None
        if labels is not None:
            loss_kwargs = {key: kwargs[key] for key in ("num_items_in_batch",) if key in kwargs}
            loss = self.loss_function(labels, logits, self.config, **loss_kwargs)
        return RLTVideoClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.unpadded_hidden_states(), tokens_kept=encoded.tokens_kept
        )


def reject_unsupported(kwargs: dict) -> None:
    if kwargs.get("attention_mask") is not None:
        raise ValueError(
            "attention_mask is not supported by RLT models: each clip attends to its own kept tokens only; "
            "to choose tokens yourself pass keep_mask (bool (batch, T', H', W'))"
        )
    if kwargs.get("output_attentions"):
        raise ValueError(
            "output_attentions is not supported by RLT models: packed clips have different lengths, "
            "so there is no (batch, heads, N, N) attention tensor"
        )
    if kwargs.get("interpolate_pos_encoding"):
        raise ValueError(
            "interpolate_pos_encoding is not supported by RLT models: convert the checkpoint at the "
            "resolution you will run it at"
        )
