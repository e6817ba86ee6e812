# Sourced by setup.sh, test.sh and env.sh: the one place that maps ROS_DISTRO (default kilted)
# to the folders of that distribution's environment, so that two distributions never mix:
#   kilted  .venv        build/        install/        log/         requirements/kilted.txt
#   jazzy   .venv-jazzy  build-jazzy/  install-jazzy/  log-jazzy/   requirements/jazzy.txt
# Sets SSP_DISTRO, SSP_VENV, SSP_BUILD_BASE, SSP_INSTALL_BASE, SSP_LOG_BASE (relative to the
# repository root) and SSP_REQUIREMENTS; returns 2 with a one-line message for any other
# distribution.
SSP_DISTRO="${ROS_DISTRO:-kilted}"
case "$SSP_DISTRO" in
    kilted) _ssp_suffix="" ;;
    jazzy) _ssp_suffix="-jazzy" ;;
    *)
        echo "ROS_DISTRO='$SSP_DISTRO' is not supported here: use kilted (the default) or jazzy" >&2
        return 2
        ;;
esac
SSP_VENV=".venv$_ssp_suffix"
SSP_BUILD_BASE="build$_ssp_suffix"
SSP_INSTALL_BASE="install$_ssp_suffix"
SSP_LOG_BASE="log$_ssp_suffix"
SSP_REQUIREMENTS="requirements/$SSP_DISTRO.txt"
unset _ssp_suffix

# Drop every entry of this repository's environments (any distribution's venv or install folder)
# from the search paths, so that switching distributions in one shell or building one while
# another's env.sh is sourced cannot mix the two; the active venv goes too (what its
# `deactivate` does; a venv reached through a symlink names its real folder). Usage:
# ssp_strip_repo_paths ROOT
ssp_strip_repo_paths() {
    local root="$1" venv="${VIRTUAL_ENV:-/nonexistent}" var entry kept
    local -a parts
    for var in PATH PYTHONPATH LD_LIBRARY_PATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH \
               COLCON_PREFIX_PATH; do
        [[ -n "${!var:-}" ]] || continue
        kept=""
        IFS=: read -r -a parts <<< "${!var}"
        for entry in "${parts[@]}"; do
            case "$entry" in
                "$root"/.venv|"$root"/.venv/*|"$root"/.venv-*|"$root"/install|"$root"/install/*) ;;
                "$root"/install-*|"$venv"|"$venv"/*) ;;
                *) kept="${kept:+$kept:}$entry" ;;
            esac
        done
        if [[ -n "$kept" ]]; then export "$var=$kept"; else unset "$var"; fi
    done
    unset VIRTUAL_ENV
}
