#!/usr/bin/env bash
# GPU evidence of issue 20 item 4 (training-free RLT where it drops most): ONE task variant per invocation.
#   VARIANT=still bash benchmarks/training_free_evidence.sh
#   VARIANT=full  bash benchmarks/training_free_evidence.sh
# Steps, in one command:
#   1. vanilla   the vanilla ViT-S 112 px model of the variant, trained alone: benchmarks/accuracy_evidence.sh
#                PARTS=vanilla (skipped when $MODELS already holds it, e.g. on a warm machine; RETRAIN=1 forces it).
#   2. eval      the held-out clips as a clip cache (examples/make_synthetic_dataset.py, the seed `free` uses), then
#                `rlt evaluate` of the vanilla model: tau 0 0.02 0.05 0.1 0.2 x pooling mean / length_weighted x
#                `--attention plain proportional` x `--run-embedding first mean` (each axis is left out, with a
#                warning, where `rlt evaluate` lacks its flag), bf16, -> $RESULTS/$tag-evaluate.json.
#   3. calibrate `rlt calibrate` of the vanilla model at tau $CAL_TAU for $CAL_STEPS steps, evaluated on the same held-out
#                clips at steps 0 (training-free) / 25 / 50 / 100 / 200, one run per entry of CAL_RUNS
#                (ATTENTION[-mean]/GROUP+GROUP: plain or proportional attention, "-mean" for rlt_run_embedding
#                "mean", the parameter groups trained), on
#                $CAL_CLIPS unlabelled clips of the task with another seed than training's and evaluation's.
#   4. summary   $RESULTS/$tag-summary.md: both tables.
# Time on one H200 (torch 2.11, estimated from benchmarks/RESULTS.md's issue-11 runs, not yet measured together):
#   vanilla still 30 epochs ~3 min, full 28 epochs ~5 min; eval cache ~15 s; evaluate 17 settings x 800 clips ~1 min;
#   each calibration run (200 steps of batch 64: teacher forward + student forward/backward, 5 evaluations of
#   800 clips, clip rendering, start-up) ~1 min. still: 3 + 0.3 + 1 + 3 x 1 ~ 7.5 min; full: 5 + 0.3 + 1 + 2 x 1 ~
#   8.5 min: both fit one 10-minute command (the default CAL_RUNS of full has two runs for that reason).
# CPU smoke (about 3 minutes on 2 cores):
#   SMOKE=1 bash benchmarks/training_free_evidence.sh
# Results (JSON, logs, the summary) go to $RESULTS; models to $MODELS.
set -u
VARIANT=${VARIANT:-still}
if [ "${SMOKE:-0}" = 1 ]; then  # tiny and CPU-sized: checks the plumbing, not the figures
  export SIZE=tiny IMAGE=32 FRAMES=8 TRAIN=64 EVAL=16 EPOCHS=1 BATCH=8 WORKERS=0 PRECISION=""
  CAL_STEPS=${CAL_STEPS:-4} CAL_EVAL=${CAL_EVAL:-2} CAL_CLIPS=${CAL_CLIPS:-32} CAL_BATCH=${CAL_BATCH:-8}
  EVAL_DTYPE=fp32 CAL_PRECISION="" RESULTS=${RESULTS:-/tmp/rlt-training-free-smoke} MODELS=${MODELS:-/tmp/rlt-training-free-smoke-models}
fi
[ "$VARIANT" = full ] && DEFAULT_EPOCHS=28 || DEFAULT_EPOCHS=30
DEFAULT_RUNS="plain/length_encoding proportional-mean/length_encoding proportional-mean/length_encoding+norms+biases"
export VARIANT SIZE=${SIZE:-vit-s} IMAGE=${IMAGE:-112} FRAMES=${FRAMES:-16} TRAIN=${TRAIN:-8000} EVAL=${EVAL:-800}
export EPOCHS=${EPOCHS:-$DEFAULT_EPOCHS} BATCH=${BATCH:-64} WORKERS=${WORKERS:-3} PRECISION=${PRECISION---bf16}
export RESULTS=${RESULTS:-rlt_out/training-free} MODELS=${MODELS:-/tmp/rlt-accuracy-models} PYTHON=${PYTHON:-python3}
CAL_RUNS=${CAL_RUNS:-$DEFAULT_RUNS} CAL_STEPS=${CAL_STEPS:-200} CAL_EVAL=${CAL_EVAL:-25 50 100} CAL_TAU=${CAL_TAU:-0.1}
CAL_POOLING=${CAL_POOLING:-length_weighted} CAL_LR=${CAL_LR:-3e-3} CAL_BATCH=${CAL_BATCH:-64} CAL_CLIPS=${CAL_CLIPS:-3200}
CAL_SEED=${CAL_SEED:-2} CAL_PRECISION=${CAL_PRECISION---bf16} EVAL_DTYPE=${EVAL_DTYPE:-bf16}
THRESHOLDS=${THRESHOLDS:-0 0.02 0.05 0.1 0.2}
mkdir -p "$RESULTS" "$MODELS"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tag="$VARIANT-$SIZE-$IMAGE"
VANILLA="$MODELS/$tag-vanilla-alone" EVAL_CACHE="$MODELS/$VARIANT-$IMAGE-$FRAMES-eval$EVAL"
say() { echo "[$(date +%T)] $1${2:+ (exit $2)}"; }
SECONDS=0

# 1. The vanilla model (accuracy_evidence.sh's `vanilla` part: same recipe, same place). With TRAINED_PROP=1, an RLT
#    model trained with proportional attention (its `rlt-prop` part) alongside it, on the same GPU.
if [ "${TRAINED_PROP:-0}" = 1 ]; then
  PARTS=rlt-prop bash benchmarks/accuracy_evidence.sh &
