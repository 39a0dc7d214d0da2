"""Profile the training step of a vanilla model and its RLT version: where a step's time and launches go.

For each of vanilla, RLT and RLT with bucketed packing (and, with --compile cuda-graphs, each compiled with
torch.compile(mode="reduce-overhead")): the step's wall-clock, the GPU's busy time (union of kernel
intervals), CUDA kernels launched, aten ops run, host syncs and dtype casts per step; then the top CUDA
kernels by time and by count, and the top host ops by count and by self time, so the gap between
realised and ideal speed-up can be attributed. Usage:
    # GPU (the lead): real clips from `rlt bench --prepare-clips`, or generated still-camera clips without a file
    PYTHONPATH=src python benchmarks/profile_train_step.py .bench/clips.pt videomae-b 32 8
    PYTHONPATH=src python benchmarks/profile_train_step.py --inputs still --compile cuda-graphs - videomae-b 32 8
    # CPU: op counts of a tiny model (what launches a step runs; no kernel times)
    PYTHONPATH=src python benchmarks/profile_train_step.py --device cpu --tiny --inputs still - videomae-b 4
Positional: CLIPS (a clip file, or - for generated clips), MODEL (a `rlt bench` model name, default videomae-b),
BATCH (clips per step, default 16), BUCKETS (rlt_pack_buckets of the bucketed row, default 8).
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
import torch._dynamo
from torch.profiler import ProfilerActivity, profile

from rlt.benchmark import MODELS, TINY_MODELS, InputFactory, build_models, cut_windows, load_clips
from rlt.benchmark.timing import HOST_SYNC_CALLS, covered_time

CASTS = ("aten::to", "aten::_to_copy")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="?", default="-", help="clip file (rlt bench --prepare-clips) or - (generated)")
    parser.add_argument("model", nargs="?", default="videomae-b", choices=sorted(MODELS))
    parser.add_argument("batch", nargs="?", type=int, default=16)
    parser.add_argument("buckets", nargs="?", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the model's tiny stand-in (rlt bench --tiny): a CPU check")
    parser.add_argument("--inputs", default="real", help="input kind: real (from CLIPS) or still / static (generated)")
    parser.add_argument("--compile", choices=["none", "cuda-graphs"], default="none",
                        help="also profile each model compiled with mode reduce-overhead (RLT over bucketed packing)")
    parser.add_argument("--steps", type=int, default=6, help="profiled steps per variant (default 6)")
    parser.add_argument("--rows", type=int, default=20, help="rows of each top-N table (default 20)")
    return parser.parse_args(argv)


def generated_inputs(kind: str, spec, batch: int, count: int, device) -> list[torch.Tensor]:
    """Normalised clips of the generated task (``kind``: still = the still-camera variant, static = its
    static class only), shaped for ``spec``."""
    from rlt.common import PixelNormalizer
    from rlt.synthetic import SyntheticVideoDataset, task_config

    config = task_config("still", num_frames=spec.frames, image_size=spec.image_size)
    if kind == "static":
        config = task_config("still", num_frames=spec.frames, image_size=spec.image_size, classes=("static",))
    data = SyntheticVideoDataset(batch * count, seed=0, config=config, device="cpu")
    normalize = PixelNormalizer()
    clips = torch.stack([data[i]["pixel_values"] for i in range(batch * count)])
    return [normalize(clips[i * batch : (i + 1) * batch].to(device)) for i in range(count)]


def make_step(model, input_name, labels, device, forward=None):
    forward = model if forward is None else forward
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.type == "cuda")
    graphs = forward is not model

    def step(x):
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = forward(**{input_name: x}, labels=labels).loss  # the same name for vanilla and RLT
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_steps(name, step, inputs, device, steps, rows):
    for i in range(5):
        step(inputs[i % len(inputs)])
    synchronize(device)
    timed = 20 if device.type == "cuda" else 3
    start = time.perf_counter()
    for i in range(timed):
        step(inputs[i % len(inputs)])
    synchronize(device)
    step_ms = (time.perf_counter() - start) / timed * 1e3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            step(inputs[i % len(inputs)])
        synchronize(device)
    events = prof.events()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_ms = covered_time([(e.time_range.start, e.time_range.end) for e in kernels]) / 1e3 / steps
    aten = [e for e in events if e.name.startswith("aten::")]
    top_level_aten = [e for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    syncs = sum(1 for e in events if e.name in HOST_SYNC_CALLS) / steps
    item_calls = sum(1 for e in events if e.name in ("aten::item", "aten::_local_scalar_dense")) / steps
    async_copies = sum(1 for e in events if e.name == "cudaMemcpyAsync") / steps
    casts = sum(1 for e in events if e.name in CASTS and (e.cpu_parent is None or e.cpu_parent.name not in CASTS))
    print(
        f"#### {name}: {step_ms:.2f} ms/step unprofiled; GPU busy {busy_ms:.2f} ms/step; "
        f"{len(kernels) / steps:.0f} CUDA kernels, {len(top_level_aten) / steps:.0f} top-level aten ops "
        f"({len(aten) / steps:.0f} with nested), {syncs:.1f} host syncs, {item_calls:.1f} .item()/scalar reads, "
        f"{async_copies:.1f} async copies, {casts / steps:.0f} casts per step"
    )
    if kernels:
        by_count = collections.Counter(e.name for e in kernels)
        print(f"==== {name}: top CUDA kernels by launches per step")
        for kernel, count in by_count.most_common(rows):
            print(f"{count / steps:8.1f}  {kernel[:140]}")
    print(f"==== {name}: top-level aten ops by calls per step")
    for op, count in collections.Counter(e.name for e in top_level_aten).most_common(rows):
        print(f"{count / steps:8.1f}  {op}")
    averages = prof.key_averages()
    if kernels:
        print(f"==== {name}: top CUDA kernels by time over {steps} steps")
        print(averages.table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=80))
    print(f"==== {name}: top host ops by self CPU time over {steps} steps")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=80))
    return {"name": name, "ms": step_ms, "busy_ms": busy_ms, "kernels": len(kernels) / steps,
            "aten_ops": len(top_level_aten) / steps, "syncs": syncs, "casts": casts / steps}  # fmt: skip


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    spec = (TINY_MODELS if args.tiny else MODELS)[args.model]
    if args.clips != "-":
        windows = cut_windows(load_clips(args.clips), spec.frames, spec.image_size, hop=spec.frames // 2)
        inputs = InputFactory(windows).sets(args.inputs, args.batch, 3, device, torch.float32)
    else:
        inputs = generated_inputs(args.inputs, spec, args.batch, 3, device)
    labels = torch.zeros(args.batch, dtype=torch.long, device=device)
    vanilla, rlt_model, _ = build_models(spec, 400, device)
    vanilla.train()
    rlt_model.train()
    input_name = rlt_model.config.rlt_input_name
    results = []
    eager = (("vanilla", vanilla, 0), ("rlt", rlt_model, 0), (f"rlt_b{args.buckets}", rlt_model, args.buckets))
    for name, model, buckets in eager:
        if hasattr(model.config, "rlt_pack_buckets"):
            model.config.rlt_pack_buckets = buckets
        step = make_step(model, input_name, labels, device)
        results.append(profile_steps(name, step, inputs, device, args.steps, args.rows))
    if args.compile == "cuda-graphs":
        rlt_model.config.rlt_pack_buckets = args.buckets
        for name, model in (("vanilla_graphs", vanilla), (f"rlt_b{args.buckets}_graphs", rlt_model)):
            torch._dynamo.reset()
            compiled = torch.compile(model, mode="reduce-overhead")
            step = make_step(model, input_name, labels, device, forward=compiled)
            results.append(profile_steps(name, step, inputs, device, args.steps, args.rows))
    print(
        "\n| variant | ms/step | GPU busy ms/step | CUDA kernels/step | top-level aten ops/step | host syncs/step "
        "| casts/step |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['ms']:.2f} | {r['busy_ms']:.2f} | {r['kernels']:.0f} | {r['aten_ops']:.0f} "
              f"| {r['syncs']:.1f} | {r['casts']:.0f} |")


if __name__ == "__main__":
    main()
