"""Each ssp_msgs interface travels between two real rclpy nodes in one process."""

import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from ssp_msgs.msg import ClassInfo, SegmentationStatus
from ssp_msgs.srv import ResetStreams

from ssp_perception.testing import spin_until


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def _status():
    msg = SegmentationStatus()
    msg.header.frame_id = "camera"
    msg.header.stamp.sec = 12
    msg.stream_id = "/uav/camera/image"
    msg.frame_index = 41
    msg.temporal_state_used = True
    msg.reset_reason = SegmentationStatus.RESET_TIME_GAP
    msg.reset_detail = "gap 2.00 s > max_gap 1.00 s"
    msg.homography = [1.0, 0.0, 3.5, 0.0, 1.0, -2.0, 0.0, 0.0, 1.0]
    msg.registration_inliers = 321
    msg.similarity_p50 = 0.75
    msg.tc_estimate = 0.9375  # exact in float32, so equality holds
    msg.frames_dropped = 7
    return msg


def _class_info():
    msg = ClassInfo()
    msg.model_id = "demo@abc123"
    msg.class_set = "uavid"
    msg.class_names = ["road", "tree"]
    msg.palette_rgb = [128, 0, 128, 64, 64, 0]
    msg.ignore_index = 255
    msg.input_height, msg.input_width = 384, 640
    return msg


@pytest.mark.parametrize("msg_type, make, qos", [
    (SegmentationStatus, _status, QoSProfile(depth=10)),
    (ClassInfo, _class_info, QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)),
])
def test_message_roundtrip(ros_context, msg_type, make, qos):
    talker = rclpy.create_node("talker", context=ros_context)
    listener = rclpy.create_node("listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    executor.add_node(listener)
    received = []
    pub = talker.create_publisher(msg_type, "topic", qos)
    listener.create_subscription(msg_type, "topic", received.append, qos)
    sent = make()
    try:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10.0)
        # Publish until one arrives: discovery can lag the subscription count.
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            pub.publish(sent)
            spin_until(executor, lambda: bool(received), 0.2)
        assert received, f"no {msg_type.__name__} received"
        assert received[0] == sent
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()


def test_reset_service_roundtrip(ros_context):
    server = rclpy.create_node("server", context=ros_context)
    client_node = rclpy.create_node("client", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(server)
    executor.add_node(client_node)

    def handle(request, response):
        response.success = request.stream_id in ("", "/cam")
        response.reset_streams = ["/cam"] if response.success else []
        response.message = "ok" if response.success else f"unknown stream {request.stream_id}"
        return response

    server.create_service(ResetStreams, "reset", handle)
    client = client_node.create_client(ResetStreams, "reset")
    try:
        assert spin_until(executor, lambda: client.service_is_ready(), 10.0)
        for stream, ok in (("", True), ("/other", False)):
            future = client.call_async(ResetStreams.Request(stream_id=stream))
            assert spin_until(executor, future.done, 10.0)
            assert future.result().success is ok
    finally:
        executor.shutdown()
        server.destroy_node()
        client_node.destroy_node()
