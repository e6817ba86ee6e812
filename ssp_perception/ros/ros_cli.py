"""ssp_node's command line: ``--help``, ROS arguments checked before rcl sees them, typo hints.

rcl reports a missing or malformed ``--params-file`` as an ``RCLError`` with C source
locations (and an extra ``[ERROR] [rcl]`` log line); :func:`init` checks the parameter files
first and turns what rcl still refuses into one :class:`RosArgsError` line. Parameters the node
does not declare are ignored by ROS without a word: :func:`undeclared_warnings` names the
closest declared one instead.
"""

from __future__ import annotations

from collections.abc import Iterable
import difflib
import json
from pathlib import Path
import re
from typing import Any

from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
import yaml

RCLError = rclpy_implementation.RCLError
UnknownROSArgsError = rclpy_implementation.UnknownROSArgsError

# Parameters every rclpy node knows (or accepts) without declaring them itself.
BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")
BUILTIN_PREFIXES = ("qos_overrides.",)


class RosArgsError(ValueError):
    """ROS arguments rcl cannot use (a parameter file, an override rule): one line, exit 2."""


def user_args(args: list[str]) -> list[str]:
    """Return the arguments before ``--ros-args`` (``args[0]`` is the program)."""
    rest = args[1:]
    return rest[:rest.index("--ros-args")] if "--ros-args" in rest else rest


def params_files(args: list[str]) -> list[str]:
    """Return the ``--params-file`` values inside the ``--ros-args`` sections of ``args``."""
    files, in_ros = [], False
    for k, arg in enumerate(args):
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg == "--params-file":
            files.append(args[k + 1] if k + 1 < len(args) else "")
    return files


def check_params_files(args: list[str]) -> None:
    """Raise RosArgsError naming a parameter file that is missing or no ROS 2 parameter YAML."""
    for name in params_files(args):
        if not name:
            raise RosArgsError("--params-file needs a file name")
        path = Path(name)
        data = read_params_yaml(path)
        sections = data if isinstance(data, dict) else {}
        if not sections or not all(_is_node_section(v) for v in sections.values()):
            raise RosArgsError(f"--params-file {path}: expected a ROS 2 parameter file: "
                               f"node names (e.g. '/**' or 'ssp_node') mapping to "
                               f"'ros__parameters:' mappings")
        for section in sections.values():
            _check_arrays(path, section["ros__parameters"], "")


def _check_arrays(path: Path, params: dict, prefix: str) -> None:
    """Raise RosArgsError for a list rcl cannot read: ROS 2 arrays hold one type of value."""
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_arrays(path, value, f"{name}.")
        elif isinstance(value, list):
            kinds = {type(v).__name__ for v in value}
            if len(kinds) > 1 or kinds & {"list", "dict", "NoneType"}:
                raise RosArgsError(
                    f"--params-file {path}: {name}: {value!r} mixes {' and '.join(sorted(kinds))}"
                    f" values; a ROS 2 array holds one type (e.g. [384, 640] for integers, "
                    f"[0.5, 1.0] for doubles)")


def read_params_yaml(path: Path, flag: str = "--params-file") -> Any:
    """Return the YAML of a parameter file; RosArgsError (one line) if it cannot be read.

    Shared by ssp_node and ssp_replay: a missing file, one that is not UTF-8 text and one that
    is not valid YAML are each one line naming ``flag`` and the file.
    """
    if not path.is_file():
        raise RosArgsError(f"{flag} {path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise RosArgsError(f"{flag} {path}: cannot read it: {err}") from None
    except yaml.YAMLError as err:
        raise RosArgsError(f"{flag} {path}: not valid YAML{yaml_problem(err)}") from None


def yaml_problem(err: yaml.YAMLError) -> str:
    """Return ``" (line N): <problem>"`` of a YAML error, without the parser's snippet."""
    where = getattr(err, "problem_mark", None)
    line = f" (line {where.line + 1})" if where is not None else ""
    return f"{line}: {getattr(err, 'problem', None) or 'invalid YAML'}"


def _is_node_section(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict)


def rcl_message(err: BaseException) -> str:
    """Return rcl's reason for refusing the arguments without its C source locations."""
    if isinstance(err, UnknownROSArgsError):
        return f"unknown ROS arguments {err} (see ssp_node --help)"
    text = str(err).replace("failed to initialize rcl: ", "")
    return re.sub(r", at /\S+:\d+", "", " ".join(text.split()))


def init(args: list[str], context: Any) -> None:
    """``rclpy.init`` without rclpy's signal handlers; bad ROS arguments raise RosArgsError."""
    import rclpy

    check_params_files(args)
    try:
        # ssp_perception.cli's handlers, not rclpy's, decide how a signal ends the node.
        rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)
    except (RCLError, UnknownROSArgsError) as err:
        raise RosArgsError(rcl_message(err)) from None


def undeclared_warnings(given: Iterable[str], declared: Iterable[str]) -> list[str]:
    """Return one warning per given parameter name the node does not declare, with a hint."""
    declared = list(declared)
    by_field = {name.rsplit(".", 1)[-1]: name for name in declared}
    lines = []
    for name in sorted(set(given)):
        if name in declared or name in BUILTIN_PARAMETERS or name.startswith(BUILTIN_PREFIXES):
            continue
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6) or [
            by_field[m] for m in difflib.get_close_matches(name.rsplit(".", 1)[-1], by_field,
                                                           n=1, cutoff=0.75)]
        hint = f"; did you mean {close[0]!r}?" if close else " (see ssp_node --help)"
        lines.append(f"ignoring parameter {name!r}: ssp_node declares no such parameter{hint}")
    return lines


def usage(specs: Iterable[Any]) -> str:
    """Return ``ssp_node --help``: how to pass ROS arguments, then every parameter."""
    lines = [
        "usage: ssp_node [--help] [--managed] [--ros-args [-p NAME:=VALUE]...",
        "                [--params-file FILE]... [-r FROM:=TO]... [--log-level LEVEL]]",
        "",
        "Segment camera streams with SSP and publish labels, color, overlay, confidence,",
        "status, rejected and /diagnostics (docs/NODE.md).",
        "",
        "  --managed             start as a managed (lifecycle) node in the unconfigured",
        "                        state: configure loads the model, activate subscribes",
        "",
        "ROS arguments (after --ros-args):",
        "  -p NAME:=VALUE        set a parameter (YAML value: 0.5, true, [a, b])",
        "  --params-file FILE    parameters from a ROS 2 YAML file (e.g. config/uav.yaml)",
        "  -r image:=/cam/image  remap the input topic; -r __ns:=/uav puts every topic",
        "                        under /uav; -r __node:=NAME renames the node",
        "  --log-level LEVEL     debug, info, warn, error or fatal",
        "",
        "Ctrl-C exits 130 and SIGTERM 143 after the streams stopped; a node that cannot",
        "start exits 2 with one line.",
        "",
        "parameters (name, type, default):",
    ]
    for spec in specs:
        default = "(unset)" if spec.default is None else json.dumps(spec.default)
        kind = Parameter.Type(spec.type_).name.lower()
        ro = ", read-only" if spec.read_only else ""
        lines.append(f"  {spec.name} ({kind}{ro}) = {default}")
        lines.append(f"      {spec.description}")
    return "\n".join(lines)


__all__ = ["RosArgsError", "check_params_files", "init", "params_files", "rcl_message",
           "read_params_yaml", "undeclared_warnings", "usage", "user_args", "yaml_problem"]
