"""ssp_node in-process: sequence in, outputs out; two streams; reset service; parameters."""

from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from ssp_msgs.msg import ClassInfo, SegmentationStatus
from ssp_msgs.srv import ResetStreams

from ssp_perception.classes import UAVID
from ssp_perception.registration import RegistrationConfig
from ssp_perception.ros.node import SegmentationNode
from ssp_perception.ros.params import parameter_specs, parameter_table_markdown
from ssp_perception.stream import Segmenter, StreamConfig
import test_node_harness as th
from test_node_harness import FAST, frames, image_msg, NET, NodeHarness, SIZE
import yaml

# Fixtures shared with test_node_bad_input.py.
ros_context = th.ros_context
tiny_artifact = th.tiny_artifact

ROOT = Path(__file__).resolve().parents[1]
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def harness(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact) as h:
        yield h


def test_sequence_in_labels_status_diagnostics_out(harness, tiny_artifact):
    h = harness
    names = ("labels", "color", "overlay", "confidence")
    outputs = {name: h.subscribe(Image, name) for name in names}
    status = h.subscribe(SegmentationStatus, "status")
    info = h.subscribe(ClassInfo, "class_info", LATCHED)
    diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
    h.wait_outputs_matched(["/labels", "/color", "/overlay", "/confidence", "/status"])
    pub = h.publisher("image")
    seq = frames(5)
    sent = [image_msg(rgb, 10.0 + 0.1 * k) for k, rgb in enumerate(seq)]
    for k, msg in enumerate(sent):
        assert h.send(pub, msg, status, k + 1), f"no status for frame {k}"
    assert h.spin_until(lambda: all(len(v) == len(sent) for v in outputs.values()))

    for k, (msg, st) in enumerate(zip(sent, status)):
        assert st.header == msg.header and st.stream_id == "/image"
        assert st.frame_index == k and st.frames_received == k + 1
        assert st.frames_processed == k + 1 and st.frames_dropped == st.frames_rejected == 0
        assert st.total_ms > 0 and st.model_ms > 0 and st.decode_ms >= 0
        for name, encoding in (("labels", "mono8"), ("color", "rgb8"), ("overlay", "rgb8"),
                               ("confidence", "mono8")):
            out = outputs[name][k]
            assert out.header == msg.header, name
            assert (out.height, out.width, out.encoding) == (*SIZE, encoding), name
            assert len(out.data) == out.step * out.height
    assert status[0].reset_reason == SegmentationStatus.RESET_FIRST_FRAME
    for st in status[1:]:
        assert st.reset_reason == SegmentationStatus.RESET_NONE
        assert st.temporal_state_used and st.registration_success
        assert st.registration_inliers >= 8 and np.isfinite(st.similarity_p50)
        assert 0.0 <= st.tc_estimate <= 1.0

    # The labels are exactly what the core computes for the same frames.
    stream = Segmenter.from_artifact(tiny_artifact).new_stream(
        StreamConfig(), RegistrationConfig(orb_fast_threshold=5, min_inliers=8))
    for rgb, out in zip(seq, outputs["labels"]):
        expected = stream.process(rgb, None, "cam").labels
        got = np.frombuffer(out.data, np.uint8).reshape(SIZE)
        assert np.mean(got != expected) < 1e-3
    palette = np.array(UAVID.colors, np.uint8)
    color = np.frombuffer(outputs["color"][0].data, np.uint8).reshape(*SIZE, 3)
    labels0 = np.frombuffer(outputs["labels"][0].data, np.uint8).reshape(SIZE)
    np.testing.assert_array_equal(color, palette[labels0])

    assert h.spin_until(lambda: bool(info))
    assert list(info[0].class_names) == list(UAVID.names)
    assert (info[0].input_height, info[0].input_width) == NET
    assert info[0].model_id.startswith("tiny.safetensors@") and info[0].preset == "lite"

    diag, values = h.stream_diagnostic(diagnostics, "/image",
                                       lambda v: v["frames_processed"] == "5")
    assert diag.level == DiagnosticStatus.OK, diag.message
    assert float(values["latency_p50_ms"]) > 0 and values["frames_dropped"] == "0"
    for key in ("input_rate_hz", "output_rate_hz", "input_age_ms", "latency_p90_ms",
                "latency_p99_ms", "registration_success_rate", "tc_estimate", "resets",
                "last_warning", "qos_incompatible_events", "seconds_since_input"):
        assert key in values, key


