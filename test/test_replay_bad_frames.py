"""ssp_replay and frames the node rejects: learnt at once, never a frame-timeout wait.

The node publishes each rejection on ``<ns>/rejected`` with the frame's header; the replay
fails at once naming the frame (``--on-bad-frame fail``, the default) or counts it
(``skip``). The frame timeout here is 120 s: a replay that waited it out would fail the
elapsed-time checks by far.
"""

import json
import time

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from ssp_perception.ros.replay.cli import main
from ssp_perception.ros.replay.config import ReplayError
from ssp_perception.ros.replay.run import replay
from ssp_perception.synthetic import synthetic_frames
from ssp_perception.testing import assert_one_error_line, snapshot
import test_node_harness as th
import test_replay as tr

N = 6
# Frame index -> how it is broken: data cut short, an encoding nobody knows, a header that
# claims 100000 x 100000 pixels (the data is a normal frame's: the decoder must not allocate).
BAD = {1: "truncated", 3: "unknown_encoding", 4: "huge"}


def write_bad_bag(path, bad=BAD):
    """Write N frames at 10 Hz on /camera/image_raw, the ``bad`` ones broken."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/camera/image_raw", tr.IMAGE, typestore=tr.TS)
        for k, (rgb, _) in enumerate(synthetic_frames(tr.FRAME, N, seed=1, speed=2.0)):
            t = 1_000_000_000 + k * 100_000_000
            h, w = rgb.shape[:2]
            fields = {"height": h, "width": w, "encoding": "rgb8", "step": 3 * w,
                      "data": rgb.reshape(-1)}
            if bad.get(k) == "truncated":
                fields["data"] = rgb.reshape(-1)[: rgb.size // 2]
            elif bad.get(k) == "unknown_encoding":
                fields["encoding"] = "yuv9"
            elif bad.get(k) == "huge":
                fields.update(height=100000, width=100000, step=300000)
            msg = tr.TS.types[tr.IMAGE](header=tr._header(t), is_bigendian=0, **fields)
            writer.write(conn, t, tr.TS.serialize_cdr(msg, tr.IMAGE))
    return path


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    return th._save_tiny(tmp_path_factory.mktemp("model") / "nan.safetensors", nan=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return th._save_tiny(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _args(bag, out, model, *extra):
    return [str(bag), "--out", str(out), "--no-progress", "--in-process",
            "--domain-id", str(tr.DOMAIN), "--frame-timeout", "120", "-p",
            f"model_path:={model}", "-p", "num_threads:=1", *extra]


def test_nan_model_fails_at_the_first_frame_in_seconds(tmp_path, nan_model, capsys):
    bag = tr.write_bag(tmp_path / "flight", n=N, labels=False)
    before = snapshot(tmp_path)
    start = time.monotonic()
    code = main(_args(bag, tmp_path / "out", nan_model))
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert_one_error_line(err, "ssp_replay", "ssp: ssp_node rejected frame 0",
                          "frame rejected (nonfinite_output)",
                          "--on-bad-frame skip")
    assert elapsed < 60.0, elapsed      # was 15-60 s per frame, never aborting
    assert snapshot(tmp_path) == before


def test_nan_model_skip_counts_every_frame(tmp_path, nan_model):
    bag = tr.write_bag(tmp_path / "flight", n=N, labels=False)
    start = time.monotonic()
    result = replay(tr._cfg(bag, tmp_path / "out", nan_model, on_bad_frame="skip",
                            compare=False, video=False))
    assert time.monotonic() - start < 60.0
    ssp = result.report["modes"]["ssp"]
    assert ssp["rejected"] == N and ssp["frames_out"] == 0 and ssp["dropped"] == 0
    assert ssp["rejected_reasons"] == {"nonfinite_output": N}


def test_bad_frames_fail_naming_the_first(tmp_path, model):
    bag = write_bad_bag(tmp_path / "bad")
    with pytest.raises(ReplayError, match=r"ssp_node rejected frame 1 \(stamp 1100000000 ns\)"
                                          r".*frame rejected \(truncated\)"):
        replay(tr._cfg(bag, tmp_path / "out", model, compare=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_bad_frames_skipped_and_counted(tmp_path, model):
    bag = write_bad_bag(tmp_path / "bad")
    start = time.monotonic()
    result = replay(tr._cfg(bag, tmp_path / "out", model, on_bad_frame="skip"))
    assert time.monotonic() - start < 120.0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for name in ("ssp", "image_model"):
        mode = report["modes"][name]
        assert mode["frames_in"] == N and mode["frames_out"] == N - len(BAD)
        assert mode["rejected"] == len(BAD) and mode["dropped"] == 0
        assert mode["rejected_reasons"] == {"truncated": 2, "unknown_encoding": 1}
        records = result.runs[name].records
        assert [k for k, r in enumerate(records) if r.rejected] == sorted(BAD)
        assert all(r.labels_png is not None for k, r in enumerate(records) if k not in BAD)
    # The output bag holds the node's rejections, each stamped as its frame.
    msgs = tr._bag_messages(tmp_path / "out" / "bag")
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
              for m in msgs["/ssp/rejected"]]
    assert stamps == [1_000_000_000 + k * 100_000_000 for k in sorted(BAD)]
    assert np.isfinite(report["modes"]["ssp"]["tc"])


def test_nan_model_fails_fast_with_the_node_in_its_own_process(tmp_path, nan_model, capsys):
    bag = tr.write_bag(tmp_path / "flight", n=N, labels=False)
    args = [a for a in _args(bag, tmp_path / "out", nan_model) if a != "--in-process"]
    start = time.monotonic()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert_one_error_line(err, "ssp_replay", "ssp_node rejected frame 0", "nonfinite_output")
    assert time.monotonic() - start < 90.0     # includes the node process's start-up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flight"]


def write_unreadable_bag(path, kind):
    """Write N frames; frame 2 a CompressedImage that does not decode or a cut-short message."""
    compressed = kind == "undecodable"
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else tr.IMAGE
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/camera/image_raw", msgtype, typestore=tr.TS)
        for k, (rgb, _) in enumerate(synthetic_frames(tr.FRAME, N, seed=1, speed=2.0)):
            t = 1_000_000_000 + k * 100_000_000
            if compressed:
                ok, png = cv2.imencode(".png", rgb)
                data = np.frombuffer(b"garbage" * 43, np.uint8) if k == 2 else png.reshape(-1)
                raw = tr.TS.serialize_cdr(tr.TS.types[msgtype](
                    header=tr._header(t), format="png", data=data), msgtype)
            else:
                raw = tr._image(rgb, "rgb8", t)
                raw = raw[:40] if k == 2 else raw   # the header, then nothing
            writer.write(conn, t, raw)
    return path


@pytest.mark.parametrize("kind, words", [
    ("undecodable", "cannot be decoded: cannot decode 301 bytes"),
    ("undeserialisable", "cannot be deserialised as sensor_msgs/msg/Image"),
])
def test_frames_the_replay_cannot_read_fail_naming_them_or_are_skipped(tmp_path, model, kind,
                                                                       words, capsys):
    bag = write_unreadable_bag(tmp_path / "bag", kind)
    before = snapshot(tmp_path)
    start = time.monotonic()
    assert main(_args(bag, tmp_path / "out", model, "--no-compare")) == 2
    assert_one_error_line(capsys.readouterr().err, "ssp_replay",
                          "frame 2 (stamp 1200000000 ns) on /camera/image_raw", words,
                          "--on-bad-frame skip")
    assert time.monotonic() - start < 10.0     # before the node starts
    assert snapshot(tmp_path) == before

    result = replay(tr._cfg(bag, tmp_path / "out", model, on_bad_frame="skip"))
    for name, mode in result.report["modes"].items():
        assert mode["frames_in"] == N and mode["frames_out"] == N - 1
        assert mode["rejected"] == 1 and mode["rejected_reasons"] == {kind: 1}
        assert mode["dropped"] == 0 and mode["tc_pairs"] == N - 2   # (1, 3) spans it
        assert [k for k, r in enumerate(result.runs[name].records) if r.rejected] == [2]
    assert len(tr._bag_messages(tmp_path / "out" / "bag")["/camera/image_raw"]) == N - 1
