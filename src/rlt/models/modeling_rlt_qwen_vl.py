"""What the RLT Qwen2.5-VL and Qwen3-VL models share: the kept groups through the vision tower, their
placeholders' 3D positions, and the vision tower's packed attention.

A video reaches the model as transformers' processor lays it out: ``pixel_values_videos`` rows in
``(t, h / m, w / m, m, m)`` order (``m = spatial_merge_size``), so the ``m * m`` patches of one LLM
token (a *group*) are consecutive rows, and ``video_grid_thw`` rows ``(T, H, W)`` in patches. The RLT
processor adds ``video_keep_mask``: bool ``(G,)``, one entry per group of every video of the batch
in that order (``G = sum(T * H * W) / m**2``), and ``video_run_lengths`` (int64 ``(G,)``, 0 where
dropped), and writes one video placeholder per kept group.

- ``before_encoder``: only the kept groups' patch rows enter the vision tower; its attention
  segments (one per temporal slice), Qwen2.5-VL's windows, the rotary positions and Qwen3-VL's
  interpolated position embeddings are the vanilla ones restricted to the kept rows (transformers'
  towers take them precomputed, ``transformers.vision_utils``).
- ``after_encoder``: the full tower, then the repeated groups' features are dropped.
- The LLM's 3D M-RoPE positions are the vanilla ones at the kept placeholders: the prompt is
  re-expanded to the full placeholder count, transformers' own ``get_rope_index`` runs on it, and
  the kept places are read out (``rope_deltas`` follow, so decoding continues the vanilla positions).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface

from .attention_kernels import varlen_available

__all__ = [
    "PACKED_VISION_ATTENTION",
    "RLTQwenVLModelMixin",
    "expose_rlt_video_inputs",
    "packed_vision_attention_forward",
    "use_packed_vision_attention",
    "vanilla_class",
    "with_rlt_video_parameters",
]

# The name must contain "flash": transformers' Qwen vision attention takes its cu_seqlens (varlen)
# path only when ``is_flash_attention_requested(config)``, i.e. "flash" is in the implementation's
# name; every other implementation splits q/k/v per segment and loops in Python.
PACKED_VISION_ATTENTION = "rlt_flash_varlen"

RLT_VIDEO_INPUTS = ("video_keep_mask", "video_run_lengths")


def packed_vision_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Block-diagonal attention over packed segments, for transformers' ``AttentionInterface``.

    ``query`` / ``key`` / ``value``: ``(1, heads, total, head_dim)``; ``cu_seq_lens_q/k``: int32
    ``(segments + 1,)``. Returns ``(1, total, heads, head_dim)`` as transformers' flash functions do.
    On CUDA in fp16 / bf16 this is PyTorch's own variable-length flash kernel (the aten op under
    ``torch.nn.attention.varlen.varlen_attn``, the one ``attention_kernels``' ``varlen`` backend calls);
    elsewhere one SDPA call per segment (what transformers' vision attention does without flash).
    """
    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(
            f"{PACKED_VISION_ATTENTION} attention serves packed vision towers (one sequence with cu_seqlens); "
            "use it for the vision config only: model.set_attn_implementation({'vision_config': ...})"
        )
    cu_k = cu_seq_lens_q if cu_seq_lens_k is None else cu_seq_lens_k
    q, k, v = (tensor[0].transpose(0, 1) for tensor in (query, key, value))  # (total, heads, head_dim)
    half = q.dtype in (torch.float16, torch.bfloat16)
    if q.is_cuda and half and varlen_available(q.device):
        max_q = int(max_length_q) if max_length_q is not None else int((cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).max())
        max_k = int(max_length_k) if max_length_k is not None else max_q
        # transformers may build cu_seqlens on the host (5.17's Qwen2.5-VL windows do); the kernel needs them
        # on the device, as int32.
        cu_q, cu_k = (cu.to(q.device, torch.int32, non_blocking=True) for cu in (cu_seq_lens_q, cu_k))
        output, *_ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_q, cu_k, max_q, max_k, dropout, False, False, scale=scaling
        )
        return output.unsqueeze(0), None
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    outputs = [
        F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout, scale=scaling)
        for qs, ks, vs in zip(*(torch.split(t, lengths, dim=2) for t in (query, key, value)))
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2), None