def test_latest_frame_policy_and_callbacks_never_wait_for_inference(harness):
    h = harness
    status = h.subscribe(SegmentationStatus, "status")
    h.wait_outputs_matched(["/status"])
    pub = h.publisher("image")
    worker = h.node.workers["/image"]
    seq = frames(3)
    # White-box: holding the segmenter's network lock freezes the worker inside inference.
    with h.node.segmenter._lock:
        pub.publish(image_msg(seq[0], 1.0))
        assert h.spin_until(lambda: not worker.idle() and worker._pending is None)
        pub.publish(image_msg(seq[1], 1.1))
        assert h.spin_until(lambda: worker.stats.received == 2)
        pub.publish(image_msg(seq[2], 1.2))    # replaces frame 1, which is dropped
        assert h.spin_until(lambda: worker.stats.received == 3)
        assert worker.stats.dropped == 1
        # Services and parameters answer while inference is stuck.
        assert h.call(ResetStreams, "reset", ResetStreams.Request()).success
        assert _set(h, "overlay_alpha", 0.3).successful
        assert not status
    assert h.spin_until(lambda: len(status) == 2)
    assert [s.header.stamp.nanosec for s in status] == [0, 2 * 10 ** 8]
    assert (status[1].frames_received, status[1].frames_processed,
            status[1].frames_dropped) == (3, 2, 1)
    assert status[1].reset_reason == SegmentationStatus.RESET_MANUAL


def _two_streams(ros_context, tiny_artifact):
    return NodeHarness(ros_context, tiny_artifact, image_topics=["cam0/image", "cam1/image"])


def test_two_streams_keep_separate_state(ros_context, tiny_artifact):
    with _two_streams(ros_context, tiny_artifact) as h:
        assert set(h.node.workers) == {"/cam0/image", "/cam1/image"}
        status = {c: h.subscribe(SegmentationStatus, f"{c}/status") for c in ("cam0", "cam1")}
        labels = {c: h.subscribe(Image, f"{c}/labels") for c in ("cam0", "cam1")}
        h.wait_outputs_matched(["/cam0/labels", "/cam1/labels"])
        pubs = {c: h.publisher(f"{c}/image") for c in ("cam0", "cam1")}
        seqs = {"cam0": frames(3, seed=0), "cam1": frames(3, seed=1)}
        # cam1 jumps 5 s on its last frame: only cam1 resets.
        stamps = {"cam0": [1.0, 1.1, 1.2], "cam1": [1.0, 1.1, 6.1]}
        for k in range(3):
            for cam in ("cam0", "cam1"):
                msg = image_msg(seqs[cam][k], stamps[cam][k], frame_id=cam)
                assert h.send(pubs[cam], msg, status[cam], k + 1)
        assert h.spin_until(lambda: all(len(v) == 3 for v in labels.values()))
        assert [s.stream_id for s in status["cam0"]] == ["/cam0/image"] * 3
        assert [s.frame_index for s in status["cam1"]] == [0, 1, 2]
        assert [s.reset_reason for s in status["cam0"]] == [1, 0, 0]
        assert [s.reset_reason for s in status["cam1"]] == [
            1, 0, SegmentationStatus.RESET_TIME_GAP]
        assert status["cam0"][2].temporal_state_used
        assert not status["cam1"][2].temporal_state_used
        assert [m.header.frame_id for m in labels["cam1"]] == ["cam1"] * 3


