"""Profile one training step of a vanilla model and its RLT version on real clips (CUDA).

Prints the top CUDA kernels of each, so the gap between realised and ideal speed-up can be
attributed. Usage (GPU machine):
    PYTHONPATH=src python benchmarks/profile_train_step.py .bench/clips.pt [MODEL [BATCH]]
MODEL is a `rlt bench` model name (default videomae-b), BATCH the clips per step (default 16).
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from rlt.benchmark import MODELS, InputFactory, build_models, cut_windows, load_clips

spec = MODELS[sys.argv[2] if len(sys.argv) > 2 else "videomae-b"]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 16
device = torch.device("cuda")
windows = cut_windows(load_clips(sys.argv[1]), spec.frames, spec.image_size, hop=spec.frames // 2)
inputs = InputFactory(windows).sets("real", batch, 3, device, torch.float32)
labels = torch.zeros(batch, dtype=torch.long, device=device)
vanilla, rlt_model, _ = build_models(spec, 400, device)
input_name = rlt_model.config.rlt_input_name
for name, model in (("vanilla", vanilla), ("rlt", rlt_model)):
    model.config.problem_type = "single_label_classification"
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
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for i in range(6):
            step(inputs[i % 3])
        torch.cuda.synchronize()
    print(f"==== {name}: top CUDA kernels over 6 steps")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=90))
