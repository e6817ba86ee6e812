"""ssp_node's input side: QoS that follows the publishers, frames that never arrived, clocks.

In-process (real rclpy traffic, one executor); the cross-process delivery is in
test_node_graph.py.
"""

import math

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from ssp_msgs.msg import SegmentationStatus

from ssp_perception.ros.input_qos import (choose_reliability, HAS_MATCHED_EVENT,
                                          subscription_events)
import test_node_harness as th
from test_node_harness import frames, image_msg, NodeHarness

ros_context = th.ros_context
tiny_artifact = th.tiny_artifact

RELIABLE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


def test_choose_reliability():
    rel, be = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    assert choose_reliability("auto", []) == be          # connects to whichever comes
    assert choose_reliability("auto", [rel, rel]) == rel
    assert choose_reliability("auto", [rel, be]) == be   # a reliable reader misses the BE one
    assert choose_reliability("reliable", [be]) == rel
    assert choose_reliability("best_effort", [rel]) == be


def test_camera_subscriptions_take_the_matched_event_where_rclpy_has_one():
    def on_incompatible(_info):
        pass

    def on_matched(_info):
        pass

    assert HAS_MATCHED_EVENT            # Kilted and Jazzy; Humble's rclpy has no such event
    events = subscription_events(on_incompatible, on_matched)
    assert (events.incompatible_qos, events.matched) == (on_incompatible, on_matched)
    humble = subscription_events(on_incompatible, on_matched, has_matched=False)
    assert (humble.incompatible_qos, humble.matched) == (on_incompatible, None)


def _reliability(h):
    worker = next(iter(h.node.workers.values()))
    return worker.input.reliability


def test_auto_reliability_follows_the_publishers(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact) as h:
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        assert _reliability(h) == "best_effort"
        assert h.node.workers["/image"].subscription.qos_profile.depth == 1
        reliable = h.probe.create_publisher(Image, "image", RELIABLE)
        assert h.spin_until(lambda: _reliability(h) == "reliable")
        _, values = h.stream_diagnostic(diagnostics, "/image",
                                        lambda v: v["input_reliability"] == "auto: reliable")
        assert "1 publisher(s)" in values["input_publishers"]
        assert "(reliable, volatile)" in values["input_publishers"]
        # The reliable publisher delivers to the re-created subscription.
        status = h.subscribe(SegmentationStatus, "status")
        assert h.spin_until(lambda: reliable.get_subscription_count() == 1)
        assert h.send(reliable, image_msg(frames(1)[0], 1.0), status, 1)
        # A best-effort publisher joins: a reliable reader would not hear it.
        h.probe.create_publisher(Image, "image", BEST_EFFORT)
        assert h.spin_until(lambda: _reliability(h) == "best_effort")
        assert h.spin_until(lambda: any("2 publisher(s)" in m.msg for m in h.logs))


def test_fixed_reliability_and_qos_overrides_win(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact, input_reliability="best_effort") as h:
        h.probe.create_publisher(Image, "image", RELIABLE)
        h.spin_for(1.5)
        assert _reliability(h) == "best_effort"
    with NodeHarness(ros_context, tiny_artifact, name="ssp_node_o",
                     **{"qos_overrides./image.subscription.reliability": "reliable"}) as h:
        assert _reliability(h) == "reliable"
        assert h.node.workers["/image"].input.describe() == "reliable (qos_overrides)"
        h.probe.create_publisher(Image, "image", BEST_EFFORT)
        h.spin_for(1.5)
        assert _reliability(h) == "reliable"     # pinned: the user asked for it


def test_frames_that_never_arrived_are_counted_apart_from_drops(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact) as h:
        status = h.subscribe(SegmentationStatus, "status")
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        h.wait_outputs_matched(["/status"])
        pub = h.publisher("image")
        seq = frames(14)
        # 10 Hz; frames 10, 11 and 12 never come (as if lost on the way).
        sent = [k for k in range(14) if k not in (10, 11, 12)]
        for n, k in enumerate(sent, start=1):
            assert h.send(pub, image_msg(seq[k], 1.0 + k / 10), status, n)
        last = status[-1]
        assert (last.frames_missing, last.frames_received, last.frames_dropped) == (3, 11, 0)
        assert math.isclose(last.input_period_ms, 100.0, rel_tol=1e-3)
        assert h.spin_until(lambda: h.warnings("never arrived"))
        text = h.warnings("never arrived")[0]
        assert "3 of" in text and "fastdds_large_frames.xml" in text
        diag, values = h.stream_diagnostic(diagnostics, "/image",
                                           lambda v: v["frames_missing"] == "3")
        assert math.isclose(float(values["input_period_ms"]), 100.0, rel_tol=1e-3)


def test_no_input_warning_says_waiting_before_the_first_frame(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact, input_timeout_s=0.3) as h:
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        assert h.spin_until(lambda: h.warnings("waiting for the first frame"))
        assert not h.warnings("no input for")
        diag, _ = h.stream_diagnostic(diagnostics, "/image",
                                      lambda v: float(v["seconds_since_input"]) > 0.3)
        assert diag.level == DiagnosticStatus.WARN and "waiting for the first" in diag.message
        status = h.subscribe(SegmentationStatus, "status")
        h.wait_outputs_matched(["/status"])
        assert h.send(h.publisher("image"), image_msg(frames(1)[0], 1.0), status, 1)
        assert h.spin_until(lambda: h.warnings("no input for"))


def test_sim_time_without_clock_gives_no_input_age(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact, use_sim_time=True) as h:
        status = h.subscribe(SegmentationStatus, "status")
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        h.wait_outputs_matched(["/status"])
        assert h.send(h.publisher("image"), image_msg(frames(1)[0], 1.8e9), status, 1)
        assert math.isnan(status[0].input_age_ms)      # not now (0) - stamp = -1.8e12 ms
        _, values = h.stream_diagnostic(diagnostics, "/image", lambda v: "input_age_note" in v)
        assert "no /clock" in values["input_age_note"]


def test_model_ms_holds_fusion_and_fuse_ms_is_not_measured(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact) as h:
        status = h.subscribe(SegmentationStatus, "status")
        h.wait_outputs_matched(["/status"])
        pub = h.publisher("image")
        seq = frames(2)
        assert h.send(pub, image_msg(seq[0], 1.0), status, 1)
        assert h.send(pub, image_msg(seq[1], 1.05), status, 2)
        fused = status[1]
        assert fused.temporal_state_used
        assert fused.model_ms > 0.0 and math.isnan(fused.fuse_ms)
