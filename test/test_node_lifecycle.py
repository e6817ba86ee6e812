"""ssp_node --managed in its own process, driven through its lifecycle services.

The node runs as a subprocess (``python -m ssp_perception.ros.node --managed``) on a private
DDS domain; the test's own rclpy node calls ``<node>/change_state`` and ``<node>/get_state``
(lifecycle_msgs), publishes frames, and reads ``status`` and ``/diagnostics``. Frames are
processed only while active; deactivate -> activate resumes with a reset; a bad model path
fails configure with its reason; memory (RSS) after each transition is read from /proc and
printed (docs/NODE.md quotes it); shutdown from each primary state exits with code 0.
"""

import os
from pathlib import Path
import random
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from ssp_msgs.msg import ClassInfo, SegmentationStatus

from ssp_perception.ros.managed import rss_mb
from ssp_perception.testing import spin_until
import test_node_harness as th
from test_node_harness import frames, image_msg

tiny_artifact = th.tiny_artifact

NS = "/lc"
NODE = f"{NS}/ssp_node"
TIMEOUT = 120.0     # model loading in a fresh process on a loaded 2-core machine
ANSWER_S = 5.0      # a lost service answer (see ManagedProcess.call) is asked for again after this
TARGETS = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_CLEANUP:
           "unconfigured", Transition.TRANSITION_ACTIVATE: "active",
           Transition.TRANSITION_DEACTIVATE: "inactive"}
SHUTDOWNS = {Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, Transition.TRANSITION_INACTIVE_SHUTDOWN,
             Transition.TRANSITION_ACTIVE_SHUTDOWN}
TRANSITIONAL = {"configuring", "cleaningup", "activating", "deactivating", "shuttingdown",
                "errorprocessing"}
# Small, fast test parameters: registration that works on 96x128 frames, quick diagnostics.
PARAMS = ["-p", "registration.orb_fast_threshold:=5", "-p", "registration.min_inliers:=8",
          "-p", "diagnostics_period_s:=0.25", "-p", "input_timeout_s:=600.0",
          "-p", "num_threads:=1"]


