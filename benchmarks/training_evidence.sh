#!/usr/bin/env bash
# GPU evidence of issues 5 and 6 in one go (benchmarks/RESULTS.md quotes what it writes):
#   1. vanilla vs RLT fine-tuning on the generated task, same seed, data and steps (one GPU each when
#      there are two, so they run side by side on identical devices; one after the other otherwise),
#      and with two GPUs also RLT without the length encoding (ablation);
#   2. a DDP run of the RLT model on every GPU (torchrun), for how it scales;
#   3. training-free RLT on the trained vanilla model at several thresholds (rlt evaluate);
#   4. loader throughput: real videos decoded with PyAV vs the same clips read from the clip cache.
#
#   bash benchmarks/training_evidence.sh                          # ViT-B, 16 x 224, on the GPU(s)
#   SIZE=tiny IMAGE=64 FRAMES=8 TRAIN=256 EVAL=64 EPOCHS=1 BATCH=8 PRECISION= DDP_STEPS=10 \
#     bash benchmarks/training_evidence.sh                        # a CPU smoke run of the same steps
#
# Results (summaries, logs, tables) go to $RESULTS (default rlt_out/evidence); models to $MODELS.
set -u
SIZE=${SIZE:-vit-b} IMAGE=${IMAGE:-224} FRAMES=${FRAMES:-16} TRAIN=${TRAIN:-8000} EVAL=${EVAL:-800}
EPOCHS=${EPOCHS:-5} BATCH=${BATCH:-32} LR=${LR:-1e-4} PRECISION=${PRECISION---bf16} DDP_STEPS=${DDP_STEPS:-300}
WORKERS=${WORKERS:-8} THRESHOLDS=${THRESHOLDS:-0.05 0.1 0.2} VIDEOS=${VIDEOS:-} COPIES=${COPIES:-24}
RESULTS=${RESULTS:-rlt_out/evidence} MODELS=${MODELS:-/tmp/rlt-evidence-models}
PYTHON=${PYTHON:-python3}
mkdir -p "$RESULTS" "$MODELS"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
TRAIN_SCRIPT=examples/train_video_classification.py
COMMON=(--synthetic "$TRAIN" --synthetic-eval "$EVAL" --from-scratch "$SIZE" --image-size "$IMAGE" --num-frames "$FRAMES"
        --batch-size "$BATCH" --lr "$LR" $PRECISION --seed 0 --data-seed 0 --num-workers "$WORKERS"
        --save-strategy no --logging-steps 50)

say() { echo "[$(date +%T)] $1${2:+ (exit $2)}"; }

run_on() {  # run_on GPU NAME ARGS...: one training run on one GPU (or the CPU), its log in $RESULTS
  local gpu=$1 name=$2; shift 2
  CUDA_VISIBLE_DEVICES=$gpu "$PYTHON" "$TRAIN_SCRIPT" "$@" --output-dir "$MODELS/$name" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  cp "$MODELS/$name/summary.json" "$RESULTS/$name.json" 2>/dev/null
  say "$name finished" $rc
}

say "$GPUS GPU(s); 1. vanilla vs RLT fine-tuning"
if [ "$GPUS" -ge 2 ]; then
  run_on 0 base "${COMMON[@]}" --epochs "$EPOCHS" --eval-strategy epoch --vanilla &
  # The vanilla run is the long one: the second GPU also runs the length-encoding ablation meanwhile.
  { run_on 1 rlt "${COMMON[@]}" --epochs "$EPOCHS" --eval-strategy epoch
    run_on 1 rlt-no-length "${COMMON[@]}" --epochs "$EPOCHS" --eval-strategy epoch --no-length-encoding; } &
  wait
else
  run_on "${CUDA_VISIBLE_DEVICES-0}" base "${COMMON[@]}" --epochs "$EPOCHS" --eval-strategy epoch --vanilla
  run_on "${CUDA_VISIBLE_DEVICES-0}" rlt "${COMMON[@]}" --epochs "$EPOCHS" --eval-strategy epoch
fi
runs=("$RESULTS/base.json" "$RESULTS/rlt.json")
[ -f "$RESULTS/rlt-no-length.json" ] && runs+=("$RESULTS/rlt-no-length.json")
"$PYTHON" examples/compare_runs.py "${runs[@]}" --markdown "$RESULTS/compare.md"

if [ "$GPUS" -ge 2 ]; then
  say "2. DDP on $GPUS GPUs, $DDP_STEPS steps"
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" "$TRAIN_SCRIPT" "${COMMON[@]}" \
    --max-steps "$DDP_STEPS" --eval-strategy no --output-dir "$MODELS/rlt-ddp" > "$RESULTS/rlt-ddp.log" 2>&1
  say "rlt-ddp finished" $?
  cp "$MODELS/rlt-ddp/summary.json" "$RESULTS/rlt-ddp.json" 2>/dev/null
fi

say "3. training-free RLT on the trained vanilla model: rlt evaluate at 0 $THRESHOLDS"
device=$([ "$GPUS" -ge 1 ] && echo "--device cuda --dtype bf16" || echo "--device cpu")
render=$([ "$GPUS" -ge 1 ] && echo cuda || echo cpu)
"$PYTHON" examples/make_synthetic_dataset.py "$MODELS/synthetic" --train 0 --validation "$EVAL" --cache \
  --image-size "$IMAGE" --num-frames "$FRAMES" --device "$render" > "$RESULTS/synthetic-cache.log" 2>&1
"$PYTHON" -m rlt evaluate "$MODELS/base" "$MODELS/synthetic/validation" --threshold 0 $THRESHOLDS \
  --pooling mean length_weighted $device --batch-size "$BATCH" --json "$RESULTS/training-free.json" \
  > "$RESULTS/training-free.log" 2>&1
say "training-free evaluation finished" $?

if [ -n "$VIDEOS" ]; then
  say "4. loader: decoding $VIDEOS ($COPIES copies per class) vs the clip cache"
  folder="$MODELS/videos"
  rm -rf "$folder" "$MODELS/videos-cache"
  for class in static camera_pan; do  # two of the model's classes; the labels only matter for the table
    mkdir -p "$folder/$class"
    for copy in $(seq "$COPIES"); do
      for video in "$VIDEOS"/*.mp4; do cp "$video" "$folder/$class/$copy-$(basename "$video")"; done
    done
  done
  "$PYTHON" -m rlt evaluate "$MODELS/rlt" "$folder" --threshold 0.1 $device --batch-size "$BATCH" \
    --json "$RESULTS/loader-videos.json" > "$RESULTS/loader-videos.log" 2>&1
  say "evaluate on videos" $?
  "$PYTHON" -m rlt cache "$folder" "$MODELS/videos-cache" --processor "$MODELS/rlt" > "$RESULTS/cache.log" 2>&1
  say "cache" $?
  "$PYTHON" -m rlt evaluate "$MODELS/rlt" "$MODELS/videos-cache" --threshold 0.1 $device --batch-size "$BATCH" \
    --json "$RESULTS/loader-cache.json" > "$RESULTS/loader-cache.log" 2>&1
  say "evaluate on the cache" $?
fi
say "done: $RESULTS"
