# Source this file (bash) to use the development environment that `make setup` made:
#   source scripts/env.sh                      # ROS 2 Kilted (the default)
#   ROS_DISTRO=jazzy source scripts/env.sh     # ROS 2 Jazzy (after make setup ROS_DISTRO=jazzy)
# It activates the distribution's venv, sources its install/setup.bash with the venv as the
# ROS 2 prefix, exports ROS_DISTRO, and puts every console script of both packages (ssp_node,
# ssp_replay, ssp_bench, ssp_data, ssp_train, ssp_eval, ssp_export) on PATH: colcon installs
# them to install/<pkg>/lib/<pkg> (for `ros2 run`), which is not on PATH otherwise.
_ssp_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=distro.sh
if source "$_ssp_root/scripts/distro.sh"; then
    # A previously sourced environment of this repository (either distribution) is dropped first.
    ssp_strip_repo_paths "$_ssp_root"
    # shellcheck disable=SC1091
    source "$_ssp_root/$SSP_VENV/bin/activate"
    export ROS_DISTRO="$SSP_DISTRO"
    export AMENT_PREFIX_PATH="$_ssp_root/$SSP_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export CMAKE_PREFIX_PATH="$_ssp_root/$SSP_VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    if [ -f "$_ssp_root/$SSP_INSTALL_BASE/setup.bash" ]; then
        # shellcheck disable=SC1090
        source "$_ssp_root/$SSP_INSTALL_BASE/setup.bash"
        for _ssp_pkg in ssp_perception ssp_training; do
            PATH="$_ssp_root/$SSP_INSTALL_BASE/$_ssp_pkg/lib/$_ssp_pkg:$PATH"
        done
        export PATH
        unset _ssp_pkg
    fi
    # ---- graph: Fast DDS transport profile for large frames (docs/NODE.md, "Input QoS and
    # transport"); every process started from this shell, camera drivers included, gets it. A
    # profile already set is kept. Fast DDS 3 (Kilted on) reads FASTDDS_..., Fast DDS 2 (Humble,
    # Iron, Jazzy) FASTRTPS_... (Fast DDS 3 warns about the latter, so it is set only there).
    export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_ssp_root/config/fastdds_large_frames.xml}"
    case "$ROS_DISTRO" in
        humble|iron|jazzy)
            export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$FASTDDS_DEFAULT_PROFILES_FILE}" ;;
    esac
    # ---- end graph
    unset -f ssp_strip_repo_paths
    unset _ssp_root
else
    unset _ssp_root
    return 2
fi
