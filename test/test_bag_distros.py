"""Bags cross ROS 2 distributions: a bag written for Jazzy or for Kilted replays on this one.

Each bag is written with the rosbags typestore of one distribution (its message definitions and
type hashes go into the bag), replayed through the real node on the distribution this
environment runs, and the node's output bag is read back with each distribution's typestore.
`make test` (Kilted) and `make test ROS_DISTRO=jazzy` both run it, so Jazzy -> Kilted and
Kilted -> Jazzy are both covered.
"""

import os

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.typesys import get_typestore, Stores

from ssp_perception.artifact import save_artifact
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.models import create_model
from ssp_perception.ros.replay.bag import ensure_type
from ssp_perception.ros.replay.config import ReplayConfig
from ssp_perception.ros.replay.report import decode_labels
from ssp_perception.ros.replay.run import replay
from ssp_perception.synthetic import synthetic_frames

STORES = {"jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
IMAGE = "sensor_msgs/msg/Image"
STATUS = "ssp_msgs/msg/SegmentationStatus"
FRAME = (96, 128)
N_FRAMES = 4
# A private ROS domain per test process (test_replay.py uses 40-99).
DOMAIN = 160 + os.getpid() % 60


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "lite.safetensors"
    save_artifact(path, create_model(preset("lite", input_size=(64, 96))), UAVID)
    return path


def write_bag(path, store):
    """Write N_FRAMES rgb8 frames at 10 Hz with the given distribution's typestore."""
    ts = get_typestore(store)
    with Writer(path, version=9) as writer:
        conn = writer.add_connection("/camera/image_raw", IMAGE, typestore=ts)
        for k, (rgb, _) in enumerate(synthetic_frames(FRAME, N_FRAMES, seed=1, speed=2.0)):
            t = 1_000_000_000 + k * 100_000_000
            stamp = ts.types["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9)
            msg = ts.types[IMAGE](
                header=ts.types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"),
                height=FRAME[0], width=FRAME[1], encoding="rgb8", is_bigendian=0,
                step=FRAME[1] * 3, data=rgb.reshape(-1))
            writer.write(conn, t, ts.serialize_cdr(msg, IMAGE))
    return path


def _read(bag, store_id):
    store = get_typestore(store_id)
    ensure_type(store, STATUS)
    got = {}
    with AnyReader([bag], default_typestore=store) as reader:
        for conn, _, raw in reader.messages():
            got.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    return got


def test_bags_written_for_either_distribution_replay_here_alike(artifact, tmp_path):
    labels = {}
    for written_for, store_id in STORES.items():
        out = tmp_path / f"out_{written_for}"
        result = replay(ReplayConfig(
            bag=write_bag(tmp_path / f"flight_{written_for}", store_id), out_dir=out,
            compare=False, video=False, progress=False, domain_id=DOMAIN, frame_timeout_s=120.0,
            params=(("model_path", str(artifact)), ("num_threads", 1))))
        ssp = result.report["modes"]["ssp"]
        assert ssp["frames_in"] == ssp["frames_out"] == N_FRAMES and ssp["dropped"] == 0
        assert ssp["registration_success_rate"] == 1.0
        labels[written_for] = [decode_labels(r.labels_png) for r in result.runs["ssp"].records]

        # The node's output bag, written on this distribution, reads with either typestore.
        for reader_for, reader_store in STORES.items():
            got = _read(out / "bag", reader_store)
            assert len(got["/camera/image_raw"]) == len(got["/ssp/status"]) == N_FRAMES
            in_bag = [np.asarray(m.data).reshape(FRAME) for m in got["/ssp/labels"]]
            assert len(in_bag) == N_FRAMES, (written_for, reader_for)
            assert all(np.array_equal(a, b) for a, b in zip(in_bag, labels[written_for]))
    # The same frames give the same labels whichever distribution's typestore wrote them.
    assert all(np.array_equal(a, b) for a, b in zip(labels["jazzy"], labels["kilted"]))
