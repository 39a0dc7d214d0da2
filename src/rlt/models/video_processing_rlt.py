"""A video processor for RLT checkpoints: decode (PyAV), sample frames, resize, crop, normalise.

``RLTVideoProcessor`` is a ``transformers`` video processor (``AutoVideoProcessor`` and the
``video-classification`` pipeline load it from a checkpoint folder with ``trust_remote_code=True``)
that needs no torchvision: it decodes with PyAV (or torchcodec when installed and asked for) and
resizes, crops and normalises with plain torch ops. It returns ``pixel_values`` of shape
``(B, T, C, H, W)``, the layout VideoMAE and ViViT take.

Decoding and frame sampling (``decode_video``, ``sample_frame_indices``, ``count_padded_frames``,
``frames_to_tensor``) are in ``video_decoding.py``; their names stay importable from here. This file
travels into checkpoint folders for ``trust_remote_code``: only single-dot relative imports, optional
dependencies inside ``try``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor

from .tokenizer import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, check_finite_pixels, pixel_affine
from .video_decoding import (  # the decoding names are re-exported: their old import path
    DECODERS,
    SEEK_GAP_FRAMES,  # noqa: F401 - public, never in __all__
    VideoDecodeError,
    _describe,
    count_padded_frames,
    decode_video,
    frames_to_tensor,
    sample_frame_indices,
)

__all__ = [
    "DECODERS",
    "RLTVideoProcessor",
    "VideoDecodeError",
    "decode_video",
    "frames_to_tensor",
    "sample_frame_indices",
]


class RLTVideoProcessorKwargs(VideosKwargs, total=False):
    """``VideosKwargs`` plus what RLT's processor adds."""

    frame_stride: int | None
    rescale_offset: float | None
    decoder: str | None


