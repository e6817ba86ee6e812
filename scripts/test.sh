#!/usr/bin/env bash
# `make test`: colcon test over the Python packages with pytest (its summary is printed), then
# `colcon test-result --all --verbose`, which exits non-zero if any test failed. ROS_DISTRO picks
# the environment (kilted, the default, or jazzy: see scripts/distro.sh).
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=distro.sh
source scripts/distro.sh || exit 2
# shellcheck disable=SC1091
set +u  # the colcon-generated setup scripts read unset variables
source scripts/env.sh
set -u
# Tests are CPU-only and sized for a 2-core machine; ROS traffic stays on this host.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=""
# A private ROS domain unless one is set, so a node or bag replay running elsewhere on this host
# cannot feed the in-process node tests (and the tests cannot feed it).
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}"
export MPLBACKEND=Agg
echo "==> [test] ROS 2 $ROS_DISTRO ($SSP_VENV, $SSP_INSTALL_BASE/)"
rm -rf "$SSP_BUILD_BASE"/ssp_perception/test_results "$SSP_BUILD_BASE"/ssp_training/test_results
colcon --log-base "$SSP_LOG_BASE" test \
    --build-base "$SSP_BUILD_BASE" --install-base "$SSP_INSTALL_BASE" \
    --base-paths . msg ssp_training --packages-select ssp_perception ssp_training \
    --event-handlers console_direct+ --pytest-args -ra "$@"
# test-result exits non-zero on any failure or error; keep its output for the closing line.
set +e
RESULT="$(colcon --log-base "$SSP_LOG_BASE" test-result --test-result-base "$SSP_BUILD_BASE" \
    --all --verbose)"
RC=$?
set -e
echo "$RESULT"
# One plain closing line over both packages, e.g. "tests: 120 passed, 0 failed, 3 skipped".
echo "$RESULT" | awk '/^Summary: /{t=$2; e=$4; f=$6; s=$8; \
    printf "tests: %d passed, %d failed, %d skipped\n", t-e-f-s, e+f, s}'
exit $RC