def use_packed_vision_attention(model, enabled: bool = True) -> None:
    """Run ``model``'s vision tower (a Qwen2.5-VL / Qwen3-VL, vanilla or RLT) through
    ``packed_vision_attention_forward`` (``enabled=False``: back to ``sdpa``); the LLM keeps its
    attention. Exact: the same segments. Set on the vision config directly: transformers'
    ``set_attn_implementation`` would look for a flash-attn kernel behind a name with "flash" in it.
    """
    config = model.config.vision_config
    config._attn_implementation = PACKED_VISION_ATTENTION if enabled else "sdpa"


AttentionInterface.register(PACKED_VISION_ATTENTION, packed_vision_attention_forward)


def with_rlt_video_parameters(function):
    """``function``'s signature plus the keyword parameters ``video_keep_mask`` / ``video_run_lengths``.

    ``generate`` validates its keyword arguments against ``forward``'s signature and hands the
    vision features' function only its named parameters, so both must name the RLT inputs.
    """
    signature = inspect.signature(function)
    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    variadic = [p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in RLT_VIDEO_INPUTS]
    return signature.replace(parameters=[*parameters, *added, *variadic])


def vanilla_class(cls: type) -> type:
    """The transformers class an RLT class subclasses (``Qwen2_5_VLModel``, ``Qwen3VLForConditionalGeneration``...)."""
    return next(base for base in cls.__mro__[1:] if base.__module__.startswith("transformers."))


def expose_rlt_video_inputs(cls: type, name: str, implementation) -> None:
    """Give ``cls`` a method ``name`` that runs ``implementation`` under the signature of its
    transformers class's ``name`` plus the RLT inputs (``with_rlt_video_parameters``): a function
    of its own per class, since each family's transformers signature differs."""

    def method(self, *args, **kwargs):
        return implementation(self, *args, **kwargs)

    method.__name__, method.__qualname__ = name, f"{cls.__qualname__}.{name}"
    method.__doc__ = implementation.__doc__
    method.__signature__ = with_rlt_video_parameters(getattr(vanilla_class(cls), name))
    setattr(cls, name, method)


class RunLengthEmbedding(nn.Module):
    """A learned embedding of each kept token's run length (in slices), added after the merger.

    ``weight``: ``(max_run_length, hidden)``, row ``L - 1`` for a run of ``L`` slices (longer runs
    use the last row). Zero-initialised: a converted model computes what it did until trained.
    """

    def __init__(self, max_run_length: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_run_length, hidden_size))

    def forward(self, run_lengths: torch.Tensor) -> torch.Tensor:
        return self.weight[(run_lengths - 1).clamp(0, self.weight.shape[0] - 1)]


class RunLengthEmbeddingInit:
    """``_init_weights`` that zeroes the run-length table, for the base and the generation class alike:
    ``from_model`` and ``from_pretrained`` initialise new weights through the top-level model's."""

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, RunLengthEmbedding):
            nn.init.zeros_(module.weight)