fi
if [ "${RETRAIN:-0}" = 1 ] || [ ! -f "$VANILLA/config.json" ]; then
  PARTS=vanilla bash benchmarks/accuracy_evidence.sh
else
  say "vanilla: reusing $VANILLA"
fi
say "vanilla ready after ${SECONDS}s"

# 2. The held-out clips as a cache, and the evaluation table.
render=$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
if [ ! -f "$EVAL_CACHE/validation/index.json" ]; then
  "$PYTHON" examples/make_synthetic_dataset.py "$EVAL_CACHE" --train 0 --validation "$EVAL" --cache --variant "$VARIANT" \
    --image-size "$IMAGE" --num-frames "$FRAMES" --device "$render" > "$RESULTS/$tag-eval-cache.log" 2>&1
  say "eval cache written" $?
fi
AXES=()
for axis in "--attention plain proportional" "--run-embedding first mean"; do
  if "$PYTHON" -m rlt evaluate --help | grep -q -- "${axis%% *}"; then
    AXES+=($axis)
  else
    say "rlt evaluate has no ${axis%% *} flag here: that axis is left out"
  fi
done
"$PYTHON" -m rlt evaluate "$VANILLA" "$EVAL_CACHE/validation" --threshold $THRESHOLDS --pooling mean length_weighted \
  "${AXES[@]}" --dtype "$EVAL_DTYPE" --batch-size 64 --warmup 2 --no-progress \
  --json "$RESULTS/$tag-evaluate.json" > "$RESULTS/$tag-evaluate.log" 2>&1
say "evaluate finished after ${SECONDS}s" $?

# 3. The calibration curve: one run per entry of CAL_RUNS, evaluated at the steps of the curve.
for run in $CAL_RUNS; do
  attention=${run%%/*} groups=${run#*/}
  name="$tag-calibrate-$attention-${groups//+/-}"
  extra=(--no-proportional-attention --run-embedding first)
  [ "${attention%-mean}" = proportional ] && extra[0]=--proportional-attention
  [ "${attention%-mean}" != "$attention" ] && extra[2]=mean
  "$PYTHON" -m rlt calibrate "$VANILLA" "$MODELS/$name" --synthetic "$CAL_CLIPS" --synthetic-variant "$VARIANT" \
    --data-seed "$CAL_SEED" --eval-data "$EVAL_CACHE/validation" --steps "$CAL_STEPS" --eval-steps $CAL_EVAL \
    --threshold "$CAL_TAU" --pooling "$CAL_POOLING" --train ${groups//+/ } "${extra[@]}" $CAL_PRECISION \
    --lr "$CAL_LR" --batch-size "$CAL_BATCH" --workers 0 --log-every 10 --overwrite --no-progress \
    --json "$RESULTS/$name.json" > "$RESULTS/$name.log" 2>&1
  say "$name finished after ${SECONDS}s" $?
done

wait  # the rlt-prop run, if any

# 4. One summary: the evaluation table and the calibration curves.
"$PYTHON" - "$RESULTS" "$tag" > "$RESULTS/$tag-summary.md" <<'EOF'
import json, sys
from pathlib import Path

results, tag = Path(sys.argv[1]), sys.argv[2]
print(f"# Training-free RLT on the vanilla model of {tag}\n")
evaluation = results / f"{tag}-evaluate.json"
if evaluation.is_file():
    report = json.loads(evaluation.read_text())
    print(f"`rlt evaluate`, {report.get('num_clips')} held-out clips, {report.get('dtype')}\n")
    print("| tau | pooling | attention | run embedding | tokens kept | top-1 | vs tau 0 | agreement with tau 0 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in report["results"]:
        attention = row.get("attention", "plain") if row["rlt_enabled"] else "-"  # the key the --attention axis adds
        run_embedding = row.get("run_embedding", "first") if row["rlt_enabled"] else "-"
        print(f"| {row['threshold']:g} | {row['pooling']} | {attention} | {run_embedding} | {row['tokens_kept_pct']:.1f}% "
              f"| {100 * row['top1']:.2f} | {row['delta_top1']:+.2f} | {100 * row['agreement']:.1f}% |")
runs = sorted(results.glob(f"{tag}-calibrate-*.json"))
if runs:
    steps = sorted({row["step"] for run in runs for row in json.loads(run.read_text())["evaluations"]})
    print("\n## Label-free calibration: held-out top-1 (agreement with RLT off) after N steps\n")
    print("| run | RLT off | " + " | ".join(str(step) for step in steps) + " | final loss | seconds |")
    print("|---|---|" + "---|" * len(steps) + "---|---|")
    for run in runs:
        result = json.loads(run.read_text())
        by_step = {row["step"]: row for row in result["evaluations"]}
        cells = []
        for step in steps:
            row = by_step.get(step)
            cells.append("-" if row is None else f"{100 * row['top1']:.2f} ({100 * row['agreement']:.1f}%)"
                         if row.get("top1") is not None else f"({100 * row['agreement']:.1f}%)")
        teacher = result["teacher"].get("top1")
        name = run.stem.removeprefix(f"{tag}-calibrate-")
        print(f"| {name} | {100 * teacher:.2f} | " + " | ".join(cells)
              + f" | {result['final_loss']:.4f} | {result['seconds']:.0f} |")
    settings = json.loads(runs[0].read_text())["settings"]
    print(f"\nSettings: {json.dumps(settings)}")
EOF
say "summary written" $?
cat "$RESULTS/$tag-summary.md"
say "done after ${SECONDS}s: $RESULTS"
