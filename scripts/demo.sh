#!/usr/bin/env bash
# `make demo` (after `make setup`): a synthetic UAV flight is written as a rosbag2, replayed
# through ssp_node twice (SSP, then temporal propagation off = the image model alone) with the
# bundled demo model, and summarised. Leaves in demo_output/: report.json, report.md, the plots,
# side_by_side.mp4 and the output bag (bag/). Nothing is downloaded.
#
# The clip is generated once and cached in datasets/demo/ (keyed by size, length and seed), so
# a second run goes straight to the replay. Environment overrides:
#   SSP_DEMO_MODEL   model artifact    (default ssp_perception/weights/ssp_lite_synth.safetensors)
#   SSP_DEMO_OUT     output folder     (default demo_output)
#   SSP_DEMO_FRAMES  frames in the clip (default 60: 3 s at 20 fps)
#   SSP_DEMO_SEED    flight seed       (default 2025: a town and flight not used for training)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
set +u  # the colcon-generated setup scripts read unset variables
source scripts/env.sh
set -u

MODEL="${SSP_DEMO_MODEL:-$ROOT/ssp_perception/weights/ssp_lite_synth.safetensors}"
OUT="${SSP_DEMO_OUT:-$ROOT/demo_output}"
FRAMES="${SSP_DEMO_FRAMES:-60}"
SEED="${SSP_DEMO_SEED:-2025}"
STEP="start"
trap 'echo "make demo FAILED at step: $STEP" >&2' ERR

# CPU only, ROS traffic on this host only, plots without a display.
export CUDA_VISIBLE_DEVICES="" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST MPLBACKEND=Agg
export PYTHONUNBUFFERED=1
# A private ROS domain unless one is set: two demos on one host must not feed each other.
DOMAIN="${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}"

STEP="find the demo model"
if [[ ! -f "$MODEL" ]]; then
    echo "demo model not found: $MODEL" >&2
    echo "it is bundled with the repository; 'make demo-model' retrains it (CPU, ~45 min)." >&2
    exit 1
fi
# The clip is rendered at the model's input size, so the node does not resize.
SIZE="$(python -c 'import sys
from ssp_perception.artifact import read_meta
print("%dx%d" % tuple(read_meta(sys.argv[1]).input_size))' "$MODEL")"
DATA="$ROOT/datasets/demo/synth_${SIZE}_${FRAMES}f_seed${SEED}"
BAG="${DATA}_rosbag2"

STEP="generate the synthetic UAV clip ($SIZE, $FRAMES frames, seed $SEED)"
echo "==> [demo] $STEP"
if [[ -f "$DATA/dataset.json" ]]; then
    echo "    cached: $DATA"
else
    python -m ssp_training.data.cli synth --out "$DATA" --sequences 1 --frames "$FRAMES" \
        --size "$SIZE" --seed "$SEED" --val-fraction 0 --force
fi

STEP="write the clip as a rosbag2"
echo "==> [demo] $STEP"
if [[ -f "$BAG/metadata.yaml" ]]; then
    echo "    cached: $BAG"
else
    CLIP="$(head -n 1 "$DATA/train.txt")"
    python -m ssp_training.data.cli to-bag --root "$DATA" --clip "$CLIP" --out "$BAG" \
        --storage mcap --force
fi

# ssp_node runs as its own process (as on a drone), fed over real topics by the replay, with
# the Fast DDS transport profile that env.sh exported for both.
STEP="replay the bag through ssp_node: SSP vs the image model alone"
echo "==> [demo] $STEP"
python -m ssp_perception.ros.replay "$BAG" --image-topic /camera/image_raw \
    --label-topic /camera/labels --out "$OUT" --overwrite --domain-id "$DOMAIN" \
    --params-file config/uav.yaml -p "model_path:=$MODEL"

STEP="summarise"
python - "$OUT/report.json" <<'EOF'
import json
import sys

modes = json.load(open(sys.argv[1]))["modes"]
ssp, image = modes["ssp"]["tc"], modes["image_model"]["tc"]
if ssp is not None and image is not None:
    verdict = "higher" if ssp > image else "NOT higher"
    print(f"\nSSP temporal consistency is {verdict} than the image model's: "
          f"{100 * ssp:.1f} vs {100 * image:.1f} (TC, %)")
EOF
echo "==> [demo] done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
