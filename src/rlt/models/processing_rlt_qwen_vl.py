"""The RLT processor of the Qwen video LLMs: the model's own inputs, with one placeholder per kept group.

``RLTQwenVLProcessor`` prepares videos as transformers' Qwen2.5-VL / Qwen3-VL video processors do
(resize to multiples of ``patch * merge``, pad the frames to whole slices, rescale and normalise,
patchify in ``(t, h / m, w / m, m, m)`` row order) in plain torch, so it needs no torchvision;
given a transformers video processor (where torchvision is installed) it uses that one instead.
From the pixels it prepared it finds the groups (``temporal_patch_size x m*patch x m*patch``
tubelets, one LLM token each) that repeat the same group of the previous slice, by
``run_length_tokenize``'s rule, writes one video placeholder per kept group and returns ``video_keep_mask``
and ``video_run_lengths`` with the inputs: ``model.generate(**inputs)`` needs nothing else.

Qwen3-VL writes every slice between a timestamp and its own vision start / end tokens, and a slice
with no placeholder would have none to carry its timestamp: there the processor keeps the first
(top-left) group of a slice that would otherwise keep none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import BatchFeature

from .tokenizer import COMPARE_TO_CHOICES, _channel_weights, check_threshold, run_lengths_from_keep_mask

__all__ = ["QWEN_VL_VIDEO_DEFAULTS", "RLTQwenVLProcessor", "keep_mask_from_patches", "patchify", "unpatchify"]


def _video_defaults(patch_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> dict:
    """A Qwen video processor's defaults: slices of 2 frames, 2x2 patches per LLM token, frames resized to
    between 128 and 768 LLM tokens' worth of pixels."""
    token_side = 2 * patch_size
    return {"patch_size": patch_size, "temporal_patch_size": 2, "merge_size": 2, "image_mean": mean, "image_std": std,
            "min_pixels": 128 * token_side**2, "max_pixels": 768 * token_side**2}


