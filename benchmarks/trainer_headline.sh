#!/usr/bin/env bash
# The paper's headline through the Trainer (issue 21): vanilla (its best compile mode) vs RLT with CUDA graphs vs
# RLT eager, each run ALONE on the GPU, the same seed (initial weights), data and data order, steps and recipe:
# held-out top-1 / top-5, wall-clock per epoch and for the whole run, clips/s, tokens kept, compile seconds.
#
#   PARTS="still-vanilla still-rlt still-rlt-eager" RESULTS=$OUT/headline bash benchmarks/trainer_headline.sh
#
# Parts (run in the order given; each run writes its log and summary to $RESULTS/<run>.log and <run>.json, each part
# its table to $RESULTS/table-<part>.md and table-<part>.json, with the speed-up against the vanilla run of the same
# task when that run is in the same $RESULTS):
#   <task>-vanilla     transformers' own VideoMAE, --compile $VANILLA_COMPILE (default cuda-graphs: fixed shapes)
#   <task>-rlt         RLT, --compile cuda-graphs (bucketed packing, rlt_pack_buckets 8)
#   <task>-rlt-eager   RLT, no compile
#   <task>-all         the three above, one after the other (a task whose runs fit one call together)
#   speed-<task>       the three runs for speed only: SPEED_EPOCHS epochs, no evaluation (one call for all three)
#   table-<task>       no run: the table of the task's three runs already in $RESULTS (runs split over calls)
# <task>: still | full (the generated task's variants: a still, clean camera / every nuisance on) at the normal
# frame rate, or still-dense | full-dense at twice the frame rate (--synthetic-time-step 0.5, the paper's 30 FPS).
#
# Estimated minutes on one H200 with the defaults (ViT-S 16x224, 8000 + 800 clips, 25 epochs, batch 64, bf16;
# RESULTS.md issue 12: ViT-S 224 training step, B 32: vanilla eager 58 ms, RLT eager 40-45 ms; graphs cut
# vanilla by ~20% at 224 px and RLT's still-camera step to ~1/3 of vanilla's; rendering 8800 clips ~30 s;
# compiling ~20-30 s per new graph, 2-4 of them per run): still-vanilla 7-8.5, still-rlt 3-4, still-rlt-eager
# 5-6, the same again for full and for the dense tasks; speed-<task> 3-4 (SPEED_TRAIN 3072 clips, 2 epochs).
# Each part is one GPU call of under 9.5 minutes; the first three are the comparison that matters most.
# Measured on an H100 (RESULTS.md issue 21, second session): TRAIN=4096 EVAL=768 EPOCHS=20 at 224 px,
# still-vanilla 250 s in all (6.7 s an epoch; it stayed at chance: 16.5%), still-rlt ~215 s (5.6 s an epoch with
# evaluation, 60 s of compiles; 98.4% at epoch 18): one part per call; vanilla ViT-S at 224 px needs more than
# 82k clip-steps to learn this task (at 112 px, 200k clip-steps gave 87.9%). ViT-B speed-still with
# SPEED_TRAIN=1536 BATCH=32: 300-430 s for the three runs. Third session (H100, clips through loader workers):
# TRAIN=4096 EVAL=768 BATCH=64 at 224 px, EPOCHS=10: still-vanilla 217 s, still-rlt 218 s, still-rlt-eager
# ~140 s (still-all does not fit one call); EPOCHS=4: full-vanilla 139 s, full-rlt 152 s, full-rlt-eager ~90 s.
# A run's wall-clock is about 1.8x its training time: rendering, evaluation, compiling it, saving.
# Fourth session (H100, clips on the GPU, ON_DEVICE=1): the three runs of a task fit one call: EPOCHS=8 still 270 s,
# EPOCHS=4 full 182 s and still-dense 172 s (inductor's cache warm from the first task); ViT-B speed-still-dense
# 211 s cold, speed-still + speed-full 253 s warm. A task's runs split over calls: PARTS=table-<task> renders them.
# ViT-B (SIZE=vit-b, issue 12's compute-bound size) did not leave chance in 5 epochs from scratch (RESULTS.md,
# issue 5/6 runs); at ~3.5 ms per clip graphed, EPOCHS=12 TRAIN=8000 fits a part: `SIZE=vit-b EPOCHS=12 BATCH=32`.
#
# CPU smoke run (tiny model, aot_eager compile backend, padded attention):
#   SIZE=tiny IMAGE=32 FRAMES=8 TRAIN=32 EVAL=16 EPOCHS=1 BATCH=8 PRECISION= WORKERS=0 COMPILE_BACKEND=aot_eager \
#     ATTENTION=padded SPEED_TRAIN=32 SPEED_EPOCHS=1 PARTS="still-all speed-full-dense" \
#     bash benchmarks/trainer_headline.sh
set -u
SIZE=${SIZE:-vit-s} IMAGE=${IMAGE:-224} FRAMES=${FRAMES:-16} TRAIN=${TRAIN:-8000} EVAL=${EVAL:-800}
EPOCHS=${EPOCHS:-25} BATCH=${BATCH:-64} LR=${LR:-1e-4} WORKERS=${WORKERS:-6} PRECISION=${PRECISION---bf16}
SEED=${SEED:-0} VANILLA_COMPILE=${VANILLA_COMPILE:-cuda-graphs}
SPEED_TRAIN=${SPEED_TRAIN:-3072} SPEED_EPOCHS=${SPEED_EPOCHS:-2} PROFILE_AFTER=${PROFILE_AFTER:-30}
ATTENTION=${ATTENTION:-auto} COMPILE_BACKEND=${COMPILE_BACKEND:-} ON_DEVICE=${ON_DEVICE:-1}
PARTS=${PARTS:-still-vanilla still-rlt still-rlt-eager} RESULTS=${RESULTS:-rlt_out/headline}
MODELS=${MODELS:-/tmp/rlt-headline-models} PYTHON=${PYTHON:-python3}
mkdir -p "$RESULTS" "$MODELS"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SCRIPT=examples/train_video_classification.py
# The same float32 matmul precision for every run: transformers' torch_compile would turn TF32 on for compiled
# runs only.
GPU=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')
TF32=$([ "$GPU" = 1 ] && echo --no-tf32 || echo)
BACKEND=$([ -n "$COMPILE_BACKEND" ] && echo "--compile-backend $COMPILE_BACKEND" || echo)
# The clips stay on the training GPU (ON_DEVICE=1): through loader workers, shared and pinned memory,
# 16x224 uint8 batches capped the H100 near 940 clips/s, below RLT's step (RESULTS.md issue 21, third session).
CLIPS=$([ "$ON_DEVICE" = 1 ] && echo --synthetic-on-device || echo)

