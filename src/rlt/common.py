"""Small pieces the tools share: device synchronisation, torch.compile's graph count, the errors that mean "cannot read this
file", and a processor's pixel normalisation as one multiply-add on the device.

The ImageNet statistics and ``to_pair`` live with the code that travels in checkpoints
(``rlt.models.tokenizer``) and are re-exported here for the tools.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .models.tokenizer import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, pixel_affine, to_pair

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "READ_ERRORS",
    "VIDEO_EXTENSIONS",
    "PixelNormalizer",
    "compiled_graphs",
    "plural",
    "synchronize",
    "to_pair",
]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv")
# Errors that mean "this file cannot be read", not "the program is wrong".
READ_ERRORS = (OSError, ValueError, TypeError, RuntimeError, EOFError)


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``"1 clip"``, ``"2 clips"``, ``"0 clips"``: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (each compile and recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU. For timing."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PixelNormalizer:
    """A processor's value mapping as ``p * scale_c + shift_c`` (``pixel_affine``), for uint8 clips on the device.

    uint8 ``(..., C, H, W)`` in, float32 out on the same device; float input (already normalised) is
    returned as it is. The default is the ImageNet mapping, the reference scale of ``tau``.
    """

    def __init__(
        self,
        *,
        rescale_factor: float = 1 / 255,
        rescale_offset: float = 0.0,
        image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ):
        settings = {"rescale_factor": rescale_factor, "rescale_offset": rescale_offset,
                    "image_mean": image_mean, "image_std": image_std}
        self._set_affine(*pixel_affine(settings, len(image_std)))

    @classmethod
    def from_processor(cls, processor) -> PixelNormalizer:
        normalizer = cls.__new__(cls)
        normalizer._set_affine(*pixel_affine(processor))
        return normalizer

    def _set_affine(self, scale: Sequence[float], shift: Sequence[float]) -> None:
        self.scale, self.shift = scale, shift
        self._affine = {}  # per device: (scale, shift) as (C, 1, 1) tensors

    @property
    def input_scale(self) -> list[float]:
        """How much one grey level moves the output, per channel (an RLT config's ``rlt_input_scale``)."""
        return list(self.scale)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.is_floating_point():
            return pixel_values
        scale, shift = self._affine_on(pixel_values.device)
        return torch.addcmul(shift, pixel_values.float(), scale)

    def _affine_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` as ``(C, 1, 1)`` tensors on ``device``, made once per device: copying them from
        the host every call waited for the device each training step (a blocking copy is a host sync)."""
        if device not in self._affine:
            self._affine[device] = tuple(torch.tensor(v).view(-1, 1, 1).to(device) for v in (self.scale, self.shift))
        return self._affine[device]
