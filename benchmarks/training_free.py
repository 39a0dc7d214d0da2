"""Training-free RLT on a trained classifier: thresholds x pooling x comparison rule, one table.

    PYTHONPATH=src python benchmarks/training_free.py MODEL CLIP_CACHE --out DIR

The same as `rlt evaluate MODEL CLIP_CACHE --compare-to previous last_kept --pooling mean length_weighted
--dtype bf16 ...`, writing DIR/training-free.json and DIR/training-free.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlt.evaluation import evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2])
    parser.add_argument("--compare-to", nargs="+", default=["previous", "last_kept"])
    parser.add_argument("--pooling", nargs="+", default=["mean", "length_weighted"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = evaluate(
        args.model, args.data, thresholds=args.threshold, poolings=args.pooling, compare_to=args.compare_to,
        device=args.device, dtype=args.dtype, batch_size=args.batch_size, warmup=2, progress=False,
        json_path=out / "training-free.json",
    )
    (out / "training-free.md").write_text(f"{report}\n")
    print(report)


if __name__ == "__main__":
    main()
