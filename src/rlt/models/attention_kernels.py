"""Block-diagonal attention over a packed batch (``packing.PackedSequence``): the kernels.

``packing.py`` says where each clip's tokens lie; this file attends over that layout: self-attention
through one of several backends (``packed_attention``), and the pooler's one-query-per-clip
cross-attention (``packed_cross_attention``). Apart from the layout because it is another concept:
the layout is index bookkeeping that every architecture's embedding and pooling reads, the kernels
are the choice, by device, dtype and installed packages, of how to run attention over it. No Hugging
Face imports, so this file can travel into a checkpoint folder.

Attention backends (``rlt_attention`` in the configs):

- ``"auto"``: the fastest exact kernel for the device, dtype and batch (see ``resolve_backend``).
- ``"dense"``: batched SDPA on ``(B, N)``; only for batches whose clips all keep ``N`` tokens.
- ``"varlen"``: PyTorch's own variable-length flash attention, the aten kernel under
  ``torch.nn.attention.varlen.varlen_attn`` (CUDA, fp16/bf16).
- ``"flash_attn"``: ``flash_attn.flash_attn_varlen_func`` from the flash-attn package (CUDA, fp16/bf16).
- ``"flex"``: FlexAttention with a per-clip block mask (compiled on CUDA).
- ``"per_clip"``: one SDPA call per clip (the CPU default: exact, no padding, no mask).
- ``"padded"``: pad to the longest clip and run SDPA with a key mask (works everywhere, supports dropout).
- ``"eager"``: like ``"padded"`` in plain matmul/softmax, for debugging.

Proportional attention (``rlt_proportional_attention``): a packing may carry ``key_bias``, a float
``(total,)`` added to every score against that key (``log`` of the key's run length: ``L`` identical
keys are one key scored ``+ log L``). Every backend honours it: the SDPA ones as an additive mask, flex
in its ``score_mod``, and the two variable-length flash kernels, which take no bias, through one more
block of head dimensions (``fold_key_bias``).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # annotations only: packing.py imports this file, to re-export its names
    from .packing import PackedSequence

__all__ = [
    "ATTENTION_BACKENDS",
    "check_backend",
    "fold_key_bias",
    "key_score_mask",
    "packed_attention",
    "packed_cross_attention",
    "resolve_backend",
    "varlen_available",
]

ATTENTION_BACKENDS = ("auto", "dense", "varlen", "flash_attn", "flex", "per_clip", "padded", "eager")

# What a model's ``attn_implementation`` asks for, when ``rlt_attention`` is left on "auto".
_BACKEND_FOR_ATTN_IMPLEMENTATION = {
    "flash_attention_2": "flash_attn",
    "flash_attention_3": "flash_attn",
    "flex_attention": "flex",
    "eager": "eager",
}


def check_backend(name: str) -> str:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown RLT attention backend {name!r}; choose one of {ATTENTION_BACKENDS}")
    return name


def resolve_backend(
    requested: str, attn_implementation: str | None, query: torch.Tensor, packed: PackedSequence, dropout: float
) -> str:
    """The backend that will run: ``requested`` unless it is "auto" (or cannot run this call)."""
    check_backend(requested)
    if requested == "auto":
        requested = _BACKEND_FOR_ATTN_IMPLEMENTATION.get(attn_implementation or "sdpa", "auto")
    if requested == "auto":
        if packed.is_uniform:
            return "dense"
        half = query.dtype in (torch.float16, torch.bfloat16)
        if query.is_cuda and half and dropout == 0.0 and varlen_available(query.device):
            return "varlen"
        return "padded" if query.is_cuda else "per_clip"
    if requested == "dense" and not packed.is_uniform:
        raise ValueError(
            f"the 'dense' attention backend needs every clip to keep the same number of tokens, got {packed.lengths}"
        )
    if requested in ("varlen", "flash_attn", "flex") and dropout > 0.0:
        raise ValueError(
            f"rlt runs the {requested!r} attention backend without attention dropout, got dropout {dropout}; "
            "use 'padded' or 'per_clip', or set attention_probs_dropout_prob=0"
        )
    if requested in ("varlen", "flash_attn"):
        if requested == "varlen" and not varlen_available(query.device):
            raise RuntimeError(
                "the 'varlen' attention backend needs PyTorch's flash attention: a CUDA build of torch and an "
                "Ampere or newer GPU (compute capability 8.0+)"
            )
        if requested == "flash_attn" and importlib.util.find_spec("flash_attn") is None:
            raise RuntimeError("the 'flash_attn' attention backend needs the flash-attn package")
        if not query.is_cuda or query.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"the {requested!r} attention backend runs on CUDA in float16/bfloat16 only, "
                f"got {query.dtype} on {query.device.type}"
            )
    return requested


def varlen_available(device: torch.device | str | None = None) -> bool:
    """PyTorch's own variable-length flash attention can run: a CUDA build with flash attention and,
    for ``device``, a GPU of compute capability 8.0 or newer (the flash kernels' minimum)."""
    return _varlen_available(None if device is None else torch.device(device))


@functools.cache  # asked by every attention layer of every step: a launch-bound step feels host time
def _varlen_available(device: torch.device | None) -> bool:
    if not (torch.cuda.is_available() and torch.backends.cuda.is_flash_attention_available()):
        return False
    return device is None or (device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0))


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    packed: PackedSequence,
    *,
    scaling: float,
    dropout: float = 0.0,
    backend: str = "auto",
    attn_implementation: str | None = None,
) -> torch.Tensor:
    """Block-diagonal attention over a packed batch: ``(total, heads, head_dim)`` each -> same shape.

    Under autocast the inputs are cast to the autocast dtype first, as autocast does for SDPA: an
    input that arrives in float32 (V-JEPA 2's RoPE rotates in float32 in some transformers releases)
    must not send a bf16 training step to a float32-only fallback kernel.
    """
    device_type = query.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        query, key, value = (tensor.to(dtype) for tensor in (query, key, value))
    backend = resolve_backend(backend, attn_implementation, query, packed, dropout)
    return _BACKENDS[backend](query, key, value, packed, scaling, dropout)


