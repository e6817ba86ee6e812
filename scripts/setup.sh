#!/usr/bin/env bash
# One-command, idempotent set-up of the development environment (what `make setup` runs):
#   1. a venv in the repository with the exact versions of requirements/<distro>.txt, which
#      includes requirements/common.txt (torch + torchvision CUDA builds, which also run on
#      CPU-only machines; the ROS 2 wheels for rclpy and the message packages; colcon and its
#      extensions);
#   2. the rosidl CMake include-path fix for the ROS wheels (see ../shared/ENVIRONMENT.md);
#   3. `colcon build` of ssp_msgs, ssp_perception and ssp_training.
# The distribution comes from ROS_DISTRO: kilted (the default) builds .venv, build/, install/,
# log/; jazzy builds .venv-jazzy, build-jazzy/, install-jazzy/, log-jazzy/ (scripts/distro.sh).
# Every step is skipped when its inputs have not changed since it last succeeded, so a second
# run takes seconds. A failing step stops the script with a message naming it.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=distro.sh
source "$ROOT/scripts/distro.sh" || exit 2
VENV="$ROOT/$SSP_VENV"
REQUIREMENTS=("$ROOT/requirements/common.txt" "$ROOT/$SSP_REQUIREMENTS")
STAMPS="$VENV/.ssp-stamps"
PYTHON="${PYTHON:-python3}"
STEP="start"

step() { STEP="$1"; echo "==> [setup] $1"; }
fail() {
    [[ $BASH_SUBSHELL -eq 0 ]] || return 0
    echo "" >&2
    echo "make setup FAILED at step: '$STEP'. The output above says why; fix it and rerun" >&2
    echo "'make setup' (finished steps are skipped)." >&2
}
trap fail ERR

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

echo "==> [setup] ROS 2 $SSP_DISTRO: $SSP_VENV, $SSP_BUILD_BASE/, $SSP_INSTALL_BASE/, $SSP_LOG_BASE/"
step "check the Python interpreter ($PYTHON >= 3.10 with venv)"
"$PYTHON" -c 'import sys, venv; assert sys.version_info >= (3, 10), sys.version' \
    || { echo "need Python >= 3.10 with the venv module (Debian: apt-get install python3-venv)" >&2; false; }

step "create the virtual environment $SSP_VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
else
    echo "    $SSP_VENV exists"
fi

step "install the pinned Python packages ($SSP_REQUIREMENTS; the first time takes minutes)"
REQ_HASH="$(hash_of "${REQUIREMENTS[@]}")"
if stamp_ok pip "$REQ_HASH"; then
    echo "    up to date"
else
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$ROOT/$SSP_REQUIREMENTS"
    stamp_set pip "$REQ_HASH"
fi

step "fix the include paths baked into the ROS 2 wheels' CMake exports"
# The wheels were built in a manylinux container; their exported targets name its Python and
# NumPy include folders, which CMake refuses because they do not exist here.
PY_INC="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
mapfile -t CMAKE_FILES < <(grep -rl "/opt/python/cp3" "$VENV/share" --include='*.cmake' || true)
if ((${#CMAKE_FILES[@]})); then
    sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NP_INC}#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PY_INC}#g" \
        "${CMAKE_FILES[@]}"
    echo "    rewrote ${#CMAKE_FILES[@]} files"
else
    echo "    nothing to fix"
fi

step "colcon build (ssp_msgs, ssp_perception, ssp_training)"
BUILD_INPUTS=(msg/package.xml msg/CMakeLists.txt msg/*.msg msg/srv/*.srv package.xml setup.py
              setup.cfg ssp_training/package.xml ssp_training/setup.py ssp_training/setup.cfg)
BUILD_HASH="$(cd "$ROOT" && { hash_of "${BUILD_INPUTS[@]}"; ls launch config ssp_training/configs \
              2>/dev/null; echo "$REQ_HASH"; } | sha256sum | cut -c1-16)"
# The build stamp lives in this checkout's build folder, not the venv: a venv may serve
# several checkouts (worktrees), and each needs its own build of a changed message.
BUILD_STAMP="$ROOT/$SSP_BUILD_BASE/.ssp-build-stamp"
if [[ -f "$BUILD_STAMP" && "$(cat "$BUILD_STAMP")" == "$BUILD_HASH" \
      && -f "$ROOT/$SSP_INSTALL_BASE/setup.bash" ]]; then
    echo "    up to date"
else
    (
        cd "$ROOT"
        # Nothing of another distribution's environment (a sourced env.sh) may leak into the
        # build: colcon would chain its install folder into the new setup.bash.
        ssp_strip_repo_paths "$ROOT"
        # shellcheck disable=SC1091
        source "$VENV/bin/activate"
        export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
        colcon --log-base "$SSP_LOG_BASE" build --symlink-install \
            --build-base "$SSP_BUILD_BASE" --install-base "$SSP_INSTALL_BASE" \
            --base-paths . msg ssp_training \
            --event-handlers console_cohesion+ summary+ \
            --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
    )
    echo "$BUILD_HASH" > "$BUILD_STAMP"
fi

if [[ "$SSP_DISTRO" == kilted ]]; then
    echo "==> [setup] done. Use it with:  source scripts/env.sh"
else
    echo "==> [setup] done. Use it with:  ROS_DISTRO=$SSP_DISTRO source scripts/env.sh"
fi