def test_reset_service_one_all_unknown(ros_context, tiny_artifact):
    with _two_streams(ros_context, tiny_artifact) as h:
        status = {c: h.subscribe(SegmentationStatus, f"{c}/status") for c in ("cam0", "cam1")}
        h.wait_outputs_matched(["/cam0/status", "/cam1/status"])
        pubs = {c: h.publisher(f"{c}/image") for c in ("cam0", "cam1")}
        seq = frames(4)
        count = 0

        def step():
            nonlocal count
            for cam in ("cam0", "cam1"):
                msg = image_msg(seq[count], 1.0 + 0.1 * count, frame_id=cam)
                assert h.send(pubs[cam], msg, status[cam], count + 1)
            count += 1
            return status["cam0"][-1].reset_reason, status["cam1"][-1].reset_reason

        assert step() == (1, 1)
        one = h.call(ResetStreams, "reset", ResetStreams.Request(stream_id="/cam0/image"))
        assert one.success and list(one.reset_streams) == ["/cam0/image"]
        assert step() == (SegmentationStatus.RESET_MANUAL, SegmentationStatus.RESET_NONE)
        assert status["cam0"][-1].reset_detail == "reset service"
        every = h.call(ResetStreams, "reset", ResetStreams.Request(stream_id=""))
        assert every.success and sorted(every.reset_streams) == ["/cam0/image", "/cam1/image"]
        assert step() == (SegmentationStatus.RESET_MANUAL, SegmentationStatus.RESET_MANUAL)
        unknown = h.call(ResetStreams, "reset", ResetStreams.Request(stream_id="/cam9/image"))
        assert not unknown.success and list(unknown.reset_streams) == []
        assert "unknown stream '/cam9/image'" in unknown.message
        assert "/cam0/image" in unknown.message
        assert step() == (SegmentationStatus.RESET_NONE, SegmentationStatus.RESET_NONE)


def _set(h, name, value):
    """Set one parameter through the node's real set_parameters service."""
    msg = ParameterMsg(name=name, value=rclpy.parameter.Parameter(name, value=value)
                       .get_parameter_value())
    response = h.call(SetParameters, "/ssp_node/set_parameters",
                      SetParameters.Request(parameters=[msg]))
    return response.results[0]


BAD_PARAMETERS = [
    ("stream.max_gap_s", -1.0, ["stream.max_gap_s=-1.0", "max_gap_s must be >= 0"]),
    ("overlay_alpha", 1.5, ["overlay_alpha must be in [0, 1]"]),
    ("registration.method", "akaze", ["method 'akaze' is not one of orb, sift"]),
    ("stream.input_size", [64, 100], ["input_size must be", "multiples of 32"]),
    ("stream.resize_mode", "stretch", ["resize_mode 'stretch' is not one of resize, pad"]),
    ("model_path", "/elsewhere.safetensors", ["read-only"]),
    ("stream.max_gap_s", "soon", ["type"]),
    # Values that used to pass and then fail every frame (allocation, device, weights):
    ("stream.input_size", [100000, 100000], ["multiples of 32 up to 8192"]),
    ("registration.max_features", 10 ** 9, ["max_features must be an integer in 8..100000"]),
    ("registration.device", "bogus", ["device 'bogus' is not one of cpu, cuda, cuda:N"]),
]


def test_bad_parameters_are_rejected_with_a_reason(harness):
    # One node for all cases: each is a separate set_parameters call that must leave no trace.
    for name, value, words in BAD_PARAMETERS:
        before = harness.node.get_parameter_or(name).value
        result = _set(harness, name, value)
        assert not result.successful, (name, value)
        for word in words:
            assert word in result.reason, (name, value, result.reason)
        assert harness.node.get_parameter_or(name).value == before, name
    assert harness.node.config.overlay_alpha == 0.5


