"""ssp_node: segment camera streams with SSP and publish labels, visualisations and health.

A thin ROS 2 layer over the core (``stream.Segmenter`` / ``stream.Stream``): it declares the
parameters from the typed configs, converts messages (``ros_conv``), hands frames to the core
and publishes the results. ``docs/NODE.md`` lists topics, services, parameters and QoS.

Threading (why parameter and service callbacks never wait behind inference):

* The executor thread runs only short callbacks. An image callback stores the message in its
  stream's one-slot mailbox, replacing (and counting as dropped) a frame the worker had not
  taken yet: the latest-frame policy, so no queue grows and latency stays bounded under
  overload. Service, parameter and timer callbacks touch flags and counters only.
* One worker thread per stream decodes, runs ``Stream.process`` and publishes. Streams share
  the ``Segmenter`` (one copy of the weights, a lock around each network call) and keep their
  own temporal state; decoding, registration and publishing of different streams overlap.

Decisions:

* Non-finite model output (NaN/inf, e.g. corrupted weights or fp16 overflow) is never
  published: the stream's state is reset (it may hold the poison) and the frame is counted as
  rejected, with a throttled warning and a diagnostic. An image-only result of the same
  network would be just as suspect, and a missing frame is something consumers already handle.
* Streams are keyed by their resolved input topic (``SegmentationStatus.stream_id``). Outputs of
  a stream live in the namespace of its input topic as written: ``image`` -> ``labels``,
  ``cam0/image`` -> ``cam0/labels``, ``/uav/left/image_raw`` -> ``/uav/left/labels``. Two
  inputs in one namespace would collide, so the node refuses to start and says so.
* Visual outputs (labels, color, overlay, confidence) are built only while someone subscribes;
  status is always published (it is small and is the per-frame heartbeat).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterException)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNodeMixin
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from ssp_msgs.msg import ClassInfo, SegmentationStatus
from ssp_msgs.srv import ResetStreams
from std_msgs.msg import Header
import torch

from . import conversions, ros_cli
from .diagnostics import stream_diagnostic
from .errors import StartupError
from .input_qos import InputSubscription
from .managed import ManagedNodeMixin, spin_until_finalized
from .model_files import check_device, check_registration, resolve_model_path, sha256_prefix
from .params import build_configs, parameter_specs, ParamSpec, plain_value
from .worker import Outputs, StreamWorker
from ..artifact import ArtifactError, ArtifactMeta, read_meta
from ..cli import ArgumentParser, entry, one_line, run_main, UsageError
from ..encodings import palette_lut
from ..stream import Segmenter
from ..synthetic import synthetic_frames

# Period of the check of the inputs' publishers. Matched events come first but often before
# the graph lists the new publisher; a frame every 0.2 s at most goes to a stale policy, and
# the check is one graph query (~50 us) per stream.
QOS_CHECK_PERIOD_S = 0.2
ARTIFACT_EXPECTATION = ("an ssp_perception model artifact: a .safetensors file written by "
                        "ssp_perception.artifact.save_artifact (e.g. by the ssp_training export)")


class SegmentationNode(Node):
    """Segment one or more camera streams with one shared SSP model."""

    lifecycle_state = ""
    """Lifecycle state of a managed node ("active", ...); empty: the plain node has none."""

    def __init__(self, node_name: str = "ssp_node", **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        self.workers: dict[str, StreamWorker] = {}
        self._input_topics: dict[str, tuple[type, str]] = {}   # stream id -> (type, topic)
        try:
            self._start()
        except BaseException:
            try:
                self.destroy_node()   # release what was created; the caller sees the error
            except Exception:  # noqa: B902 - the original error matters, not this one
                pass
            raise

    def _start(self) -> None:
        # The phases, each of which may fail with a StartupError before the next begins. The
        # managed node (ros/managed.py) runs the same phases from its lifecycle transitions.
        self._declare()
        self._configure()
        self._load()
        self._create_outputs()
        self._create_services()
        self._start_inputs()
        self.get_logger().info(f"segmenting {', '.join(self.workers)} with {self._summary()}")

    # -- start-up ---------------------------------------------------------------------------

    def _declare(self) -> None:
        """Phase 1a: declare the parameters (typed from the configs)."""
        self._specs = {s.name: s for s in parameter_specs()}
        self._values = self._declare_parameters()
        # ROS ignores parameters a node does not declare: name the closest one instead.
        given = getattr(self, "_parameter_overrides", {})   # command line and params files
        for line in ros_cli.undeclared_warnings(given, self._specs):
            self.get_logger().warning(line)

    def _configure(self) -> None:
        """Phase 1b: validate the parameter values (configs, model file, device)."""
        try:
            self.config, self._stream_cfg, self._reg_cfg = build_configs(self._values)
        except ValueError as err:
            raise StartupError(str(err)) from None
        self.model_path = resolve_model_path(self.config.model_path)
        check_device(self.config.device)
        if self._reg_cfg.uses_device:
            check_device(self._reg_cfg.device, "registration.device")

    def _load(self) -> None:
        """Phase 2: load the model and warm it up."""
        self.segmenter, self.model_id, self.meta = self._load_model()
        self.palette = palette_lut(self.segmenter.class_set.colors)
        self._warm_up()

    def _summary(self) -> str:
        """Return the loaded model and how it runs, for the log."""
        return (f"{self.model_id} ({self.meta.model.preset}, {self.config.backend}/"
                f"{self.config.device}/{self.config.dtype}, network input "
                f"{self._network_size()})")

    def _create_outputs(self) -> None:
        """Phase 3a: the streams (publishers and workers, no input yet) and class_info."""
        self._create_streams()
        self._class_info_pub = self._create_output_publisher(
            ClassInfo, "class_info", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self._publish_class_info()

    def _create_services(self) -> None:
        """Phase 3b: the reset service, diagnostics and the parameter callbacks."""
        self._reset_srv = self.create_service(ResetStreams, "reset", self._on_reset)
        self._diag_pub = self.create_publisher(
            DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self._diag_timer = self.create_timer(
            self.config.diagnostics_period_s, self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME))
        if callable(getattr(self, "add_post_set_parameters_callback", None)):   # Iron on
            self.add_on_set_parameters_callback(self._validate_parameters)
            self.add_post_set_parameters_callback(self._apply_parameters)
        else:   # Humble has no post-set callbacks: apply a change once it is accepted
            self.add_on_set_parameters_callback(self._validate_and_apply_parameters)

    def _start_inputs(self) -> None:
        """Phase 3c: subscribe to the inputs and start the workers."""
        for stream_id, worker in self.workers.items():
            msg_type, name = self._input_topics[stream_id]
            worker.input = InputSubscription(self, msg_type, name, worker.offer,
                                             self.config.input_reliability,
                                             worker.on_incompatible_qos)
        # Publishers of the inputs: matched / incompatible events react at once when the graph
        # already lists the publisher; this timer catches the rest.
        self._qos_timer = self.create_timer(
            QOS_CHECK_PERIOD_S, self._update_input_qos,
            clock=Clock(clock_type=ClockType.STEADY_TIME))
        for worker in self.workers.values():
            worker.start()
        self._update_input_qos()

    def _stop_inputs(self) -> None:
        """Undo phase 3c: unsubscribe and stop the workers after the frame in progress."""
        timer, self._qos_timer = getattr(self, "_qos_timer", None), None
        if timer is not None:
            self.destroy_timer(timer)
        for worker in self.workers.values():
            if worker.input is not None:
                worker.input.close()
                worker.input = None
            worker.stop()

    def _destroy_outputs(self) -> None:
        """Undo phase 3a: destroy the streams' publishers and workers, and class_info."""
        for worker in self.workers.values():
            for pub in worker.outputs.publishers():
                self.destroy_publisher(pub)
        self.workers.clear()
        self._input_topics.clear()
        pub, self._class_info_pub = getattr(self, "_class_info_pub", None), None
        if pub is not None:
            self.destroy_publisher(pub)

    def _create_output_publisher(self, msg_type: type, topic: str, qos: QoSProfile,
                                 **kwargs: Any) -> Any:
        """Create an output publisher (the managed node makes lifecycle publishers)."""
        return self.create_publisher(msg_type, topic, qos, **kwargs)

    def _declare_parameters(self) -> dict[str, Any]:
        values = {}
        for spec in self._specs.values():
            descriptor = ParameterDescriptor(name=spec.name, type=spec.type_,
                                             description=spec.description,
                                             read_only=self._read_only(spec))
            default = (Parameter.Type(spec.type_) if spec.default is None else spec.default)
            try:
                param = self.declare_parameter(spec.name, default, descriptor)
            except (InvalidParameterTypeException, InvalidParameterValueException,
                    ParameterException) as err:
                kind = Parameter.Type(spec.type_).name.lower()
                hint = " (write doubles with a decimal point)" if "double" in kind else ""
                raise StartupError(f"parameter {spec.name!r} must be of type {kind}{hint}: "
                                   f"{err}") from None
            values[spec.name] = param.value
        return values

    def _read_only(self, spec: ParamSpec) -> bool:
        """Return whether a parameter is fixed once declared (the managed node relaxes this)."""
        return spec.read_only

    def _load_model(self) -> tuple[Segmenter, str, ArtifactMeta]:
        """Phase 2: read the artifact and build the segmenter on the configured device."""
        path, cfg = self.model_path, self.config
        if not path.is_file():
            raise StartupError(f"model artifact not found: {path} (expected "
                               f"{ARTIFACT_EXPECTATION}; set the model_path parameter)")

        def unusable(err: Exception) -> StartupError:
            detail = str(err) if str(err).startswith(str(path)) else f"{path}: {err}"
            return StartupError(f"cannot load model artifact {detail} (expected "
                                f"{ARTIFACT_EXPECTATION})")

        try:
            meta = read_meta(path)
        except (ArtifactError, OSError) as err:
            raise unusable(err) from None
        if cfg.preset and meta.model.preset != cfg.preset:
            raise StartupError(f"model artifact {path} is preset {meta.model.preset!r} but "
                               f"the preset parameter asks for {cfg.preset!r}")
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            segmenter = Segmenter.from_artifact(path, backend=cfg.backend, device=cfg.device,
                                                dtype=cfg.dtype)
        except (ArtifactError, OSError, ValueError, RuntimeError) as err:
            raise unusable(err) from None    # e.g. truncated weights, CUDA absent
        return segmenter, f"{path.name}@{sha256_prefix(path)}", meta

    def _warm_up(self) -> None:
        """End phase 2: run two frames through a throwaway stream before any camera frame.

        The first calls pay lazy initialisation (operator selection, allocator, feature
        detector set-up) several times a normal frame's cost; paid on a camera's first frame,
        that stall is a time_gap reset and a burst of drops.
        """
        size = self._network_size()
        size = size if isinstance(size, tuple) else tuple(self.segmenter.input_size)
        try:
            stream = self.segmenter.new_stream(self._stream_cfg, self._reg_cfg)
        except (OSError, ValueError) as err:  # registration weights missing, empty, pickled
            raise StartupError(str(err)) from None
        try:
            for k, (frame, _) in enumerate(synthetic_frames(size, 2)):
                stream.process(frame, 0.05 * k, "warm-up")
        except (RuntimeError, ValueError, MemoryError, cv2.error) as err:
            # The settings cannot run here (out of memory at this input size, a device that
            # fails): every camera frame would fail the same way.
            raise StartupError(f"the warm-up frames failed with these parameters "
                               f"(network input {size[0]}x{size[1]}): {type(err).__name__}: "
                               f"{one_line(err)}") from None

    def _network_size(self) -> tuple[int, int] | str:
        if self._stream_cfg.resize_mode == "pad":
            return "native, padded to multiples of 32"
        return tuple(self._stream_cfg.input_size or self.segmenter.input_size)

    def _create_streams(self) -> None:
        cfg = self.config
        resolved: dict[str, str] = {}
        for topic in cfg.topics:
            full = self.resolve_topic_name(topic)
            if full in resolved:
                raise StartupError(f"image_topics {resolved[full]!r} and {topic!r} are the same "
                                   f"topic {full!r} in this node's namespace; list it once")
            resolved[full] = topic
        namespaces: dict[str, str] = {}
        for topic in cfg.topics:
            ns = topic.rsplit("/", 1)[0] if "/" in topic else ""
            if ns in namespaces:
                raise StartupError(
                    f"image_topics {namespaces[ns]!r} and {topic!r} would publish to the same "
                    f"outputs ({_join(ns, 'labels')!r}, ...); give each camera its own "
                    f"namespace, e.g. 'cam0/image' and 'cam1/image'")
            namespaces[ns] = topic
        for ns, topic in namespaces.items():
            self._create_stream(topic, ns)

    def _create_stream(self, topic: str, ns: str) -> None:
        cfg = self.config
        compressed = cfg.input_transport == "compressed"
        msg_type, decode = ((CompressedImage, conversions.compressed_to_rgb) if compressed
                            else (Image, conversions.image_to_rgb))
        # Like image_transport: remap the base topic, then add the transport's suffix, so the
        # launch file's "image:=/camera/image_raw" also moves "image/compressed".
        name = f"{self.resolve_topic_name(topic)}/compressed" if compressed else topic
        output_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        overrides = QoSOverridingOptions.with_default_policies()

        def publisher(enabled: bool, msg: type, suffix: str, qos: QoSProfile = output_qos):
            if not enabled:
                return None
            # rclpy applies qos_overrides by mutating the profile it is given: pass a copy.
            return self._create_output_publisher(msg, _join(ns, suffix), copy.copy(qos),
                                                 qos_overriding_options=overrides)

        outputs = Outputs(
            status=publisher(True, SegmentationStatus, "status", QoSProfile(depth=10)),
            labels=publisher(cfg.publish_labels, Image, "labels"),
            color=publisher(cfg.publish_color, Image, "color"),
            overlay=publisher(cfg.publish_overlay, Image, "overlay"),
            confidence=publisher(cfg.publish_confidence, Image, "confidence"),
            rejected=publisher(True, DiagnosticArray, "rejected", QoSProfile(depth=10)))
        stream = self.segmenter.new_stream(self._stream_cfg, self._reg_cfg)
        stream_id = self.resolve_topic_name(name)       # remapped and expanded
        self.workers[stream_id] = StreamWorker(self, stream_id, stream, outputs, decode)
        self._input_topics[stream_id] = (msg_type, name)

    def _update_input_qos(self) -> None:
        """Follow the inputs' publishers (auto reliability); log who publishes with what QoS."""
        for worker in self.workers.values():
            line = worker.input.update()
            if line is not None:
                self.get_logger().info(line)

    def _publish_class_info(self) -> None:
        """Publish (latched) the class metadata; input size 0 x 0 = native size, padded."""
        header = Header(stamp=self.get_clock().now().to_msg())
        size = self._network_size()
        self._class_info_pub.publish(conversions.class_info_msg(
            self.segmenter.class_set, model_id=self.model_id, preset=self.meta.model.preset,
            input_size=size if isinstance(size, tuple) else (0, 0), header=header))

    # -- parameters -------------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: plain_value(p.value) for p in params if p.name in self._specs}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            _, _, reg_cfg = build_configs({**self._values, **changes})
            if reg_cfg != getattr(self, "_reg_cfg", None):   # (unset before configure)
                check_registration(reg_cfg)
        except (ValueError, StartupError) as err:
            names = ", ".join(f"{k}={v!r}" for k, v in changes.items())
            return SetParametersResult(successful=False, reason=f"rejected {names}: {err}")
        return SetParametersResult(successful=True)

    def _validate_and_apply_parameters(self, params: list[Parameter]) -> SetParametersResult:
        result = self._validate_parameters(params)
        if result.successful:
            self._apply_parameters(params)
        return result

    def _apply_parameters(self, params: list[Parameter]) -> None:
        changes = {p.name: plain_value(p.value) for p in params if p.name in self._specs}
        if not changes:
            return
        self._values.update(changes)
        self.config, stream_cfg, reg_cfg = build_configs(self._values)
        if (stream_cfg, reg_cfg) != (self._stream_cfg, self._reg_cfg):
            resized = stream_cfg.input_size != self._stream_cfg.input_size or (
                stream_cfg.resize_mode != self._stream_cfg.resize_mode)
            self._stream_cfg, self._reg_cfg = stream_cfg, reg_cfg
            for worker in self.workers.values():
                worker.request_reconfigure(stream_cfg, reg_cfg)
            if resized:
                self._publish_class_info()
        self.get_logger().info(f"parameters changed: {changes}")

    # -- services ---------------------------------------------------------------------------

    def _on_reset(self, request: ResetStreams.Request,
                  response: ResetStreams.Response) -> ResetStreams.Response:
        if request.stream_id and request.stream_id not in self.workers:
            response.success = False
            response.message = (f"unknown stream {request.stream_id!r}; known streams: "
                                f"{', '.join(self.workers)}")
            return response
        targets = [request.stream_id] if request.stream_id else list(self.workers)
        for stream_id in targets:
            self.workers[stream_id].request_reset("reset service")
        response.success = True
        response.reset_streams = targets
        response.message = f"reset {len(targets)} stream(s); applies from the next frame"
        return response

    # -- diagnostics ------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        statuses = [self._model_diagnostic()]
        now = time.monotonic()
        for worker in self.workers.values():
            statuses.append(self._stream_diagnostic(worker, now))
        stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(conversions.diagnostic_array(statuses, stamp))

    def _model_diagnostic(self) -> Any:
        return conversions.diagnostic_status(f"{self.get_fully_qualified_name()}: model",
                                             self.model_id, "ok", "model loaded",
                                             self._model_values())

    def _model_values(self) -> dict[str, Any]:
        cfg = self.config
        return {"model_path": str(self.model_path), "model_id": self.model_id,
                "preset": self.meta.model.preset, "class_set": self.meta.class_set.name,
                "backend": cfg.backend, "device": cfg.device, "dtype": cfg.dtype,
                "network_input": str(self._network_size()), "streams": len(self.workers)}

    def _stream_diagnostic(self, worker: StreamWorker, now: float) -> Any:
        return stream_diagnostic(f"{self.get_fully_qualified_name()}: {worker.stream_id}",
                                 worker, now, self.config.input_timeout_s,
                                 clock_has_time=self.get_clock().now().nanoseconds != 0)

    # -- shutdown ---------------------------------------------------------------------------

    def destroy_node(self) -> None:
        """Stop the stream workers, then destroy the node."""
        for worker in self.workers.values():
            worker.stop()
        super().destroy_node()