# transformers' video processor defaults per family (Qwen2VLVideoProcessor, Qwen3VLVideoProcessor).
QWEN_VL_VIDEO_DEFAULTS = {
    "qwen2_5_vl": _video_defaults(14, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "qwen3_vl": _video_defaults(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _family(model_type: str) -> str:
    family = model_type.removeprefix("rlt_")
    if family not in QWEN_VL_VIDEO_DEFAULTS:
        raise ValueError(f"RLTQwenVLProcessor serves {sorted(QWEN_VL_VIDEO_DEFAULTS)} models, got {model_type!r}")
    return family


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' Qwen2-VL ``smart_resize``: multiples of ``factor``, pixel count within bounds, aspect kept."""
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def patchify(video: torch.Tensor, patch_size: int, temporal_patch_size: int, merge_size: int) -> torch.Tensor:
    """``(T, C, H, W)`` (``T`` whole slices) -> rows ``(T/t * H/p * W/p, C * t * p * p)`` in
    ``(t, h/m, w/m, m, m)`` order, as transformers' Qwen video processors lay them out."""
    frames, channels, height, width = video.shape
    p, t, m = patch_size, temporal_patch_size, merge_size
    patches = video.reshape(frames // t, t, channels, height // p // m, m, p, width // p // m, m, p)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(-1, channels * t * p * p)


def unpatchify(rows: torch.Tensor, grid_thw: Sequence[int], patch_size: int, temporal_patch_size: int,
               merge_size: int) -> torch.Tensor:
    """The inverse of ``patchify``: rows of one video and its ``(T, H, W)`` grid -> ``(T * t, C, H * p, W * p)``."""
    grid_t, grid_h, grid_w = (int(x) for x in grid_thw)
    p, t, m = patch_size, temporal_patch_size, merge_size
    channels = rows.shape[-1] // (t * p * p)
    patches = rows.reshape(grid_t, grid_h // m, grid_w // m, m, m, channels, t, p, p)
    return patches.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(grid_t * t, channels, grid_h * p, grid_w * p)


# Slices compared at once: the differences of a chunk stay small enough for the CPU's caches (on the
# CPU this is about twice as fast as one pass over a long video) and need only a few kernels on a GPU.
_ELEMENTS_PER_CHUNK = 1 << 22


def keep_mask_from_patches(
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    *,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    threshold: float,
    input_scale: Sequence[float] | None,
    compare_to: str = "previous",
    keep_one_per_slice: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which groups of processor rows repeat the same group of the previous slice.

    ``run_length_tokenize``'s rule (a group is kept when the mean absolute difference between its
    last frame and the first frame of the same group one slice before, in reference units, exceeds
    ``threshold``; slice 0 is always kept), read straight from the rows: a group's ``m * m``
    patches are consecutive rows, so the frames compared are strided views of the rows and nothing
    is copied back into frames. Runs on the rows' device.

    Args:
        pixel_values_videos: float ``(rows, C * t * p * p)`` of every video, as the processors return them.
        video_grid_thw: int ``(videos, 3)``.
        input_scale: per channel, how much one grey level moves the normalised pixels (``rescale / std``).
        compare_to: ``"previous"`` or ``"last_kept"`` (as ``run_length_tokenize``).
        keep_one_per_slice: keep the first group of a slice that would keep none (Qwen3-VL).

    Returns:
        ``video_keep_mask`` bool ``(G,)`` and ``video_run_lengths`` int64 ``(G,)`` (in slices, 0 where
        dropped), one entry per group of every video in row order.
    """
    if compare_to not in COMPARE_TO_CHOICES:
        raise ValueError(f"compare_to must be one of {COMPARE_TO_CHOICES}, got {compare_to!r}")
    threshold = check_threshold(threshold)
    p, t, m = patch_size, temporal_patch_size, merge_size
    channels = pixel_values_videos.shape[-1] // (t * p * p)
    weights = torch.tensor(_channel_weights(input_scale, channels), device=pixel_values_videos.device)
    keeps, lengths = [], []
    start = 0
    for grid in video_grid_thw.tolist():
        count = math.prod(grid)
        slices, groups = grid[0], count // grid[0] // (m * m)
        # (slice, group, patch of the group, channel, frame, pixel): a view of the video's rows.
        video = pixel_values_videos[start : start + count].view(slices, groups, m * m, channels, t, p * p)
        start += count
        first, last = video[..., 0, :], video[..., t - 1, :]
        if compare_to == "previous":
            keep = _keep_against_previous(first, last, weights, threshold)
        else:
            keep = _keep_against_last_kept(first, last, weights, threshold)
        if keep_one_per_slice:
            keep[:, 0] |= ~keep.any(1)
        keeps.append(keep.flatten())
        lengths.append(run_lengths_from_keep_mask(keep.view(1, slices, groups, 1)).flatten())
    return torch.cat(keeps), torch.cat(lengths)


def _group_difference(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per group in reference units: ``(..., G, m*m, C, p*p)`` -> ``(..., G)``."""
    per_channel = (a.float() - b.float()).abs_().mean(dim=(-3, -1))  # (..., G, C)
    return (per_channel * weights).mean(-1)


def _keep_against_previous(first: torch.Tensor, last: torch.Tensor, weights: torch.Tensor,
                           threshold: float) -> torch.Tensor:
    """``first`` / ``last``: ``(T', G, m*m, C, p*p)`` frames of every slice -> bool ``(T', G)``."""
    slices = first.shape[0]
    step = max(1, _ELEMENTS_PER_CHUNK // first[0].numel())
    keeps = [torch.ones(1, first.shape[1], dtype=torch.bool, device=first.device)]
    for begin in range(1, slices, step):
        end = min(slices, begin + step)
        keeps.append(_group_difference(last[begin:end], first[begin - 1 : end - 1], weights) > threshold)
    return torch.cat(keeps)


def _keep_against_last_kept(first: torch.Tensor, last: torch.Tensor, weights: torch.Tensor,
                            threshold: float) -> torch.Tensor:
    """As ``_keep_against_previous``, each slice compared with the slice its run reuses (one slice at a time)."""
    reference = first[0]
    keeps = [torch.ones(first.shape[1], dtype=torch.bool, device=first.device)]
    for step in range(1, first.shape[0]):
        keep = _group_difference(last[step], reference, weights) > threshold
        keeps.append(keep)
        reference = torch.where(keep.view(-1, 1, 1, 1), first[step], reference)
    return torch.stack(keeps)


class RLTQwenVLProcessor:
    """Text, images and videos -> a Qwen2.5-VL / Qwen3-VL model's inputs, video groups RLT drops left out.

    Args:
        tokenizer: the model's tokenizer (it knows ``<|video_pad|>``, ``<|vision_start|>``, ...).
        model_type: ``"qwen2_5_vl"`` or ``"qwen3_vl"`` (an ``rlt_`` prefix is fine).
        threshold: ``tau`` in the reference units (``run_length_tokenize``); 0 drops exact repeats only.
        compare_to: ``"previous"`` or ``"last_kept"``.
        image_processor: the model's image processor, for prompts with images.
        video_processor: a transformers Qwen video processor (needs torchvision); None prepares videos
            in torch with ``video_settings`` (``QWEN_VL_VIDEO_DEFAULTS``).
        device: where videos are prepared and their keep masks computed (the frames are copied there
            as given, uint8 for uint8 frames); None: where they are (the host for numpy frames). On
            the model's GPU the keep mask costs a fraction of a millisecond and the rows need no copy.

    Call: ``processor(text, videos=[frames, ...], images=None, fps=2.0)``; a video is ``(T, H, W, C)``
    or ``(T, C, H, W)`` uint8 frames (already sampled at ``fps``), a prompt holds one
    ``<|video_pad|>`` per video (Qwen3-VL: or ``<|vision_start|><|video_pad|><|vision_end|>``).
    """

    def __init__(self, tokenizer, model_type: str = "qwen2_5_vl", *, threshold: float = 0.1,
                 compare_to: str = "previous", image_processor=None, video_processor=None, device=None,
                 **video_settings):
        self.tokenizer = tokenizer
        self.family = _family(model_type)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
            raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
        self.threshold, self.compare_to = float(threshold), compare_to
        self.image_processor, self.video_processor = image_processor, video_processor
        self.device = None if device is None else torch.device(device)
        settings = dict(QWEN_VL_VIDEO_DEFAULTS[self.family])
        if video_processor is not None:
            settings.update({key: getattr(video_processor, key) for key in ("patch_size", "temporal_patch_size",
                                                                            "merge_size", "image_mean", "image_std")})
        unknown = set(video_settings) - set(settings) - {"rescale_factor"}
        if unknown:
            raise TypeError(f"unknown video settings {sorted(unknown)}; known: {sorted(settings)} and rescale_factor")
        settings.update(video_settings)
        self.rescale_factor = float(settings.pop("rescale_factor", getattr(video_processor, "rescale_factor", 1 / 255)))
        self.video_settings = settings
        self.tokens = tokens = {
            "video": "<|video_pad|>", "image": "<|image_pad|>", "start": "<|vision_start|>", "end": "<|vision_end|>"
        }
        # Without a tokenizer the processor still prepares videos and their keep masks (token counts).
        self.video_token_id = None if tokenizer is None else tokenizer.convert_tokens_to_ids(tokens["video"])
        self.image_token_id = None if tokenizer is None else tokenizer.convert_tokens_to_ids(tokens["image"])

    @classmethod
    def from_model_config(cls, tokenizer, config, **kwargs):
        """The processor for an RLT model: its family and ``rlt_threshold`` / ``rlt_compare_to``, the
        vision config's patch sizes; ``kwargs`` as ``__init__``'s."""
        vision = config.vision_config
        settings = {"patch_size": vision.patch_size, "temporal_patch_size": vision.temporal_patch_size,
                    "merge_size": vision.spatial_merge_size}
        kwargs.setdefault("threshold", getattr(config, "rlt_threshold", 0.1))
        kwargs.setdefault("compare_to", getattr(config, "rlt_compare_to", "previous"))
        return cls(tokenizer, config.model_type, **{**settings, **kwargs})

    @property
    def input_scale(self) -> list[float]:
        """``rescale_factor / std`` per channel: how much one grey level moves the normalised pixels."""
        return [self.rescale_factor / s for s in self.video_settings["image_std"]]

    # -- videos ------------------------------------------------------------------------------------

    def _video_frames(self, video) -> torch.Tensor:
        """One video -> float ``(T, C, H, W)`` in 0..255 (as transformers' processors take uint8 frames)."""
        video = torch.as_tensor(video, device=self.device)
        if video.dim() != 4:
            raise ValueError(f"a video must be 4-D frames (T, H, W, C) or (T, C, H, W), got shape {tuple(video.shape)}")
        if video.shape[-1] in (1, 3) and video.shape[1] not in (1, 3):
            video = video.permute(0, 3, 1, 2)
        return video.float()

    def prepare_videos(self, videos: Sequence) -> dict[str, torch.Tensor]:
        """``pixel_values_videos`` ``(rows, C*t*p*p)`` and ``video_grid_thw`` ``(videos, 3)``, as transformers'."""
        if self.video_processor is not None:
            device = {} if self.device is None else {"device": str(self.device)}
            out = self.video_processor(videos=list(videos), return_tensors="pt", do_sample_frames=False, **device)
            return {"pixel_values_videos": out["pixel_values_videos"], "video_grid_thw": out["video_grid_thw"]}
        s = self.video_settings
        p, t, m = s["patch_size"], s["temporal_patch_size"], s["merge_size"]
        mean = torch.tensor(s["image_mean"]).view(1, -1, 1, 1)
        std = torch.tensor(s["image_std"]).view(1, -1, 1, 1)
        rows, grids = [], []
        for video in videos:
            frames = self._video_frames(video)
            height, width = frames.shape[-2:]
            size = smart_resize(height, width, p * m, s["min_pixels"], s["max_pixels"])
            if size != (height, width):  # torchvision's bicubic resize of uint8 frames: float, antialias, round
                frames = F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
                frames = frames.round().clamp(0, 255)
            if pad := -frames.shape[0] % t:  # whole slices: repeat the last frame
                frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
            frames = (frames * self.rescale_factor - mean.to(frames.device)) / std.to(frames.device)
            rows.append(patchify(frames, p, t, m))
            grids.append([frames.shape[0] // t, size[0] // p, size[1] // p])
        return {"pixel_values_videos": torch.cat(rows), "video_grid_thw": torch.tensor(grids)}

    def keep_mask(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor):
        """``video_keep_mask`` and ``video_run_lengths`` of prepared videos (``keep_mask_from_patches``)."""
        s = self.video_settings
        return keep_mask_from_patches(
            pixel_values_videos, video_grid_thw, patch_size=s["patch_size"],
            temporal_patch_size=s["temporal_patch_size"], merge_size=s["merge_size"], threshold=self.threshold,
            input_scale=self.input_scale,
            compare_to=self.compare_to, keep_one_per_slice=self.family == "qwen3_vl",
        )

    # -- prompts -----------------------------------------------------------------------------------

    def _video_text(self, keep: torch.Tensor, grid: Sequence[int], fps: float) -> str:
        """The placeholder text of one video: one ``<|video_pad|>`` per kept group."""
        slices = keep.view(int(grid[0]), -1).sum(1).tolist()
        if self.family == "qwen2_5_vl":
            return self.tokens["video"] * sum(slices)
        t = self.video_settings["temporal_patch_size"]
        text = ""
        for index, kept in enumerate(slices):  # Qwen3VLProcessor: the mean time of the slice's frames
            seconds = (index * t + (t - 1) / 2) / fps
            text += f"<{seconds:.1f} seconds>" + self.tokens["start"] + self.tokens["video"] * kept + self.tokens["end"]
        return text

    def __call__(self, text: str | Sequence[str], videos: Sequence | None = None, images: Sequence | None = None,
                 *, fps: float = 2.0, padding: bool | str = True, return_tensors: str = "pt") -> BatchFeature:
        if self.tokenizer is None:
            raise ValueError("this RLTQwenVLProcessor has no tokenizer: give it the model's tokenizer to build prompts")
        texts = [text] if isinstance(text, str) else list(text)
        data: dict[str, torch.Tensor] = {}
        video_texts: list[str] = []
        if videos is not None and len(videos):
            data.update(self.prepare_videos(videos))
            keep, run_lengths = self.keep_mask(data["pixel_values_videos"], data["video_grid_thw"])
            data["video_keep_mask"], data["video_run_lengths"] = keep, run_lengths
            sizes = (data["video_grid_thw"].prod(-1) // self.video_settings["merge_size"] ** 2).tolist()
            per_video = zip(torch.split(keep, sizes), data["video_grid_thw"])
            video_texts = [self._video_text(k, g, fps) for k, g in per_video]
            if self.family == "qwen2_5_vl":
                data["second_per_grid_ts"] = torch.full((len(sizes),), self.video_settings["temporal_patch_size"] / fps)
        image_texts: list[str] = []
        if images is not None and len(images):
            if self.image_processor is None:
                raise ValueError("this prompt has images: give RLTQwenVLProcessor the model's image_processor")
            image_inputs = self.image_processor(images=images, return_tensors="pt")
            data["pixel_values"], data["image_grid_thw"] = image_inputs["pixel_values"], image_inputs["image_grid_thw"]
            merge = self.image_processor.merge_size ** 2
            image_texts = [self.tokens["image"] * int(g.prod() // merge) for g in data["image_grid_thw"]]
        texts = self._replace(texts, video_texts, image_texts)
        encoded = self.tokenizer(texts, padding=padding, return_tensors=return_tensors)
        input_ids = encoded["input_ids"]
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        types[input_ids == self.image_token_id] = 1
        types[input_ids == self.video_token_id] = 2
        return BatchFeature({**encoded, "mm_token_type_ids": types, **data})

    def _replace(self, texts: list[str], video_texts: list[str], image_texts: list[str]) -> list[str]:
        video, image = self.tokens["video"], self.tokens["image"]
        wrapped = re.escape(self.tokens["start"] + video + self.tokens["end"])
        pattern = re.compile(f"{wrapped}|{re.escape(video)}|{re.escape(image)}")
        videos, images = iter(video_texts), iter(image_texts)

        def replace(match: re.Match) -> str:
            token = match.group(0)
            source, name = (images, "image") if token == image else (videos, "video")
            value = next(source, None)
            if value is None:
                raise ValueError(f"the prompts have more {name} placeholders than {name}s were given")
            if token != image and self.family == "qwen2_5_vl" and token != video:
                return self.tokens["start"] + value + self.tokens["end"]
            return value

        out = [pattern.sub(replace, sample) for sample in texts]
        if next(videos, None) is not None or next(images, None) is not None:
            raise ValueError("more videos or images were given than the prompts have placeholders for")
        return out
