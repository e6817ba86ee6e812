"""ROS messages <-> core types: images both ways, status, class info, diagnostics."""

import math

import cv2
from diagnostic_msgs.msg import DiagnosticStatus
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from ssp_msgs.msg import SegmentationStatus

from ssp_perception.classes import UAVID
from ssp_perception.encodings import EncodingError
from ssp_perception.registration import RegistrationResult
from ssp_perception.ros import conversions
from ssp_perception.stream import FrameResult, RESET_REASONS
from std_msgs.msg import Header


def _header():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 7, 250_000_000
    return header


def test_rgb8_image_with_padding_is_read_without_copy():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    rows = np.hstack([rgb.reshape(4, 15), np.zeros((4, 3), np.uint8)])
    msg = Image(header=_header(), height=4, width=5, encoding="rgb8", step=18)
    msg.data = rows.tobytes()
    out = conversions.image_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_bgr8_and_errors():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = Image(height=2, width=3, encoding="bgr8", step=9)
    msg.data = rgb[:, :, ::-1].tobytes()
    np.testing.assert_array_equal(conversions.image_to_rgb(msg), rgb)
    msg.encoding = "32FC1"
    with pytest.raises(EncodingError, match="unknown image encoding '32FC1'"):
        conversions.image_to_rgb(msg)


def test_compressed_image():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :, 1] = 200
    msg = CompressedImage(format="png")
    msg.data = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()
    np.testing.assert_array_equal(conversions.compressed_to_rgb(msg), rgb)
    msg.data = b"garbage"
    with pytest.raises(EncodingError) as info:
        conversions.compressed_to_rgb(msg)
    assert info.value.reason == "corrupt_compressed"


@pytest.mark.parametrize("encoding, shape", [("mono8", (3, 4)), ("rgb8", (3, 4, 3))])
def test_array_to_msg_round_trip(encoding, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    header = _header()
    msg = conversions.array_to_msg(array, encoding, header)
    assert msg.header == header and msg.encoding == encoding and msg.is_bigendian == 0
    assert (msg.height, msg.width, msg.step) == (3, 4, 4 * (1 if encoding == "mono8" else 3))
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(shape), array)


def test_image_buffer_is_written_in_place_and_serialises():
    buffer = conversions.ImageBuffer("rgb8")
    pixels = buffer.pixels(3, 4)
    pixels[:] = 7
    pixels[1, 2] = (1, 2, 3)
    msg = buffer.message(_header())
    assert (msg.height, msg.width, msg.step, msg.encoding) == (3, 4, 12, "rgb8")
    copy = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(np.frombuffer(copy.data, np.uint8).reshape(3, 4, 3), pixels)
    assert copy.header == _header()
    assert buffer.pixels(3, 4) is pixels                     # same size: same memory
    smaller = buffer.pixels(2, 2)
    assert smaller.shape == (2, 2, 3) and len(buffer.message(_header()).data) == 12
    assert conversions.ImageBuffer("mono8").pixels(2, 5).shape == (2, 5)
    with pytest.raises(ValueError, match="mono8 or rgb8"):
        conversions.ImageBuffer("bgr8")


def test_stamp_seconds():
    assert conversions.stamp_seconds(_header().stamp) == pytest.approx(7.25)
    assert conversions.stamp_seconds(Header().stamp) is None


def test_every_core_reset_reason_has_a_status_code():
    assert set(conversions.RESET_CODES) == set(RESET_REASONS)
    assert len(set(conversions.RESET_CODES.values())) == len(RESET_REASONS)


def _result(used_state, reason=""):
    size = (6, 8)
    sim = np.linspace(0, 1, 48, dtype=np.float32).reshape(size)
    h = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    reg = RegistrationResult(h, success=used_state, matches=50, inliers=40, inlier_ratio=0.8)
    return FrameResult(
        labels=np.zeros(size, np.uint8), confidence=np.full(size, 0.5, np.float32),
        similarity=sim, logits=None, homography=h if used_state else None, registration=reg,
        used_state=used_state, reset_reason=reason, reset_detail="why" if reason else "",
        frame_index=3, frames_since_reset=2, flip_rate=0.1 if used_state else math.nan,
        tc_estimate=0.9 if used_state else math.nan, mean_confidence=0.5, network_size=(32, 32),
        timings_ms={"preprocess": 1.0, "registration": 2.0, "model": 3.0, "postprocess": 4.0,
                    "consistency": 0.5, "total": 10.5})


def test_status_message_from_a_frame_result():
    counters = {"frame_index": 9, "frames_received": 12, "frames_processed": 10,
                "frames_dropped": 1, "frames_rejected": 1}
    msg = conversions.status_msg(_result(True), _header(), "/cam/image", counters=counters,
                                 decode_ms=0.25, publish_ms=1.5, total_ms=20.0, input_age_ms=30.0)
    assert msg.header == _header() and msg.stream_id == "/cam/image"
    assert (msg.frame_index, msg.frames_since_reset, msg.frames_dropped) == (9, 2, 1)
    assert msg.temporal_state_used and msg.registration_success
    assert msg.reset_reason == SegmentationStatus.RESET_NONE
    assert list(msg.homography) == [1.0, 0.0, 2.0, 0.0, 1.0, -1.0, 0.0, 0.0, 1.0]
    assert (msg.registration_matches, msg.registration_inliers) == (50, 40)
    assert msg.similarity_p50 == pytest.approx(0.5, abs=0.05)
    assert msg.similarity_p10 < msg.similarity_p50 < msg.similarity_p90
    assert msg.tc_estimate == pytest.approx(0.9) and msg.label_flip_rate == pytest.approx(0.1)
    assert (msg.preprocess_ms, msg.registration_ms, msg.model_ms) == (1.0, 2.0, 3.0)
    assert msg.postprocess_ms == 4.5 and math.isnan(msg.fuse_ms)
    assert (msg.decode_ms, msg.publish_ms, msg.total_ms, msg.input_age_ms) == (
        0.25, 1.5, 20.0, 30.0)

    reset = conversions.status_msg(_result(False, "time_gap"), _header(), "/cam/image",
                                   counters=counters, decode_ms=0, publish_ms=0, total_ms=0,
                                   input_age_ms=math.nan)
    assert reset.reset_reason == SegmentationStatus.RESET_TIME_GAP and reset.reset_detail == "why"
    assert not reset.temporal_state_used and not reset.registration_success
    assert list(reset.homography) == np.eye(3).ravel().tolist()
    assert math.isnan(reset.similarity_mean) and math.isnan(reset.tc_estimate)


def test_class_info_message():
    msg = conversions.class_info_msg(UAVID, model_id="m@1", preset="lite", input_size=(64, 96),
                                     header=_header())
    assert list(msg.class_names) == list(UAVID.names) and msg.class_set == "uavid"
    assert list(msg.palette_rgb[:3]) == list(UAVID.colors[0])
    assert len(msg.palette_rgb) == 3 * UAVID.num_classes and msg.ignore_index == 255
    assert (msg.input_height, msg.input_width, msg.preset) == (64, 96, "lite")


def test_diagnostic_status_formats_values():
    status = conversions.diagnostic_status("node: /cam", "/cam", "warn", "slow",
                                           {"rate": 9.87654, "age": math.nan, "n": 3, "s": "x"})
    assert status.level == DiagnosticStatus.WARN and status.hardware_id == "/cam"
    assert {kv.key: kv.value for kv in status.values} == {
        "rate": "9.877", "age": "nan", "n": "3", "s": "x"}
    array = conversions.diagnostic_array([status], _header().stamp)
    assert array.header.stamp.sec == 7 and array.status[0].name == "node: /cam"
