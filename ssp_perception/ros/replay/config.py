"""What one ssp_replay run is: its config, its errors and the node parameters of each mode."""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter
import yaml

from .. import ros_cli
from ..params import build_configs, parameter_specs, ParamSpec

REPLAY_MODES = ("lockstep", "realtime")
STORAGES = ("same", "sqlite3", "mcap")
# What a frame the node rejects (bad encoding, truncated, non-finite model output) does.
BAD_FRAME_POLICIES = ("fail", "skip")
# Node parameters that switch temporal propagation off, so the node runs the image model alone.
# `stream.propagate` keeps registration and the online TC estimate running.
IMAGE_MODEL_OVERRIDES: dict[str, Any] = {"stream.propagate": False}


class ReplayError(RuntimeError):
    """Raise for a problem with the bag, the topics or the node set-up (message says which)."""


class WriteError(RuntimeError):
    """Raise when the outputs cannot be written (a full disk): a runtime error, exit 1."""


@dataclass(frozen=True)
class ReplayConfig:
    """Describe one replay: the bag, its topics, the node parameters and the outputs."""

    bag: Path
    """rosbag2 directory (or a single .db3 / .mcap file)."""
    image_topic: str = "/camera/image_raw"
    """Camera topic in the bag: sensor_msgs/Image or sensor_msgs/CompressedImage."""
    label_topic: str = ""
    """Optional ground-truth topic (mono8 train ids, same header stamps); "" = none."""
    out_dir: Path = Path("replay_output")
    """Output folder: report.json, report.md, plots, video and the output bag in ``bag/``."""
    mode: str = "lockstep"
    """"lockstep" (every frame, in order, deterministic) or "realtime" (the bag's rate)."""
    rate: float = 1.0
    """Realtime speed as a multiple of the recorded rate (2.0 = twice as fast)."""
    compare: bool = True
    """Also replay with temporal propagation off (the image model alone)."""
    params: tuple[tuple[str, Any], ...] = ()
    """Node parameter overrides (name, value), applied after ``params_file``."""
    params_file: Path | None = None
    """ROS 2 parameter YAML for the node (``ssp_node:`` or ``/**:`` with ``ros__parameters``)."""
    frame_timeout_s: float = 60.0
    """Lockstep: seconds to wait for one frame's output before counting it as dropped."""
    max_frames: int = 0
    """Replay only the first N frames (0 = all)."""
    storage: str = "same"
    """Output bag storage: "same" as the input, "sqlite3" or "mcap"."""
    overwrite: bool = False
    """Replace an existing ``out_dir``."""
    video: bool = True
    """Render the side-by-side video."""
    flow_preset: str = "medium"
    """DIS optical-flow preset for the TC metric ("ultrafast", "fast", "medium")."""
    progress: bool = True
    """Show progress bars."""
    domain_id: int | None = None
    """ROS domain of the replay's context; None = ROS_DOMAIN_ID (a private one isolates it)."""
    in_process: bool = False
    """Run ssp_node in the replay's process; default: its own process, as on a drone."""
    on_bad_frame: str = "fail"
    """A frame the node rejects: "fail" (stop at once, naming it) or "skip" (count it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bag", Path(self.bag))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.params_file is not None:
            object.__setattr__(self, "params_file", Path(self.params_file))
        if self.mode not in REPLAY_MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(REPLAY_MODES)}")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a positive multiple of the bag rate, got {self.rate}")
        if not (math.isfinite(self.frame_timeout_s) and self.frame_timeout_s > 0):
            raise ValueError(f"frame_timeout_s must be positive, got {self.frame_timeout_s}")
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be >= 0 (0 = all), got {self.max_frames}")
        if self.on_bad_frame not in BAD_FRAME_POLICIES:
            raise ValueError(f"on_bad_frame {self.on_bad_frame!r} is not one of "
                             f"{', '.join(BAD_FRAME_POLICIES)}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage {self.storage!r} is not one of {', '.join(STORAGES)}")
        if not self.image_topic.startswith("/"):
            raise ValueError(f"image_topic must be an absolute topic name, "
                             f"got {self.image_topic!r}")
        if self.label_topic and not self.label_topic.startswith("/"):
            raise ValueError(f"label_topic must be an absolute topic name or empty, "
                             f"got {self.label_topic!r}")
        if self.domain_id is not None and not 0 <= self.domain_id <= 232:
            raise ValueError(f"domain_id must be in 0..232 or None, got {self.domain_id}")
        if self.label_topic == self.image_topic:
            raise ValueError("label_topic and image_topic are the same topic")


def parse_param(text: str) -> tuple[str, Any]:
    """Return (name, value) of a ``name:=value`` argument; the value is read as YAML."""
    name, sep, value = text.partition(":=")
    if not sep or not name.strip():
        raise ValueError(f"parameter {text!r} is not of the form name:=value")
    try:
        return name.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ValueError(f"-p {text}: the value is not valid YAML"
                         f"{ros_cli.yaml_problem(err)}") from None


def load_params_file(path: Path) -> dict[str, Any]:
    """Return the flattened ``ros__parameters`` of the node in a ROS 2 parameter YAML."""
    try:
        data = ros_cli.read_params_yaml(Path(path))   # ssp_node's reader: the same errors
    except ros_cli.RosArgsError as err:
        raise ReplayError(str(err)) from None
    if not isinstance(data, dict):
        raise ReplayError(f"parameter file {path} is not a mapping")
    params: dict[str, Any] = {}
    for key in ("/**", "ssp_node", "/ssp_node"):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            params.update(_flatten(section["ros__parameters"]))
    if not params:
        raise ReplayError(f"parameter file {path} has no '/**' or 'ssp_node' section with "
                          f"ros__parameters")
    return params


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def node_parameters(cfg: ReplayConfig, mode: str) -> dict[str, Any]:
    """Return the node parameter values for ``mode`` ("ssp" or "image_model"), checked.

    Checked as ssp_node checks them, before any node starts: names against the parameters it
    declares, types as rclpy declares them (no widening: ``stream.max_gap_s: 1`` is an integer
    and refused, as the node refuses it), values by the node's configs; then what the replay
    itself needs of the node (:func:`check_replayable`).
    """
    values = load_params_file(cfg.params_file) if cfg.params_file else {}
    values.update(dict(cfg.params))
    if mode == "image_model":
        values.update(IMAGE_MODEL_OVERRIDES)
    specs = {spec.name: spec for spec in parameter_specs()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ReplayError(f"ssp_node has no parameter(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(specs))}")
    for name, value in values.items():
        _check_type(specs[name], value)
    try:
        build_configs(values)
    except ValueError as err:
        raise ReplayError(f"ssp_node cannot start: {err}") from None
    check_replayable(values)
    return values


def _check_type(spec: ParamSpec, value: Any) -> None:
    # What rclpy's typed declare_parameter does with an override of another type (the node
    # then refuses to start); an empty list fits any array type.
    try:
        given = Parameter.Type.from_parameter_value(value).value
    except TypeError:
        given = None
    # Compared by number: Parameter.Type is an IntEnum in Kilted's rclpy, a plain Enum in
    # Jazzy's (there it never equals the ParameterType constant).
    if value is None or given == spec.type_ or (value == [] and spec.type_ in _ARRAY_TYPES):
        return
    kind = Parameter.Type(spec.type_).name.lower()
    hint = " (write doubles with a decimal point)" if "double" in kind else ""
    raise ReplayError(f"parameter {spec.name!r} must be of type {kind}{hint}, got {value!r}")


_ARRAY_TYPES = (ParameterType.PARAMETER_BOOL_ARRAY, ParameterType.PARAMETER_INTEGER_ARRAY,
                ParameterType.PARAMETER_DOUBLE_ARRAY, ParameterType.PARAMETER_STRING_ARRAY)


def check_replayable(values: dict[str, Any]) -> None:
    """Refuse node parameters that take away the topics the replay feeds and waits for.

    The replay publishes sensor_msgs/Image on the node's relative ``image`` topic and waits
    for its ``labels`` and ``status``; without them every frame would wait out its timeout.
    """
    topics = values.get("image_topics")
    if topics not in (None, [], ["image"], ("image",)):
        raise ReplayError(f"image_topics {list(topics)} cannot be replayed: ssp_replay feeds "
                          f"the node's input topic 'image' (leave image_topics unset)")
    if values.get("input_transport", "raw") != "raw":
        raise ReplayError(f"input_transport {values['input_transport']!r} cannot be replayed: "
                          f"ssp_replay publishes sensor_msgs/Image (CompressedImage bags are "
                          f"decoded first); leave it 'raw'")
    if values.get("publish_labels", True) is False:
        raise ReplayError("publish_labels false cannot be replayed: ssp_replay waits for "
                          "every frame's labels (turn off color, overlay or confidence instead)")
