"""Check a benchmark report (``bench.json`` from ``rlt bench``) against the targets of issue 7.

    python benchmarks/targets.py .bench/results/bench.json    # prints the table, writes targets.md beside it

The targets are an issue's acceptance criteria, not a property of the library, so they live here
rather than in ``rlt.benchmark``: RLT off >= 0.97x vanilla; the tokenizer <= 2% of the forward pass;
realised / ideal speed-up >= 0.9 at tau; a static clip >= 4x vanilla (ViT-B); <= 1 recompile after
warm-up; a compiled speed-up >= 0.9x the eager one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def check_targets(rows: list[dict]) -> list[dict]:
    """One ``{"target", "value", "pass", "detail"}`` per target and matching row of the report."""
    checks = []

    def find(**want):
        return [r for r in rows if r.get("ms") and all(r.get(k) == v for k, v in want.items())]

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
            check("static clip >= 4x vanilla (ViT-B)", row["speedup"], row["speedup"] >= 4, f"B={row['batch_size']}")
    for row in find(variant="rlt", compiled=True):
        check("<= 1 recompile after warm-up", row["recompiles"], row["recompiles"] <= 1,
              f"{row['model']} {row['mode']} over {row['compile_batches_run']} batches")
        eager = find(model=row["model"], variant="rlt", compiled=False, input=row["input"], mode=row["mode"],
                     batch_size=row["batch_size"])
        if eager and row.get("speedup") and eager[0].get("speedup"):
            ratio = row["speedup"] / eager[0]["speedup"]
            check("compiled speed-up >= 0.9x eager speed-up", ratio, ratio >= 0.9,
                  f"{row['model']} {row['mode']}: {row['speedup']:.2f}x vs {eager[0]['speedup']:.2f}x")
    return checks


def format_targets(checks: list[dict]) -> str:
    lines = ["| target | value | pass | where |", "|---|---|---|---|"]
    for c in checks:
        value = c["value"]
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {c['target']} | {text} | {'yes' if c['pass'] else 'NO'} | {c['detail']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    report_path = Path(argv[0])
    table = format_targets(check_targets(json.loads(report_path.read_text())["rows"]))
    (report_path.parent / "targets.md").write_text(f"# Targets of issue 7\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