class RLTQwenVLModelMixin(RunLengthEmbeddingInit):
    """RLT for a Qwen-VL base model (``Qwen2_5_VLModel`` / ``Qwen3VLModel``); see the module docstring.

    A family's class defines ``_placeholder_units`` (how the groups of the batch are cut into
    contiguous placeholder runs of the prompt) and ``_kept_tower_inputs`` (the tower's precomputed
    inputs restricted to the kept rows).
    """

    _keys_to_ignore_on_load_missing = [r"rlt_length_embedding"]  # noqa: RUF012 (transformers reads a list)
    _deepstack_per_video = False  # Qwen3-VL's DeepStack features are split per video (set by the family)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        expose_rlt_video_inputs(cls, "get_video_features", RLTQwenVLModelMixin.get_video_features)

    def __init__(self, config):
        super().__init__(config)
        self._rlt_video_inputs: tuple[torch.Tensor, torch.Tensor | None] | None = None
        if config.rlt_use_length_encoding:
            self.rlt_length_embedding = RunLengthEmbedding(
                config.rlt_max_run_length, config.vision_config.out_hidden_size
            )
        self.post_init()

    # -- geometry ----------------------------------------------------------------------------------

    @property
    def _merge_unit(self) -> int:
        return self.config.vision_config.spatial_merge_size ** 2

    def _groups_per_video(self, video_grid_thw: torch.Tensor) -> list[int]:
        return (video_grid_thw.prod(-1) // self._merge_unit).tolist()

    def _groups_per_slice(self, video_grid_thw: torch.Tensor) -> torch.Tensor:
        """Groups of each temporal slice of every video, int64 ``(sum(T),)``."""
        per_slice = video_grid_thw[:, 1] * video_grid_thw[:, 2] // self._merge_unit
        return torch.repeat_interleave(per_slice, video_grid_thw[:, 0])

    def _placeholder_units(self, video_grid_thw: torch.Tensor) -> list[int]:
        """Groups per contiguous run of video placeholders in the prompts, in order."""
        raise NotImplementedError

    def _kept_tower_inputs(self, video_grid_thw: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tower's precomputed inputs (``transformers.vision_utils`` names) for the kept rows."""
        raise NotImplementedError

    def _kept_rows(self, keep: torch.Tensor) -> torch.Tensor:
        """Group keep mask ``(G,)`` -> patch-row keep mask ``(G * m * m,)``."""
        return keep.repeat_interleave(self._merge_unit)

    def _kept_segments(self, video_grid_thw: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """cu_seqlens (int32, patch rows) of the per-slice attention segments over the kept rows, empty ones dropped."""
        per_slice = self._groups_per_slice(video_grid_thw).to(keep.device)
        slice_of_group = torch.repeat_interleave(torch.arange(len(per_slice), device=keep.device), per_slice)
        kept = torch.bincount(slice_of_group[keep], minlength=len(per_slice)) * self._merge_unit
        return torch.unique_consecutive(F.pad(kept.cumsum(0), (1, 0)).to(torch.int32))

    # -- inputs ------------------------------------------------------------------------------------

    def _check_video_keep_mask(self, keep: torch.Tensor, video_grid_thw: torch.Tensor | None) -> torch.Tensor:
        if video_grid_thw is None:
            raise ValueError("video_keep_mask was given without video_grid_thw: pass the processor's outputs together")
        total = sum(self._groups_per_video(video_grid_thw))
        if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.shape != (total,):
            shape = tuple(keep.shape) if isinstance(keep, torch.Tensor) else type(keep).__name__
            dtype = keep.dtype if isinstance(keep, torch.Tensor) else None
            raise ValueError(
                f"video_keep_mask must be a bool tensor of shape ({total},) (one entry per 2x2 group of every "
                f"video, as RLTQwenVLProcessor returns it), got shape {shape} dtype {dtype}"
            )
        # The first slice of every video is always kept (its groups start every run).
        grid = video_grid_thw.to(keep.device)
        groups = grid.prod(-1) // self._merge_unit
        video = torch.repeat_interleave(torch.arange(len(grid), device=keep.device), groups)
        place = torch.arange(total, device=keep.device) - F.pad(groups.cumsum(0)[:-1], (1, 0))[video]
        first_slice = place < (grid[:, 1] * grid[:, 2] // self._merge_unit)[video]
        if not bool((keep | ~first_slice).all()):
            raise ValueError("video_keep_mask drops groups of a video's first slice: slice 0 is always kept")
        return keep

    @contextlib.contextmanager
    def _video_tokens(self, keep: torch.Tensor, run_lengths: torch.Tensor | None):
        """Hand the keep mask to ``get_video_features`` for the length of one forward (transformers'
        ``forward`` calls it with its own arguments; passing extra ones would reach the LLM's layers)."""
        self._rlt_video_inputs = (keep, run_lengths)
        try:
            yield
        finally:
            self._rlt_video_inputs = None

    def _video_token_count_error(self, input_ids: torch.Tensor, keep: torch.Tensor) -> None:
        found, kept = int((input_ids == self.config.video_token_id).sum()), int(keep.sum())
        if found != kept:
            raise ValueError(
                f"the prompts hold {found} video placeholder tokens but video_keep_mask keeps {kept} groups: "
                "build input_ids and video_keep_mask together with RLTQwenVLProcessor (a vanilla processor writes "
                "one placeholder per group, kept or not)"
            )

    def _groups_per_prompt(
        self, input_ids: torch.Tensor, keep: torch.Tensor, video_grid_thw: torch.Tensor
    ) -> list[int]:
        """How many groups of the keep mask belong to each prompt's videos, in order (a prompt's
        placeholders count its videos' kept groups)."""
        groups = self._groups_per_video(video_grid_thw)
        kept_per_video = [int(part.sum()) for part in torch.split(keep.cpu(), groups)]
        per_prompt, video = [], 0
        for placeholders in (input_ids == self.config.video_token_id).sum(1).tolist():
            first, kept = video, 0
            while kept < placeholders and video < len(groups):
                kept, video = kept + kept_per_video[video], video + 1
            if kept != placeholders:
                raise ValueError(
                    f"prompt {len(per_prompt)} holds {placeholders} video placeholders, its videos keep {kept} groups: "
                    "build input_ids and video_keep_mask together with RLTQwenVLProcessor"
                )
            per_prompt.append(sum(groups[first:video]))
        if video != len(groups):
            raise ValueError("video_keep_mask has groups for more videos than the prompts have placeholders for")
        return per_prompt

    # -- vision features ---------------------------------------------------------------------------

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        """Features of the kept groups: ``pooler_output`` a tuple of ``(kept_v, hidden)`` per video
        (and Qwen3-VL's ``deepstack_features`` likewise); vanilla without a keep mask."""
        keep = kwargs.pop("video_keep_mask", None)
        run_lengths = kwargs.pop("video_run_lengths", None)
        if keep is None and self._rlt_video_inputs is not None:
            keep, run_lengths = self._rlt_video_inputs
        if keep is None:
            return super().get_video_features(pixel_values_videos, video_grid_thw, **kwargs)
        keep = self._check_video_keep_mask(keep.to(pixel_values_videos.device), video_grid_thw)
        kwargs.pop("return_dict", None)
        if self.config.rlt_mode == "after_encoder":
            outputs = super().get_video_features(pixel_values_videos, video_grid_thw, return_dict=True, **kwargs)
            pooled = torch.cat(outputs.pooler_output)[keep]
            deepstack = [_flat(features)[keep] for features in getattr(outputs, "deepstack_features", None) or ()]
        else:
            pixels = pixel_values_videos[self._kept_rows(keep)].type(self.visual.dtype)
            tower_inputs = self._kept_tower_inputs(video_grid_thw, keep)
            outputs = self.visual(pixels, grid_thw=video_grid_thw, return_dict=True, **tower_inputs, **kwargs)
            pooled = outputs.pooler_output
            deepstack = list(getattr(outputs, "deepstack_features", None) or ())
        if getattr(self, "rlt_length_embedding", None) is not None:
            if run_lengths is None:
                raise ValueError("this model adds a run-length embedding: pass video_run_lengths with video_keep_mask")
            pooled = pooled + self.rlt_length_embedding(run_lengths.to(keep.device)[keep]).to(pooled.dtype)
        sizes = [int(part.sum()) for part in torch.split(keep, self._groups_per_video(video_grid_thw))]
        outputs.pooler_output = torch.split(pooled, sizes)
        if deepstack:  # in the layout this transformers release uses: per video (5.2x) or flat (5.17)
            split = self._deepstack_per_video
            outputs.deepstack_features = [torch.split(f, sizes) if split else f for f in deepstack]
        return outputs

    # -- 3D positions ------------------------------------------------------------------------------

    def get_rope_index(self, input_ids, mm_token_type_ids=None, *args, **kwargs):
        """The vanilla 3D positions at the kept placeholders: ``(3, B, L)`` and ``rope_deltas`` ``(B, 1)``."""
        keep = kwargs.pop("video_keep_mask", None)
        kwargs.pop("video_run_lengths", None)
        if keep is None and self._rlt_video_inputs is not None:
            keep = self._rlt_video_inputs[0]
        video_grid_thw = kwargs.get("video_grid_thw")
        if keep is None or video_grid_thw is None:
            return super().get_rope_index(input_ids, mm_token_type_ids, *args, **kwargs)
        if args:
            raise TypeError("pass get_rope_index's arguments after mm_token_type_ids by name")
        keep = self._check_video_keep_mask(keep.to(input_ids.device), video_grid_thw)
        if mm_token_type_ids is None:
            mm_token_type_ids = self._mm_token_type_ids(input_ids)
        attention_mask = kwargs.pop("attention_mask", None)
        expanded = self._expand_placeholders(input_ids, mm_token_type_ids, attention_mask, keep, video_grid_thw)
        full_ids, full_types, full_mask, index, dropped = expanded
        positions, deltas = super().get_rope_index(full_ids, full_types, attention_mask=full_mask, **kwargs)
        positions = positions.gather(2, index.unsqueeze(0).expand(3, -1, -1).to(positions.device))
        return positions, deltas + dropped.view(-1, 1).to(deltas.device)

    def _mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """text 0, image 1, video 2, as the processors' ``mm_token_type_ids``."""
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        types[input_ids == self.config.image_token_id] = 1
        types[input_ids == self.config.video_token_id] = 2
        return types

    def _expand_placeholders(self, input_ids, mm_token_type_ids, attention_mask, keep, video_grid_thw):
        """The prompts with every dropped group's placeholder put back (what a vanilla processor writes).

        Returns ``full_ids`` / ``full_types`` / ``full_mask`` ``(B, L_full)`` (right-padded where rows
        grow by different amounts), ``index`` int64 ``(B, L)``: each token's place in its full row,
        and ``dropped`` int64 ``(B,)``: placeholders put back per row. Computed on the host, in
        one pass over every run of placeholders (the prompts are small; the sizes come from the host).
        """
        video_token = self.config.video_token_id
        ids, types, keep = input_ids.cpu(), mm_token_type_ids.cpu(), keep.cpu()
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.cpu().long()
        batch, length = ids.shape
        # Runs of consecutive placeholders, in prompt order: one per unit (a video, or a slice for Qwen3-VL).
        is_video = (ids == video_token) & mask.bool()
        edges = torch.diff(F.pad(is_video.int(), (1, 1)), dim=1)  # a zero column between rows
        run_rows, run_starts = (edges == 1).nonzero(as_tuple=True)
        run_ends = (edges == -1).nonzero(as_tuple=True)[1]
        units = torch.tensor(self._placeholder_units(video_grid_thw))
        unit_starts = F.pad(units.cumsum(0), (1, 0))
        kept = F.pad(keep.long().cumsum(0), (1, 0))[unit_starts]  # kept groups before each unit boundary
        kept_per_unit = kept[1:] - kept[:-1]
        runs = run_ends - run_starts
        if len(runs) < len(units) and torch.equal(runs, kept_per_unit[: len(runs)]):
            raise ValueError(
                "video_keep_mask has groups for more videos than the prompts have placeholder runs: build input_ids "
                "and video_keep_mask together with RLTQwenVLProcessor"
            )
        if len(runs) != len(units) or not torch.equal(runs, kept_per_unit):
            bad = next(i for i in range(len(runs)) if i >= len(units) or runs[i] != kept_per_unit[i])
            expected = int(kept_per_unit[bad]) if bad < len(units) else None
            raise ValueError(
                f"a run of {int(runs[bad])} video placeholders in prompt {int(run_rows[bad])} does not match the next "
                f"video's kept groups ({expected}): build input_ids and video_keep_mask together with "
                "RLTQwenVLProcessor"
            )
        # Each unit's dropped groups go back at the end of its run; a kept placeholder moves past the
        # dropped groups before it in its unit.
        put_back = torch.zeros(batch, length + 1, dtype=torch.long)
        put_back.index_put_((run_rows, run_ends), units - kept_per_unit, accumulate=True)
        kept_groups = keep.nonzero().flatten()
        unit = torch.repeat_interleave(torch.arange(len(units)), units)[kept_groups]
        within = torch.zeros(batch, length, dtype=torch.long)
        within[is_video] = (kept_groups - unit_starts[unit]) - (torch.arange(len(kept_groups)) - kept[unit])
        index = torch.arange(length) + put_back.cumsum(1)[:, :-1] + within
        dropped = put_back.sum(1)
        width = length + int(dropped.max())
        inside = torch.arange(width) < (length + dropped).unsqueeze(1)  # the rest pads the shorter rows
        full_ids = torch.where(inside, video_token, 0).to(ids.dtype).scatter_(1, index, ids)
        full_types = torch.where(inside, 2, 0).to(types.dtype).scatter_(1, index, types)
        full_mask = inside.to(mask.dtype).scatter_(1, index, mask)
        needs_mask = attention_mask is not None or bool((dropped != dropped.max()).any())
        device = input_ids.device
        return (
            full_ids.to(device),
            full_types.to(device),
            full_mask.to(device) if needs_mask else None,
            index.to(device),
            dropped.to(device),
        )

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, input_ids=None, *args, video_keep_mask=None, video_run_lengths=None, **kwargs):
        """transformers' ``forward`` plus ``video_keep_mask`` / ``video_run_lengths`` (module docstring)."""
        if video_keep_mask is None or kwargs.get("pixel_values_videos") is None:
            return super().forward(input_ids, *args, **kwargs)
        if args:
            raise TypeError("pass the model's arguments after input_ids by name")
        video_grid_thw = kwargs.get("video_grid_thw")
        keep = self._check_video_keep_mask(video_keep_mask.to(kwargs["pixel_values_videos"].device), video_grid_thw)
        if input_ids is None:
            raise ValueError("an RLT video forward needs input_ids (the placeholders say where the kept groups go)")
        self._video_token_count_error(input_ids, keep)
        if kwargs.get("position_ids") is None:
            rope_kwargs = {
                name: kwargs[name]
                for name in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
                if kwargs.get(name) is not None
            }
            position_ids, self.rope_deltas = self.get_rope_index(
                input_ids, kwargs.get("mm_token_type_ids"), video_keep_mask=keep, **rope_kwargs
            )
            kwargs["position_ids"] = position_ids
        with self._video_tokens(keep, video_run_lengths):
            return super().forward(input_ids, **kwargs)


class RLTQwenVLForConditionalGenerationMixin(RunLengthEmbeddingInit):
    """The generation class over an RLT base model; ``forward`` must name the RLT inputs (``generate``
    checks the names, see ``with_rlt_video_parameters``) and passes them on to the base model."""

    rlt_model_class: type  # the family's RLT base model
    _keys_to_ignore_on_load_missing = RLTQwenVLModelMixin._keys_to_ignore_on_load_missing

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        expose_rlt_video_inputs(cls, "forward", vanilla_class(cls).forward)

    def __init__(self, config):
        # transformers' __init__ builds its own base model first; build ours in its place instead.
        super(vanilla_class(type(self)), self).__init__(config)
        self.model = self.rlt_model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """transformers' expansion for ``num_return_sequences`` and beam search (every prompt repeated
        ``expand_size`` times, its videos with it), plus the RLT inputs: each prompt's groups repeated
        with its videos. (transformers 5.2x encodes the videos before it expands and has no RLT
        input left here; 5.17 would repeat every group in place.)"""
        rlt_inputs = {name: model_kwargs.pop(name) for name in RLT_VIDEO_INPUTS if model_kwargs.get(name) is not None}
        if expand_size > 1 and rlt_inputs and input_ids is not None and model_kwargs.get("video_grid_thw") is not None:
            keep = rlt_inputs["video_keep_mask"]
            per_prompt = self.model._groups_per_prompt(input_ids, keep, model_kwargs["video_grid_thw"])
            rlt_inputs = {
                name: torch.cat([part.repeat(expand_size) for part in torch.split(value, per_prompt)])
                for name, value in rlt_inputs.items()
            }
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )
        return input_ids, {**model_kwargs, **rlt_inputs}



def _flat(features) -> torch.Tensor:
    """Features of all videos as one tensor, whether a release gives them per video or flat."""
    return torch.cat(features) if isinstance(features, (tuple, list)) else features


def splits_deepstack_per_video(get_image_features) -> bool:
    """Whether a release's Qwen3-VL ``get_image_features`` returns DeepStack features per video
    (5.2x) rather than flat (5.17): both layouts are consumed by that release's own ``forward``."""
    return "torch.split(feat" in inspect.getsource(inspect.unwrap(get_image_features))


def kept_window_index(
    window_index: torch.Tensor, cu_window_seqlens: torch.Tensor, keep: torch.Tensor, merge_unit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-VL's window attention restricted to the kept groups.

    Args:
        window_index: int64 ``(G,)``, the vanilla permutation of all groups into window order.
        cu_window_seqlens: int32, the vanilla window boundaries in patch rows.
        keep: bool ``(G,)``.
        merge_unit: patch rows per group.

    Returns:
        The permutation of the kept groups (numbered ``0..kept-1``) into window order, and the kept
        windows' boundaries in patch rows (windows left empty removed).
    """
    keep = keep.to(window_index.device)
    kept_in_window_order = keep[window_index]
    kept_id = keep.long().cumsum(0) - 1
    index = kept_id[window_index[kept_in_window_order]]
    kept_before = F.pad(kept_in_window_order.long().cumsum(0), (1, 0))
    boundaries = kept_before[(cu_window_seqlens.long() // merge_unit).to(keep.device)] * merge_unit
    return index, torch.unique_consecutive(boundaries.to(torch.int32))
