"""What one ssp_replay run is: its config, its errors and the node parameters of each mode."""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterType
import yaml

from ..params import parameter_specs

REPLAY_MODES = ("lockstep", "realtime")
STORAGES = ("same", "sqlite3", "mcap")
# What a frame the node rejects (bad encoding, truncated, non-finite model output) does.
BAD_FRAME_POLICIES = ("fail", "skip")
# Node parameters that switch temporal propagation off, so the node runs the image model alone.
# `stream.propagate` keeps registration and the online TC estimate running.
IMAGE_MODEL_OVERRIDES: dict[str, Any] = {"stream.propagate": False}


class ReplayError(RuntimeError):
    """Raise for a problem with the bag, the topics or the node set-up (message says which)."""


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
    return name.strip(), yaml.safe_load(value) if value.strip() else ""


def load_params_file(path: Path) -> dict[str, Any]:
    """Return the flattened ``ros__parameters`` of the node in a ROS 2 parameter YAML."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ReplayError(f"cannot read parameter file {path}: {err}") from err
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
    """Return the node parameter values for ``mode`` ("ssp" or "image_model"), type-checked.

    Names are checked against the parameters ssp_node declares, and integers given for double
    parameters are widened (ROS parameters are typed; ``-p stream.max_gap_s:=1`` means 1.0).
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
        if (specs[name].type_ == ParameterType.PARAMETER_DOUBLE and isinstance(value, int)
                and not isinstance(value, bool)):
            values[name] = float(value)
    return values