class ManagedProcess:
    """One ``ssp_node --managed`` process and a probe node that drives and watches it."""

    def __init__(self, model_path):
        self.domain = random.randint(150, 230)
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain), PYTHONUNBUFFERED="1",
                   ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)   # small frames: defaults suffice
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lc_node_{os.getpid()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ssp_perception.ros.node", "--managed", "--ros-args",
             "-r", f"__ns:={NS}", "-p", f"model_path:={model_path}", *PARAMS],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain)
        self.probe = rclpy.create_node("lifecycle_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.probe)
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.statuses, self.labels, self.diagnostics, self.info = [], [], [], []
        self.probe.create_subscription(SegmentationStatus, f"{NS}/status",
                                       self.statuses.append, reliable)
        self.probe.create_subscription(Image, f"{NS}/labels", self.labels.append, reliable)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics",
                                       self.diagnostics.append, reliable)
        self.probe.create_subscription(
            ClassInfo, f"{NS}/class_info", self.info.append,
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        # Reliable, as a camera driver is: auto QoS then subscribes reliable, nothing is lost.
        self.camera = self.probe.create_publisher(Image, f"{NS}/image", QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self._change = self.probe.create_client(ChangeState, f"{NODE}/change_state")
        self._get = self.probe.create_client(GetState, f"{NODE}/get_state")
        self._frames = frames(40)
        self._stamp = 0.0

    def close(self):
        """Stop the process if it still runs; destroy the probe."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self._log.close()
        self.executor.shutdown()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)

    def output(self):
        """Return the node process's log so far."""
        return self.log_path.read_text()

    def spin_until(self, predicate, timeout=TIMEOUT):
        """Spin until ``predicate()`` holds, the node process exits or ``timeout`` passes."""
        return spin_until(self.executor, predicate, timeout, self.proc)

    def send(self, client, request):
        """Send ``request`` once the service is there; return the answer's future."""
        assert self.spin_until(client.service_is_ready), self.output()
        return client.call_async(request)

    def call(self, client, request):
        """Call a query service (get_state, set_parameters) and return its response.

        Fast DDS drops an answer when the server has not yet discovered the client's reply
        reader: the node logs "failed to send response (timeout)" and the client waits forever
        (seen once in CI on a loaded machine). Discovery is not symmetric, and
        ``service_is_ready`` only says that the client has found the server, so nothing the
        client can see tells it when an answer would arrive. A query changes nothing, so it is
        asked again every ``ANSWER_S`` until one answer comes back.
        """
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            future = self.send(client, request)
            if self.spin_until(future.done, timeout=ANSWER_S):
                return future.result()
            client.remove_pending_request(future)
        pytest.fail(f"no answer from {client.srv_name}\n{self.output()}")

    def state(self):
        """Return the node's lifecycle state label (get_state)."""
        return self.call(self._get, GetState.Request()).current_state.label

    def transition(self, transition_id):
        """Request a transition through change_state; return whether it succeeded.

        A transition is not asked twice (the second would be refused); when its answer is lost
        (see ``call``), get_state tells the outcome: the target state, or a shutdown's exit.
        """
        future = self.send(self._change, ChangeState.Request(
            transition=Transition(id=transition_id)))
        if self.spin_until(future.done, timeout=ANSWER_S):
            return future.result().success
        return self._outcome_without_answer(transition_id, future)

    def _outcome_without_answer(self, transition_id, future):
        """Return a transition's outcome when its answer may be lost (see ``call``)."""
        if transition_id in SHUTDOWNS:   # the process exits once finalized
            if self.spin_until(future.done):
                return future.result().success
            return self.wait_exit() == 0
        deadline = time.monotonic() + TIMEOUT
        state = self.state()
        while state in TRANSITIONAL and not future.done() and time.monotonic() < deadline:
            state = self.state()
        return future.result().success if future.done() else state == TARGETS[transition_id]

    def refused(self, transition_id):
        """Request a transition that is not valid now; return True if the node refused it.

        Kilted answers success=false; Jazzy's rclpy raises in the service instead, so the node
        logs the refusal and the request gets no answer. Either way the node lives on.
        """
        future = self.send(self._change, ChangeState.Request(
            transition=Transition(id=transition_id)))
        assert self.spin_until(lambda: future.done() or "refused a lifecycle transition"
                               in self.output()), self.output()
        return not future.done() or not future.result().success

    def set_parameter(self, name, value):
        """Set a string parameter of the node; return the SetParametersResult."""
        client = self.probe.create_client(SetParameters, f"{NODE}/set_parameters")
        param = ParameterMsg(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))
        return self.call(client, SetParameters.Request(parameters=[param])).results[0]

    def send_frames(self, n):
        """Publish ``n`` frames 0.1 s apart (stamps), spinning between them."""
        for _ in range(n):
            self._stamp += 0.1
            self.camera.publish(image_msg(self._frames[int(self._stamp * 10) % 40],
                                          self._stamp))
            self.spin_until(lambda: False, timeout=0.1)

    def model_diagnostic(self, predicate=lambda values: True):
        """Spin until a /diagnostics model status satisfies ``predicate``; return it."""
        def find():
            for array in reversed(self.diagnostics):
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if status.name.endswith(": model") and predicate(values):
                        return status, values
            return None
        assert self.spin_until(lambda: find() is not None), self.output()
        return find()

    def wait_exit(self, timeout=60.0):
        """Return the process's exit code once it exits by itself."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ssp_node did not exit after shutdown\n{self.output()}")


@pytest.fixture
def managed(tiny_artifact):
    """Yield a ManagedProcess running the tiny test model; stop it afterwards."""
    process = ManagedProcess(tiny_artifact)
    try:
        yield process
    finally:
        process.close()


def test_lifecycle_processes_frames_only_while_active_and_resets_on_activate(managed):
    m = managed
    assert m.state() == "unconfigured"
    _, values = m.model_diagnostic(lambda v: v.get("lifecycle_state") == "unconfigured")
    rss = {"unconfigured": rss_mb(m.proc.pid)}

    assert m.transition(Transition.TRANSITION_CONFIGURE), m.output()
    assert m.state() == "inactive"
    rss["inactive (model loaded)"] = rss_mb(m.proc.pid)
    m.send_frames(5)                          # inactive: not subscribed, nothing processed
    assert not m.statuses and not m.labels and not m.info
    _, values = m.model_diagnostic(lambda v: v.get("lifecycle_state") == "inactive")
    assert values["model_id"].startswith("tiny.safetensors@")

    assert m.transition(Transition.TRANSITION_ACTIVATE), m.output()
    assert m.state() == "active"
    assert m.spin_until(lambda: m.info), "class_info is published on activate"
    assert m.spin_until(lambda: m.camera.get_subscription_count() > 0)
    while len(m.statuses) < 6 and m.proc.poll() is None:
        m.send_frames(2)
    assert all(s.lifecycle_state == "active" for s in m.statuses)
    first = m.statuses[0]
    assert first.reset_reason == SegmentationStatus.RESET_FIRST_FRAME
    assert any(s.temporal_state_used for s in m.statuses[1:]), "SSP propagated while active"
    assert m.labels, "labels are published while active"
    rss["active"] = rss_mb(m.proc.pid)
    # Set while active, a parameter that needs a reload is refused with what to do.
    result = m.set_parameter("model_path", "/elsewhere.safetensors")
    assert not result.successful and "deactivate first" in result.reason, result.reason

    assert m.transition(Transition.TRANSITION_DEACTIVATE), m.output()
    assert m.state() == "inactive"
    m.spin_until(lambda: False, timeout=0.5)  # statuses of frames in flight arrive
    seen = len(m.statuses)
    m.send_frames(5)                          # inactive again: nothing processed
    assert len(m.statuses) == seen, "no status while inactive"
    rss["inactive (deactivated)"] = rss_mb(m.proc.pid)
    processed = m.statuses[-1].frames_processed

    assert m.transition(Transition.TRANSITION_ACTIVATE), m.output()
    assert m.spin_until(lambda: m.camera.get_subscription_count() > 0)
    while len(m.statuses) < seen + 3 and m.proc.poll() is None:
        m.send_frames(2)
    resumed = m.statuses[seen]
    assert resumed.reset_reason == SegmentationStatus.RESET_MANUAL
    assert resumed.reset_detail.startswith("node activated"), resumed.reset_detail
    assert not resumed.temporal_state_used and resumed.frames_since_reset == 0
    assert resumed.frames_processed == processed + 1, "counters survive deactivate"
    _, values = m.model_diagnostic(lambda v: v.get("activations") == "2")
    assert values["lifecycle_state"] == "active"

    assert m.transition(Transition.TRANSITION_DEACTIVATE)
    assert m.transition(Transition.TRANSITION_CLEANUP), m.output()
    assert m.state() == "unconfigured"
    rss["unconfigured (cleaned up)"] = rss_mb(m.proc.pid)
    _, values = m.model_diagnostic(lambda v: v.get("lifecycle_state") == "unconfigured"
                                   and "model_id" not in v)
    print("RSS MiB of the managed node:", {k: round(v) for k, v in rss.items()})

    # Configured again after cleanup, then shut down while active: a clean exit.
    assert m.transition(Transition.TRANSITION_CONFIGURE), m.output()
    assert m.transition(Transition.TRANSITION_ACTIVATE), m.output()
    assert m.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN), m.output()
    assert m.wait_exit() == 0, m.output()
    assert "finalized from active" in m.output() and "Traceback" not in m.output()


def test_bad_model_path_fails_configure_and_leaves_the_node_unconfigured(managed, tmp_path,
                                                                         tiny_artifact):
    m = managed
    assert m.call(m._get, GetState.Request()).current_state.id == State.PRIMARY_STATE_UNCONFIGURED
    missing = tmp_path / "missing.safetensors"
    assert m.set_parameter("model_path", str(missing)).successful   # allowed: unconfigured
    assert not m.transition(Transition.TRANSITION_CONFIGURE)
    assert m.state() == "unconfigured"
    status, _ = m.model_diagnostic(lambda v: "configure failed" in v["last_transition_error"])
    assert status.level == status.ERROR
    assert f"model artifact not found: {missing}" in status.message
    assert m.spin_until(lambda: "configure failed: model artifact not found" in m.output())
    assert m.refused(Transition.TRANSITION_ACTIVATE), "no activate from unconfigured"
    # Fixed, it configures; then shut down while inactive: a clean exit.
    assert m.set_parameter("model_path", str(tiny_artifact)).successful
    assert m.transition(Transition.TRANSITION_CONFIGURE), m.output()
    status, _ = m.model_diagnostic(lambda v: v.get("lifecycle_state") == "inactive")
    assert status.level == status.OK
    assert not {kv.key: kv.value for kv in status.values}["last_transition_error"]
    assert m.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN), m.output()
    assert m.wait_exit() == 0, m.output()
    assert "finalized from inactive" in m.output() and "Traceback" not in m.output()


def test_shutdown_while_unconfigured_exits_cleanly(managed):
    m = managed
    assert m.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert m.wait_exit() == 0, m.output()
    assert "finalized from unconfigured" in m.output()
