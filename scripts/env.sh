# Source this file (bash) to use the development environment that `make setup` made:
#   source scripts/env.sh
# It activates .venv and sources install/setup.bash with the venv as the ROS 2 prefix.
_ssp_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$_ssp_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_ssp_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_ssp_root/.venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# shellcheck disable=SC1091
[ -f "$_ssp_root/install/setup.bash" ] && source "$_ssp_root/install/setup.bash"
# ---- graph: Fast DDS transport profile for large frames (docs/NODE.md, "Input QoS and
# transport"); every process started from this shell, camera drivers included, gets it. A
# profile already set is kept. Fast DDS 3 (Kilted on) reads FASTDDS_..., Fast DDS 2 (Humble,
# Iron, Jazzy) FASTRTPS_... (Fast DDS 3 warns about the latter, so it is set only there).
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_ssp_root/config/fastdds_large_frames.xml}"
case "${ROS_DISTRO:-}" in
    humble|iron|jazzy)
        export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$FASTDDS_DEFAULT_PROFILES_FILE}" ;;
esac
# ---- end graph
unset _ssp_root
