"""Speed of proportional attention's key bias on the packed attention kernels (issue 20).

Times one packed self-attention call (forward, and forward + backward) at ViT-B shapes: plain varlen
(no bias), varlen with the bias folded into one more block of head dims (``fold_key_bias``, the
default for ``varlen`` / ``flash_attn``), flash_attn folded when the package is there, and compiled
FlexAttention with the bias in its ``score_mod``. Also checks each biased kernel against the float32
``padded`` reference. Prints a table and writes JSON.

GPU (one H200, about a minute):
    python benchmarks/proportional_attention_speed.py --out .bench/prop_attention.json
CPU smoke (tiny shapes, per_clip / padded / flex stand in for the CUDA kernels):
    python benchmarks/proportional_attention_speed.py --tiny
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import torch

from rlt.models.packing import PackedSequence, packed_attention


def packed_batch(clips, tokens, kept, heads, head_dim, device, dtype, seed=0):
    """A packed batch whose clips keep about ``kept`` of ``tokens`` each, with run-length-like key biases."""
    generator = torch.Generator().manual_seed(seed)
    fractions = kept * (0.5 + torch.rand(clips, generator=generator))  # from kept/2 to 1.5 kept
    keep = torch.rand(clips, tokens, generator=generator) < fractions.clamp(max=1.0).unsqueeze(1)
    keep[:, 0] = True
    packed = PackedSequence.from_keep_mask(keep.to(device))
    total = packed.total
    q, k, v = (torch.randn(total, heads, head_dim, generator=generator).to(device, dtype) for _ in range(3))
    run_lengths = torch.randint(1, 9, (total,), generator=generator).float()
    return q, k, v, packed, run_lengths.log().to(device)


def timed(fn, warmup, iters, device):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    begin = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - begin) / iters * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=1568, help="tokens per clip before dropping (ViT-B 16x224)")
    parser.add_argument("--kept", type=float, nargs="+", default=[0.25, 0.5], help="mean fraction kept")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: tiny shapes, CPU backends")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.clips, args.tokens, args.heads, args.head_dim, args.warmup, args.iters = 3, 64, 2, 16, 1, 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    scaling = args.head_dim**-0.5
    if device.type == "cuda":
        kernels = [("varlen", False), ("varlen", True), ("flex", False), ("flex", True)]
        if importlib.util.find_spec("flash_attn") is not None:
            kernels[2:2] = [("flash_attn", False), ("flash_attn", True)]
    else:
        kernels = [("per_clip", False), ("per_clip", True), ("padded", True), ("flex", True)]
    rows = []
    for kept in args.kept:
        q, k, v, packed, bias = packed_batch(args.clips, args.tokens, kept, args.heads, args.head_dim, device, dtype)
        reference_packing = PackedSequence(**{**packed.__dict__, "_cache": {}, "key_bias": bias})
        reference = packed_attention(q.float(), k.float(), v.float(), reference_packing, scaling=scaling, backend="padded")
        for backend, biased in kernels:

            def packing():  # a fresh cache per call: the per-forward work (masks, folded blocks) is timed too
                return PackedSequence(**{**packed.__dict__, "_cache": {}, "key_bias": bias if biased else None})

            out = packed_attention(q, k, v, packing(), scaling=scaling, backend=backend)
            error = None
            if biased:
                error = ((out.float() - reference).norm() / reference.norm()).item()
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]

            def forward():
                with torch.no_grad():
                    packed_attention(q, k, v, packing(), scaling=scaling, backend=backend)

            def forward_backward():
                packed_attention(*leaves, packing(), scaling=scaling, backend=backend).sum().backward()

            row = {
                "kept": kept, "backend": backend, "key_bias": biased, "total_tokens": packed.total,
                "forward_ms": timed(forward, args.warmup, args.iters, device),
                # FlexAttention has no CPU backward.
                "forward_backward_ms": None
                if backend == "flex" and device.type == "cpu"
                else timed(forward_backward, args.warmup, args.iters, device),
                "relative_error_vs_fp32": error,
            }
            rows.append(row)
            print(
                f"kept {kept:.2f} ({packed.total} tokens)  {backend:10s} bias={biased!s:5s}  "
                f"fwd {row['forward_ms']:8.3f} ms  fwd+bwd {row['forward_backward_ms'] or float('nan'):8.3f} ms  "
                f"err {'-' if error is None else format(error, '.1e')}",
                flush=True,
            )
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "dtype": str(dtype), "clips": args.clips, "tokens": args.tokens,
        "heads": args.heads, "head_dim": args.head_dim, "rows": rows,
    }
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
