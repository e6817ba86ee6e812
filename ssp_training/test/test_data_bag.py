"""ssp_data to-bag: bags read back with rosbags match the dataset frame for frame."""

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_typestore
from ssp_training.data import files
from ssp_training.data.cli import main
from ssp_training.data.dataset import clip_frames, DatasetInfo, list_clips, sibling
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.data.to_bag import CLIP_GAP_NS, DEFAULT_START_NS, topics, TYPESTORE
from ssp_training.data.to_bag import write_bag
import yaml


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    cfg = SynthConfig(size=(32, 48), frames=4, sequences=3, seed=1, val_fraction=0.67)
    out = generate_dataset(tmp_path_factory.mktemp("bag") / "synth", cfg, progress=False)
    # One unlabelled frame: it must get an image but no label message.
    sibling(clip_frames(out, list_clips(out, "val")[1])[2], "mask").unlink()
    return out


def _read(bag):
    store = get_typestore(TYPESTORE)
    out = {}
    with Reader(bag) as reader:
        for conn, t, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((t, msg))
    return out


@pytest.mark.parametrize("storage, compressed", [("sqlite3", False), ("mcap", True)])
def test_bag_round_trip(root, tmp_path, storage, compressed):
    bag = write_bag(root, "val", tmp_path / "val_bag", storage=storage, compressed=compressed,
                    progress=False)
    names = topics("/camera")
    msgs = _read(bag)
    frames = [f for c in list_clips(root, "val") for f in clip_frames(root, c)]
    expected_topics = {names["image"], names["info"], names["labels"]} | (
        {names["compressed"]} if compressed else set())
    assert set(msgs) == expected_topics
    assert len(msgs[names["image"]]) == len(msgs[names["info"]]) == len(frames) == 8
    assert len(msgs[names["labels"]]) == 7
    stamps = []
    for (t, img), frame in zip(msgs[names["image"]], frames):
        assert img.encoding == "rgb8" and img.step == 48 * 3
        assert (img.height, img.width) == (32, 48)
        assert img.header.stamp.sec * 10 ** 9 + img.header.stamp.nanosec == t
        np.testing.assert_array_equal(img.data.reshape(32, 48, 3), files.read_image(frame))
        stamps.append(t)
    steps = np.diff(stamps)
    assert stamps[0] == DEFAULT_START_NS
    assert list(steps[[0, 1, 2, 4, 5, 6]]) == [50_000_000] * 6          # 20 fps in a clip
    assert steps[3] == 50_000_000 + CLIP_GAP_NS                          # gap between clips
    # Labels pair with frames by stamp, and hold the mask.
    by_stamp = dict(zip(stamps, frames))
    for t, lab in msgs[names["labels"]]:
        assert lab.encoding == "mono8" and lab.step == 48
        assert lab.header.stamp.sec * 10 ** 9 + lab.header.stamp.nanosec == t
        mask = files.read_image(sibling(by_stamp[t], "mask"), grayscale=True)
        np.testing.assert_array_equal(lab.data.reshape(32, 48), mask)
    assert stamps[6] not in {t for t, _ in msgs[names["labels"]]}       # the unlabelled one
    info = msgs[names["info"]][0][1]
    np.testing.assert_allclose(info.k.reshape(3, 3), DatasetInfo.load(root).camera_matrix)
    if compressed:
        t, c = msgs[names["compressed"]][0]
        assert t == stamps[0] and "jpeg" in c.format
        jpg = cv2.imdecode(c.data, cv2.IMREAD_COLOR)[..., ::-1]
        assert np.abs(jpg.astype(int) - files.read_image(frames[0])).mean() < 8
    # metadata.yaml is what `ros2 bag info` reads.
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == storage
    assert meta["message_count"] == sum(len(v) for v in msgs.values())
    counts = {m["topic_metadata"]["name"]: m["message_count"]
              for m in meta["topics_with_message_count"]}
    assert counts == {k: len(v) for k, v in msgs.items()}
    assert all((bag / p).is_file() for p in meta["relative_file_paths"])


def test_single_clip_custom_fps_and_prefix(root, tmp_path, capsys):
    clip = list_clips(root, "train")[0]
    out = tmp_path / "one"
    assert main(["to-bag", "--root", str(root), "--clip", clip, "--out", str(out), "--fps", "10",
                 "--topic-prefix", "/drone/cam", "--quiet"]) == 0
    assert "/drone/cam/labels" in capsys.readouterr().out
    msgs = _read(out)
    stamps = [t for t, _ in msgs["/drone/cam/image_raw"]]
    assert len(stamps) == 4 and set(np.diff(stamps)) == {100_000_000}
    # An existing bag is kept unless --force; no temporary folder is left behind.
    assert main(["to-bag", "--root", str(root), "--clip", clip, "--out", str(out),
                 "--quiet"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]
    with pytest.raises(ValueError, match="neither a split"):
        write_bag(root, "nope", tmp_path / "x", progress=False)
