"""ssp_replay end to end: tiny rosbags through the real node over real topics.

The bags are written here with rosbags (96 x 128 frames of a textured plane seen by a moving
camera, so ORB registration succeeds); the model is a random lite artifact at 64 x 96. Each
replay gets a private ROS domain so that other processes' traffic cannot reach it.
"""

import json
import os
from pathlib import Path
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from ssp_perception.artifact import save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.files import OutputError
from ssp_perception.models import create_model
from ssp_perception.ros.node import SegmentationNode, StartupError
from ssp_perception.ros.replay import config as replay_config
from ssp_perception.ros.replay.bag import ensure_type
from ssp_perception.ros.replay.cli import main
from ssp_perception.ros.replay.config import (IMAGE_MODEL_OVERRIDES, load_params_file,
                                              node_parameters, parse_param, ReplayConfig,
                                              ReplayError)
from ssp_perception.ros.replay.report import decode_labels
from ssp_perception.ros.replay.run import replay
from ssp_perception.synthetic import synthetic_frames
from ssp_perception.testing import assert_one_error_line, console_code, snapshot
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FRAME = (96, 128)
N_FRAMES = 5
TS = get_typestore(Stores.ROS2_KILTED)
IMAGE = "sensor_msgs/msg/Image"
# A private domain per test process: concurrent test runs on one host do not see each other.
DOMAIN = 40 + os.getpid() % 60


