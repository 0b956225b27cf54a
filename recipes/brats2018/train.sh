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
# soft dice plus binary cross-entropy. On two CPU cores it takes about six hours (10 epochs took 3.2 h with the cores
# shared), so a run may span several sessions: run the script again with the same BTS_WORK and it resumes; where
# TensorFlow sees a GPU the same recipe trains a larger model for longer (mixed precision either way), and
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

# what each profile trains: the CPU one takes two cores about six hours (short epochs, so that an interrupted run
# loses little), the GPU one is 4x the model and 1.7x the steps
if [ "$profile" = gpu ]; then
  model=(--depth 4 --base-filters 16); steps=(--epochs 30 --steps-per-epoch 200 --batch-size 4); run="$work/run-gpu-regions"
else
  model=(--depth 4 --base-filters 8); steps=(--epochs 36 --steps-per-epoch 100 --batch-size 2); run="$work/run-cpu-regions"
fi
echo "recipe brats2018, profile $profile: cases $data, work folder $work"

echo "[1/5] patches: 30 per case of 144x144x80 voxels, two thirds with at least 0.5 % tumour, one third from anywhere"
"$bts" preprocess "$data" "$work/patches" --split "$here/split.json" --patches-per-case 30 --patch-size 144 144 80 \
  --background-threshold 0.995 --tumour-patch-fraction 0.67 --seed 0 --workers 2 --quiet

echo "[2/5] training (resumes from $run/last.keras if there is one)"
"$bts" train "$work/patches" --out "$run" "${model[@]}" "${steps[@]}" --layer-normalization instance \
  --outputs regions --loss dice_bce \
  --patch-size 128 128 64 --learning-rate 1e-3 --schedule cosine --warmup-steps 100 --flip --intensity-jitter 0.1 \
  --mixed-precision --valid-patches 24 --patience 100 --workers 2 --seed 0

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
