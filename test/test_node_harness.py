"""Shared pieces of the in-process ssp_node tests: a tiny artifact, a probe node, frames.

Every test gets its own rclpy Context, a real ``SegmentationNode`` (its own worker threads do
the inference) and a probe node with real publishers, subscribers and service clients; one
executor spins both in a deadline loop. The model is a randomly initialised lite network at a
64x96 input: the tests check plumbing, not accuracy.
"""

import os

import numpy as np
import pytest
from rcl_interfaces.msg import Log
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile
from sensor_msgs.msg import Image

from ssp_perception.artifact import save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_perception.ros import conversions
from ssp_perception.ros.node import SegmentationNode
from ssp_perception.synthetic import synthetic_frames
from ssp_perception.testing import spin_until
from std_msgs.msg import Header
import torch

SIZE = (96, 128)            # frames: ORB finds ~100 inliers at this size with the params below
NET = (64, 96)              # network input of the tiny model
TIMEOUT = 30.0              # deadline of every wait; loops return as soon as they are satisfied
# ORB on 96x128 frames needs a lower FAST threshold than the 640-px default; the period keeps
# the tests short; the long input timeout keeps "no input" warnings out of tests that pause
# (the test of that warning sets its own).
FAST = {"registration.orb_fast_threshold": 5, "registration.min_inliers": 8,
        "diagnostics_period_s": 0.25, "input_timeout_s": 600.0}


def _save_tiny(path, nan=False):
    torch.manual_seed(0)
    model = create_model(preset("lite", input_size=NET))
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    save_artifact(path, model, UAVID, provenance={"recipe": "test: random init"})
    return path


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """Return the path of a randomly initialised lite artifact (64x96 network input)."""
    return _save_tiny(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def nan_artifact(tmp_path_factory):
    """Return the path of a lite artifact whose weights are all NaN."""
    return _save_tiny(tmp_path_factory.mktemp("model") / "nan.safetensors", nan=True)


# A DDS domain of this test process alone: other processes on the machine (other test runs,
# a running demo) publish on the same relative names ("image") in the default domain 0.
DOMAIN_ID = 1 + os.getpid() % 100


@pytest.fixture
def ros_context():
    """Yield a fresh, initialised rclpy Context in this process's domain; shut it down after."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def frames(n, size=SIZE, seed=0):
    """Return ``n`` RGB frames of a textured scene seen by a smoothly moving camera."""
    return [f for f, _ in synthetic_frames(size, n, seed=seed)]


def image_msg(rgb, stamp, frame_id="cam", encoding="rgb8"):
    """Return ``rgb`` as a sensor_msgs/Image stamped ``stamp`` seconds."""
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
    if encoding == "bgr8":
        msg = conversions.array_to_msg(np.ascontiguousarray(rgb[:, :, ::-1]), "rgb8", header)
        msg.encoding = "bgr8"
        return msg
    return conversions.array_to_msg(rgb, encoding, header)


class NodeHarness:
    """One SegmentationNode plus a probe node, spun together by one executor.

    Use it as a context manager (``with NodeHarness(ctx, artifact) as h:``): leaving the block,
    by an assertion too, destroys both nodes and the executor.
    """

    def __init__(self, context, artifact, name="ssp_node", node_class=SegmentationNode, **params):
        overrides = [Parameter(k, value=v) for k, v in {**FAST, **params}.items()]
        overrides.append(Parameter("model_path", value=str(artifact)))
        self.context = context
        self.node = node_class(name, context=context, parameter_overrides=overrides)
        self.probe = rclpy.create_node("probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.logs = self.subscribe(Log, "/rosout", QoSProfile(depth=200))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Destroy both nodes and the executor."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()

    def spin_until(self, predicate, timeout=TIMEOUT):
        """Spin until ``predicate()`` holds or ``timeout`` passes; return its last value."""
        return spin_until(self.executor, predicate, timeout, period=0.02)

    def spin_for(self, seconds):
        """Spin for ``seconds`` (to let something that should not happen have its chance)."""
        self.spin_until(lambda: False, timeout=seconds)

    def subscribe(self, msg_type, topic, qos=None):
        """Return a list that collects every message the probe receives on ``topic``."""
        received = []
        self.probe.create_subscription(msg_type, topic, received.append, qos or QoSProfile(
            depth=50))
        return received

    def publisher(self, topic, msg_type=Image, qos=qos_profile_sensor_data):
        """Return a probe publisher on ``topic`` once the node's subscription has matched it."""
        pub = self.probe.create_publisher(msg_type, topic, qos)
        assert self.spin_until(lambda: pub.get_subscription_count() > 0), f"{topic}: no match"
        resolved = pub.topic_name
        sub = next((w.subscription for w in self.node.workers.values()
                    if w.subscription.topic_name == resolved), None)
        if sub is not None:
            assert self.spin_until(lambda: sub.get_publisher_count() > 0)
        return pub

    def wait_outputs_matched(self, topics):
        """Wait until each node publisher on ``topics`` sees a probe subscription."""
        for topic in topics:
            pubs = [p for p in self.node.publishers if p.topic_name == topic]
            assert pubs, f"the node has no publisher on {topic}"
            assert self.spin_until(lambda: pubs[0].get_subscription_count() > 0), topic

    def send(self, pub, msg, received, count):
        """Publish ``msg`` and spin until ``received`` holds ``count`` messages."""
        pub.publish(msg)
        return self.spin_until(lambda: len(received) >= count)

    def call(self, srv_type, name, request):
        """Call service ``name`` and return its response."""
        client = self.probe.create_client(srv_type, name)
        assert self.spin_until(client.service_is_ready), f"service {name} not available"
        future = client.call_async(request)
        assert self.spin_until(future.done), f"service {name} did not answer"
        return future.result()

    def warnings(self, text):
        """Return the node's /rosout warnings that contain ``text``."""
        return [m.msg for m in self.logs
                if m.name == self.node.get_name() and m.level == Log.WARN and text in m.msg]

    def stream_diagnostic(self, diagnostics, stream_id, predicate=lambda values: True):
        """Spin until a /diagnostics status of ``stream_id`` satisfies ``predicate``."""
        def find():
            for array in reversed(diagnostics):
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if status.hardware_id == stream_id and predicate(values):
                        return status, values
            return None
        assert self.spin_until(lambda: find() is not None), f"no diagnostics for {stream_id}"
        return find()