def _header(t_ns):
    return TS.types["std_msgs/msg/Header"](
        stamp=TS.types["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9),
        frame_id="cam")


def _image(arr, encoding, t_ns):
    h, w = arr.shape[:2]
    return TS.serialize_cdr(TS.types[IMAGE](
        header=_header(t_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=arr.size // h, data=arr.reshape(-1)), IMAGE)


def write_bag(path, n=N_FRAMES, storage="sqlite3", labels=True, compressed=False,
              encoding="rgb8", image_topic="/camera/image_raw"):
    """Write a tiny synthetic flight: frames at 10 Hz and (optionally) mono8 ground truth."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        kind = "sensor_msgs/msg/CompressedImage" if compressed else IMAGE
        image_conn = writer.add_connection(image_topic, kind, typestore=TS)
        label_conn = (writer.add_connection("/camera/labels", IMAGE, typestore=TS)
                      if labels else None)
        for k, (rgb, _) in enumerate(synthetic_frames(FRAME, n, seed=1, speed=2.0)):
            t = 1_000_000_000 + k * 100_000_000
            if compressed:
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                msg = TS.types[kind](header=_header(t), format="png", data=png.reshape(-1))
                writer.write(image_conn, t, TS.serialize_cdr(msg, kind))
            else:
                writer.write(image_conn, t, _image(rgb, encoding, t))
            if label_conn is not None:
                gt = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) // 32).astype(np.uint8)
                writer.write(label_conn, t, _image(gt, "mono8", t))
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lite.safetensors"
    save_artifact(path, create_model(preset("lite", input_size=(64, 96))), UAVID)
    return path


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return write_bag(tmp_path_factory.mktemp("bags") / "flight")


def _cfg(bag, out, artifact, **kw):
    params = (("model_path", str(artifact)), ("num_threads", 1)) + kw.pop("params", ())
    kw.setdefault("in_process", True)   # the report logic; test_node_in_its_own_process below
    return ReplayConfig(bag=bag, out_dir=out, params=params, progress=False, domain_id=DOMAIN,
                        frame_timeout_s=120.0, **kw)


def _bag_messages(path):
    store = get_typestore(Stores.ROS2_KILTED)
    for t in ("ssp_msgs/msg/SegmentationStatus", "ssp_msgs/msg/ClassInfo"):
        ensure_type(store, t)
    out = {}
    with AnyReader([path], default_typestore=store) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    return out


def _labels(run):
    return [decode_labels(r.labels_png) for r in run.records]


def test_lockstep_twice_gives_identical_labels_and_a_complete_report(bag, artifact, tmp_path):
    first = replay(_cfg(bag, tmp_path / "a", artifact, label_topic="/camera/labels"))
    second = replay(_cfg(bag, tmp_path / "b", artifact, compare=False, video=False))

    # Determinism: every frame answered, the same labels both times.
    assert [r.stamp_ns for r in first.runs["ssp"].records] == \
        [r.stamp_ns for r in second.runs["ssp"].records]
    for a, b in zip(_labels(first.runs["ssp"]), _labels(second.runs["ssp"])):
        assert a.shape == FRAME and np.array_equal(a, b)

    report = json.loads((tmp_path / "a" / "report.json").read_text())
    ssp, image = report["modes"]["ssp"], report["modes"]["image_model"]
    for mode in (ssp, image):
        assert mode["frames_in"] == mode["frames_out"] == N_FRAMES and mode["dropped"] == 0
        assert mode["labelled_frames"] == N_FRAMES and 0.0 <= mode["miou"] <= 1.0
        assert 0.0 <= mode["tc"] <= 1.0 and mode["tc_pairs"] == N_FRAMES - 1
        assert 0.0 <= mode["flip_rate"] <= 1.0
        assert mode["latency_ms"]["p50"] > 0.0 and mode["fps"] > 0.0
    # SSP propagated its state (registration works on these frames); the image model never did.
    assert ssp["registration_success_rate"] == 1.0 and ssp["resets"] == 0
    assert ssp["temporal_state_used_rate"] == pytest.approx((N_FRAMES - 1) / N_FRAMES)
    assert image["temporal_state_used_rate"] == 0.0
    assert report["input"]["storage"] == "sqlite3" and report["model"]["class_set"] == "uavid"
    for name in report["files"].values():
        assert (tmp_path / "a" / name).exists(), name
    assert "| TC |" in (tmp_path / "a" / "report.md").read_text()
    assert not list(tmp_path.glob(".*partial*"))

    # The output bag holds the inputs and every node topic of both runs, stamped as the input.
    msgs = _bag_messages(tmp_path / "a" / "bag")
    assert len(msgs["/camera/image_raw"]) == len(msgs["/camera/labels"]) == N_FRAMES
    for ns in ("/ssp", "/image_model"):
        for topic in ("labels", "color", "overlay", "confidence", "status"):
            assert len(msgs[f"{ns}/{topic}"]) == N_FRAMES, f"{ns}/{topic}"
        assert msgs[f"{ns}/class_info"][0].class_names == list(UAVID.names)
    bag_labels = [np.asarray(m.data).reshape(FRAME) for m in msgs["/ssp/labels"]]
    for a, b in zip(bag_labels, _labels(first.runs["ssp"])):
        assert np.array_equal(a, b)
    assert all(s.name.startswith(("/ssp/ssp_node", "/image_model/ssp_node"))
               for m in msgs.get("/diagnostics", []) for s in m.status)


def test_realtime_compressed_mcap(artifact, tmp_path):
    bag = write_bag(tmp_path / "rt", storage="mcap", labels=False, compressed=True)
    result = replay(_cfg(bag, tmp_path / "out", artifact, mode="realtime", rate=2.0,
                         compare=False, video=False))
    ssp = result.report["modes"]["ssp"]
    assert ssp["frames_in"] == N_FRAMES
    assert ssp["frames_out"] + ssp["dropped"] == N_FRAMES and ssp["frames_out"] >= 1
    assert ssp["miou"] is None and ssp["labelled_frames"] == 0
    assert result.report["input"]["storage"] == "mcap"
    assert list((tmp_path / "out" / "bag").glob("*.mcap"))
    # CompressedImage input is published (and recorded) as rgb8 sensor_msgs/Image.
    msgs = _bag_messages(tmp_path / "out" / "bag")
    assert msgs["/camera/image_raw"][0].encoding == "rgb8"


def test_a_resolution_change_and_a_stamp_going_back_mid_bag(artifact, tmp_path):
    # A camera reconfigured mid-flight (96x128 -> 64x96) and a stamp that goes backwards: the
    # node resets for each and the report scores every frame, with no TC pair across sizes.
    big = [f for f, _ in synthetic_frames(FRAME, 4, seed=1, speed=2.0)]
    small = [f for f, _ in synthetic_frames((64, 96), 2, seed=1, speed=2.0)]
    stamps = [1.0, 1.1, 0.95, 1.2, 1.3, 1.4]
    bag = tmp_path / "reconfigured"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/camera/image_raw", IMAGE, typestore=TS)
        for k, (rgb, stamp) in enumerate(zip(big + small, stamps)):
            writer.write(conn, 1_000_000_000 + k * 100_000_000,
                         _image(rgb, "rgb8", int(round(stamp * 1e9))))
    result = replay(_cfg(bag, tmp_path / "out", artifact, video=True))
    for mode in result.report["modes"].values():
        assert mode["frames_in"] == mode["frames_out"] == 6 and mode["dropped"] == 0
        assert mode["tc_pairs"] == 4     # (0,1) (1,2) (2,3) (4,5); none from 96x128 to 64x96
        assert mode["reset_reasons"]["time_backwards"] == 1
        assert mode["reset_reasons"]["size_change"] == 1
    assert [lab.shape for lab in _labels(result.runs["ssp"])] == [FRAME] * 4 + [(64, 96)] * 2
    assert (tmp_path / "out" / "side_by_side.mp4").stat().st_size > 0


@pytest.mark.parametrize("case, match", [
    ("missing_topic", r"bag .*flight has no image topic /camera/nope; its topics: "
                      r"/camera/image_raw"),
    ("no_frames", r"bag .*empty has no messages on topic /camera/image_raw"),
    ("corrupt", r"bag .*corrupt cannot be opened .*image topic /camera/image_raw"),
    ("bad_labels", r"label topic /camera/image_raw has encoding 'rgb8'"),
    ("bad_encoding", r"bag .*odd: frame stamped 1000000000 ns on /camera/image_raw: "
                     r"unknown image encoding 'yuv9'"),
    ("unknown_param", r"ssp_node has no parameter\(s\) no_such_param"),
    ("no_labels", r"publish_labels false cannot be replayed"),
    ("other_topics", r"image_topics \['cam0/image'\] cannot be replayed: ssp_replay feeds "
                     r"the node's input topic 'image'"),
    ("compressed_input", r"input_transport 'compressed' cannot be replayed"),
    ("no_bag", r"bag .*nowhere does not exist"),
])
def test_unusable_input_fails_clearly_and_leaves_nothing(case, match, bag, artifact, tmp_path):
    kw = {}
    path = bag
    if case == "missing_topic":
        kw["image_topic"] = "/camera/nope"
    elif case == "no_frames":
        path = write_bag(tmp_path / "empty", n=0)
    elif case == "corrupt":
        path = write_bag(tmp_path / "corrupt")
        db = next(path.glob("*.db3"))
        db.write_bytes(db.read_bytes()[:2048])
    elif case == "bad_labels":
        kw.update(image_topic="/camera/labels", label_topic="/camera/image_raw")
    elif case == "bad_encoding":
        path = write_bag(tmp_path / "odd", encoding="yuv9")
    elif case == "unknown_param":
        kw["params"] = (("no_such_param", 1),)
    elif case == "no_labels":
        kw["params"] = (("publish_labels", False),)
    elif case == "other_topics":
        kw["params"] = (("image_topics", ["cam0/image"]),)
    elif case == "compressed_input":
        kw["params"] = (("input_transport", "compressed"),)
    else:
        path = tmp_path / "nowhere"
    with pytest.raises(ReplayError, match=match):
        replay(_cfg(path, tmp_path / "out", artifact, **kw))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("in_process", [True, False])
def test_node_start_failure_cleans_up(bag, tmp_path, in_process):
    with pytest.raises(ReplayError, match="cannot start: model artifact not found"):
        replay(_cfg(bag, tmp_path / "out", tmp_path / "missing.safetensors",
                    in_process=in_process))
    assert not list(tmp_path.iterdir())


def test_node_in_its_own_process(bag, artifact, tmp_path):
    result = replay(_cfg(bag, tmp_path / "out", artifact, compare=False, video=False,
                         in_process=False))
    ssp = result.report["modes"]["ssp"]
    assert ssp["frames_in"] == ssp["frames_out"] == N_FRAMES and ssp["dropped"] == 0
    assert result.report["replay"]["node_process"] == "own process"
    assert "/ssp/status" in _bag_messages(tmp_path / "out" / "bag")


def test_existing_output_needs_overwrite(bag, artifact, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not written by ssp_replay; ssp_replay only "
                                          "replaces its own outputs, even with --overwrite"):
        replay(_cfg(bag, tmp_path / "out", artifact, overwrite=True))
    assert (tmp_path / "out" / "keep.txt").exists()


def test_parameters_from_file_and_command_line(tmp_path):
    values = load_params_file(ROOT / "config" / "uav.yaml")
    assert values["stream.max_gap_s"] == 0.5 and "registration.method" in values
    cfg = ReplayConfig(bag=tmp_path, params_file=ROOT / "config" / "uav.yaml",
                       params=(parse_param("stream.max_gap_s:=2.0"),
                               parse_param("device:=cpu")))
    ssp = node_parameters(cfg, "ssp")
    assert ssp["stream.max_gap_s"] == 2.0 and isinstance(ssp["stream.max_gap_s"], float)
    # The comparison run is the same node with temporal propagation switched off.
    assert node_parameters(cfg, "image_model") == {**ssp, **IMAGE_MODEL_OVERRIDES}
    with pytest.raises(ValueError, match="name:=value"):
        parse_param("device=cpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text("other_node:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(ReplayError, match="no '/\\*\\*' or 'ssp_node' section"):
        load_params_file(bad)


def test_cli_rejects_bad_options_and_reports_errors(tmp_path, capsys):
    assert main([str(tmp_path), "--rate", "0"]) == 2
    assert "ssp_replay: error: rate must be a positive" in capsys.readouterr().err
    assert main([str(tmp_path / "none"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ssp_msgs_types_register_from_msg_files():
    store = get_typestore(Stores.ROS2_KILTED)
    ensure_type(store, "ssp_msgs/msg/SegmentationStatus")
    status = store.types["ssp_msgs/msg/SegmentationStatus"]
    assert status.RESET_TIME_GAP == 4
    with pytest.raises(ReplayError, match="no message definition for nope_msgs/msg/X"):
        ensure_type(store, "nope_msgs/msg/X")


@pytest.mark.parametrize("params", [
    {"stream.max_gap_s": 1},                        # an integer for a double
    {"stream.max_gap_s": 1.0, "num_threads": 1.5},  # a double for an integer
    {"overlay_alpha": 2.0},                         # a value the node's config refuses
    {"stream.max_gap_s": 1.0, "registration.method": "orb"},
])
def test_parameter_files_are_checked_as_the_node_checks_them(params, artifact, tmp_path):
    # ssp_node is the reference: the replay refuses exactly what the node refuses to start on.
    file = tmp_path / "k.yaml"
    file.write_text(yaml.safe_dump({"ssp_node": {"ros__parameters": params}}))
    cfg = ReplayConfig(bag=tmp_path, params_file=file)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    try:
        node = SegmentationNode(context=context, parameter_overrides=[
            Parameter("model_path", value=str(artifact)),
            *(Parameter(k, value=v) for k, v in load_params_file(file).items())])
        node.destroy_node()
        node_refuses = None
    except StartupError as err:
        node_refuses = str(err)
    finally:
        rclpy.shutdown(context=context)
    if node_refuses is None:
        assert node_parameters(cfg, "ssp") == params
    else:
        with pytest.raises(ReplayError) as info:
            node_parameters(cfg, "ssp")
        key = "must be of type" if "must be of type" in node_refuses else "overlay_alpha"
        assert key in node_refuses and key in str(info.value)


@pytest.mark.parametrize("args, needles", [
    (["-p", "stream.input_size:=[1,"], ("-p stream.input_size:=[1,", "not valid YAML")),
    (["--params-file", "{bad}"], ("--params-file", "k.yaml: cannot read it", "utf-8")),
    (["--params-file", "{missing}"], ("--params-file", "missing.yaml: no such file")),
    (["-p", "stream.max_gap_s:=1"], ("'stream.max_gap_s' must be of type double",)),
    (["-p", "publish_labels:=false"], ("publish_labels false cannot be replayed",)),
], ids=["malformed_value", "not_utf8", "missing_file", "integer_for_double", "no_labels"])
def test_bad_node_parameters_are_one_line_before_anything_runs(args, needles, bag, tmp_path,
                                                               capsys):
    bad = tmp_path / "k.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    args = [a.format(bad=bad, missing=tmp_path / "missing.yaml") for a in args]
    before = snapshot(tmp_path)
    start = time.monotonic()
    assert main([str(bag), "--out", str(tmp_path / "out"), "--no-progress", *args]) == 2
    assert_one_error_line(capsys.readouterr().err, "ssp_replay", *needles)
    assert time.monotonic() - start < 5.0     # refused up front: no node, no 300 s wait
    assert snapshot(tmp_path) == before


def test_user_parameters_never_reach_the_replays_own_rcl(bag, artifact, tmp_path, capfd,
                                                         monkeypatch):
    # The console script's argv holds the user's -p name:=value; rcl read it as remap rules.
    args = [str(bag), "--out", str(tmp_path / "out"), "--no-progress", "--no-compare",
            "--no-video", "--in-process", "--domain-id", str(DOMAIN),
            "-p", f"model_path:={artifact}", "-p", "num_threads:=1"]
    monkeypatch.setattr(sys, "argv", ["ssp_replay", *args])
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "remap rule" not in err and "deprecated" not in err, err
    assert out.strip().splitlines()[-1] == f"report, plots and bag in {tmp_path / 'out'}"


def test_a_node_that_never_advertises_labels_fails_in_seconds(bag, artifact, tmp_path,
                                                              monkeypatch):
    # Were image_topics accepted, the node's labels would be /ssp/cam0/labels: the replay
    # gives up a few seconds after the node's class_info appears (was 300 s).
    monkeypatch.setattr(replay_config, "check_replayable", lambda values: None)
    start = time.monotonic()
    with pytest.raises(ReplayError, match=r"did not advertise \['/ssp/labels', '/ssp/status'\] "
                                          r"within 5 s of its class_info \(it advertises "
                                          r".*/ssp/class_info"):
        replay(_cfg(bag, tmp_path / "out", artifact, compare=False, in_process=False,
                    params=(("image_topics", ["cam0/image"]),)))
    assert time.monotonic() - start < 60.0
    assert not list(tmp_path.iterdir())


def test_ground_truth_outside_the_class_set_fails_before_any_frame(artifact, tmp_path, capsys):
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        images = writer.add_connection("/camera/image_raw", IMAGE, typestore=TS)
        labels = writer.add_connection("/camera/labels", IMAGE, typestore=TS)
        for k, (rgb, _) in enumerate(synthetic_frames(FRAME, 4, seed=1, speed=2.0)):
            t = 1_000_000_000 + k * 100_000_000
            gt = np.full(FRAME, 255 if k == 0 else 3, np.uint8)   # 255 = ignore: fine
            gt[:4, :4] = 200 if k in (2, 3) else gt[0, 0]
            writer.write(images, t, _image(rgb, "rgb8", t))
            writer.write(labels, t, _image(gt, "mono8", t))
    before = snapshot(tmp_path)
    args = [str(bag), "--label-topic", "/camera/labels", "--out", str(tmp_path / "out"),
            "--no-progress", "--in-process", "--domain-id", str(DOMAIN),
            "-p", f"model_path:={artifact}", "-p", "num_threads:=1"]
    start = time.monotonic()
    assert main(args) == 2
    assert_one_error_line(capsys.readouterr().err, "ssp_replay",
                          "label message stamped 1200000000 ns on /camera/labels holds class "
                          "ids 200 outside the model's 8 classes [0, 8) (255 = ignore) "
                          "(and 1 more masks)")
    assert time.monotonic() - start < 10.0     # at the node's class_info, not after the run
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_output_that_cannot_be_written_is_one_line_up_front(bag, tmp_path, capsys):
    for out in (Path("/proc/sspout"), Path("/proc/sspout/deeper")):
        start = time.monotonic()
        assert main([str(bag), "--out", str(out), "--no-progress"]) == 2
        assert_one_error_line(capsys.readouterr().err, "ssp_replay",
                              f"--out {out}: cannot write in /proc")
        assert time.monotonic() - start < 5.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -f")
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_full_disk_is_one_line_naming_out(bag, artifact, tmp_path, storage):
    # ulimit -f: every write past 256 KiB fails (EFBIG) as on a full disk (Python ignores
    # SIGXFSZ). The output bag (inputs + four images per frame) is larger than that.
    out = tmp_path / "out"
    args = [str(bag), "--out", str(out), "--no-progress", "--no-compare", "--in-process",
            "--storage", storage, "--domain-id", str(DOMAIN), "-p", f"model_path:={artifact}",
            "-p", "num_threads:=1"]
    proc = subprocess.run(
        ["bash", "-c", 'ulimit -f 256 && exec "$@"', "bash", sys.executable, "-c",
         console_code("ssp_replay"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ROS_LOG_DIR": str(tmp_path / "ros_log")})
    assert proc.returncode == 1, proc.stderr
    assert "Exception in thread" not in proc.stderr
    assert_one_error_line(proc.stderr, "ssp_replay", f"cannot write the output bag {out}/bag")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
