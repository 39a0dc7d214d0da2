#!/usr/bin/env bash
# GPU evidence of issue 11 (accuracy): a vanilla classifier that learned, RLT measured against it.
#   PARTS="train free speed" bash benchmarks/accuracy_evidence.sh
# Parts (run in the order given):
#   train  vanilla, RLT (tau 0.1), RLT without length encoding and random drop at RLT's token count,
#          trained from the same initial weights (same seed, data order and steps). They run
#          CONCURRENTLY on one GPU (each is launch-bound at this size), so their accuracy is what
#          counts here, not their wall-clock: `speed` measures that with each run alone.
#   vanilla  the vanilla run of `train` again, alone and under its own name ($tag-vanilla-alone, so the
#          side-by-side results stay as they are), for `free` and `recover` to start from when the
#          side-by-side runs were measured on another machine: `PARTS="vanilla free speed"`.
#   free   training-free RLT on the trained vanilla model (benchmarks/training_free.py): thresholds x
#          pooling x compare_to on the evaluation clips, as a clip cache.
#   recover  a short RLT fine-tune of the vanilla weights, evaluated every RECOVER_EVAL steps.
#   speed  vanilla vs RLT, each alone on the GPU, SPEED_EPOCHS epochs: wall-clock per epoch, clips/s;
#          also at twice the frame rate (dense sampling: --synthetic-time-step 0.5).
#   seeds  vanilla and RLT again with SEED2 (concurrently), for the spread.
#   rlt-prop  RLT trained as in `train` with proportional attention on (issue 20: should trained models use it?).
#   pretrain  VideoMAE self-supervised pretraining (examples/pretrain_videomae.py, tube masking 0.9) on the
#          training clips for PRETRAIN_EPOCHS, then vanilla and RLT fine-tuned from it side by side
#          (concurrently, as in `train`): does pretraining make the full task (VARIANT=full) learnable?
# Variant: VARIANT=still (a still, clean camera: issue 11's (A)) or full (nuisances on: (B)).
# Issue 11's (B), one H200, three commands of under 10 minutes each (all measured): `VARIANT=full PARTS=train
# EPOCHS=28`, `VARIANT=full PARTS="vanilla free" EPOCHS=28` (~5.5 min), then on the same machine
# `VARIANT=full PARTS="recover speed" EPOCHS=28` (~5.5 min).
# Results (summaries, logs, tables) go to $RESULTS; models to $MODELS.
set -u
VARIANT=${VARIANT:-still} SIZE=${SIZE:-vit-s} IMAGE=${IMAGE:-112} FRAMES=${FRAMES:-16}
TRAIN=${TRAIN:-8000} EVAL=${EVAL:-800} EPOCHS=${EPOCHS:-30} BATCH=${BATCH:-64} LR=${LR:-1e-4}
WORKERS=${WORKERS:-3} SPEED_EPOCHS=${SPEED_EPOCHS:-2} SEED2=${SEED2:-1} RECOVER_STEPS=${RECOVER_STEPS:-300}
RECOVER_EVAL=${RECOVER_EVAL:-25} RECOVER_LR=${RECOVER_LR:-2e-5} PRECISION=${PRECISION---bf16}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-15} PRETRAIN_LR=${PRETRAIN_LR:-1.5e-4}
PARTS=${PARTS:-train free speed} RESULTS=${RESULTS:-rlt_out/accuracy} MODELS=${MODELS:-/tmp/rlt-accuracy-models}
PYTHON=${PYTHON:-python3}
mkdir -p "$RESULTS" "$MODELS"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SCRIPT=examples/train_video_classification.py
render=$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
DATA=(--synthetic "$TRAIN" --synthetic-eval "$EVAL" --synthetic-variant "$VARIANT" --image-size "$IMAGE" --num-frames "$FRAMES")
COMMON=("${DATA[@]}" --from-scratch "$SIZE" --batch-size "$BATCH" --lr "$LR" $PRECISION --data-seed 0
        --num-workers "$WORKERS" --save-strategy no --logging-steps 50)
tag="$VARIANT-$SIZE-$IMAGE"
# The trained vanilla model that `free` and `recover` start from (VANILLA= overrides): the `vanilla` part's where it
# exists (also from an earlier command on the same machine), else the side-by-side one of `train`.
if [ -z "${VANILLA:-}" ]; then
  VANILLA="$MODELS/$tag-vanilla"
  [ -f "$MODELS/$tag-vanilla-alone/config.json" ] && VANILLA="$MODELS/$tag-vanilla-alone"
fi

say() { echo "[$(date +%T)] $1${2:+ (exit $2)}"; }
train() {  # train NAME ARGS...: one run, its log and summary in $RESULTS
  local name=$1; shift
  "$PYTHON" "$SCRIPT" "$@" --output-dir "$MODELS/$name" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  cp "$MODELS/$name/summary.json" "$RESULTS/$name.json" 2>/dev/null
  say "$name finished" $rc
}

