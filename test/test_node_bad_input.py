"""ssp_node under bad input: the node stays up, says why in a warning and in diagnostics."""

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from ssp_msgs.msg import SegmentationStatus
from ssp_msgs.srv import ResetStreams

from ssp_perception.ros.node import main, SegmentationNode, StartupError
import test_node_harness as th
from test_node_harness import frames, image_msg, NodeHarness
import torch

# Fixtures shared with test_node.py.
ros_context = th.ros_context
tiny_artifact = th.tiny_artifact
nan_artifact = th.nan_artifact


def _broken(msg, **fields):
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def test_bad_raw_frames_are_rejected_and_reported(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact, input_timeout_s=1.0) as h:
        status = h.subscribe(SegmentationStatus, "status")
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        h.wait_outputs_matched(["/status"])
        pub = h.publisher("image")
        seq = frames(2)
        assert h.send(pub, image_msg(seq[0], 1.0), status, 1)
        bad = {
            "unknown_encoding": _broken(image_msg(seq[1], 1.1), encoding="8UC3"),
            "truncated": _broken(image_msg(seq[1], 1.2), height=200),
            "empty_image": _broken(image_msg(seq[1], 1.3), width=0, height=0, step=0, data=[]),
            "bad_step": _broken(image_msg(seq[1], 1.4), step=10),
        }
        for reason, msg in bad.items():
            pub.publish(msg)
            assert h.spin_until(lambda: h.warnings(reason)), f"no warning for {reason}"
        # The node is still up: the next good frame is processed and counts the rejections.
        assert h.send(pub, image_msg(seq[1], 1.5), status, 2)
        assert status[1].frames_rejected == 4 and status[1].frames_received == 6
        assert status[1].frames_processed == 2
        assert "supported:" in h.warnings("unknown_encoding")[0]
        h.stream_diagnostic(diagnostics, "/image", lambda v: (v["frames_rejected"], v[
            "frames_processed"], v["frames_received"]) == ("4", "2", "6"))
        # Then silence: the diagnostics and the log say there is no input.
        diag, values = h.stream_diagnostic(diagnostics, "/image",
                                           lambda v: float(v["seconds_since_input"]) > 1.0)
        assert diag.level == DiagnosticStatus.WARN and "no input for" in diag.message
        assert h.warnings("no input for")


def test_size_and_time_anomalies_reset_the_state(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact) as h:
        status = h.subscribe(SegmentationStatus, "status")
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        h.wait_outputs_matched(["/status"])
        pub = h.publisher("image")
        seq = frames(4)
        small = frames(1, size=(64, 96))[0]
        inputs = [(seq[0], 1.0), (seq[1], 1.1), (seq[2], 0.9), (seq[3], 5.0), (small, 5.1)]
        for k, (rgb, stamp) in enumerate(inputs):
            assert h.send(pub, image_msg(rgb, stamp), status, k + 1), f"frame {k}"
        R = SegmentationStatus
        assert [s.reset_reason for s in status] == [
            R.RESET_FIRST_FRAME, R.RESET_NONE, R.RESET_TIME_BACKWARDS, R.RESET_TIME_GAP,
            R.RESET_SIZE_CHANGE]
        assert not any(s.temporal_state_used for s in status[2:])
        assert "gap" in status[3].reset_detail
        assert "(96, 128) -> (64, 96)" in status[4].reset_detail
        for reason in ("time_backwards", "time_gap", "size_change"):
            assert h.spin_until(lambda: h.warnings(reason)), reason
        diag, values = h.stream_diagnostic(diagnostics, "/image",
                                           lambda v: v["frames_processed"] == "5")
        assert values["resets"] == "4" and values["last_reset"].startswith("size_change")
        assert values["frames_rejected"] == "0"


def test_corrupt_compressed_frame_is_rejected(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact, input_transport="compressed") as h:
        assert set(h.node.workers) == {"/image/compressed"}
        status = h.subscribe(SegmentationStatus, "status")
        h.wait_outputs_matched(["/status"])
        pub = h.publisher("image/compressed", CompressedImage)
        seq = frames(2)

        def jpeg(rgb, stamp):
            msg = CompressedImage(header=image_msg(rgb, stamp).header, format="jpeg")
            msg.data = cv2.imencode(".jpg", rgb[:, :, ::-1])[1].tobytes()
            return msg

        assert h.send(pub, jpeg(seq[0], 1.0), status, 1)
        corrupt = jpeg(seq[1], 1.1)
        corrupt.data = corrupt.data[:40].tobytes()[::-1]
        pub.publish(corrupt)
        assert h.spin_until(lambda: h.warnings("corrupt_compressed"))
        assert h.send(pub, jpeg(seq[1], 1.2), status, 2)
        assert status[1].frames_rejected == 1 and status[1].header.stamp.nanosec == 2 * 10 ** 8


