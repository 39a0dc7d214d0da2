"""A generated video classification task: objects moving over real still photographs.

Built without downloads, for tests, examples and speed measurements. Every clip is a random crop of
one of the photographs shipped with scikit-image (astronaut, coffee, chelsea, rocket, ...), randomly
flipped and brightened, with a textured object whose motion is the class:

====================  ===================================================================
``static``            the object stays where it is
``move_left/right``   the object moves left / right (speed and heading vary)
``move_up/down``      the object moves up / down
``zoom``              the object grows or shrinks in place
``camera_pan``        the camera pans in any direction: the whole scene, object included, shifts
``blink``             the object disappears and reappears every 2 to 4 frames
====================  ===================================================================

Nuisances make it a real task (a small model does not get everything right after one epoch): a
smaller distractor object oscillating in place (half the clips), a foreground bar that can hide part
of the object (30%), a handheld camera shake (25%, so RLT cannot assume a still camera), sensor noise
(0 to 3 grey levels), slow movers (0.5 px per frame at 224 px: 7 px over 16 frames), sizes from 14%
to 30% of the frame, objects that take their texture from the same photographs as the backgrounds.

Clips come out as uint8 ``(B, T, 3, H, W)`` tensors, deterministic for a seed and an index (each clip
has its own random stream, so chunking does not change them), rendered with batched ``grid_sample``
on any torch device: a GPU builds thousands of 16 x 224 x 224 clips in seconds, with no PyAV and no
files. ``write_synthetic_split`` writes them as mp4 files in class folders (PyAV) for the
file-based path (``rlt.load_video_dataset``), ``write_synthetic_cache`` as a clip cache (``rlt.cache``).

Example:
    >>> from rlt.synthetic import SyntheticVideoDataset
    >>> train = SyntheticVideoDataset(512, seed=0)            # in memory, uint8
    >>> train[0]["pixel_values"].shape, train[0]["labels"]
    (torch.Size([16, 3, 224, 224]), 0)
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BACKGROUND_IMAGES",
    "CLASS_NAMES",
    "DIRECTIONS",
    "REFERENCE_SIZE",
    "SHAPES",
    "TASK_VARIANTS",
    "SyntheticVideoConfig",
    "SyntheticVideoDataset",
    "add_task_arguments",
    "generate_clips",
    "label_of",
    "task_config",
    "write_mp4",
    "write_synthetic_cache",
    "write_synthetic_split",
]

CLASS_NAMES = ("static", "move_left", "move_right", "move_up", "move_down", "zoom", "camera_pan", "blink")
DIRECTIONS = {"move_left": (-1.0, 0.0), "move_right": (1.0, 0.0), "move_up": (0.0, -1.0), "move_down": (0.0, 1.0)}
# Photographs shipped inside the scikit-image wheel (no download); grey ones are used as RGB.
BACKGROUND_IMAGES = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "text", "retina", "colorwheel", "brick", "grass", "gravel", "cell",
)  # fmt: skip
BANK_SIZE = 384  # each photograph is kept as a BANK_SIZE x BANK_SIZE square
NOISE_FRAMES = 97
SHAPES = ("disc", "square", "diamond", "ring")
REFERENCE_SIZE = 224  # speeds and amplitudes are given in pixels at this frame size


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """How clips are generated. Speeds and amplitudes are pixels per frame at 224 px (scaled with ``image_size``).

    Attributes:
        num_frames, image_size: clip shape ``(num_frames, 3, image_size, image_size)``.
        time_step: time between rendered frames, in frames of the reference rate: 0.5 renders the same
            motions at twice the frame rate (dense sampling), so an object moves half as far per frame.
        classes: which of ``CLASS_NAMES`` to use, in label order.
        speed: range of the object's (and the pan's) speed.
        object_size: range of the object's diameter as a fraction of the frame side.
        distractor_prob, occluder_prob, shake_prob: fraction of clips with an oscillating distractor,
            a foreground bar, a shaking camera.
        shake_amplitude: largest camera offset of a shake.
        max_noise: largest sensor noise standard deviation, in grey levels.
    """

    num_frames: int = 16
    image_size: int = 224
    time_step: float = 1.0
    classes: tuple[str, ...] = CLASS_NAMES
    speed: tuple[float, float] = (0.5, 3.0)
    object_size: tuple[float, float] = (0.14, 0.3)
    distractor_prob: float = 0.5
    occluder_prob: float = 0.3
    shake_prob: float = 0.25
    shake_amplitude: float = 2.0
    max_noise: float = 3.0

    def __post_init__(self):
        unknown = [name for name in self.classes if name not in CLASS_NAMES]
        if unknown or not self.classes:
            raise ValueError(f"classes must be a non-empty selection of {CLASS_NAMES}, got {list(self.classes)}")
        if self.num_frames < 2 or self.image_size < 16:
            raise ValueError(f"clips need at least 2 frames of 16 px, got {self.num_frames} of {self.image_size}")
        if not self.time_step > 0:
            raise ValueError(f"time_step must be positive, got {self.time_step}")
        object.__setattr__(self, "classes", tuple(self.classes))


# Named variants of the task, for scripts and benchmarks: the full task, and a still, clean camera
# (no distractor, occluder, shake or noise; faster, larger objects) where RLT drops the most.
TASK_VARIANTS = {
    "full": {},
    "still": {
        "distractor_prob": 0.0,
        "occluder_prob": 0.0,
        "shake_prob": 0.0,
        "max_noise": 0.0,
        "speed": (1.5, 3.0),
        "object_size": (0.25, 0.4),
    },
}


def add_task_arguments(group, *, training: bool = False) -> None:
    """The scripts' flags for the generated task (an ``argparse`` parser or group): where to render it,
    which variant, the time step between frames and the task's seed; with ``training``, also whether the
    training loader keeps the clips on the training device."""
    group.add_argument("--synthetic-device", help="where to render generated clips (default: cuda if available)")
    group.add_argument(
        "--synthetic-variant", choices=sorted(TASK_VARIANTS), default="full",
        help="the generated task: 'full' (nuisances on) or 'still' (a still, clean camera) (default full)",
    )
    group.add_argument(
        "--synthetic-time-step", type=float, default=1.0,
        help="time between generated frames in reference frames: 0.5 = twice the frame rate (dense sampling)",
    )
    group.add_argument("--data-seed", type=int, default=0, help="seed of the generated task (default 0)")
    if training:
        group.add_argument(
            "--synthetic-on-device", action="store_true",
            help="keep the generated clips on the training device (a GPU: 2.4 MB a 16x224 clip) and gather "
            "batches there, with no loader workers or host copies: the data path stops capping the step",
        )


def task_config(variant: str = "full", **overrides) -> SyntheticVideoConfig:
    """The ``SyntheticVideoConfig`` of a named variant (``TASK_VARIANTS``), with ``overrides`` (e.g. ``image_size``)."""
    if variant not in TASK_VARIANTS:
        raise ValueError(f"unknown synthetic task variant {variant!r}; choose one of {sorted(TASK_VARIANTS)}")
    return SyntheticVideoConfig(**{**TASK_VARIANTS[variant], **overrides})


# ------------------------------------------------------------------------------------------- assets


@functools.cache
def _background_bank(device: torch.device) -> torch.Tensor:
    """The photographs as float ``(K, 3, BANK_SIZE, BANK_SIZE)`` in 0..255 on ``device`` (centre square, resized)."""
    try:
        from skimage import data as skdata
    except ImportError as error:
        raise ImportError("the synthetic video task needs scikit-image (pip install scikit-image)") from error
    images = []
    for name in BACKGROUND_IMAGES:
        try:
            image = np.asarray(getattr(skdata, name)())
        except (AttributeError, OSError, ValueError, ImportError):  # not in, or only a download in, this version
            continue
        if image.dtype != np.uint8:
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float()
        side = min(image.shape[1:])
        top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
        square = image[:, top : top + side, left : left + side].unsqueeze(0)
        images.append(F.interpolate(square, size=(BANK_SIZE, BANK_SIZE), mode="bilinear", antialias=True)[0])
    if len(images) < 4:
        raise RuntimeError(f"scikit-image offered only {len(images)} of the background photographs {BACKGROUND_IMAGES}")
    return torch.stack(images).clamp_(0, 255).to(device)


@functools.cache
def _noise_bank(size: int, device: torch.device) -> torch.Tensor:
    """Unit Gaussian noise frames ``(NOISE_FRAMES, 3, size, size)`` on ``device``, the same on every machine."""
    generator = torch.Generator().manual_seed(1234)
    return torch.randn(NOISE_FRAMES, 3, size, size, generator=generator).to(device)


# --------------------------------------------------------------------------------------- parameters


def _texture(rng, num_images) -> dict:
    """A sprite's texture: a patch of one photograph (index, centre in its [-1, 1] coordinates, scale), tinted."""
    return {
        "image": int(rng.integers(num_images)),
        "tex_center": rng.uniform(-0.7, 0.7, 2),
        "tex_scale": rng.uniform(0.06, 0.25),
        "tint": rng.uniform(0, 255, 3),
        "tint_weight": rng.uniform(0.0, 0.7),
    }