for part in $PARTS; do
  case $part in
  train)
    say "train: 4 runs of $tag side by side, $EPOCHS epochs"
    train "$tag-vanilla" "${COMMON[@]}" --seed 0 --epochs "$EPOCHS" --eval-strategy epoch --vanilla &
    train "$tag-rlt" "${COMMON[@]}" --seed 0 --epochs "$EPOCHS" --eval-strategy epoch &
    train "$tag-rlt-no-length" "${COMMON[@]}" --seed 0 --epochs "$EPOCHS" --eval-strategy epoch --no-length-encoding &
    train "$tag-random-drop" "${COMMON[@]}" --seed 0 --epochs "$EPOCHS" --eval-strategy epoch --random-drop &
    wait
    "$PYTHON" examples/compare_runs.py "$RESULTS/$tag-vanilla.json" "$RESULTS/$tag-rlt.json" \
      "$RESULTS/$tag-rlt-no-length.json" "$RESULTS/$tag-random-drop.json" --markdown "$RESULTS/$tag-train.md"
    VANILLA="$MODELS/$tag-vanilla" ;;
  vanilla)
    say "vanilla: $tag alone, $EPOCHS epochs"
    train "$tag-vanilla-alone" "${COMMON[@]}" --seed 0 --epochs "$EPOCHS" --eval-strategy epoch --vanilla
    VANILLA="$MODELS/$tag-vanilla-alone" ;;
  free)
    say "free: training-free RLT on $VANILLA"
    "$PYTHON" examples/make_synthetic_dataset.py "$MODELS/$VARIANT-eval" --train 0 --validation "$EVAL" --cache \
      --variant "$VARIANT" --image-size "$IMAGE" --num-frames "$FRAMES" --device "$render" > "$RESULTS/$tag-eval-cache.log" 2>&1
    "$PYTHON" benchmarks/training_free.py "$VANILLA" "$MODELS/$VARIANT-eval/validation" \
      --out "$RESULTS/$tag-free" > "$RESULTS/$tag-free.log" 2>&1
    say "training-free finished" $? ;;
  recover)
    say "recover: RLT fine-tune of the vanilla weights, $RECOVER_STEPS steps"
    train "$tag-recover" "${DATA[@]}" --model "$VANILLA" --batch-size "$BATCH" --lr "$RECOVER_LR" \
      $PRECISION --data-seed 0 --num-workers "$WORKERS" --save-strategy no --logging-steps 25 --seed 0 \
      --max-steps "$RECOVER_STEPS" --warmup 0 --eval-strategy steps --eval-steps "$RECOVER_EVAL" ;;
  speed)
    for step in 1 0.5; do
      say "speed: vanilla vs RLT alone, time step $step, $SPEED_EPOCHS epochs"
      for mode in vanilla rlt; do
        train "$tag-speed-$mode-ts$step" "${COMMON[@]}" --seed 0 --epochs "$SPEED_EPOCHS" --eval-strategy no \
          --synthetic-time-step "$step" $([ "$mode" = vanilla ] && echo --vanilla)
      done
      "$PYTHON" examples/compare_runs.py "$RESULTS/$tag-speed-vanilla-ts$step.json" "$RESULTS/$tag-speed-rlt-ts$step.json" \
        --markdown "$RESULTS/$tag-speed-ts$step.md"
    done ;;
  rlt-prop)
    say "rlt-prop: RLT with proportional attention, $EPOCHS epochs"
    train "$tag-rlt-prop" "${COMMON[@]}" --seed 0 --epochs "$EPOCHS" --eval-strategy epoch --proportional-attention ;;
  seeds)
    say "seeds: vanilla and RLT with seed $SEED2"
    train "$tag-vanilla-seed$SEED2" "${COMMON[@]}" --seed "$SEED2" --epochs "$EPOCHS" --eval-strategy epoch --vanilla &
    train "$tag-rlt-seed$SEED2" "${COMMON[@]}" --seed "$SEED2" --epochs "$EPOCHS" --eval-strategy epoch &
    wait ;;
  pretrain)
    say "pretrain: MAE on $tag, $PRETRAIN_EPOCHS epochs, then vanilla and RLT fine-tuned from it"
    # The training clips without labels (pretraining is self-supervised), same variant, size and seed.
    "$PYTHON" examples/pretrain_videomae.py --synthetic "$TRAIN" --synthetic-variant "$VARIANT" \
      --image-size "$IMAGE" --num-frames "$FRAMES" --from-scratch "$SIZE" --batch-size "$BATCH" \
      --lr "$PRETRAIN_LR" $PRECISION --data-seed 0 --num-workers "$WORKERS" --save-strategy no --seed 0 \
      --epochs "$PRETRAIN_EPOCHS" --output-dir "$MODELS/$tag-mae" > "$RESULTS/$tag-mae.log" 2>&1
    rc=$?
    say "pretraining finished" $rc
    [ $rc -eq 0 ] || continue
    cp "$MODELS/$tag-mae/summary.json" "$RESULTS/$tag-mae.json" 2>/dev/null
    FINETUNE=("${DATA[@]}" --model "$MODELS/$tag-mae" --batch-size "$BATCH" --lr "$LR" $PRECISION --data-seed 0
              --num-workers "$WORKERS" --save-strategy no --logging-steps 50 --seed 0 --epochs "$EPOCHS"
              --eval-strategy epoch)
    train "$tag-mae-vanilla" "${FINETUNE[@]}" --vanilla &
    train "$tag-mae-rlt" "${FINETUNE[@]}" &
    wait
    "$PYTHON" examples/compare_runs.py "$RESULTS/$tag-mae-vanilla.json" "$RESULTS/$tag-mae-rlt.json" \
      --markdown "$RESULTS/$tag-mae-train.md" ;;
  *) say "unknown part $part" 1 ;;
  esac
done
say "done: $RESULTS"
