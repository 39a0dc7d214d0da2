"""Small pieces the tools share: device synchronisation, the errors that mean "cannot read this
file", and a processor's pixel normalisation as one multiply-add on the device.

The ImageNet statistics and ``to_pair`` live with the code that travels in checkpoints
(``rlt.models.tokenizer``) and are re-exported here for the tools.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .models.tokenizer import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, to_pair

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "READ_ERRORS",
    "PixelNormalizer",
    "plural",
    "synchronize",
    "to_pair",
]

# Errors that mean "this file cannot be read", not "the program is wrong".
READ_ERRORS = (OSError, ValueError, TypeError, RuntimeError, EOFError)


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 clip"``, ``"2 clips"``, ``"0 clips"``: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. For timing."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PixelNormalizer:
    """A processor's value mapping, ``(p * rescale + offset - mean_c) / std_c``, as ``p * a_c + b_c``.

    Called on uint8 ``(..., C, H, W)`` pixel values (0..255) it returns float32 on the same device;
    float input is returned as it is (already normalised by a processor).
    """

    def __init__(
        self,
        *,
        rescale_factor: float = 1 / 255,
        rescale_offset: float = 0.0,
        image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ):
        std = [float(s) for s in image_std]
        self.scale = [float(rescale_factor) / s for s in std]
        self.shift = [(float(rescale_offset) - float(m)) / s for m, s in zip(image_mean, std)]

    @classmethod
    def from_processor(cls, processor) -> PixelNormalizer:
        rescale = float(processor.rescale_factor) if processor.do_rescale else 1.0
        offset = float(getattr(processor, "rescale_offset", 0.0) or 0.0) if processor.do_rescale else 0.0
        normalize = processor.do_normalize and processor.image_std is not None
        return cls(
            rescale_factor=rescale,
            rescale_offset=offset,
            image_mean=processor.image_mean if normalize else (0.0, 0.0, 0.0),
            image_std=processor.image_std if normalize else (1.0, 1.0, 1.0),
        )

    @property
    def input_scale(self) -> list[float]:
        """How much one grey level moves the output, per channel (an RLT config's ``rlt_input_scale``)."""
        return list(self.scale)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.is_floating_point():
            return pixel_values
        channels = pixel_values.shape[-3]
        shape = (channels, 1, 1)
        scale = torch.tensor(self.scale, device=pixel_values.device).view(shape)
        shift = torch.tensor(self.shift, device=pixel_values.device).view(shape)
        return torch.addcmul(shift, pixel_values.float(), scale)