say() { echo "[$(date +%T)] $1${2:+ (exit $2)}"; }

train() {  # train NAME ARGS...: one run alone, its log and summary in $RESULTS
  local name=$1; shift
  "$PYTHON" "$SCRIPT" "$@" --output-dir "$MODELS/$name" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  cp "$MODELS/$name/summary.json" "$RESULTS/$name.json" 2>/dev/null
  say "$name finished" $rc
}

run_mode() {  # run_mode TASK MODE PURPOSE: MODE vanilla | rlt | rlt-eager; PURPOSE headline | speed
  local task=$1 mode=$2 purpose=$3 variant=${1%-dense} step=1
  [ "$task" != "$variant" ] && step=0.5
  local clips=$TRAIN epochs=$EPOCHS evaluation=(--eval-strategy epoch) name="$task-$mode"
  if [ "$purpose" = speed ]; then  # 5 steps profiled in the first epoch (the later ones are the steady wall-clock)
    clips=$SPEED_TRAIN epochs=$SPEED_EPOCHS evaluation=(--eval-strategy no --profile-steps 5
      --profile-after "$PROFILE_AFTER") name="speed-$task-$mode"
  fi
  local flags
  case $mode in
    vanilla) flags=(--vanilla --compile "$VANILLA_COMPILE") ;;
    rlt) flags=(--compile cuda-graphs --attention "$ATTENTION") ;;
    rlt-eager) flags=(--compile none --attention "$ATTENTION") ;;
  esac
  say "$name: $SIZE ${FRAMES}x$IMAGE, $variant camera task, time step $step, $epochs epochs of $clips clips"
  train "$name" --synthetic "$clips" --synthetic-eval "$EVAL" --synthetic-variant "$variant" \
    --synthetic-time-step "$step" \
    --image-size "$IMAGE" --num-frames "$FRAMES" --from-scratch "$SIZE" --batch-size "$BATCH" --lr "$LR" $PRECISION \
    $TF32 $BACKEND $CLIPS --seed "$SEED" --data-seed "$SEED" --num-workers "$WORKERS" --save-strategy no --logging-steps 50 \
    --epochs "$epochs" "${evaluation[@]}" "${flags[@]}"
}