def label_of(index: int, config: SyntheticVideoConfig) -> int:
    """The label of clip ``index``: labels cycle through the classes, so every split is balanced."""
    return int(index) % len(config.classes)


def _clip_parameters(seed: int, index: int, config: SyntheticVideoConfig, num_images: int) -> dict:
    """Everything random about clip ``index``, from its own stream ``(seed, index)``, drawn in a fixed order."""
    rng = np.random.default_rng([int(seed), int(index)])
    label = label_of(index, config)
    t = np.arange(config.num_frames, dtype=np.float64) * config.time_step  # in reference frames
    camera, background = _camera_and_background(rng, config.classes[label], t, config, num_images)
    target = _target(rng, config.classes[label], t, camera, config, num_images)
    distractor, occluder = _distractor_and_occluder(rng, t, camera, config, num_images)
    noise = {"sigma": rng.uniform(0, config.max_noise), "frames": rng.integers(NOISE_FRAMES, size=len(t))}
    return {
        "label": label,
        "camera": camera,
        "background": background,
        "sprites": (distractor, target, occluder),
        "noise": noise,
    }


def _camera_and_background(rng, kind: str, t, config: SyntheticVideoConfig, num_images: int) -> tuple:
    """The camera's offsets in frame pixels (a pan for ``camera_pan`` and/or a handheld shake), and the
    photograph crop it films, with room for the camera's reach."""
    frames, size = len(t), config.image_size
    unit = size / REFERENCE_SIZE
    camera = np.zeros((frames, 2))
    if kind == "camera_pan":
        angle = rng.uniform(0, 2 * math.pi)
        camera += np.outer(t, [math.cos(angle), math.sin(angle)]) * rng.uniform(*config.speed) * unit
    if rng.random() < config.shake_prob:
        camera += rng.uniform(-1, 1, (frames, 2)) * rng.uniform(0.5, 1.0) * config.shake_amplitude * unit
    reach = float(np.abs(camera).max()) + 1.0
    scale_limit = 1.0 / (1.0 + 2.0 * reach / size)
    bg_scale = rng.uniform(0.35, 0.9) * scale_limit
    room = 1.0 - bg_scale * (1.0 + 2.0 * reach / size)
    background = {
        "image": int(rng.integers(num_images)),
        "scale": bg_scale,
        "center": rng.uniform(-room, room, 2),
        "flip": float(rng.choice([-1.0, 1.0])),
        "brightness": rng.uniform(0.75, 1.2),
    }
    return camera, background


