"""The benchmark's report: speed-ups against the vanilla rows, the table, notes, and the files written."""

from __future__ import annotations

import datetime
import json
import os
import platform

import torch

__all__ = ["NOTES", "TABLE_COLUMNS", "TINY_NOTE", "add_speedups", "environment", "format_table", "write_outputs"]

TINY_NOTE = "--tiny: tiny configs, a smoke run of the code paths; its timings say nothing about speed."
NOTES = {
    "ideal_speedup": "Ideal speed-up = full tokens / kept tokens (CLS tokens counted where the model has one): "
    "what the token cut allows for the parts of the model that are linear in the token count (projections, "
    "MLP, norms). Attention is quadratic per clip, so the true ideal is somewhat higher; realised/ideal "
    "slightly above 1 is therefore possible.",
    "speedup": "Speed-up = vanilla ms / variant ms, same model, mode, input kind, batch size and compile setting.",
    "tokenizer_pct": "tokenizer % = run_length_tokenize alone on the same batch / the RLT forward pass; "
    "select+pack % also counts the packing (PackedSequence.from_keep_mask, with its host sync).",
    "recompiles": "Recompiles are counted by attaching a handler to torch._logging's 'recompiles' artifact "
    "logger (one record per recompilation of a frame, with the failing guard); 'batches that compiled' "
    "counts calls after the first during which torch._dynamo's counters['stats']['unique_graphs'] grew. "
    "The first call (compile time) compiles every frame once and is not a recompile.",
    "timing": "CUDA events around each call on GPU (perf_counter after synchronize on CPU); warm-up calls first; "
    "median over all timed calls, rotating through several input sets. wall ms is the whole timed loop / calls.",
    "busy": "busy = the device's busy fraction (--busy-fraction): union of its kernel intervals / wall time over "
    "3 profiled calls after the timed ones (profiler overhead included, so a lower bound); kernels = kernels per call. "
    "rlt_b<k> rows: RLT with rlt_pack_buckets=k (packed length rounded up to one of k static sizes). "
    "rlt_prop rows: RLT with rlt_proportional_attention=True (each key's score + log of its run length). "
    "rlt_hostkeep rows: RLT given keep_mask= computed ahead on the host (as VideoCollator does in loader workers, "
    "not timed): the forward makes no device sync and runs no tokenizer; the gap to the rlt row is the sync plus "
    "the tokenizer's device time (its share: the tok % column of the rlt row).",
    "memory": "peak mem = torch.cuda.max_memory_allocated, reset before each case (weights included).",
}


def add_speedups(rows: list[dict]) -> None:
    """Speed-up against the matching vanilla row, and realised / ideal, set on each row in place."""

    def key(row: dict, compiled: bool) -> tuple:
        return row["model"], row["mode"], compiled, row["input"], row["batch_size"]

    baseline = {key(row, row["compiled"]): row for row in rows if row["variant"] == "vanilla" and row.get("ms")}
    for row in rows:
        base = baseline.get(key(row, row["compiled"])) if row.get("ms") else None
        if base is None:
            continue
        row["speedup"] = base["ms"] / row["ms"]
        if row.get("ideal"):
            row["realised_over_ideal"] = row["speedup"] / row["ideal"]
        eager = baseline.get(key(row, False)) if row["compiled"] else None
        if eager is not None:
            row["speedup_vs_eager_vanilla"] = eager["ms"] / row["ms"]


TABLE_COLUMNS = [
    ("model", "model", "{}"),
    ("variant", "variant", "{}"),
    ("mode", "mode", "{}"),
    ("compiled", "compiled", "{}"),
    ("input", "input", "{}"),
    ("batch_size", "B", "{}"),
    ("attention_resolved", "attn", "{}"),
    ("kept_frac", "kept %", "{:.1%}"),
    ("ms", "ms/batch", "{:.2f}"),
    ("clips_per_s", "clips/s", "{:.1f}"),
    ("speedup", "speed-up", "{:.2f}x"),
    ("ideal", "ideal", "{:.2f}x"),
    ("realised_over_ideal", "real/ideal", "{:.2f}"),
    ("peak_mem_gb", "peak GB", "{:.2f}"),
    ("tokenizer_pct", "tok %", "{:.2f}"),
    ("busy_frac", "busy", "{:.2f}"),
    ("kernels_per_call", "kernels", "{:.0f}"),
    ("compile_s", "compile s", "{:.1f}"),
    ("recompiles", "recompiles", "{}"),
]


def format_table(rows: list[dict]) -> str:
    header = "| " + " | ".join(title for _, title, _ in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in TABLE_COLUMNS:
            value = row.get(key)
            if key == "ms" and value is None and row.get("error"):
                cells.append("skipped: " + row["error"][:60].replace("|", "/"))
            elif key == "compiled":
                cells.append("yes" if value else "")
            else:
                cells.append("" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    import transformers

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "host": platform.node(),
    }
    if device.type == "cpu":
        info["cpu_threads"] = torch.get_num_threads()
    return info


def write_outputs(out_dir: str, report: dict) -> tuple[str, str]:
    """``bench.json`` (everything) and ``bench.md`` (the table and notes) under ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "bench.json")
    md_path = os.path.join(out_dir, "bench.md")
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    env = report["environment"]
    md = [
        "# RLT benchmark",
        "",
        f"- command: `{report['command']}`",
        (
            f"- device: {env['device_name']} ({env['device']}); torch {env['torch']}, "
            f"transformers {env['transformers']}; {env['date']}"
        ),
        f"- precision: {report['precision']}",
        *([f"- {TINY_NOTE}"] if report["tiny"] else []),
        "",
        format_table(report["rows"]),
        "",
        "## Notes",
        "",
        *[f"- {text}" for text in report["notes"].values()],
        "",
    ]
    with open(md_path, "w") as handle:
        handle.write("\n".join(md))
    return json_path, md_path