def test_nonfinite_model_output_is_never_published(ros_context, nan_artifact):
    with NodeHarness(ros_context, nan_artifact) as h:
        status = h.subscribe(SegmentationStatus, "status")
        labels = h.subscribe(Image, "labels")
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        h.wait_outputs_matched(["/status", "/labels"])
        pub = h.publisher("image")
        worker = h.node.workers["/image"]
        for k, rgb in enumerate(frames(2)):
            pub.publish(image_msg(rgb, 1.0 + 0.1 * k))
            assert h.spin_until(lambda: worker.stats.rejected == k + 1), f"frame {k}"
        assert h.spin_until(lambda: h.warnings("nonfinite_output"))
        diag, values = h.stream_diagnostic(diagnostics, "/image",
                                           lambda v: v["frames_rejected"] == "2")
        assert values["frames_processed"] == "0" and "NaN" in values["last_warning"]
        assert diag.level == DiagnosticStatus.WARN
        assert not status and not labels
        # Still serving: the reset service answers.
        assert h.call(ResetStreams, "reset", ResetStreams.Request()).success


def test_incompatible_qos_is_reported(ros_context, tiny_artifact):
    with NodeHarness(ros_context, tiny_artifact,
                     **{"qos_overrides./image.subscription.reliability": "reliable"}) as h:
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        h.probe.create_publisher(Image, "image", best_effort)
        assert h.spin_until(lambda: h.warnings("incompatible"))
        assert "RELIABILITY" in h.warnings("incompatible")[0]
        h.stream_diagnostic(diagnostics, "/image",
                            lambda v: int(v["qos_incompatible_events"]) >= 1)


@pytest.mark.parametrize("params, words", [
    ({"preset": "hiera_s"}, ["is preset 'lite'", "asks for 'hiera_s'"]),
    ({"image_topics": ["cams/a", "cams/b"]}, ["'cams/a' and 'cams/b'", "cams/labels"]),
    ({"image_topics": ["cam0/image", "/cam0/image"]},
     ["'cam0/image' and '/cam0/image' are the same topic '/cam0/image'"]),
    ({"stream.max_gap_s": -1.0}, ["invalid stream.* parameters", "max_gap_s must be >= 0"]),
    ({"stream.max_gap_s": 1}, ["'stream.max_gap_s' must be of type double"]),
    # One line naming what is allowed, not torch's list of device types.
    ({"device": "gpu"}, ["device 'gpu' is not one of cpu, cuda, cuda:N"]),
    ({"input_reliability": "sometimes"}, ["'sometimes' is not one of auto, reliable"]),
    # Values that used to crash the warm-up with a traceback (allocation, device):
    ({"stream.input_size": [100000, 100000]}, ["multiples of 32 up to 8192"]),
    ({"registration.max_features": 10 ** 9}, ["max_features must be an integer in 8..100000"]),
    ({"registration.device": "bogus", "registration.estimator": "kornia_ransac"},
     ["device 'bogus' is not one of cpu, cuda, cuda:N"]),
    pytest.param({"registration.device": "cuda", "registration.estimator": "kornia_ransac"},
                 ["registration.device 'cuda': CUDA is not available",
                  "registration.device:=cpu"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA exists here")),
    # The device is the problem, not the artifact.
    pytest.param({"device": "cuda"}, ["CUDA is not available", "device:=cpu"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA exists here")),
    pytest.param({"device": "cuda:7"}, ["has 1 CUDA device(s)"],
                 marks=pytest.mark.skipif(torch.cuda.device_count() != 1,
                                          reason="needs exactly one CUDA device")),
])
def test_startup_errors_are_clear(ros_context, tiny_artifact, params, words):
    with pytest.raises(StartupError) as info:
        NodeHarness(ros_context, tiny_artifact, **params)
    for word in words:
        assert word in str(info.value)
    assert "model artifact" not in str(info.value) or "preset" in params
    assert "\n" not in str(info.value)


def test_wrong_model_file_is_a_clear_startup_error(ros_context, tmp_path):
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(StartupError) as info:
        SegmentationNode(context=ros_context, parameter_overrides=[
            Parameter("model_path", value=str(junk))])
    assert str(junk) in str(info.value) and "expected an ssp_perception model artifact" in str(
        info.value)


def test_missing_model_exits_nonzero_without_traceback(tmp_path, capfd):
    path = tmp_path / "model.safetensors"
    # main() as the console script runs it (in-process: a subprocess would spend its time
    # importing torch); it owns the default context from init to shutdown.
    code = main(["ssp_node", "--ros-args", "-p", f"model_path:={path}"])
    output = "".join(capfd.readouterr())
    assert code == 2, output
    assert str(path) in output and "expected an ssp_perception model artifact" in output
    assert "ssp_node: error: cannot start: model artifact not found" in output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if line.strip()]) == 1, output