table() {  # table PART NAME...: $RESULTS/PART.json and PART.md from the runs' summaries
  "$PYTHON" - "$RESULTS" "$@" <<'EOF'
import json, sys
from pathlib import Path

results, part, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
runs = {n: json.loads((results / f"{n}.json").read_text()) for n in names if (results / f"{n}.json").is_file()}
missing = [n for n in names if n not in runs]

def vanilla_of(name):  # the vanilla run of the same task, from this part or an earlier one
    stem = name.rsplit("-rlt", 1)[0].rsplit("-vanilla", 1)[0]
    path = results / f"{stem}-vanilla.json"
    return json.loads(path.read_text()) if path.is_file() else None

def steady(s):  # epochs after the first (the first compiles): the wall-clock a longer run converges to
    walls = s.get("epoch_wall_s") or []
    return sum(walls[1:]) / len(walls[1:]) if len(walls) > 1 else (walls[0] if walls else None)

def pct(x):
    return f"{100 * x:.2f}" if x is not None else "-"

rows = ["| run | compile | tokens kept | top-1 | top-5 | epoch wall [s] (first, later mean) | train wall [s] "
        "| clips/s | compile [s] (train / eval) | vs vanilla: train wall / later epochs |",
        "|---|---|---|---|---|---|---|---|---|---|"]
for name, s in runs.items():
    walls = s.get("epoch_wall_s") or [None]
    base = vanilla_of(name)
    ratio = "-"
    if base is not None and not name.endswith("-vanilla") and base.get("train_wall_s") and steady(s) and steady(base):
        ratio = f"{base['train_wall_s'] / s['train_wall_s']:.2f}x / {steady(base) / steady(s):.2f}x"
    kept = s.get("kept_fraction")
    rows.append(
        f"| {name} | {s['compile']} (buckets {s.get('pack_buckets') or 0}) | {100 * kept:.1f}% "
        f"| {pct(s.get('eval_accuracy'))} | {pct(s.get('eval_top5_accuracy'))} "
        f"| {walls[0] or 0:.1f}, {steady(s) or 0:.1f} | {s['train_wall_s']:.1f} | {s['train_clips_per_s']:.0f} "
        f"| {s.get('compile_s', 0):.0f} ({s.get('compile_s_train', 0):.0f} / {s.get('compile_s_eval', 0):.0f}) "
        f"| {ratio} |"
    )
first = next(iter(runs.values()), None)
facts = ""
if first is not None:
    facts = (f"\nDevice: {first['device']}; torch {first['versions']['torch']}, transformers "
             f"{first['versions']['transformers']}; {first['model']}, clips {first['clip_shape']}, "
             f"{first['precision']}, "
             f"batch {first['batch_size']}, {first['data']['train_clips']} training / {first['data']['eval_clips']} "
             f"held-out clips, seed {first['seed']}, {first['steps']} steps.\n")
if missing:
    facts += f"\nMissing (failed or not run): {', '.join(missing)} (see their .log files).\n"
profiled = {n: s["profile"] for n, s in runs.items() if s.get("profile")}
if profiled:  # where a step's time goes (torch.profiler over a few steps of the first epoch)
    facts += ("\n| run | profiled steps | ms a step | device busy (fraction) | kernels | host syncs | loader wait ms "
              "| top kernel (ms a step) |\n|---|---|---|---|---|---|---|---|\n")
    for name, p in profiled.items():
        busy = "-" if p["device_busy_fraction"] is None else (
            f"{p['device_busy_ms_per_step']:.1f} ms ({p['device_busy_fraction']:.2f})")
        top = p["top_kernels"][0] if p["top_kernels"] else None
        top = f"{top['name'][:60]} ({top['ms_per_step']:.1f})" if top else "-"
        facts += (f"| {name} | {p['steps'][0]}-{p['steps'][1]} | {p['wall_ms_per_step']:.1f} | {busy} "
                  f"| {p['kernels_per_step']:.0f} | {p['host_syncs_per_step']:.1f} | {p['loader_wait_ms_per_step']:.1f} "
                  f"| {top} |\n")
text = "\n".join(rows) + "\n" + facts
# Not <part>.json: a part of one run has the run's name, and its summary must stay readable by later parts.
(results / f"table-{part}.md").write_text(text)
(results / f"table-{part}.json").write_text(json.dumps(runs, indent=2))
print(text)
EOF
}

for part in $PARTS; do
  case $part in
  speed-still|speed-full|speed-still-dense|speed-full-dense)
    task=${part#speed-}
    for mode in vanilla rlt rlt-eager; do run_mode "$task" "$mode" speed; done
    table "$part" "speed-$task-vanilla" "speed-$task-rlt" "speed-$task-rlt-eager" ;;
  still-all|full-all|still-dense-all|full-dense-all)
    task=${part%-all}
    for mode in vanilla rlt rlt-eager; do run_mode "$task" "$mode" headline; done
    table "$part" "$task-vanilla" "$task-rlt" "$task-rlt-eager" ;;
  table-still|table-full|table-still-dense|table-full-dense)
    task=${part#table-}
    table "$task" "$task-vanilla" "$task-rlt" "$task-rlt-eager" ;;
  still-*|full-*)
    mode=${part##*-}
    [ "$mode" = eager ] && mode=rlt-eager
    task=${part%-"$mode"}
    case $task in still|full|still-dense|full-dense) ;; *) say "unknown part $part" 1; continue ;; esac
    run_mode "$task" "$mode" headline
    table "$part" "$task-vanilla" "$task-rlt" "$task-rlt-eager" ;;
  *) say "unknown part $part" 1 ;;
  esac
done
say "done: $RESULTS"
