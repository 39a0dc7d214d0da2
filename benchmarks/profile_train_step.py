"""Profile the training step of a vanilla model and its RLT version on real clips (CUDA).

For each of vanilla, RLT and RLT with bucketed packing: the step's wall-clock, the GPU's busy time
(union of kernel intervals), kernels launched, host syncs and dtype casts per step, then the top
CUDA kernels and the top host-side ops, so the gap between realised and ideal speed-up can be
attributed. Usage (GPU machine):
    PYTHONPATH=src python benchmarks/profile_train_step.py .bench/clips.pt [MODEL [BATCH [BUCKETS]]]
MODEL is a `rlt bench` model name (default videomae-b), BATCH the clips per step (default 16),
BUCKETS the rlt_pack_buckets of the bucketed row (default 8).
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rlt.benchmark import MODELS, InputFactory, build_models, cut_windows, load_clips
from rlt.benchmark.timing import covered_time

spec = MODELS[sys.argv[2] if len(sys.argv) > 2 else "videomae-b"]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 16
buckets = int(sys.argv[4]) if len(sys.argv) > 4 else 8
device = torch.device("cuda")
windows = cut_windows(load_clips(sys.argv[1]), spec.frames, spec.image_size, hop=spec.frames // 2)
inputs = InputFactory(windows).sets("real", batch, 3, device, torch.float32)
labels = torch.zeros(batch, dtype=torch.long, device=device)
vanilla, rlt_model, _ = build_models(spec, 400, device)
input_name = rlt_model.config.rlt_input_name
STEPS = 6
# Calls that make the host wait for the device (a plain cudaMemcpy does; cudaMemcpyAsync is counted apart).
SYNC_CALLS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}
CASTS = ("aten::to", "aten::_to_copy")


def profile_steps(name, model):
    model.config.problem_type = "single_label_classification"
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)

    def step(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**{input_name: x}, labels=labels).loss  # the same name for vanilla and RLT
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(5):
        step(inputs[i % 3])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(20):
        step(inputs[i % 3])
    torch.cuda.synchronize()
    step_ms = (time.perf_counter() - start) / 20 * 1e3
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for i in range(STEPS):
            step(inputs[i % 3])
        torch.cuda.synchronize()
    events = prof.events()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_ms = covered_time([(e.time_range.start, e.time_range.end) for e in kernels]) / 1e3 / STEPS
    syncs = sum(1 for e in events if e.name in SYNC_CALLS) / STEPS
    async_copies = sum(1 for e in events if e.name == "cudaMemcpyAsync") / STEPS
    casts = sum(1 for e in events if e.name in CASTS and (e.cpu_parent is None or e.cpu_parent.name not in CASTS))
    print(
        f"#### {name}: {step_ms:.2f} ms/step unprofiled; GPU busy {busy_ms:.2f} ms/step; "
        f"{len(kernels) / STEPS:.0f} kernels, {syncs:.1f} host syncs, {async_copies:.1f} async copies, "
        f"{casts / STEPS:.0f} casts per step"
    )
    averages = prof.key_averages()
    print(f"==== {name}: top CUDA kernels over {STEPS} steps")
    print(averages.table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=80))
    print(f"==== {name}: top host ops by self CPU time over {STEPS} steps")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=80))


profile_steps("vanilla", vanilla)
profile_steps("rlt", rlt_model)
rlt_model.config.rlt_pack_buckets = buckets
profile_steps(f"rlt_b{buckets}", rlt_model)
