#!/usr/bin/env bash
# Issue 12: the few-tokens regime, eager vs bucketed packing vs CUDA graphs, side by side, in inference and
# training, on real, still-camera and static clips.
# For one H200 through the device tool, one session of 30 minutes: each command stays under 10 minutes
# (--deadline-s cuts the rest, the results so far are kept). Run from the repository root:
#   OUT=$OUT CLIPS=.bench/clips256.pt bash benchmarks/regime.sh [1|2|3|4|5]   (no argument: all, in order)
# CLIPS is the clip file of `rlt bench --prepare-clips` (decoded where PyAV is, carried to the GPU box).
# Kept fractions: real ~45%, still ~25%, static 12.5% (noise: 100%, not needed here).
# Bench time measured on an H200 (third run of issue 12): steps 1 and 2 together 4.1 min, step 4 5.5 min;
# expected: 3: ~5.5 min, 5: ~5 min; ~20 minutes in all, plus ~0.5 min of start-up per command.
# torch.compile's default mode (inductor without CUDA graphs) is left out to fit: CUDAGRAPHS without
# --compile-mode measures it.
set -euo pipefail
OUT=${OUT:-.bench/regime}
CLIPS=${CLIPS:-.bench/clips256.pt}
BUCKETS=${BUCKETS:-8}
KINDS=real,still,static
PYTHON=${PYTHON:-python}
# EXTRA: flags appended to every command, e.g. EXTRA="--tiny --device cpu --compile-mode default" for a CPU
# smoke run of the commands before GPU time is spent on them.
read -r -a EXTRA <<< "${EXTRA:-}"
BENCH=("$PYTHON" -m rlt.cli bench --clips-cache "$CLIPS" --batch-sizes 32 --train-batch-size 32 --busy-fraction)
export PYTHONPATH=src
step=${1:-all}

# 1. Eager, ViT-S at 112 and 160 px: vanilla / RLT off / RLT / RLT with host keep masks (no device sync) / RLT
#    bucketed, inference and training on every kind.
#    Per model: 13 inference and 13 training cases (~55 s).
if [[ $step == all || $step == 1 ]]; then
  "${BENCH[@]}" --out "$OUT/eager-s-small" --models videomae-s-112,videomae-s-160 \
    --full-models videomae-s-112,videomae-s-160 --parts core,train --inputs "$KINDS" --train-inputs "$KINDS" \
    --pack-buckets "$BUCKETS" --deadline-s 300 "${EXTRA[@]}"
fi
# 2. Eager, ViT-S 224 and ViT-B: the same cases (~50 s and ~60 s; rendering the 224-px still clips included).
if [[ $step == all || $step == 2 ]]; then
  "${BENCH[@]}" --out "$OUT/eager-s-b" --models videomae-s,videomae-b \
    --full-models videomae-s,videomae-b --parts core,train --inputs "$KINDS" --train-inputs "$KINDS" \
    --pack-buckets "$BUCKETS" --deadline-s 300 "${EXTRA[@]}"
fi
# 3-4. CUDA graphs: torch.compile(mode="reduce-overhead") over bucketed packing (one graph per bucket size), on every
#    kind, with the eager cases of the same kinds first (their rows pair with the compiled ones: speed-up vs eager).
#    Per kind 4 compile cases (vanilla and RLT, inference and training) of ~10-25 s compile each, then 5 batches
#    for recompiles and the timed calls: ~80 s a kind, ~4 min for three, plus ~1 min of eager cases. One model per
#    command, so that each stays under 10 minutes.
CUDAGRAPHS=(--parts compile,train --inputs "$KINDS" --train-inputs "$KINDS" --compile-inputs "$KINDS"
  --pack-buckets "$BUCKETS" --compile-mode reduce-overhead --compile-batches 6 --compile-budget-s 30 --deadline-s 420)
# 3. CUDA graphs, ViT-S at 112 px.
if [[ $step == all || $step == 3 ]]; then
  "${BENCH[@]}" --out "$OUT/cudagraphs-s-112" --models videomae-s-112 --full-models videomae-s-112 "${CUDAGRAPHS[@]}" \
    "${EXTRA[@]}"
fi
# 4. CUDA graphs, ViT-B at 224 px.
if [[ $step == all || $step == 4 ]]; then
  "${BENCH[@]}" --out "$OUT/cudagraphs-b" --models videomae-b --full-models videomae-b "${CUDAGRAPHS[@]}" "${EXTRA[@]}"
fi
# 5. V-JEPA 2 ViT-L 64x256 training step again (issue 14): the first run (0.73 of ideal) had its attention on
#    the padded fallback (float32 RoPE under autocast); packed attention now casts to the autocast dtype.
if [[ $step == all || $step == 5 ]]; then
  "$PYTHON" -m rlt.cli bench --clips-cache "$CLIPS" --out "$OUT/vjepa2" --models vjepa2-l --full-models vjepa2-l \
    --parts core,train --inputs real --batch-sizes 8 --train-batch-size 4 --deadline-s 300 "${EXTRA[@]}"
fi