def _target(rng, kind: str, t, camera, config: SyntheticVideoConfig, num_images: int) -> dict:
    """The object whose motion is the class, moved in the scene (then by the camera), kept in view."""
    frames, size = len(t), config.image_size
    unit = size / REFERENCE_SIZE
    margin = 2.0 * unit
    radius = np.full(frames, rng.uniform(*config.object_size) * size / 2)
    visible = np.ones(frames, dtype=bool)
    velocity = np.zeros(2)
    if kind in DIRECTIONS:
        heading = math.atan2(DIRECTIONS[kind][1], DIRECTIONS[kind][0]) + rng.uniform(-0.35, 0.35)
        velocity = np.array([math.cos(heading), math.sin(heading)]) * rng.uniform(*config.speed) * unit
    elif kind == "zoom":
        factor = rng.uniform(1.6, 2.4) ** float(rng.choice([-1.0, 1.0]))
        radius = radius / math.sqrt(max(factor, 1 / factor)) * factor ** (t / (frames - 1))
    elif kind == "blink":
        period = int(rng.integers(2, 5))
        phase = int(rng.integers(2 * period))
        visible = ((np.floor(t).astype(int) + phase) // period) % 2 == 0
    r_max = float(radius.max())
    travel = velocity * t[-1]
    span = size - 2 * (r_max + margin)
    if np.abs(travel).max() > 0.9 * span:  # too fast to stay in view: slow down
        travel *= 0.9 * span / np.abs(travel).max()
        velocity = travel / t[-1]
    low = r_max + margin - np.minimum(travel, 0)
    high = size - r_max - margin - np.maximum(travel, 0)
    start = rng.uniform(low, np.maximum(high, low))
    return {
        **_texture(rng, num_images),
        "shape": int(rng.integers(len(SHAPES))),
        "position": start + np.outer(t, velocity) - camera,
        "radius": np.stack([radius, radius], axis=1),
        "visible": visible,
        "present": True,
    }


def _distractor_and_occluder(rng, t, camera, config: SyntheticVideoConfig, num_images: int) -> tuple[dict, dict]:
    """A smaller distractor oscillating in place (in the scene), and a foreground bar fixed in the frame."""
    frames, size = len(t), config.image_size
    unit = size / REFERENCE_SIZE
    d_radius = rng.uniform(0.04, 0.08) * size
    d_angle = rng.uniform(0, 2 * math.pi)
    d_amplitude = rng.uniform(1.5, 6.0) * unit
    d_wave = np.sin(2 * math.pi * t / rng.uniform(4, 10) + rng.uniform(0, 2 * math.pi))
    d_start = rng.uniform(d_radius + d_amplitude, size - d_radius - d_amplitude, 2)
    distractor = {
        **_texture(rng, num_images),
        "shape": int(rng.integers(len(SHAPES))),
        "position": d_start + np.outer(d_amplitude * d_wave, [math.cos(d_angle), math.sin(d_angle)]) - camera,
        "radius": np.full((frames, 2), d_radius),
        "visible": np.ones(frames, dtype=bool),
        "present": rng.random() < config.distractor_prob,
    }
    half_w, half_h = rng.uniform(0.03, 0.1) * size, rng.uniform(0.2, 0.5) * size
    if rng.random() < 0.5:
        half_w, half_h = half_h, half_w
    occluder = {
        **_texture(rng, num_images),
        "shape": SHAPES.index("square"),
        "position": np.broadcast_to(rng.uniform(0.2 * size, 0.8 * size, 2), (frames, 2)),
        "radius": np.broadcast_to(np.array([half_w, half_h]) / 0.8, (frames, 2)),  # "square" fills |u| < 0.8
        "visible": np.ones(frames, dtype=bool),
        "present": rng.random() < config.occluder_prob,
    }
    return distractor, occluder


# ---------------------------------------------------------------------------------------- rendering


def _tensor(array, device, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)


def _render_background(params, bank, size, frames, device) -> torch.Tensor:
    """``(B, T, 3, S, S)`` float: each clip's photograph crop seen through its moving camera."""
    bg = [p["background"] for p in params]
    scale = _tensor([b["scale"] for b in bg], device).view(-1, 1, 1, 1)
    flip = _tensor([b["flip"] for b in bg], device).view(-1, 1, 1, 1)
    center = _tensor(np.stack([b["center"] for b in bg]), device).view(-1, 1, 1, 1, 2)
    camera = _tensor(np.stack([p["camera"] for p in params]), device) * (2.0 / size)  # (B, T, 2), normalised
    axis = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    x = axis.view(1, 1, 1, size) + camera[..., 0, None, None]  # (B, T, 1, S)
    y = axis.view(1, 1, size, 1) + camera[..., 1, None, None]  # (B, T, S, 1)
    x, y = torch.broadcast_tensors(x, y)
    grid = torch.stack([x * flip * scale, y * scale], dim=-1) + center  # (B, T, S, S, 2)
    source = bank[_tensor([b["image"] for b in bg], device, torch.long)]
    out = F.grid_sample(source, grid.flatten(1, 2), mode="bilinear", padding_mode="border", align_corners=False)
    brightness = _tensor([b["brightness"] for b in bg], device).view(-1, 1, 1, 1)
    return (out * brightness).view(len(params), 3, frames, size, size).transpose(1, 2)


def _shape_distance(shape: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A distance that is 1 on each shape's outline (< 1 inside), for shape ids ``(B,)``."""
    shape = shape.view(-1, *([1] * (u.dim() - 1)))
    disc = torch.sqrt(u * u + v * v)
    square = torch.maximum(u.abs(), v.abs()) / 0.8
    diamond = u.abs() + v.abs()
    ring = torch.where(disc < 0.55, 1.0 + (0.55 - disc) * 4, disc)  # a disc with a hole
    return torch.where(shape == 0, disc, torch.where(shape == 1, square, torch.where(shape == 2, diamond, ring)))


def _composite_sprite(frames: torch.Tensor, sprite: dict, bank: torch.Tensor, size: int) -> torch.Tensor:
    """Paint one object per clip onto ``frames`` ``(B, T, 3, S, S)`` (alpha-blended, soft 1 px edge).

    ``sprite`` holds ``_clip_parameters``' sprite fields stacked over the clips: ``position`` (centre, x y)
    and ``radius`` (half width, half height) ``(B, T, 2)`` in pixels, ``visible`` ``(B, T)``, the rest ``(B, ...)``.
    """
    if not sprite["present"].any():
        return frames
    device = frames.device
    batch, steps = frames.shape[:2]
    position = _tensor(sprite["position"], device)  # (B, T, 2)
    radius = _tensor(sprite["radius"], device)
    pixel = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    u = (pixel.view(1, 1, 1, size) - position[..., 0, None, None]) / radius[..., 0, None, None]  # (B, T, 1, S)
    v = (pixel.view(1, 1, size, 1) - position[..., 1, None, None]) / radius[..., 1, None, None]  # (B, T, S, 1)
    u, v = torch.broadcast_tensors(u, v)
    distance = _shape_distance(_tensor(sprite["shape"], device, torch.long), u, v)
    softness = radius.amin(-1)[..., None, None]  # pixels per unit of distance
    alpha = ((1.0 - distance) * softness).clamp(0, 1)
    alpha = alpha * _tensor(sprite["visible"] & sprite["present"][:, None], device)[..., None, None]
    tex_center = _tensor(sprite["tex_center"], device).view(-1, 1, 1, 1, 2)
    tex_scale = _tensor(sprite["tex_scale"], device).view(-1, 1, 1, 1, 1)
    grid = (torch.stack([u, v], dim=-1) * tex_scale + tex_center).clamp(-1, 1)  # (B, T, S, S, 2)
    source = bank[_tensor(sprite["image"], device, torch.long)]
    texture = F.grid_sample(source, grid.flatten(1, 2), mode="bilinear", align_corners=False)
    texture = texture.view(batch, 3, steps, size, size).transpose(1, 2)
    weight = _tensor(sprite["tint_weight"], device).view(-1, 1, 1, 1, 1)
    color = texture * (1 - weight) + _tensor(sprite["tint"], device).view(-1, 1, 3, 1, 1) * weight
    alpha = alpha.unsqueeze(2)
    return frames * (1 - alpha) + color * alpha


def generate_clips(
    indices: int | Sequence[int] | range,
    *,
    seed: int = 0,
    config: SyntheticVideoConfig | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render clips ``indices`` (an int ``n`` means ``range(n)``) of the task with ``seed``.

    Returns:
        ``clips`` uint8 ``(B, T, 3, H, W)`` on ``device`` and ``labels`` int64 ``(B,)``. Labels cycle
        through the classes (clip ``i`` has label ``i % num_classes``). The same ``(seed, index)``
        gives the same clip on a given device whatever the batch it is rendered in.
    """
    config = config or SyntheticVideoConfig()
    indices = range(indices) if isinstance(indices, int) else indices
    device = torch.device(device or "cpu")
    size, frames = config.image_size, config.num_frames
    bank = _background_bank(device)
    params = [_clip_parameters(seed, int(i), config, bank.shape[0]) for i in indices]
    if not params:
        return (
            torch.empty(0, frames, 3, size, size, dtype=torch.uint8, device=device),
            torch.empty(0, dtype=torch.long, device=device),
        )
    with torch.no_grad():
        clips = _render_background(params, bank, size, frames, device)
        for slot in range(3):  # distractor, object, foreground bar
            sprites = [p["sprites"][slot] for p in params]
            clips = _composite_sprite(clips, {key: np.stack([s[key] for s in sprites]) for key in sprites[0]}, bank, size)
        sigma = _tensor([p["noise"]["sigma"] for p in params], device).view(-1, 1, 1, 1, 1)
        noise_index = _tensor(np.stack([p["noise"]["frames"] for p in params]), device, torch.long)
        clips = clips + _noise_bank(size, device)[noise_index] * sigma
        clips = clips.round_().clamp_(0, 255).to(torch.uint8)
    labels = torch.tensor([p["label"] for p in params], dtype=torch.long, device=device)
    return clips, labels


def rendered_chunks(num_clips: int, seed: int, config, device, chunk_size: int, start: int = 0, *,
                    clips_to: str | torch.device = "cpu"):
    """Clips ``start .. start + num_clips - 1`` rendered ``chunk_size`` at a time:
    ``(index range, uint8 clips on clips_to (default the CPU), int64 labels on the CPU)`` per chunk.
    Clips rendered where they are kept (a GPU) stay there, with no round trip through the host."""
    for begin in range(start, start + num_clips, chunk_size):
        indices = range(begin, min(begin + chunk_size, start + num_clips))
        clips, labels = generate_clips(indices, seed=seed, config=config, device=device)
        yield indices, clips.to(clips_to), labels.cpu()


class SyntheticVideoDataset(torch.utils.data.Dataset):
    """``num_clips`` generated clips held in memory (uint8; on the CPU unless ``clips_device``), for
    ``Trainer`` / ``DataLoader``.

    Items are ``{"pixel_values": uint8 (T, 3, H, W), "labels": int}``; normalise them on the device
    (``rlt.training.ClipCollator`` / the example training script do). 16 x 224 x 224 clips take
    2.4 MB each.

    Args:
        num_clips: clips ``start .. start + num_clips - 1`` of the task with ``seed``.
        device: where to render (a GPU is much faster).
        clips_device: where to keep the clips (default: the CPU). On the training GPU, a loader gathers
            its batches there, in the main process: uint8 batches of 16 x 224 px clips, sent from loader
            workers through shared and pinned memory, capped an H100 near 940 clips/s.
        chunk_size: clips rendered per batch.
    """

    def __init__(self, num_clips: int, *, seed: int = 0, config: SyntheticVideoConfig | None = None,
                 device: str | torch.device | None = None, chunk_size: int = 32, start: int = 0,
                 clips_device: str | torch.device | None = None):
        self.config = config or SyntheticVideoConfig()
        self.seed = seed
        size, frames = self.config.image_size, self.config.num_frames
        self.clips = torch.empty(num_clips, frames, 3, size, size, dtype=torch.uint8, device=clips_device or "cpu")
        self.labels = torch.empty(num_clips, dtype=torch.long)
        chunks = rendered_chunks(num_clips, seed, self.config, device, chunk_size, start, clips_to=self.clips.device)
        for indices, clips, labels in chunks:
            self.clips[indices.start - start : indices.stop - start] = clips
            self.labels[indices.start - start : indices.stop - start] = labels

    @property
    def class_names(self) -> list[str]:
        return list(self.config.classes)

    def __len__(self) -> int:
        return self.clips.shape[0]

    @property
    def device(self) -> torch.device:
        """Where the clips are (a loader of clips on an accelerator needs no workers and no pinned memory)."""
        return self.clips.device

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.clips[index], "labels": int(self.labels[index])}


# ------------------------------------------------------------------------------------------- files


def write_mp4(path: str | Path, frames: torch.Tensor | np.ndarray, *, fps: int = 25, crf: int = 18) -> Path:
    """Write uint8 frames ``(T, 3, H, W)`` or ``(T, H, W, 3)`` as an H.264 mp4 (yuv420p) with PyAV."""
    from fractions import Fraction

    import av

    frames = torch.as_tensor(frames)
    if frames.dim() != 4 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (T, 3, H, W) or (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[1] == 3 and frames.shape[-1] != 3:
        frames = frames.permute(0, 2, 3, 1)
    array = frames.contiguous().numpy()
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = array.shape[2], array.shape[1], "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i, image in enumerate(array):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_synthetic_cache(out: str | Path, num_clips: int, *, seed: int = 0, config: SyntheticVideoConfig | None = None,
                          device: str | torch.device | None = None, chunk_size: int = 64) -> Path:
    """Write ``num_clips`` clips as a clip cache (``rlt.cache``) at ``out``: uint8 as rendered, no PyAV.

    Rendered a chunk at a time, so the split never sits in memory whole. Returns ``out``.
    """
    from .cache import write_clip_cache

    if num_clips < 1 or chunk_size < 1:
        raise ValueError(f"num_clips and chunk_size must be at least 1, got {num_clips} and {chunk_size}")
    config = config or SyntheticVideoConfig()
    labels = [label_of(index, config) for index in range(num_clips)]  # known before rendering, as the cache needs

    clips = (clip for _, chunk, _ in rendered_chunks(num_clips, seed, config, device, chunk_size) for clip in chunk)
    write_clip_cache(clips, labels, out, class_names=config.classes, progress=False)
    return Path(out)


def write_synthetic_split(root: str | Path, split: str, num_clips: int, *, seed: int = 0,
                          config: SyntheticVideoConfig | None = None, device: str | torch.device | None = None,
                          chunk_size: int = 16, fps: int = 25, crf: int = 18) -> Path:
    """Write ``num_clips`` clips as ``root/split/<class>/<split>_<index>.mp4`` and list them in ``root/split.csv``.

    Also writes ``root/labels.csv`` (``id,label``). Returns the CSV's path; ``rlt.load_video_dataset``
    reads either the folder or the CSV.
    """
    config = config or SyntheticVideoConfig()
    root = Path(root)
    rows = []
    for indices, clips, labels in rendered_chunks(num_clips, seed, config, device, chunk_size):
        for index, clip, label in zip(indices, clips, labels.tolist()):
            name = config.classes[label]
            relative = Path(split) / name / f"{split}_{index:06d}.mp4"
            (root / relative.parent).mkdir(parents=True, exist_ok=True)
            write_mp4(root / relative, clip, fps=fps, crf=crf)
            rows.append((relative.as_posix(), name))
    _write_csv(root / "labels.csv", ["id", "label"], enumerate(config.classes))
    return _write_csv(root / f"{split}.csv", ["path", "label"], rows)


def _write_csv(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path
