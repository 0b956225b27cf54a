#!/usr/bin/env bash
# The recipe of the model that ships with bts_course: 19 real BraTS 2018 cases -> patches -> a 3D U-Net ->
# whole-scan scores of the validation cases -> weights and model card in bts_course/weights/.
#
#   recipes/brats2018/train.sh                 # from the repository root, with ../shared beside it
#
# Every step is one of the package's own commands and every step resumes: run it again after an interruption
# and it carries on (patches already cut are kept, training continues from last.keras, export is redone).
# The split by case is recipes/brats2018/split.json (14 training, 5 validation cases). The network predicts the BraTS
# regions (whole tumour, tumour core, enhancing tumour: three overlapping sigmoids, as nnU-Net trains for BraTS) with
# soft dice plus binary cross-entropy. On two CPU cores it starts from the model shipped before it (commit 9ccc009,
# 12 patients, the course's classes; taken from git, so a fresh clone reruns the same recipe) and fine-tunes it:
# a step of the recipe's U-Net at 128x128x64 takes 41 s on two AVX2 cores in float32 (bfloat16 is emulated there and
# 5.5x slower still), so the 2,000 steps from scratch that the first model had are 23 hours on such a machine. A run may
# span several sessions: run the script again with the same BTS_WORK and it resumes; where TensorFlow sees a GPU the
# same recipe trains a larger model from scratch for longer (mixed precision either way), and
# `bts export --if-better` ships it only if it beats the shipped model on the same validation cases.
#
# Environment: BTS_BRATS2018 (the cases; default ../shared/data/brats2018), BTS_WORK (patches, run, scores;
# default ~/.cache/bts_course/brats2018), BTS_PROFILE (cpu, gpu or auto: the default, from TensorFlow's devices).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=recipes/brats2018
bts=${BTS:-bts}
data=${BTS_BRATS2018:-../shared/data/brats2018}
work=${BTS_WORK:-$HOME/.cache/bts_course/brats2018}
profile=${BTS_PROFILE:-auto}
if [ "$profile" = auto ]; then
  profile=$(python3 - <<'PY' 2>/dev/null || echo cpu
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
print("gpu" if tf.config.list_physical_devices("GPU") else "cpu")
PY
)
fi
[ -d "$data" ] || { echo "no BraTS 2018 cases at $data (set BTS_BRATS2018)" >&2; exit 1; }
mkdir -p "$work"

# what each profile trains: the GPU one 4x the model from scratch; the CPU one fine-tunes the previous shipped model
# (same depth and filters) on smaller windows, in short epochs so that an interrupted run loses little
if [ "$profile" = gpu ]; then
  model=(--depth 4 --base-filters 16); steps=(--epochs 30 --steps-per-epoch 200 --batch-size 4 --patch-size 128 128 64
    --learning-rate 1e-3 --warmup-steps 100 --valid-patches 24); run="$work/run-gpu-regions"
else
  init="$work/init/bts_course/weights"
  if [ ! -f "$init/model.json" ]; then
    git cat-file -e 9ccc009 2>/dev/null || { echo "the previous shipped model (commit 9ccc009) is not in this checkout's" \
      "history: clone without --depth, or set BTS_PROFILE=gpu to train from scratch" >&2; exit 1; }
    mkdir -p "$work/init" && git archive 9ccc009 bts_course/weights | tar -x -C "$work/init"
  fi
  model=(--depth 4 --base-filters 8 --init-from "$init"); steps=(--epochs 12 --steps-per-epoch 25 --batch-size 2
    --patch-size 96 96 64 --learning-rate 3e-4 --warmup-steps 25 --valid-patches 12); run="$work/run-cpu-finetune"
fi
echo "recipe brats2018, profile $profile: cases $data, work folder $work"

echo "[1/5] patches: 30 per case of 144x144x80 voxels, two thirds with at least 0.5 % tumour, one third from anywhere"
"$bts" preprocess "$data" "$work/patches" --split "$here/split.json" --patches-per-case 30 --patch-size 144 144 80 \
  --background-threshold 0.995 --tumour-patch-fraction 0.67 --seed 0 --workers 2 --quiet

echo "[2/5] training (resumes from $run/last.keras if there is one)"
"$bts" train "$work/patches" --out "$run" "${model[@]}" "${steps[@]}" --layer-normalization instance \
  --outputs regions --loss dice_bce --schedule cosine --flip --intensity-jitter 0.1 --mixed-precision --patience 100 \
  --workers 2 --seed 0

echo "[3/5] whole-scan prediction and scores of the validation cases"
rm -rf "$work/valid_cases"; mkdir -p "$work/valid_cases"
for case in $(python3 -c "import json; print(' '.join(json.load(open('$here/split.json'))['valid']))"); do
  ln -s "$(cd "$data" && pwd)/$case" "$work/valid_cases/$case"
done
"$bts" predict "$work/valid_cases" -o "$work/valid_predictions" --model "$run/best.keras" --scores "$work/valid_scores.csv"

echo "[4/5] weights and model card"
course_patches=$(dirname "$data")/course_patches
"$bts" export "$run" --scores "$work/valid_scores.csv" --split "$here/split.json" --recipe "$here/train.sh" \
  --describe "$here/card.json" $([ -d "$course_patches" ] && echo --course-patches "$course_patches") \
  --out bts_course/weights --if-better

echo "[5/5] thresholds and temperatures, chosen on the validation cases, into the model card"
"$bts" calibrate bts_course/weights "$data" --split "$here/split.json" --quiet
