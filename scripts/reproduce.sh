#!/usr/bin/env bash
# Reproduce the paper's table: every stage (image model, teacher, teacher logits, SSP, KD image
# model, KD-SSP, DFF, NetWarp, TCB-PPM, TCB-OCR, ablations, λ sweep), the evaluation and one
# merged table, with `ssp_train pipeline` (docs/TRAINING.md). Re-running resumes stage by stage.
#
# Usage: scripts/reproduce.sh DATASETS OUT [pipeline options ...]
#   DATASETS  NAME=ROOT[,NAME=ROOT...], e.g. uavid=datasets/uavid,ruralscapes=datasets/ruralscapes;
#             a bare ROOT takes its name from the class set in ROOT/dataset.json
#   OUT       output folder (runs, evaluations, OUT/table.md, OUT/plots/)
#   options   passed on, e.g. --seeds 0 1 2, --set run.device=cuda, --profile tiny
# Relative paths (DATASETS, OUT, the recipes' base_checkpoints/ weights) are resolved against
# the directory you call the script from.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    set +u  # the colcon-generated setup scripts read unset variables
    # shellcheck disable=SC1091
    source "$ROOT/scripts/env.sh"
    set -u
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

if [[ $# -lt 2 ]]; then
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
DATASETS="$1"
OUT="$2"
shift 2
ARGS=()
IFS=',' read -r -a ITEMS <<< "$DATASETS"
for item in "${ITEMS[@]}"; do
    if [[ "$item" != *=* ]]; then
        [[ -f "$item/dataset.json" ]] || { echo "reproduce: error: $item/dataset.json not \
found; give NAME=ROOT or a prepared dataset folder" >&2; exit 2; }
        name="$(python -c 'import json, sys
print(json.load(open(sys.argv[1]))["class_set"]["name"])' "$item/dataset.json")"
        item="$name=$item"
    fi
    ARGS+=(--data "$item")
done
exec python -m ssp_training.train pipeline "${ARGS[@]}" --out "$OUT" "$@"
