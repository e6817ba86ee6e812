#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks into .whl/ (git-ignored), for
# scripts/gpu_check.sh to install there. The GPU machine (docs/DEPLOYMENT.md, "GPU check") has
# Python 3.12 on x86-64 with torch, torchvision, onnx, onnxruntime, safetensors, PyYAML, tqdm,
# psutil and OpenCV, but no kornia and no network. Versions are the pins of
# requirements/lock.txt, so the GPU run uses the model definitions the tests use here:
#   kornia, kornia_rs  imported by ssp_perception.geometry (the SSP warp) and DISK + LightGlue;
#   timm               the backbones (the machine's own timm version is unknown).
# Usage: bash scripts/gpu_wheels.sh        (needs the package registry; ~5 MB)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
NAMES=(kornia kornia_rs timm)
pins=()
for name in "${NAMES[@]}"; do
  pin=$(grep -i -E "^${name}==" requirements/lock.txt || true)
  if [ -z "$pin" ]; then
    echo "gpu_wheels: error: no pin for $name in requirements/lock.txt" >&2
    exit 2
  fi
  pins+=("$pin")
done
rm -rf .whl
mkdir -p .whl
# The download form of the device machine's notes: --no-deps, binary wheels for CPython 3.12 on
# manylinux x86-64 (the tags pip must match exactly are listed one by one).
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${pins[@]}"
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
ls -l .whl
echo "gpu_wheels: ${#pins[@]} wheels, $((total / 1024)) KiB in .whl/ (limit of a device call: 64 MiB)"
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
  echo "gpu_wheels: error: the wheels exceed 60 MiB; the working tree must stay under 64 MiB" >&2
  exit 1
fi
