"""Drive one ssp_node over real topics: publish the bag's frames, record every output.

The node runs as its own process by default (:class:`NodeProcess`, as on a drone); with
``in_process`` it runs in this process's rclpy context (faster to start; tests use it).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from diagnostic_msgs.msg import DiagnosticArray
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from ssp_msgs.msg import ClassInfo, SegmentationStatus

from .bag import BagRecorder, ensure_type, Frame
from .config import ReplayError, WriteError
from .process import NodeProcess
from .report import encode_labels, FrameRecord, StatusSample
from ..conversions import (CLASS_INFO_TYPE, DIAGNOSTICS_TYPE, IMAGE_TYPE, mono8_array,
                           ros_type_name, stamp_ns, status_fields, STATUS_TYPE)
from ..node import SegmentationNode, StartupError

# Infrastructure topics every node has; they say nothing about the segmentation.
SKIP_TOPICS = ("/rosout", "/parameter_events")
# After the node's workers go idle, late outputs still in transit arrive within this time.
DRAIN_GRACE_S = 0.5
# A node in its own process is done when its outputs have been quiet this long.
PROCESS_QUIET_S = 2.0
# A node in its own process has this long to load its model and advertise its outputs.
NODE_START_TIMEOUT_S = 300.0
# Its publishers are created together, just before class_info: once class_info is advertised,
# labels and status follow within this time or never (parameters that moved or removed them).
OUTPUTS_AFTER_CLASS_INFO_S = 5.0
# Output types the replay records from a node in its own process (found through the graph).
OUTPUT_TYPES = {IMAGE_TYPE: Image, STATUS_TYPE: SegmentationStatus,
                CLASS_INFO_TYPE: ClassInfo, DIAGNOSTICS_TYPE: DiagnosticArray}


def _reset_names(typestore: Any) -> dict[int, str]:
    # The RESET_* constants of SegmentationStatus.msg, e.g. 4 -> "time_gap".
    ensure_type(typestore, STATUS_TYPE)
    consts = typestore.types[STATUS_TYPE].__dict__
    return {int(v): k[len("RESET_"):].lower() for k, v in consts.items()
            if k.startswith("RESET_") and isinstance(v, int)}


class NodeRun:
    """One node instance in its own namespace, fed and observed over real topics."""

    def __init__(self, context: Any, namespace: str, parameters: dict[str, Any],
                 recorder: BagRecorder, realtime: bool, first_log_ns: int,
                 in_process: bool = False, params_dir: Any = None,
                 domain_id: int | None = None) -> None:
        self.recorder = recorder
        self.records: dict[int, FrameRecord] = {}
        self.class_info: Any = None
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self.lock = self._cond   # guards the records (their outputs arrive in another thread)
        self._log_of_stamp: dict[int, int] = {}
        # Outputs not tied to a frame (class_info, diagnostics) take the latest frame's time.
        self._last_log_ns = first_log_ns
        self._reset_names = _reset_names(recorder.typestore)
        self._last_output = time.monotonic()
        # The replay's publisher decides the input QoS: no switch of the node's subscription
        # while frames flow (lockstep would wait a frame timeout for a frame lost then).
        parameters = {"input_reliability": "best_effort" if realtime else "reliable",
                      **parameters}
        self.node: Any = None
        self.process: NodeProcess | None = None
        if in_process:
            try:
                self.node = SegmentationNode(
                    context=context, namespace=namespace,
                    parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
            except StartupError as err:
                raise ReplayError(f"ssp_node cannot start: {err}") from err
        else:
            self.process = NodeProcess(namespace, parameters, domain_id, params_dir)
        self.io: Any = None
        try:
            self._connect(context, namespace, realtime)
        except BaseException:
            self._destroy_nodes()  # stops the node's workers (or process); the caller sees why
            raise

    def _outputs(self, namespace: str) -> list[tuple[str, type, Any]]:
        """Return (topic, message class, offered QoS) of every output of the node."""
        if self.node is not None:
            return [(p.topic_name, p.msg_type, p.qos_profile) for p in self.node.publishers]
        self._wait_advertised(namespace)
        time.sleep(0.5)   # the rest of its publishers are created with these; let them show
        outputs = []
        for topic, ros_type in self.io.get_publisher_names_and_types_by_node(
                "ssp_node", namespace):
            if ros_type[0] in OUTPUT_TYPES:
                offers = [i.qos_profile for i in self.io.get_publishers_info_by_topic(topic)
                          if i.node_name == "ssp_node" and i.node_namespace == namespace]
                qos = offers[0] if offers else QoSProfile(depth=1)
                outputs.append((topic, OUTPUT_TYPES[ros_type[0]], qos))
        return outputs

    def _wait_advertised(self, namespace: str) -> None:
        """Wait until the graph lists the node's labels, status and class_info (or fail).

        Model loading comes first (NODE_START_TIMEOUT_S); once class_info shows, the others
        must follow within OUTPUTS_AFTER_CLASS_INFO_S.
        """
        class_info = f"{namespace}/class_info"
        wanted = {f"{namespace}/labels", f"{namespace}/status", class_info}
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        within = f"within {NODE_START_TIMEOUT_S:.0f} s"
        found: set[str] = set()
        while not wanted <= found:
            self.process.check_alive()
            if time.monotonic() > deadline:
                raise ReplayError(f"ssp_node did not advertise {sorted(wanted - found)} {within} "
                                  f"(it advertises {sorted(found) or 'nothing'})")
            time.sleep(0.1)
            found = ({topic for topic, _ in self.io.get_publisher_names_and_types_by_node(
                "ssp_node", namespace)} if self._node_known(namespace) else set())
            if class_info in found and not within.endswith("class_info"):
                deadline = time.monotonic() + OUTPUTS_AFTER_CLASS_INFO_S
                within = f"within {OUTPUTS_AFTER_CLASS_INFO_S:.0f} s of its class_info"

    def _node_known(self, namespace: str) -> bool:
        return ("ssp_node", namespace) in self.io.get_node_names_and_namespaces()

    def _connect(self, context: Any, namespace: str, realtime: bool) -> None:
        self._node_name = f"{namespace}/ssp_node"
        self.io = rclpy.create_node("ssp_replay", namespace=namespace, context=context,
                                    start_parameter_services=False, enable_rosout=False)
        outputs = self._outputs(namespace)
        if not any(topic.endswith("/labels") for topic, _, _ in outputs):
            raise ReplayError("ssp_node publishes no labels topic (publish_labels is false); "
                              "the replay needs it")
        if realtime:  # what a camera driver offers: the newest frames, no retransmission
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        else:  # lockstep waits for every frame, so nothing may be lost on the way
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.io.create_publisher(Image, "image", qos)
        self.subs = [self._subscribe(*output) for output in outputs
                     if output[0] not in SKIP_TOPICS]
        # Topics that answer every frame with its header stamp (labels, color, ..., status).
        # A frame is complete when all of them came: the bag then holds every output even
        # though topics arrive in no fixed order.
        self.frame_topics = {topic for topic, msg_type, _ in outputs
                             if topic.startswith(f"{namespace}/")
                             and ros_type_name(msg_type) in (IMAGE_TYPE, STATUS_TYPE)}
        self._missing: dict[int, set[str]] = {}
        self.executor = SingleThreadedExecutor(context=context)
        if self.node is not None:
            self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _subscribe(self, topic: str, msg_type: type, offered: Any) -> Any:
        ros_type = ros_type_name(msg_type)
        self.recorder.add(topic, ros_type, offered)
        # Match the offer (latched class_info needs transient-local) and keep every message.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(50, offered.depth),
                         reliability=offered.reliability, durability=offered.durability)
        return self.io.create_subscription(
            msg_type, topic, lambda cdr: self._on_output(topic, ros_type, cdr), qos,
            raw=True)

    def wait_for_connections(self, timeout_s: float = 20.0) -> None:
        """Block until the node hears our images and we hear all its topics."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None:
                self.process.check_alive()
            if (self.pub.get_subscription_count() > 0
                    and all(s.get_publisher_count() > 0 for s in self.subs)):
                return
            time.sleep(0.02)
        missing = [s.topic_name for s in self.subs if s.get_publisher_count() == 0]
        raise ReplayError(f"the node did not connect within {timeout_s:.0f} s "
                          f"(image subscribers: {self.pub.get_subscription_count()}, "
                          f"unmatched outputs: {missing})")

    def _on_output(self, topic: str, ros_type: str, cdr: bytes) -> None:
        # Runs in the executor thread: an exception here would only kill the executor, so it
        # is handed to the main thread, which raises it from wait().
        try:
            self._record_output(topic, ros_type, cdr)
        except BaseException as err:
            with self._cond:
                self.error = self.error or err
                self._cond.notify_all()

    def _record_output(self, topic: str, ros_type: str, cdr: bytes) -> None:
        now = time.monotonic()
        self._last_output = now
        msg = self.recorder.deserialize(cdr, ros_type)
        if ros_type == DIAGNOSTICS_TYPE and not any(
                st.name.startswith(self._node_name) for st in msg.status):
            return  # another node's diagnostics: the bag holds this node's topics only
        rejected = ros_type == DIAGNOSTICS_TYPE and topic.endswith("/rejected")
        stamp = stamp_ns(msg.header) if hasattr(msg, "header") else None
        with self._cond:
            log_ns = self._log_of_stamp.get(stamp, self._last_log_ns)
        self.recorder.write(topic, log_ns, cdr)
        with self._cond:
            record = self.records.get(stamp) if stamp is not None else None
            if record is not None:
                self._missing[stamp].discard(topic)
            if ros_type == CLASS_INFO_TYPE:
                self.class_info = msg
            elif record is not None and rejected and msg.status:
                values = {kv.key: kv.value for kv in msg.status[0].values}
                record.rejected = values.get("reason", "rejected")
                record.rejected_detail = msg.status[0].message
            elif record is not None and ros_type == STATUS_TYPE:
                record.status = StatusSample(**status_fields(msg, self._reset_names))
            elif record is not None and topic.endswith("/labels") and record.labels_png is None:
                record.labels_png = encode_labels(mono8_array(msg))
                record.received_s = now
            self._cond.notify_all()

    def publish(self, frame: Frame) -> FrameRecord:
        """Publish one frame (also copied into the output bag) and start waiting for it."""
        record = FrameRecord(frame.stamp_ns)
        with self._cond:
            self.records[frame.stamp_ns] = record
            self._missing[frame.stamp_ns] = set(self.frame_topics)
            self._log_of_stamp[frame.stamp_ns] = frame.log_ns
            self._last_log_ns = frame.log_ns
        record.sent_s = time.monotonic()
        self.pub.publish(frame.cdr)
        return record

    def complete(self, record: FrameRecord) -> bool:
        """Return True when every per-frame topic answered ``record`` or the node rejected it.

        Call under the lock.
        """
        return bool(record.rejected) or not self._missing[record.stamp_ns]

    def wait(self, record: FrameRecord, timeout_s: float) -> bool:
        """Wait until every per-frame topic answered ``record``; return False on timeout."""
        with self._cond:
            done = self._cond.wait_for(
                lambda: self.error is not None or self.complete(record), timeout_s)
            self.raise_error()
            return done

    def raise_error(self) -> None:
        """Raise the first error of an output callback, if there was one."""
        if isinstance(self.error, WriteError):
            raise self.error   # the output bag cannot be written: says so itself
        if self.error is not None:
            raise ReplayError(f"recording the node's outputs failed: {self.error!r}") \
                from self.error

    def wait_class_info(self, timeout_s: float = 10.0) -> Any:
        """Return the node's latched ClassInfo."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.class_info is not None, timeout_s):
                raise ReplayError("the node published no class_info within "
                                  f"{timeout_s:.0f} s; cannot name its classes")
            return self.class_info

    def drain(self, records: Sequence[FrameRecord], timeout_s: float) -> None:
        """Wait until every record is complete, or the node is idle and its last outputs came.

        In realtime mode some frames are dropped by the node and never complete; its workers
        going idle (nothing pending, nothing in progress) for DRAIN_GRACE_S says it is done.
        """
        deadline = time.monotonic() + timeout_s
        idle_since = None
        while time.monotonic() < deadline:
            with self._cond:
                self.raise_error()
                if all(self.complete(r) for r in records):
                    return
                self._cond.wait(0.05)
            if self.node is None:   # its own process: done when its outputs went quiet
                self.process.check_alive()
                if time.monotonic() - self._last_output > PROCESS_QUIET_S:
                    return
            elif all(w.idle() for w in self.node.workers.values()):
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > DRAIN_GRACE_S:
                    return
            else:
                idle_since = None

    def close(self) -> None:
        """Stop the executor thread and destroy both nodes (or stop the node's process)."""
        self.executor.shutdown()
        self._thread.join(timeout=10.0)
        self._destroy_nodes()

    def _destroy_nodes(self) -> None:
        if self.io is not None:
            self.io.destroy_node()
        if self.node is not None:
            self.node.destroy_node()
        if self.process is not None:
            self.process.stop()
