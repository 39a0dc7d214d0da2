"""Compare training runs of examples/train_video_classification.py side by side (their summary.json files).

    python examples/compare_runs.py runs/base runs/rlt [runs/rlt-budget ...] [--markdown out.md]

The first run is the reference: wall-clock and throughput of the others are given relative to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(run: str) -> dict:
    path = Path(run)
    path = path / "summary.json" if path.is_dir() else path
    return json.loads(path.read_text())


def table(runs: list[str]) -> str:
    summaries = [load(run) for run in runs]
    base = summaries[0]
    rows = [
        (
            "| run | mode | steps | epoch wall-clock [s] | train wall [s] | vs first | clips/s | speed-up "
            "| loader wait | tokens kept | top-1 | top-5 |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, s in zip(runs, summaries):
        epoch_wall = s.get("mean_epoch_wall_s") or 0.0
        train_wall = sum(s.get("epoch_wall_s") or []) or s.get("train_wall_s") or 0.0
        base_wall = sum(base.get("epoch_wall_s") or []) or base.get("train_wall_s") or 0.0
        kept = s.get("kept_fraction")
        rows.append(
            f"| {Path(run).name} | {s['mode']}{' budget ' + str(s['token_budget']) if s.get('token_budget') else ''} "
            f"| {s['steps']} | {', '.join(f'{w:.1f}' for w in s.get('epoch_wall_s') or [])} (mean {epoch_wall:.1f}) "
            f"| {train_wall:.1f} | {100 * (train_wall / base_wall - 1):+.1f}% "
            f"| {s['train_clips_per_s']:.1f} | {s['train_clips_per_s'] / base['train_clips_per_s']:.2f}x "
            f"| {100 * (s.get('loader_wait_fraction') or 0):.1f}% "
            f"| {s['mean_tokens_kept']:.0f}" + (f" ({100 * kept:.0f}%)" if kept else "") + " "
            f"| {100 * s['eval_accuracy']:.2f} | {100 * s['eval_top5_accuracy']:.2f} |"
        )
    s = base
    facts = (
        f"Device: {s['device']}; torch {s['versions']['torch']}, transformers {s['versions']['transformers']}; "
        f"{s['model']} ({s['parameters'] / 1e6:.1f}M parameters), clips {s['clip_shape']}, {s['precision']}, "
        f"batch {s['batch_size']} x {s['grad_accum']}, {s['data']['train_clips']} training / "
        f"{s['data']['eval_clips']} evaluation clips ({s['data']['data']}), seed {s['seed']}."
    )
    return "\n".join(rows) + "\n\n" + facts + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="output folders (or summary.json files); the first is the reference")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    text = table(args.runs)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