def test_switch_to_disk_lightglue_with_unreadable_weights_is_refused(harness, tmp_path):
    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"not a checkpoint")
    for name in ("registration.disk_weights", "registration.lightglue_weights"):
        assert _set(harness, name, str(junk)).successful   # unused while the method is orb
    result = _set(harness, "registration.method", "disk_lightglue")
    # Refused when set: accepted, it would fail every later frame and keep the old method.
    assert not result.successful
    assert "registration.disk_weights (DISK)" in result.reason and str(junk) in result.reason
    assert harness.node.get_parameter("registration.method").value == "orb"
    assert harness.node.workers["/image"].stream.registrator.method == "orb"


def test_good_parameter_change_rebuilds_streams(harness):
    h = harness
    status = h.subscribe(SegmentationStatus, "status")
    h.wait_outputs_matched(["/status"])
    pub = h.publisher("image")
    seq = frames(2)
    assert h.send(pub, image_msg(seq[0], 1.0), status, 1)
    assert _set(h, "stream.max_gap_s", 2.0).successful
    assert _set(h, "overlay_alpha", 0.25).successful
    assert h.node.config.overlay_alpha == 0.25
    assert h.send(pub, image_msg(seq[1], 2.5), status, 2)   # 1.5 s gap: fine with 2.0 s
    assert status[1].reset_reason == SegmentationStatus.RESET_MANUAL
    assert status[1].reset_detail == "parameters changed"
    assert h.node.workers["/image"].stream.cfg.max_gap_s == 2.0
    # A new network input size is announced on the latched class_info.
    info = h.subscribe(ClassInfo, "class_info", LATCHED)
    assert h.spin_until(lambda: bool(info))
    result = _set(h, "stream.input_size", [32, 64])
    assert result.successful, result.reason
    assert h.spin_until(lambda: (info[-1].input_height, info[-1].input_width) == (32, 64))


class _NodeWithoutPostSetCallbacks(SegmentationNode):
    add_post_set_parameters_callback = None     # as on Humble, whose rclpy has none


def test_parameters_are_validated_and_applied_without_post_set_callbacks(ros_context,
                                                                         tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact, node_class=_NodeWithoutPostSetCallbacks) as h:
        assert _set(h, "overlay_alpha", 0.25).successful
        assert h.node.config.overlay_alpha == 0.25
        result = _set(h, "overlay_alpha", 1.5)
        assert not result.successful and "overlay_alpha must be in [0, 1]" in result.reason
        assert h.node.config.overlay_alpha == 0.25
        assert h.node.get_parameter("overlay_alpha").value == 0.25


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_params_file_and_declared_parameters_match_the_specs(tiny_artifact):
    params_file = ROOT / "config" / "uav.yaml"
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(params_file)], context=context,
               domain_id=th.DOMAIN_ID)
    try:
        with NodeHarness(context, tiny_artifact) as h:
            node = h.node
            names = node.list_parameters([], 0).names
            declared = {n for n in names
                        if n not in ("use_sim_time", "start_type_description_service")
                        and not n.startswith("qos_overrides.")}
            specs = {s.name: s for s in parameter_specs()}
            assert declared == set(specs)
            for name, spec in specs.items():
                descriptor = node.describe_parameter(name)
                assert descriptor.description == spec.description and spec.description
                assert descriptor.read_only == spec.read_only
                assert descriptor.type == spec.type_ != ParameterType.PARAMETER_NOT_SET
            yaml_values = dict(_flatten(yaml.safe_load(params_file.read_text())["/**"][
                "ros__parameters"]))
            for name, value in yaml_values.items():
                if name != "model_path" and name not in FAST:   # the harness overrides these
                    assert node.get_parameter(name).value == value, name
            assert any(n.startswith("qos_overrides./image.subscription.") for n in names), \
                "the input's QoS must be overridable"
    finally:
        rclpy.shutdown(context=context)


def test_node_md_lists_every_parameter():
    doc = (ROOT / "docs" / "NODE.md").read_text()
    table = parameter_table_markdown()
    assert table in doc, ("docs/NODE.md's parameter table is stale; regenerate it with\n"
                          "python -c 'from ssp_perception.ros.params import "
                          "parameter_table_markdown as t; print(t())'")
