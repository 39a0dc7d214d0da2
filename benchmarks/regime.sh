#!/usr/bin/env bash
# Issue 12: the few-tokens regime, eager vs bucketed packing vs CUDA graphs, side by side.
# For one H200 through the device tool; each command stays under 10 minutes (--deadline-s cuts the rest,
# the results so far are kept). Run from the repository root:
#   OUT=$OUT CLIPS=.bench/clips256.pt bash benchmarks/regime.sh [1|2|3|4|5]   (no argument: all, in order)
# CLIPS is the clip file of `rlt bench --prepare-clips` (decoded where PyAV is, carried to the GPU box).
# Kept fractions: real ~45%, still ~25%, static 12.5% (noise: 100%, not needed here).
set -euo pipefail
OUT=${OUT:-.bench/regime}
CLIPS=${CLIPS:-.bench/clips256.pt}
BUCKETS=${BUCKETS:-8}
BENCH=(python -m rlt.cli bench --clips-cache "$CLIPS" --batch-sizes 32 --train-batch-size 32 --busy-fraction)
export PYTHONPATH=src
step=${1:-all}

# 1. Eager, ViT-S at 112 and 160 px: vanilla / RLT off / RLT / RLT bucketed, inference on every input, training on real.
if [[ $step == all || $step == 1 ]]; then
  "${BENCH[@]}" --out "$OUT/eager-s-small" --models videomae-s-112,videomae-s-160 \
    --full-models videomae-s-112,videomae-s-160 --parts core,train --inputs real,still,static \
    --pack-buckets "$BUCKETS" --deadline-s 520
fi
# 2. Eager, ViT-S 224 and ViT-B: the same cases.
if [[ $step == all || $step == 2 ]]; then
  "${BENCH[@]}" --out "$OUT/eager-s-b" --models videomae-s,videomae-b \
    --full-models videomae-s,videomae-b --parts core,train --inputs real,still,static \
    --pack-buckets "$BUCKETS" --deadline-s 520
fi
# 3. torch.compile (inductor, default mode) over bucketed packing: compile time, recompiles over 12 real batches, speed.
if [[ $step == all || $step == 3 ]]; then
  "${BENCH[@]}" --out "$OUT/compiled" --models videomae-s-112,videomae-b \
    --full-models videomae-s-112,videomae-b --parts compile,train --inputs real \
    --pack-buckets "$BUCKETS" --compile-batches 12 --compile-budget-s 60 --deadline-s 520
fi
# 4. CUDA graphs: torch.compile(mode="reduce-overhead") over bucketed packing (one graph per bucket size).
if [[ $step == all || $step == 4 ]]; then
  "${BENCH[@]}" --out "$OUT/cudagraphs" --models videomae-s-112,videomae-b \
    --full-models videomae-s-112,videomae-b --parts compile,train --inputs real \
    --pack-buckets "$BUCKETS" --compile-mode reduce-overhead --compile-batches 12 --compile-budget-s 60 \
    --deadline-s 520
fi
# 5. V-JEPA 2 ViT-L 64x256 training step again (issue 14): the first run (0.73 of ideal) had its attention on
#    the padded fallback (float32 RoPE under autocast); packed attention now casts to the autocast dtype.
if [[ $step == all || $step == 5 ]]; then
  python -m rlt.cli bench --clips-cache "$CLIPS" --out "$OUT/vjepa2" --models vjepa2-l --full-models vjepa2-l \
    --parts core,train --inputs real --batch-sizes 8 --train-batch-size 4 --deadline-s 300
fi
