#!/usr/bin/env bash
# Run the prepared GPU check (python -m ssp_perception.tools.gpu_check) on a CUDA machine that
# has no network: install the wheels scripts/gpu_wheels.sh downloaded into .whl/ into a
# scratch folder, put it and both packages' sources on PYTHONPATH, run the check.
# Usage (repository root, GPU machine): bash scripts/gpu_check.sh --out "$OUT/gpu" [flags]
# (flags: python -m ssp_perception.tools.gpu_check --help). Whole run: about 8 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SITE=${SSP_GPU_SITE:-/tmp/site}
shopt -s nullglob
wheels=(.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${wheels[@]}"
else
  echo "gpu_check: no wheels in .whl/ (run bash scripts/gpu_wheels.sh here first); using" \
       "the machine's own packages" >&2
fi
export PYTHONPATH="$SITE:$PWD:$PWD/ssp_training${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv 2>/dev/null || true
exec python3 -m ssp_perception.tools.gpu_check "$@"