def key_score_mask(packed: PackedSequence, key_bias: torch.Tensor | None, dtype: torch.dtype):
    """The ``attn_mask`` SDPA needs for attention over ``packed``'s keys laid out ``(B, S)`` (``pad``, or
    the uniform ``(B, N)`` view), broadcasting ``(B, 1, 1, S)``: None (uniform, no bias), the bool
    padding mask (no bias), or ``key_bias`` in ``dtype`` with ``-inf`` at padding. Shared by the
    self-attention backends and by the pooler's cross-attention (``packed_cross_attention``)."""
    if key_bias is None:
        return None if packed.is_uniform else packed.padding_mask()[:, None, None, :]
    bias = key_bias.to(dtype)
    if packed.is_uniform:
        return bias.view(packed.batch_size, 1, 1, -1)
    real = packed.padding_mask()[:, None, None, :]
    return packed.pad(bias)[:, None, None, :].masked_fill(~real, float("-inf"))


def _self_attention_mask(packed: PackedSequence, dtype: torch.dtype):
    """``key_score_mask`` for the packing's own ``key_bias``: built once per forward and dtype, shared by the layers."""
    return packed.cached(("key_score_mask", dtype), lambda: key_score_mask(packed, packed.key_bias, dtype))


def _dense(query, key, value, packed, scaling, dropout):
    q, k, v = (t.view(packed.batch_size, -1, *t.shape[1:]).transpose(1, 2) for t in (query, key, value))
    mask = _self_attention_mask(packed, query.dtype) if packed.key_bias is not None else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).reshape(query.shape)


# The flash kernels take head dims in multiples of 8: the folded bias adds one block of 8.
_FOLD_BLOCK = 8


def fold_key_bias(query, key, value, packed: PackedSequence, scaling: float):
    """``query``, ``key``, ``value`` ``(total, heads, d)`` -> ``(total, heads, d + 8)`` each, such that
    ``scaling * q'.k' = scaling * q.k + key_bias[key]`` and ``attention(q', k', v')[..., :d]`` is the
    biased attention: the kernels that take no bias (``varlen``, ``flash_attn``) run it unchanged.

    The extra block is ``q = (1, 0, ...)``, ``k = (key_bias / scaling, 0, ...)``, ``v = 0``; built once
    per forward (per dtype and head count) and shared by the layers.
    """
    total, heads, _ = query.shape

    def build():
        bias = (packed.key_bias.float() / scaling).to(query.dtype)
        key_block = query.new_zeros(total, heads, _FOLD_BLOCK)
        key_block[..., 0] = bias.unsqueeze(1)
        query_block = query.new_zeros(total, heads, _FOLD_BLOCK)
        query_block[..., 0] = 1.0
        return query_block, key_block, query.new_zeros(total, heads, _FOLD_BLOCK)

    blocks = packed.cached(("folded_key_bias", query.dtype, heads, scaling), build)
    return tuple(torch.cat([tensor, block], dim=-1) for tensor, block in zip((query, key, value), blocks))


def _with_folded_key_bias(kernel):
    """``kernel`` (a backend without a bias argument) made to honour ``packed.key_bias`` by ``fold_key_bias``."""

    @functools.wraps(kernel)
    def run(query, key, value, packed, scaling, dropout):
        if packed.key_bias is None:
            return kernel(query, key, value, packed, scaling, dropout)
        folded = fold_key_bias(query, key, value, packed, scaling)
        return kernel(*folded, packed, scaling, dropout)[..., : query.shape[-1]]

    return run


