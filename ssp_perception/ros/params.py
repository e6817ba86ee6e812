"""ROS parameters of ssp_node, declared from the typed configs (one field, one parameter).

``NodeConfig`` holds the node's own settings; ``StreamConfig`` and ``RegistrationConfig`` (the
core's) appear under the ``stream.`` and ``registration.`` prefixes. :func:`parameter_specs`
turns the three dataclasses into ROS parameter descriptions and :func:`build_configs` turns
parameter values back into validated configs.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, fields
import json
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints, Union

from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

from ..backends import BACKENDS, DTYPES
from ..config import DEVICE_PATTERN, field_docs
from ..registration import RegistrationConfig
from ..stream import StreamConfig

TRANSPORTS = ("raw", "compressed")
RELIABILITY_MODES = ("auto", "reliable", "best_effort")
# Stream options the node fixes: the confidence map feeds the NaN guard, the `confidence` topic
# and mean_confidence; the similarity map feeds the status statistics; logits are for
# evaluation only.
FORCED_STREAM_OPTIONS = {"compute_confidence": True, "compute_similarity": True,
                         "return_logits": False}


@dataclass(frozen=True)
class NodeConfig:
    """Configure ssp_node's model, inputs, outputs and health reporting."""

    model_path: str = ""
    """Model artifact (.safetensors); empty = the bundled demo checkpoint."""
    preset: str = ""
    """Preset the artifact must have ("lite", "hiera_s", ...); empty = accept any."""
    backend: str = "torch"
    """Inference backend (see ssp_perception.backends.BACKENDS)."""
    device: str = "cpu"
    """Device of the model: "cpu", "cuda" or "cuda:N"."""
    dtype: str = "float32"
    """Compute dtype: "float32", "float16" or "bfloat16"."""
    num_threads: int = 0
    """Torch CPU threads for inference; 0 = torch's default (one per core)."""
    image_topics: tuple[str, ...] = ()
    """Input topics, one stream each; empty = the single relative topic "image"."""
    input_transport: str = "raw"
    """"raw" (sensor_msgs/Image) or "compressed" (CompressedImage on <topic>/compressed)."""
    input_reliability: str = "auto"
    """Input QoS: "auto" (reliable when every publisher is, else best effort), "reliable",
    "best_effort"; depth 1 in every mode."""
    publish_labels: bool = True
    """Advertise `labels` (mono8 class ids at the input resolution)."""
    publish_color: bool = True
    """Advertise `color` (rgb8 class palette)."""
    publish_overlay: bool = True
    """Advertise `overlay` (rgb8 blend of the image and the palette)."""
    publish_confidence: bool = True
    """Advertise `confidence` (mono8, max softmax probability x 255)."""
    overlay_alpha: float = 0.5
    """Weight of the palette in `overlay` (0 = image only, 1 = palette only)."""
    diagnostics_period_s: float = 1.0
    """Period of the /diagnostics report, seconds (steady clock)."""
    input_timeout_s: float = 2.0
    """Warn when a stream received nothing for this many seconds."""
    warn_throttle_s: float = 5.0
    """Repeat the same warning in the log at most this often, seconds."""

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"NodeConfig: {msg}")

        object.__setattr__(self, "image_topics", tuple(self.image_topics))
        if self.backend not in BACKENDS:
            fail(f"backend {self.backend!r} is not one of {', '.join(sorted(BACKENDS))}")
        if self.dtype not in DTYPES:
            fail(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            fail(f"device {self.device!r} is not one of cpu, cuda, cuda:N (N = GPU index)")
        if self.num_threads < 0:
            fail(f"num_threads must be >= 0 (0 = torch's default), got {self.num_threads}")
        if self.input_reliability not in RELIABILITY_MODES:
            fail(f"input_reliability {self.input_reliability!r} is not one of "
                 f"{', '.join(RELIABILITY_MODES)}")
        if self.input_transport not in TRANSPORTS:
            fail(f"input_transport {self.input_transport!r} is not one of "
                 f"{', '.join(TRANSPORTS)}")
        bad = [t for t in self.image_topics if not t or t.endswith("/") or " " in t]
        if bad:
            fail(f"image_topics must be topic names like 'cam0/image', got {bad}")
        if len(set(self.image_topics)) != len(self.image_topics):
            fail(f"image_topics lists a topic twice: {list(self.image_topics)}")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            fail(f"overlay_alpha must be in [0, 1], got {self.overlay_alpha}")
        for name in ("diagnostics_period_s", "input_timeout_s"):
            if not getattr(self, name) > 0.0:
                fail(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if not self.warn_throttle_s >= 0.0:
            fail(f"warn_throttle_s must be >= 0 seconds, got {self.warn_throttle_s}")

    @property
    def topics(self) -> tuple[str, ...]:
        """Return the input topics as configured (the relative "image" when none are set)."""
        return self.image_topics or ("image",)


# Node parameters that take effect while running; every other NodeConfig field is read-only
# (a new model or new topics need a restart). All stream.* and registration.* parameters are
# dynamic: the streams are rebuilt with the new config, which resets their temporal state.
DYNAMIC_NODE_FIELDS = ("overlay_alpha", "input_timeout_s", "warn_throttle_s")
SECTIONS: dict[str, type] = {"": NodeConfig, "stream": StreamConfig,
                             "registration": RegistrationConfig}


@dataclass(frozen=True)
class ParamSpec:
    """Describe one ROS parameter declared from one field of a typed config."""

    name: str
    """ROS name: the field name, prefixed by its section ("stream.max_gap_s")."""
    section: str
    """"" for NodeConfig, "stream" or "registration"."""
    field: str
    """Field name in the config dataclass."""
    type_: int
    """rcl_interfaces ParameterType constant."""
    default: Any
    """ROS default value (lists for tuples); None = declared by type only (optional)."""
    description: str
    """The field's one-line documentation."""
    read_only: bool
    """True when the value is fixed at start-up."""


def parameter_specs() -> list[ParamSpec]:
    """Return every parameter ssp_node declares, in declaration order."""
    specs = []
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        docs = field_docs(cls)
        for f in fields(cls):
            if section == "stream" and f.name in FORCED_STREAM_OPTIONS:
                continue
            default = f.default
            ros_default = (list(default) if isinstance(default, tuple) and default
                           else None if default in (None, ()) else default)
            specs.append(ParamSpec(
                name=f"{section}.{f.name}" if section else f.name, section=section,
                field=f.name, type_=_ros_type(hints[f.name], cls, f.name),
                default=ros_default, description=docs.get(f.name, f.name),
                read_only=section == "" and f.name not in DYNAMIC_NODE_FIELDS))
    return specs


def _ros_type(hint: Any, cls: type, name: str) -> int:
    """Return the ParameterType of a field annotation (Optional[X] is declared as X)."""
    if get_origin(hint) in (Union, UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    scalar = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    if hint in scalar:
        return scalar[hint]
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        arrays = {bool: ParameterType.PARAMETER_BOOL_ARRAY,
                  int: ParameterType.PARAMETER_INTEGER_ARRAY,
                  float: ParameterType.PARAMETER_DOUBLE_ARRAY,
                  str: ParameterType.PARAMETER_STRING_ARRAY}
        if item in arrays:
            return arrays[item]
    raise TypeError(f"{cls.__name__}.{name}: annotation {hint!r} has no ROS parameter type")


def build_configs(values: dict[str, Any]) -> tuple[NodeConfig, StreamConfig, RegistrationConfig]:
    """Return the three typed configs from parameter values keyed by ROS name.

    Missing names and None (an optional parameter without a value) take the field default.
    Raise ``ValueError`` naming the parameter section when a config rejects a value.
    """
    kwargs: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for spec in parameter_specs():
        value = plain_value(values.get(spec.name))
        if value is not None:
            kwargs[spec.section][spec.field] = tuple(value) if isinstance(value, list) else value
    kwargs["stream"].update(FORCED_STREAM_OPTIONS)
    configs = []
    for section, cls in SECTIONS.items():
        try:
            configs.append(cls(**kwargs[section]))
        except (TypeError, ValueError) as err:
            prefix = f"{section}.* parameters" if section else "node parameters"
            raise ValueError(f"invalid {prefix}: {err}") from None
    return tuple(configs)


def plain_value(value: Any) -> Any:
    """Return parameter arrays (lists, tuples, array.array from the service) as lists."""
    return list(value) if isinstance(value, (list, tuple, array.array)) else value


def parameter_table_markdown() -> str:
    """Return the Markdown table of all parameters that docs/NODE.md embeds."""
    rows = ["| parameter | type | default | read-only | description |",
            "|---|---|---|---|---|"]
    for s in parameter_specs():
        default = "(unset)" if s.default is None else json.dumps(s.default)
        description = s.description.replace("|", "\\|")
        rows.append(f"| `{s.name}` | {Parameter.Type(s.type_).name.lower()} | `{default}` | "
                    f"{'yes' if s.read_only else 'no'} | {description} |")
    return "\n".join(rows)
