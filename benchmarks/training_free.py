"""Training-free RLT on a trained classifier: `rlt evaluate` for each comparison rule, one table.

    PYTHONPATH=src python benchmarks/training_free.py MODEL CLIP_CACHE --out DIR [--compare-to previous last_kept]

For each ``rlt_compare_to`` rule, runs ``rlt.evaluation.evaluate`` (thresholds x poolings, baseline
RLT off) on the same clips and writes DIR/training-free-<rule>.json and DIR/training-free.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlt.evaluation import DTYPES, evaluate, load_classifier


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
    model, processor = load_classifier(args.model)
    model.to(DTYPES[args.dtype])  # evaluate runs a model it is given in that model's own dtype
    tables = []
    for rule in args.compare_to:
        model.config.rlt_compare_to = rule
        report = evaluate(
            model, args.data, thresholds=args.threshold, poolings=args.pooling, processor=processor,
            device=args.device, dtype=args.dtype, batch_size=args.batch_size, warmup=2, progress=False,
            json_path=out / f"training-free-{rule}.json",
        )
        tables.append(f"### compare_to = {rule}\n\n{report}\n")
        print(tables[-1], flush=True)
    (out / "training-free.md").write_text("\n".join(tables))
    print(json.dumps({"written": str(out)}))


if __name__ == "__main__":
    main()