class RLTVideoProcessor(BaseVideoProcessor):
    r"""Video processor for RLT checkpoints (VideoMAE, ViViT), with no torchvision needed.

    Steps: decode (PyAV by default), sample ``num_frames`` frames, resize the short side to
    ``size["shortest_edge"]`` (bilinear, antialiased), centre-crop to ``crop_size``, then
    ``p * rescale_factor + rescale_offset`` and ``(x - image_mean) / image_std`` per channel.

    Inputs: a path, bytes, a binary file object, a ``datasets`` ``Video`` row (a ``{"path", "bytes"}``
    dict, or a torchcodec ``VideoDecoder``), a ``(T, H, W, C)`` / ``(T, C, H, W)`` numpy array or
    tensor (uint8 0..255 values), or a list of those (a batch). Output ``pixel_values`` is float32
    ``(B, T, C, H, W)``. Arrays are sampled like decoded videos when ``do_sample_frames``.

    Args:
        num_frames: frames per clip.
        frame_stride: take every ``frame_stride``-th frame from frame 0 instead of spreading
            ``num_frames`` over the clip; exclusive with ``fps``.
        fps: take frames at this rate (frames per second of the clip's time); exclusive with ``frame_stride``.
        decoder: ``"pyav"`` (default) or ``"torchcodec"``.
        rescale_offset: added after rescaling (ViViT: ``rescale_factor = 1/127.5`` and offset ``-1``).
    """

    model_input_names: ClassVar[list[str]] = ["pixel_values"]
    valid_kwargs = RLTVideoProcessorKwargs
    default_to_square = False  # size=256 means the short side, as for VideoMAE
    do_resize = True
    size: ClassVar[dict[str, int]] = {"shortest_edge": 224}
    do_center_crop = True
    crop_size: ClassVar[dict[str, int]] = {"height": 224, "width": 224}
    do_rescale = True
    rescale_factor = 1 / 255
    rescale_offset = 0.0
    do_normalize = True
    image_mean: ClassVar[list[float]] = list(IMAGENET_DEFAULT_MEAN)
    image_std: ClassVar[list[float]] = list(IMAGENET_DEFAULT_STD)
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 16
    frame_stride = None
    fps = None
    decoder = "pyav"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.check_settings()

    def check_settings(self) -> None:
        """Clear errors for settings that contradict each other (also after changing attributes by hand)."""
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.frame_stride is not None and self.fps is not None:
            raise ValueError("frame_stride and fps are exclusive: give one of them")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise ValueError(f"{name} must hold 3 numbers (RGB), got {list(value)}")
        if self.image_std is not None and any(float(s) <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {list(self.image_std)}")

    # -- what RLT needs to know ----------------------------------------------------------------

    @property
    def rlt_input_scale(self) -> list[float]:
        """Per channel, how much one grey level (of 0..255) moves ``pixel_values``: ``rescale_factor / std_c``.

        The value for an RLT config's ``rlt_input_scale`` (``pixel_affine``, the one formula).
        """
        return pixel_affine(self)[0]

    @classmethod
    def from_source_config(
        cls, processor_config: dict | None, *, num_frames: int | None = None, image_size=None, **kwargs
    ):
        """Build one from another checkpoint's (image or video) processor config dict.

        Takes its mean/std, rescaling (ViViT's ``offset: true`` becomes ``rescale_offset = -1``),
        resize and crop sizes; without a config, ImageNet normalisation at ``image_size``.
        """
        source = dict(processor_config or {})
        settings = {}
        copied = (
            "do_resize", "do_center_crop", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std"
        )
        for key in copied:
            if source.get(key) is not None:
                settings[key] = source[key]
        for key in ("frame_stride", "fps", "decoder", "rescale_offset"):
            if source.get(key) is not None:
                settings[key] = source[key]
        if isinstance(source.get("offset"), bool) and "rescale_offset" not in settings:
            settings["rescale_offset"] = -1.0 if source["offset"] else 0.0
        for key in ("image_mean", "image_std"):
            if isinstance(settings.get(key), (int, float)):
                settings[key] = [float(settings[key])] * 3
        size = source.get("size")
        if isinstance(size, dict) and size.get("shortest_edge"):
            settings["size"] = {"shortest_edge": int(size["shortest_edge"])}
        elif isinstance(size, dict) and size.get("height") and size.get("width"):
            settings["size"] = {"shortest_edge": int(min(size["height"], size["width"]))}
        elif isinstance(size, int):
            settings["size"] = {"shortest_edge": size}
        crop = source.get("crop_size")
        if isinstance(crop, dict) and crop.get("height") and crop.get("width"):
            settings["crop_size"] = {"height": int(crop["height"]), "width": int(crop["width"])}
        elif isinstance(crop, int):
            settings["crop_size"] = {"height": crop, "width": crop}
        if image_size is not None:
            height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            settings["crop_size"] = {"height": int(height), "width": int(width)}
            settings.setdefault("size", {"shortest_edge": int(min(height, width))})
        if num_frames is not None:
            settings["num_frames"] = int(num_frames)
        settings.update(kwargs)
        return cls(**settings)

    # -- the steps --------------------------------------------------------------------------------

    def load_frames(
        self,
        video,
        *,
        num_frames: int | None = None,
        frame_stride: int | None = None,
        fps: float | None = None,
        do_sample_frames: bool | None = None,
        decoder: str | None = None,
        return_padded_frames: bool = False,
    ):
        """Decode (if needed) and sample one clip: uint8 (or the array's dtype) ``(T, 3, H, W)``.

        With ``return_padded_frames``: ``(frames, padded)``, ``padded`` the number of sampled frames
        that repeat the one before them because the clip is too short for the sampling.
        """
        num_frames = self.num_frames if num_frames is None else num_frames
        frame_stride = self.frame_stride if frame_stride is None and fps is None else frame_stride
        fps = self.fps if fps is None and frame_stride is None else fps
        do_sample_frames = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        decoder = decoder or self.decoder
        if isinstance(video, (np.ndarray, torch.Tensor)):
            frames = frames_to_tensor(video, f"video array {tuple(video.shape)}")
            padded = 0
            if do_sample_frames:
                if fps is not None:
                    raise ValueError("sampling an array at a target fps needs its frame rate: decode the file instead")
                indices = sample_frame_indices(frames.shape[0], num_frames, frame_stride=frame_stride)
                frames = frames[torch.from_numpy(indices)]
                padded = count_padded_frames(indices)
            return (frames, padded) if return_padded_frames else frames
        decoded, padded = decode_video(
            video,
            num_frames=num_frames,
            frame_stride=frame_stride,
            fps=fps,
            decoder=decoder,
            do_sample_frames=do_sample_frames,
            return_padded_frames=True,
        )
        frames = frames_to_tensor(decoded, _describe(video))
        return (frames, padded) if return_padded_frames else frames

    def resize_and_crop(
        self, frames: torch.Tensor, *, size=None, crop_size=None, do_resize=None, do_center_crop=None
    ) -> torch.Tensor:
        """``(T, C, H, W)`` -> float32 ``(T, C, crop_h, crop_w)``, pixel values still 0..255.

        uint8 frames are resized as uint8 (rounded to whole grey levels), other dtypes in float.
        """
        do_resize = self.do_resize if do_resize is None else do_resize
        do_center_crop = self.do_center_crop if do_center_crop is None else do_center_crop
        size = _size_dict(self.size if size is None else size)
        crop_size = _size_dict(self.crop_size if crop_size is None else crop_size)
        video = frames if frames.dtype == torch.uint8 else frames.float()
        if do_resize:
            video = _resize_short_side(video, size)
        if do_center_crop:
            video = _center_crop(video, crop_size)
        return video.float()

    def normalize_frames(self, video: torch.Tensor, **overrides) -> torch.Tensor:
        """``p * rescale_factor + rescale_offset``, then ``(x - mean_c) / std_c``: ``(..., C, H, W)`` float32.

        One multiply-add per channel (``pixel_affine``); keyword overrides (``do_rescale``,
        ``rescale_factor``, ``rescale_offset``, ``do_normalize``, ``image_mean``, ``image_std``) win over
        the processor's own values where not None.
        """
        keys = ("do_rescale", "rescale_factor", "rescale_offset", "do_normalize", "image_mean", "image_std")
        unknown = set(overrides) - set(keys)
        if unknown:
            raise TypeError(f"normalize_frames takes {keys}, got {sorted(unknown)}")
        settings = {key: getattr(self, key) if overrides.get(key) is None else overrides[key] for key in keys}
        affine = pixel_affine(settings, video.shape[-3])
        scale, shift = (torch.tensor(values, device=video.device).view(-1, 1, 1) for values in affine)
        return torch.addcmul(shift, video.float(), scale)

    def preprocess(self, videos, return_padded_frames: bool = False, **kwargs) -> BatchFeature:
        """Process one video or a list of videos into ``pixel_values`` ``(B, T, C, H, W)``.

        With ``return_padded_frames=True`` the output also holds ``padded_frames`` ``(B,)`` int64: per
        clip, the sampled frames that repeat the one before them (the clip was too short).
        """
        allowed = set(self.valid_kwargs.__annotations__) | {"return_tensors"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {unknown}")
        settings = {key: kwargs[key] for key in kwargs if kwargs[key] is not None}
        return_tensors = settings.pop("return_tensors", "pt")
        sampling_keys = ("num_frames", "frame_stride", "fps", "do_sample_frames", "decoder")
        sampling = {k: settings[k] for k in sampling_keys if k in settings}
        geometry = {k: settings.get(k) for k in ("size", "crop_size", "do_resize", "do_center_crop")}
        value_keys = ("do_rescale", "rescale_factor", "rescale_offset", "do_normalize", "image_mean", "image_std")
        values = {k: settings.get(k) for k in value_keys}

        clips, padded = [], []
        for video in _as_batch(videos):
            frames, repeats = self.load_frames(video, **sampling, return_padded_frames=True)
            clips.append(self.normalize_frames(self.resize_and_crop(frames, **geometry), **values))
            padded.append(repeats)
        shapes = {tuple(clip.shape) for clip in clips}
        if len(shapes) > 1:
            raise ValueError(
                f"the videos came out in different shapes {sorted(shapes)}; set do_sample_frames=True and "
                "do_center_crop=True so that every clip has num_frames frames of crop_size"
            )
        output = {"pixel_values": torch.stack(clips)}
        check_finite_pixels(output["pixel_values"])
        if return_padded_frames:
            output["padded_frames"] = torch.tensor(padded, dtype=torch.int64)
        if return_tensors in ("np", "numpy"):
            return BatchFeature({key: value.numpy() for key, value in output.items()})
        return BatchFeature(output)

    def __call__(self, videos, **kwargs) -> BatchFeature:
        return self.preprocess(videos, **kwargs)


def _as_batch(videos) -> list:
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError("no video given (an empty list)")
        return list(videos)
    if isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 5:
        return list(videos)
    return [videos]


def _size_dict(size) -> dict:
    if size is None:
        return {}
    if isinstance(size, int):
        return {"shortest_edge": size, "height": size, "width": size}
    if not isinstance(size, dict):  # transformers' SizeDict
        size = {key: getattr(size, key, None) for key in ("shortest_edge", "height", "width")}
    return {key: value for key, value in size.items() if value is not None}


def _resize_short_side(video: torch.Tensor, size: dict) -> torch.Tensor:
    height, width = video.shape[-2:]
    if size.get("shortest_edge"):
        short = int(size["shortest_edge"])
        if height <= width:
            new_h, new_w = short, max(1, round(width * short / height))
        else:
            new_h, new_w = max(1, round(height * short / width)), short
    elif size.get("height") and size.get("width"):
        new_h, new_w = int(size["height"]), int(size["width"])
    else:
        raise ValueError(f"size must give shortest_edge or height and width, got {size}")
    if (new_h, new_w) == (height, width):
        return video
    if video.dtype == torch.uint8:
        # torch's uint8 antialiased bilinear kernel (channels-last) is several times faster than
        # the float one on CPU; it rounds to whole grey levels, as PIL and torchvision do.
        video = video.contiguous(memory_format=torch.channels_last)
    return F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)


def _center_crop(video: torch.Tensor, crop_size: dict) -> torch.Tensor:
    height, width = video.shape[-2:]
    crop_h, crop_w = int(crop_size["height"]), int(crop_size["width"])
    if crop_h > height or crop_w > width:
        raise ValueError(
            f"cannot centre-crop {crop_h}x{crop_w} from frames of {height}x{width}; "
            "resize the short side to at least the crop size"
        )
    top = (height - crop_h) // 2
    left = (width - crop_w) // 2
    return video[..., top : top + crop_h, left : left + crop_w]


RLTVideoProcessor.register_for_auto_class()