@_with_folded_key_bias
def _varlen(query, key, value, packed, scaling, dropout):
    cu, bound = packed.segment_cu_seqlens, packed.capacity
    # The aten op that torch.nn.attention.varlen.varlen_attn wraps, called directly: its autograd is
    # C++ (FlashAttentionBackward0), where varlen_attn's is a Python custom op that cost about 0.5 ms of
    # host time per layer and step, which a launch-bound step pays in full. The static bound as max
    # length (blocks past a clip's end exit at once) keeps the call free of host values.
    output, *_ = torch.ops.aten._flash_attention_forward(
        query, key, value, cu, cu, bound, bound, dropout, False, False, scale=scaling
    )
    return output


@_with_folded_key_bias
def _flash_attn(query, key, value, packed, scaling, dropout):
    # In a try: transformers' remote-code loader demands every package a file imports outside one.
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as error:
        raise RuntimeError("the 'flash_attn' attention backend needs the flash-attn package") from error

    cu, bound = packed.segment_cu_seqlens, packed.capacity
    return flash_attn_varlen_func(query, key, value, cu, cu, bound, bound, dropout_p=dropout, softmax_scale=scaling)


def _flex(query, key, value, packed, scaling, dropout):
    from torch.nn.attention.flex_attention import create_block_mask

    clip_ids = packed.clip_ids

    def same_clip(batch, head, q_idx, kv_idx):
        return clip_ids[q_idx] == clip_ids[kv_idx]

    total = packed.total
    # Compiled, the block mask is built block by block instead of as a total x total tensor.
    block_mask = packed.cached(
        "flex_block_mask",
        lambda: create_block_mask(same_clip, None, None, total, total, device=query.device, _compile=query.is_cuda),
    )
    score_mod = None
    if packed.key_bias is not None:
        key_bias = packed.key_bias

        def score_mod(score, batch, head, q_idx, kv_idx):
            return score + key_bias[kv_idx].to(score.dtype)

    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (query, key, value))
    out = _flex_attention(query.is_cuda)(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scaling)
    return out.squeeze(0).transpose(0, 1)


@functools.cache
def _flex_attention(compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    # Uncompiled FlexAttention materialises the full score matrix; compiled it is a fused kernel.
    return torch.compile(flex_attention, dynamic=True) if compiled else flex_attention


def _per_clip(query, key, value, packed, scaling, dropout):
    biases = [None] * packed.batch_size
    if packed.key_bias is not None:
        biases = [bias.to(query.dtype).view(1, 1, -1) for bias in packed.split(packed.key_bias)]
    outs = [
        F.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=bias, dropout_p=dropout, scale=scaling
        ).transpose(0, 1)
        for q, k, v, bias in zip(packed.split(query), packed.split(key), packed.split(value), biases)
    ]
    if packed.bucketed:  # the padding tokens' outputs: zeros, never read
        outs.append(query.new_zeros(packed.total - packed.num_real_tokens, *query.shape[1:]))
    return torch.cat(outs)


def _padded(query, key, value, packed, scaling, dropout):
    q, k, v = (packed.pad(t).transpose(1, 2) for t in (query, key, value))  # (B, heads, S, d)
    mask = _self_attention_mask(packed, query.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return packed.unpad(out.transpose(1, 2))


def _eager(query, key, value, packed, scaling, dropout):
    q, k, v = (packed.pad(t).transpose(1, 2) for t in (query, key, value))
    scores = (q @ k.transpose(-1, -2)) * scaling
    if packed.key_bias is not None:
        scores = scores + packed.pad(packed.key_bias.to(scores.dtype))[:, None, None, :]
    scores = scores.masked_fill(~packed.padding_mask()[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = F.dropout(scores.softmax(-1), p=dropout, training=dropout > 0)
    return packed.unpad((probs @ v).transpose(1, 2))


_BACKENDS = {
    "dense": _dense,
    "varlen": _varlen,
    "flash_attn": _flash_attn,
    "flex": _flex,
    "per_clip": _per_clip,
    "padded": _padded,
    "eager": _eager,
}


def packed_cross_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    packed: PackedSequence,
    *,
    scaling: float,
    dropout: float = 0.0,
    key_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One query per clip attending to that clip's packed tokens only.

    Args:
        query: ``(B, heads, head_dim)``.
        key, value: ``(total, heads, head_dim)``, packed as ``packed`` says.
        key_weights: optional positive ``(total,)``: a token of weight ``w`` counts as ``w`` copies of
            itself in the softmax (its score plus ``log w``).

    Returns:
        ``(B, heads, head_dim)``.
    """
    batch = packed.batch_size
    if packed.is_uniform:
        keys, values = (t.view(batch, -1, *t.shape[1:]).transpose(1, 2) for t in (key, value))
    else:
        # One query row per clip: padding to the longest clip costs B x max_len scores, nothing next
        # to the encoder, and runs on every device and dtype with dropout.
        keys, values = (packed.pad(t).transpose(1, 2) for t in (key, value))  # (B, heads, S, d)
    key_bias = None if key_weights is None else key_weights.float().log()
    mask = key_score_mask(packed, key_bias, query.dtype)
    out = F.scaled_dot_product_attention(
        query.unsqueeze(2), keys, values, attn_mask=mask, dropout_p=dropout, scale=scaling
    )
    return out.squeeze(2)
