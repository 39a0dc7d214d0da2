"""See what RLT does to a video: token counts, and the frames with the dropped tubelets greyed out.

``inspect_video`` decodes and samples a clip, runs the run-length tokenizer at one or more
thresholds and returns one ``ClipReport`` per threshold; ``render_keep_mask`` draws the sampled
frames (one column per tubelet time step, one row per frame of the tubelet) with the dropped
tubelets greyed out, as in the paper's Fig. 4; ``plot_kept_fraction`` draws the kept fraction
against the threshold. ``run_inspection`` is what ``rlt inspect`` runs. Pillow only (no matplotlib).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import registry
from .cache import prepare_clip
from .collator import KeepMaskSettings
from .common import plural
from .models.token_choice import run_length_tokenize_for
from .models.tokenizer import check_threshold, to_pair
from .models.video_processing_rlt import RLTVideoProcessor

__all__ = [
    "HEADER_HEIGHT",
    "PLOT_SIZE",
    "SAMPLE_ATTRIBUTION",
    "SAMPLE_VIDEO",
    "ClipReport",
    "default_geometry",
    "inspect_video",
    "plot_kept_fraction",
    "render_keep_mask",
    "run_inspection",
    "run_video_llm_inspection",
    "sampling_processor",
]

SAMPLE_VIDEO = Path(__file__).resolve().parent / "assets" / "bigbuckbunny_sample.mp4"
SAMPLE_ATTRIBUTION = "Big Buck Bunny (c) Blender Foundation, CC-BY 3.0 (www.bigbuckbunny.org)"
HEADER_HEIGHT = 28
PLOT_SIZE = (720, 440)


@dataclass
class ClipReport:
    """RLT statistics of one clip at one threshold.

    Attributes:
        name: the clip's file name (or a description of the input).
        threshold: ``tau``.
        tokens_per_clip: tokens before RLT (``T' * H' * W'``).
        tokens_kept: tokens RLT keeps.
        keep_mask: bool ``(T', H', W')``.
        padded_frames: sampled frames that repeat the one before them because the clip is shorter
            than the sampling needs; RLT drops the repeats, so ``reduction`` overstates the content's.
    """

    name: str
    threshold: float
    tokens_per_clip: int
    tokens_kept: int
    keep_mask: torch.Tensor
    padded_frames: int = 0

    @property
    def kept_fraction(self) -> float:
        return self.tokens_kept / self.tokens_per_clip

    @property
    def reduction(self) -> float:
        """Share of the tokens RLT drops, in percent."""
        return 100.0 * (1.0 - self.kept_fraction)

    @property
    def mean_run_length(self) -> float:
        """Time steps a kept token stands for, on average (``tokens_per_clip / tokens_kept``)."""
        return self.tokens_per_clip / self.tokens_kept

    def summary(self) -> str:
        padded = f", {self.padded_frames} repeated frames (clip too short)" if self.padded_frames else ""
        return (
            f"{self.name}: tau={self.threshold:g} kept {self.tokens_kept}/{self.tokens_per_clip} tokens, "
            f"{self.reduction:.1f}% fewer, mean run length {self.mean_run_length:.2f}{padded}"
        )


def default_geometry(arch: str | None = None) -> dict:
    """``run_inspection``'s ``num_frames``, ``size``, ``tubelet_size``, ``patch_size`` and ``resize`` for the
    registered architecture ``arch``: its default config's, and the short side its checkpoints' processor
    resizes to before the crop (V-JEPA 2: 292 for a 256 crop). Without ``arch``: 16 frames, 224 px, 2x16x16."""
    if arch is None:
        return {"num_frames": 16, "size": 224, "tubelet_size": 2, "patch_size": 16, "resize": None}
    architecture = registry.get(arch)
    config = architecture.config_class()
    patch_h, patch_w = config.rlt_patch_size
    if patch_h != patch_w:
        raise ValueError(f"rlt inspect draws square patches; {arch} uses {patch_h}x{patch_w}")
    size = min(config.rlt_image_size)
    resize = architecture.processor_defaults.get("size", {}).get("shortest_edge")
    crop = architecture.processor_defaults.get("crop_size", {})
    # The checkpoints' resize only where their crop is the config's frame size (ViViT's processor
    # crops 224 from 256 for a 224 model: the same rule then; a config of another size: no resize rule).
    resize = int(resize) if resize and crop.get("height") == crop.get("width") == size else None
    return {"num_frames": config.rlt_num_frames, "size": size, "tubelet_size": config.rlt_tubelet_size,
            "patch_size": patch_h, "resize": resize}


def sampling_processor(num_frames: int, frame_stride: int | None, fps: float | None, size: int,
                       resize: int | None = None) -> RLTVideoProcessor:
    """ImageNet normalisation, ``num_frames`` frames at ``frame_stride`` (or ``fps``; both None: uniform over
    the clip), short side resized to ``resize`` (default ``size``) and centre-cropped to ``size`` x ``size``."""
    return RLTVideoProcessor(
        num_frames=num_frames,
        frame_stride=frame_stride if fps is None else None,
        fps=fps,
        size={"shortest_edge": size if resize is None else resize},
        crop_size={"height": size, "width": size},
    )


def _name_of(video) -> str:
    if isinstance(video, (str, os.PathLike)):
        return Path(video).name
    return f"<{type(video).__name__}>"


def inspect_video(video, thresholds: Sequence[float] = (0.1,), *, processor: RLTVideoProcessor | None = None,
                  num_frames: int = 16, frame_stride: int | None = 2, fps: float | None = None, size: int = 224,
                  tubelet_size: int = 2, patch_size: int | Sequence[int] = 16, compare_to: str = "previous",
                  name: str | None = None) -> tuple[torch.Tensor, list[ClipReport]]:
    """Sample a clip and tokenize it at each threshold.

    Args:
        video: a path, bytes, file object, array or tensor (anything ``RLTVideoProcessor`` takes,
            a ``datasets`` Video row included).
        thresholds: ``tau`` values (reference units: pixels in [0, 1], ImageNet std).
        processor: decodes and normalises; default: ``sampling_processor(num_frames, frame_stride, fps, size)``.
        name: what the reports call the clip (default: the file's name).

    Returns:
        The sampled, resized and cropped frames (uint8 ``(T, 3, H, W)``, for drawing) and one
        ``ClipReport`` per threshold, in the order given.
    """
    if not thresholds:
        raise ValueError("give at least one threshold")
    processor = processor or sampling_processor(num_frames, frame_stride, fps, size)
    frames, padded = prepare_clip(processor, video, return_padded_frames=True)
    pixel_values = processor.normalize_frames(frames.float()).unsqueeze(0)
    settings = KeepMaskSettings(
        rlt_tubelet_size=tubelet_size,
        rlt_patch_size=patch_size if isinstance(patch_size, int) else tuple(patch_size),
        rlt_input_scale=tuple(processor.rlt_input_scale),
        rlt_compare_to=compare_to,
    )
    name = name or _name_of(video)
    reports = []
    for threshold in thresholds:
        tokens = run_length_tokenize_for(settings, pixel_values, threshold=threshold)
        reports.append(ClipReport(
            name=name, threshold=float(threshold), tokens_per_clip=tokens.tokens_per_clip,
            tokens_kept=int(tokens.counts[0]), keep_mask=tokens.keep_mask[0], padded_frames=padded,
        ))
    return frames, reports


def render_keep_mask(
    frames: torch.Tensor,
    keep_mask: torch.Tensor,
    *,
    tubelet_size: int = 2,
    patch_size: int | Sequence[int] = 16,
    title: str | None = None,
):
    """The sampled frames with dropped tubelets greyed out, as a PIL image.

    Column ``k`` shows tubelet time step ``k``; row ``j`` its ``j``-th frame. The image is
    ``T' * W`` wide and ``HEADER_HEIGHT + tubelet_size * H`` high (``frames`` is ``(T, 3, H, W)``).
    """
    from PIL import Image, ImageDraw

    patch_h, patch_w = to_pair(patch_size)
    frame_count, _, height, width = frames.shape
    steps, grid_h, grid_w = keep_mask.shape
    if steps * tubelet_size != frame_count or grid_h * patch_h != height or grid_w * patch_w != width:
        raise ValueError(
            f"keep_mask {tuple(keep_mask.shape)} does not match {frame_count} frames of {height}x{width} "
            f"with tubelets of {tubelet_size}x{patch_h}x{patch_w}"
        )
    video = frames.float()
    # Dropped tubelets: a mid grey that keeps a faint trace of the picture's luminance.
    luminance = (0.299 * video[:, 0] + 0.587 * video[:, 1] + 0.114 * video[:, 2]).unsqueeze(1)
    grey = (96 + 0.25 * luminance).expand_as(video)
    dropped = ~keep_mask.repeat_interleave(tubelet_size, 0)
    dropped = dropped.repeat_interleave(patch_h, 1).repeat_interleave(patch_w, 2).unsqueeze(1)
    video = torch.where(dropped, grey, video).round().clamp(0, 255).to(torch.uint8)
    # (T' * t, 3, H, W) -> rows of frames: (t * H, T' * W, 3)
    grid = video.reshape(steps, tubelet_size, 3, height, width).permute(1, 3, 0, 4, 2)
    grid = grid.reshape(tubelet_size * height, steps * width, 3).contiguous().numpy()
    image = Image.new("RGB", (steps * width, HEADER_HEIGHT + tubelet_size * height), "white")
    image.paste(Image.fromarray(grid), (0, HEADER_HEIGHT))
    if title:
        ImageDraw.Draw(image).text((6, 7), title, fill="black")
    return image


_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def plot_kept_fraction(curves: dict[str, list[tuple[float, float]]], size: tuple[int, int] = PLOT_SIZE):
    """Kept fraction (y, 0..1) against threshold (x) per clip, as a PIL image; ``curves[name] = [(tau, kept)]``."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 60, 20, 30, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    taus = [tau for points in curves.values() for tau, _ in points]
    x_max = max(taus) if taus and max(taus) > 0 else 1.0
    x_min = min(0.0, min(taus)) if taus else 0.0

    def at(tau, kept):
        x = left + (tau - x_min) / (x_max - x_min) * (width - left - right)
        y = height - bottom - kept * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(6):
        kept = i / 5
        _, y = at(0, kept)
        draw.line([left - 4, y, left, y], fill="black")
        draw.line([left, y, width - right, y], fill="#e0e0e0")
        draw.text((left - 34, y - 6), f"{kept:.1f}", fill="black")
    for tau in sorted(set(taus)):
        x, _ = at(tau, 0)
        draw.line([x, height - bottom, x, height - bottom + 4], fill="black")
        draw.text((x - 12, height - bottom + 8), f"{tau:g}", fill="black")
    draw.text((width // 2 - 40, height - 22), "threshold tau", fill="black")
    draw.text((8, 8), "kept fraction of tokens", fill="black")
    for n, (name, points) in enumerate(curves.items()):
        colour = _COLOURS[n % len(_COLOURS)]
        xy = [at(tau, kept) for tau, kept in sorted(points)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((width - right - 200, top + 8 + 14 * n), name[:32], fill=colour)
    return image


def _inputs(videos, thresholds, out_dir, stream) -> tuple[list, list[float], Path | None]:
    """The clips (the bundled sample, said on ``stream``, when none is given), the checked thresholds,
    and the output folder, made (None: no files)."""
    thresholds = [check_threshold(t) for t in thresholds]
    if not thresholds:
        raise ValueError("give at least one threshold")
    if not videos and not SAMPLE_VIDEO.exists():
        raise FileNotFoundError(f"the sample clip is missing from the installation: {SAMPLE_VIDEO}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if not videos:
        print(f"no video given: inspecting the bundled sample clip ({SAMPLE_ATTRIBUTION})", file=stream)
    return (list(videos) if videos else [SAMPLE_VIDEO]), thresholds, out


def run_inspection(videos: Sequence | None = None, thresholds: Sequence[float] = (0.1,), *,
                   out_dir: str | os.PathLike | None = "rlt-inspect", num_frames: int = 16,
                   frame_stride: int | None = 2, fps: float | None = None, size: int = 224, resize: int | None = None,
                   tubelet_size: int = 2, patch_size: int = 16, compare_to: str = "previous",
                   progress: bool | None = None, stream=None, on_error=None,
                   names: Sequence[str] | None = None) -> list[list[ClipReport]]:
    """Inspect clips (the bundled sample when ``videos`` is empty), print a table, write PNGs.

    ``names`` (one per video, e.g. ``row-3`` for a dataset's rows) name the clips in the table and
    the PNG files; default: the files' names. Frames are resized to a short side of ``resize``
    (default ``size``), then centre-cropped to ``size`` x ``size``.

    Writes ``<clip>.png`` per clip (``<clip>_tau<t>.png`` per clip and threshold when several
    thresholds are given, plus ``kept_fraction_vs_threshold.png``) into ``out_dir`` (None: no
    files). ``on_error(video, error)``, when given, is called for a clip that fails and the others
    go on; without it the error is raised. Returns the reports of the clips that worked.
    """
    from tqdm.auto import tqdm

    videos, thresholds, out = _inputs(videos, thresholds, out_dir, stream)
    several = len(thresholds) > 1
    processor = sampling_processor(num_frames, frame_stride, fps, size, resize)
    sampling = f"{num_frames} frames, " + (
        f"{fps:g} fps" if fps is not None else f"stride {frame_stride}" if frame_stride else "uniform over the clip"
    )
    cropped = f" (short side {resize}, centre crop)" if resize not in (None, size) else ""
    print(f"{sampling}, {size}x{size}{cropped}, tubelets {tubelet_size}x{patch_size}x{patch_size}", file=stream)
    print(f"{'clip':<32} {'tau':>6} {'kept/total':>13} {'reduction':>10} {'mean run':>9} {'padded':>7}", file=stream)
    results = []
    show = (len(videos) > 1) if progress is None else progress
    names = list(names) if names is not None else [None] * len(videos)
    for video, name in tqdm(list(zip(videos, names)), desc="rlt inspect", unit="clip", disable=not show or None,
                            file=sys.stderr):
        try:
            frames, reports = inspect_video(video, thresholds, processor=processor, tubelet_size=tubelet_size,
                                            patch_size=patch_size, compare_to=compare_to, name=name)
        except (OSError, ValueError, TypeError) as error:
            if on_error is None:
                raise
            on_error(video, error)
            continue
        results.append(reports)
        for report in reports:
            kept = f"{report.tokens_kept}/{report.tokens_per_clip}"
            print(
                f"{report.name[:32]:<32} {report.threshold:>6g} {kept:>13} {report.reduction:>9.1f}% "
                f"{report.mean_run_length:>9.2f} {report.padded_frames:>7}",
                file=stream,
            )
            if out is not None:
                title = f"{report.summary()}   (grey: dropped tubelets)"
                image = render_keep_mask(
                    frames, report.keep_mask, tubelet_size=tubelet_size, patch_size=patch_size, title=title
                )
                suffix = f"_tau{report.threshold:g}" if several else ""
                image.save(out / f"{Path(report.name).stem or 'clip'}{suffix}.png")
    padded = [reports[0] for reports in results if reports[0].padded_frames]
    if padded:
        print(
            f"padded: {len(padded)} of {plural(len(results), 'clip')} are shorter than the sampling needs "
            f"({num_frames} frames); "
            f"{sum(r.padded_frames for r in padded)} sampled frames repeat the one before, and RLT drops the repeats, "
            "so their reduction overstates the content's",
            file=stream,
        )
    if out is not None and results:
        if several:
            curves = {}
            for reports in results:
                curves.setdefault(reports[0].name, [(r.threshold, r.kept_fraction) for r in reports])
            plot_kept_fraction(curves).save(out / "kept_fraction_vs_threshold.png")
        print(f"wrote {plural(len(results) * len(thresholds) + several, 'PNG file')} to {out}", file=stream)
    return results


def run_video_llm_inspection(
    videos: Sequence | None,
    thresholds: Sequence[float],
    *,
    family: str = "qwen2_5_vl",
    fps: float = 2.0,
    num_frames: int = 16,
    out_dir: str | os.PathLike | None = "rlt-inspect",
    stream=None,
) -> list[tuple[str, float, list[int]]]:
    """What a video LLM (Qwen2.5-VL / Qwen3-VL) keeps: LLM tokens per slice, and the frames with the
    dropped groups greyed (``<clip>_<family>_tau<t>.png``).

    Frames are sampled at ``fps`` (``num_frames`` of them) and prepared as the model's processor
    does (``RLTQwenVLProcessor``, its default pixel budget). Returns ``(clip, tau, kept per slice)``.
    """
    from .models.processing_rlt_qwen_vl import RLTQwenVLProcessor, unpatchify

    videos, thresholds, out = _inputs(videos, thresholds, out_dir, stream)
    decoder = RLTVideoProcessor(num_frames=num_frames, frame_stride=None, fps=fps)
    processors = [RLTQwenVLProcessor(None, family, threshold=tau) for tau in thresholds]
    results = []
    for video in videos:
        frames = torch.as_tensor(decoder.load_frames(video))  # (T, H, W, 3) uint8
        prepared = processors[0].prepare_videos([frames])
        grid = prepared["video_grid_thw"][0].tolist()
        settings = processors[0].video_settings
        patch, merge = settings["patch_size"], settings["merge_size"]
        pixels = unpatchify(prepared["pixel_values_videos"], grid, patch, settings["temporal_patch_size"], merge)
        mean, std = (torch.tensor(settings[k]).view(1, -1, 1, 1) for k in ("image_mean", "image_std"))
        drawn = ((pixels * std + mean) / processors[0].rescale_factor).round().clamp(0, 255).to(torch.uint8)
        name = _name_of(video)
        print(f"{name}: {family}, {len(frames)} frames at {fps:g} fps, grid {tuple(grid)} patches, "
              f"{grid[1] * grid[2] // merge**2} LLM tokens per slice of {settings['temporal_patch_size']} frames",
              file=stream)
        for tau, processor in zip(thresholds, processors):
            keep = processor.keep_mask(**prepared)[0].view(grid[0], grid[1] // merge, grid[2] // merge)
            per_slice = keep.flatten(1).sum(1).tolist()
            print(f"  tau {tau:g}: {sum(per_slice)}/{keep.numel()} tokens kept; per slice {per_slice}", file=stream)
            results.append((name, tau, per_slice))
            if out is not None:
                title = f"{name} {family} tau={tau:g}: {sum(per_slice)}/{keep.numel()} LLM tokens (grey: dropped)"
                image = render_keep_mask(drawn, keep, tubelet_size=settings["temporal_patch_size"],
                                         patch_size=patch * merge, title=title)
                image.save(out / f"{Path(name).stem}_{family}_tau{tau:g}.png")
    return results
