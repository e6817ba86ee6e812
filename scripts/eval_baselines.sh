#!/usr/bin/env bash
# Train the paper's video baselines (DFF, NetWarp, TCB-PPM, TCB-OCR; SSP_SPEC §8) briefly on
# the synthetic data, on the lite image model, and evaluate them next to the image model and
# SSP with ssp_eval: the README's comparison table.
#
# Usage: scripts/eval_baselines.sh [DATA] [OUT]
#   DATA  synthetic dataset the demo model was trained on (default datasets/synth_demo)
#   OUT   run folder (default runs/baselines): recipes/, <kind>/ (ssp_train runs), eval/
# Relative paths (DATA, OUT, SSP_CKPT, IMAGE_CKPT) are resolved against the directory the
# script is called from, like any command's; the defaults fit a call from the repository root.
# Environment (defaults in brackets):
#   SSP_CKPT    SSP artifact [<repository>/ssp_perception/weights/ssp_lite_synth.safetensors]
#   IMAGE_CKPT  image model the baselines start from (SSP_SPEC §5.3)
#               [runs/synth_lite_image/model.safetensors if it exists, else SSP_CKPT's image
#               model: ssp_train takes the image_model.* tensors of another kind's artifact]
#   EPOCHS [3]  LR [5e-4]  THREADS [1: on a shared 2-core machine more threads stall]
#   SIZE        working size "H W" [the SSP checkpoint's input size]
#   KINDS       ["dff netwarp tcb_ppm tcb_ocr"]
#   EVAL_ARGS   extra ssp_eval arguments (e.g. "--max-frames 30 --device cuda")
# A recipe ssp_training/configs/synth_lite_<kind>.yaml, if present, is used instead of the one
# written here. Every run keeps its resolved recipe in OUT/<kind>/recipe.yaml; re-running
# resumes unfinished trainings and skips finished ones.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    set +u  # the colcon-generated setup scripts read unset variables
    # shellcheck disable=SC1091
    source "$ROOT/scripts/env.sh"
    set -u
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

DATA="${1:-datasets/synth_demo}"
OUT="${2:-runs/baselines}"
SSP_CKPT="${SSP_CKPT:-$ROOT/ssp_perception/weights/ssp_lite_synth.safetensors}"
EPOCHS="${EPOCHS:-3}"
LR="${LR:-5e-4}"  # recipes read 5e-4 as a number (YAML 1.1 alone would not)
THREADS="${THREADS:-1}"
KINDS="${KINDS:-dff netwarp tcb_ppm tcb_ocr}"
if [[ -z "${IMAGE_CKPT:-}" ]]; then
    IMAGE_CKPT="$SSP_CKPT"
    [[ -f runs/synth_lite_image/model.safetensors ]] \
        && IMAGE_CKPT=runs/synth_lite_image/model.safetensors
fi

die() { echo "eval_baselines: error: $*" >&2; exit 2; }
[[ -f "$SSP_CKPT" ]] || die "SSP checkpoint $SSP_CKPT not found (train it with 'make demo-model' or set SSP_CKPT)"
[[ -f "$IMAGE_CKPT" ]] || die "image model $IMAGE_CKPT not found (set IMAGE_CKPT)"
[[ -f "$DATA/dataset.json" ]] || die "dataset $DATA not found: give the synthetic dataset the \
SSP checkpoint was trained on ('make demo-model' makes datasets/synth_demo)"
if [[ -n "${SIZE:-}" ]]; then
    read -r SIZE_H SIZE_W <<< "$SIZE"
else  # the SSP checkpoint's working size, so that every row runs at the same size
    read -r SIZE_H SIZE_W < <(python -c 'import sys
from ssp_perception.artifact import read_meta
print(*read_meta(sys.argv[1]).input_size)' "$SSP_CKPT")
fi

write_recipe() {  # kind file: a short CE fine-tune of one baseline (SSP_SPEC §5.2, §8)
    cat > "$2.tmp" <<EOF
# Written by scripts/eval_baselines.sh: a brief CPU training of the $1 baseline on the lite
# image model (SSP_SPEC §8: same image model, CE only, square crops of the working size).
# The paper trains 200 epochs at LR 5e-5 from the trained image model; this is a short
# fine-tune with a larger LR, enough to compare the methods on synthetic data.
name: synth_lite_$1
description: $1 baseline on the lite image model, synthetic data, CE, brief
model:
  kind: $1
  preset: lite
  init: $IMAGE_CKPT
data:
  root: $DATA
  class_set: uavid
  num_classes: 8
  size: [$SIZE_H, $SIZE_W]
  square_crop: true
  augment: true
  workers: 0
loss:
  kind: ce
optim:
  lr: $LR
  batch_size: 4
  epochs: $EPOCHS
  warmup_epochs: 0.5
val:
  every: 0
  flow: gt
  max_clips: 1
  max_frames: 20
run:
  seed: 0
  threads: $THREADS
  out_dir: $OUT/$1
  log_every: 10
EOF
    mv "$2.tmp" "$2"
}

mkdir -p "$OUT/recipes"
# The image-model row: the separately trained image model (the paper's "Base Image Model")
# when there is one, else the SSP checkpoint's own image model.
if [[ "$IMAGE_CKPT" != "$SSP_CKPT" ]]; then
    CHECKPOINTS=("$IMAGE_CKPT" "$SSP_CKPT")
    IMAGE_ROW=()
else
    CHECKPOINTS=("$SSP_CKPT")
    IMAGE_ROW=(--with-image-model)
fi
for kind in $KINDS; do
    recipe="$ROOT/ssp_training/configs/synth_lite_$kind.yaml"
    if [[ ! -f "$recipe" ]]; then
        recipe="$OUT/recipes/synth_lite_$kind.yaml"
        write_recipe "$kind" "$recipe"
    fi
    model="$OUT/$kind/model.safetensors"
    if [[ -f "$model" ]]; then
        echo "[eval_baselines] $kind: $model exists, not retraining"
    else
        echo "[eval_baselines] training $kind ($recipe)"
        python -m ssp_training.train fit --recipe "$recipe" --resume
    fi
    CHECKPOINTS+=("$model")
done

# shellcheck disable=SC2086  # EVAL_ARGS is a list of arguments
python -m ssp_training.evaluate --checkpoint "${CHECKPOINTS[@]}" --data "$DATA" --split val \
    "${IMAGE_ROW[@]}" --threads "$THREADS" --out "$OUT/eval" ${EVAL_ARGS:-}
echo "[eval_baselines] table: $OUT/eval/table.md, report: $OUT/eval/eval.json"