def _join(ns: str, name: str) -> str:
    return f"{ns}/{name}" if ns else name


# ---- Entry point ---------------------------------------------------------------------------


class ManagedSegmentationNode(ManagedNodeMixin, LifecycleNodeMixin, SegmentationNode):
    """ssp_node as a managed (lifecycle) node: the phases of SegmentationNode run on transitions.

    The transitions are in ``ros/managed.py``; this class only puts the parts together.
    """

    def __init__(self, node_name: str = "ssp_node", **node_kwargs: Any) -> None:
        SegmentationNode.__init__(self, node_name, **node_kwargs)   # -> ManagedNodeMixin._start
        LifecycleNodeMixin.__init__(self)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="ssp_node", description="Segment camera streams with SSP (docs/NODE.md). ROS "
        "arguments go after --ros-args (parameters, remappings).")
    parser.add_argument("--managed", action="store_true",
                        help="start as a managed (lifecycle) node in the unconfigured state: "
                             "configure loads the model, activate subscribes (docs/NODE.md)")
    # Not rclpy's remove_ros_args: it parses the ROS arguments (and raises rcl's errors);
    # ros_cli.init reports those in one line.
    return parser.parse_args(ros_cli.user_args(argv))


def main(args: list[str] | None = None) -> int:
    """Run ssp_node until Ctrl-C or SIGTERM; return the exit status (:mod:`ssp_perception.cli`).

    ``--help`` prints the usage and the parameters; a node that cannot start (bad parameters,
    parameter file or model) exits 2 with one line; Ctrl-C 130 and SIGTERM 143 after the
    workers stopped and the context was shut down.
    """
    argv = list(sys.argv if args is None else args)
    if any(a in ("-h", "--help") for a in ros_cli.user_args(argv)):
        print(ros_cli.usage(parameter_specs()))
        return 0
    return run_main(lambda: _run(argv), "ssp_node", usage_errors=(ros_cli.RosArgsError,),
                    interrupted="streams stopped, node shut down")


def _run(argv: list[str]) -> int:
    options = _parse_args(argv)          # a usage error exits with code 2, before ROS starts
    context = rclpy.Context()
    ros_cli.init(argv, context)
    node = None
    try:
        try:
            node = (ManagedSegmentationNode if options.managed else SegmentationNode)(
                context=context)
        except StartupError as err:
            raise UsageError(f"cannot start: {err}") from None
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        if options.managed:
            spin_until_finalized(executor, node)
        else:
            executor.spin()
    except ExternalShutdownException:
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0


if __name__ == "__main__":
    entry("ssp_node", "ssp_perception.ros.node")
