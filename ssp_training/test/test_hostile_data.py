"""``ssp_data`` under hostile input (issue 17 items 4, 9, 11): one line, nothing clobbered."""

import io
import json
import os
from pathlib import Path
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
from ssp_perception.files import OUTPUT_MARKER
from ssp_perception.testing import console_code
from ssp_training.data.archive import _copy_capped, ArchiveError, MAX_READ_BYTES
from ssp_training.data.cli import main
from ssp_training.data.prepare import prepare_uavid, PrepareError
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.data.to_bag import write_bag

UAVID_ROOT = "uavid_v1.5_official_release"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Return a tiny synthetic dataset to convert."""
    root = tmp_path_factory.mktemp("ds") / "synth"
    return generate_dataset(root, SynthConfig(size=(32, 48), frames=3, sequences=1,
                                              val_fraction=0.0), progress=False)


def _run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as end:   # argparse's usage errors
        rc = end.code
    return rc, capsys.readouterr().err


# ---------------------------------------------------------------- item 4: --force clobbering
@pytest.mark.parametrize("command", ["synth", "to-bag"])
def test_force_never_replaces_a_regular_file(command, dataset, tmp_path, capsys,
                                             assert_one_error_line, snapshot):
    target = tmp_path / "notes.txt"
    target.write_text("the user's file\n")
    before = snapshot(tmp_path)
    args = (["synth", "--sequences", "1", "--frames", "2", "--size", "32x48", "--quiet"]
            if command == "synth" else ["to-bag", "--root", str(dataset), "--split", "train",
                                        "--quiet"])
    rc, err = _run(capsys, *args, "--out", str(target), "--force")
    assert rc == 2
    assert_one_error_line(err, "ssp_data", str(target), "not a folder")
    assert snapshot(tmp_path) == before   # no .notes.txt.old-PID, no staging folder


@pytest.mark.parametrize("command", ["synth", "to-bag"])
def test_force_never_replaces_a_foreign_folder(command, dataset, tmp_path, capsys,
                                               assert_one_error_line, snapshot):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("months of work\n")
    before = snapshot(tmp_path)
    args = (["synth", "--sequences", "1", "--frames", "2", "--size", "32x48", "--quiet"]
            if command == "synth" else ["to-bag", "--root", str(dataset), "--split", "train",
                                        "--quiet"])
    rc, err = _run(capsys, *args, "--out", str(target), "--force")
    assert rc == 2
    assert_one_error_line(err, "ssp_data", "not written by ssp_data", "--force")
    assert snapshot(tmp_path) == before


def test_force_replaces_outputs_written_before_the_marker(dataset, tmp_path, capsys,
                                                          assert_one_error_line, snapshot):
    # Outputs of earlier versions carry no marker; their exact layout identifies them.
    old_synth = tmp_path / "old_synth"
    generate_dataset(old_synth, SynthConfig(size=(32, 48), frames=2, sequences=1),
                     progress=False)
    (old_synth / OUTPUT_MARKER).unlink()
    old_bag = write_bag(dataset, "train", tmp_path / "old_bag", progress=False)
    (old_bag / OUTPUT_MARKER).unlink()
    assert main(["synth", "--out", str(old_synth), "--sequences", "1", "--frames", "3",
                 "--size", "32x48", "--quiet", "--force"]) == 0
    assert json.loads((old_synth / "dataset.json").read_text())["generator"]["frames"] == 3
    assert main(["to-bag", "--root", str(dataset), "--split", "train", "--out", str(old_bag),
                 "--storage", "mcap", "--force", "--quiet"]) == 0
    assert (old_bag / "old_bag.mcap").is_file() and not (old_bag / "old_bag.db3").exists()
    # ... but one extra file makes the folder the user's.
    (old_bag / OUTPUT_MARKER).unlink()
    (old_bag / "README").write_text("my notes\n")
    before = snapshot(tmp_path)
    rc, err = _run(capsys, "to-bag", "--root", str(dataset), "--split", "train", "--out",
                   str(old_bag), "--force", "--quiet")
    assert rc == 2 and snapshot(tmp_path) == before
    assert_one_error_line(err, "ssp_data", str(old_bag))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old_bag", "old_synth"]


# ------------------------------------------------------- item 11: to-bag --topic-prefix
# ------------------------------------------------- numbers that never finish or break stamps
@pytest.mark.parametrize("flag,value,needle", [
    ("--fps", "inf", "argument --fps: expected a number in 0.1..1000"),   # was "fps": Infinity
    ("--fps", "nan", "argument --fps: expected a number in 0.1..1000"),
    ("--vehicles", "1e9", "argument --vehicles: expected a number in 0..100"),   # hung
    ("--persons", "1e6", "argument --persons: expected a number in 0..100"),
    ("--seed", "-1", "argument --seed: expected an integer >= 0, got '-1'"),   # no flag named
])
def test_synth_numbers_out_of_range(flag, value, needle, tmp_path, capsys,
                                    assert_one_error_line):
    rc, err = _run(capsys, "synth", "--out", str(tmp_path / "d"), "--sequences", "1",
                   "--frames", "2", "--size", "32x48", "--quiet", flag, value)
    assert rc == 2
    assert_one_error_line(err, "ssp_data", needle)
    assert list(tmp_path.iterdir()) == []


def test_synth_config_refuses_non_finite_fps_and_crowds():
    for field, value in (("fps", float("inf")), ("moving_vehicles", 1e9),
                         ("moving_persons", float("nan"))):
        with pytest.raises(ValueError, match=field):
            SynthConfig(size=(32, 48), **{field: value})


@pytest.mark.parametrize("fps,needle", [
    ("1e-9", "--fps 1e-09 stamps the last of 3 frames 2e+09 s after the bag's start, beyond "
             "what a ROS time holds (int32 seconds, 2038-01-19); use --fps >= "),
    ("1e12", "--fps must be a number in (0, 1e+09], got 1e+12"),
])
def test_to_bag_fps_whose_stamps_do_not_fit_a_ros_time(fps, needle, dataset, tmp_path, capsys,
                                                       assert_one_error_line):
    rc, err = _run(capsys, "to-bag", "--root", str(dataset), "--split", "train", "--quiet",
                   "--out", str(tmp_path / "bag"), "--fps", fps)
    assert rc == 2    # 1e-9 was a struct.error traceback from the CDR serialiser
    assert_one_error_line(err, "ssp_data", needle)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------- outputs this user may not write; a full stdout
SYSFS = pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs (Linux)")


@SYSFS
@pytest.mark.parametrize("command", ["synth", "to-bag"])
def test_an_output_folder_that_cannot_be_created_is_one_line(command, dataset, capsys,
                                                             assert_one_error_line):
    # /sys takes no new folder, also from root (whom chmod does not stop).
    args = (["synth", "--sequences", "1", "--frames", "2", "--size", "32x48", "--quiet"]
            if command == "synth" else ["to-bag", "--root", str(dataset), "--split", "train",
                                        "--quiet"])
    rc, err = _run(capsys, *args, "--out", "/sys/ssp_out")
    assert rc == 2
    line = assert_one_error_line(err, "ssp_data", "/sys/ssp_out: Operation not permitted")
    assert "staging" not in line


def test_info_into_a_full_stdout_is_one_line_and_status_1(dataset):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", console_code("ssp_data"), "info",
                               str(dataset)], stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    assert done.returncode == 1
    assert done.stderr == ("ssp_data: error: cannot write the output (standard output or a "
                           "file): No space left on device\n")


@pytest.mark.parametrize("prefix", ["bad topic!!", "camera", "/cam//era", "/1cam", "/cam/"])
def test_invalid_topic_prefix(prefix, dataset, tmp_path, capsys, assert_one_error_line):
    rc, err = _run(capsys, "to-bag", "--root", str(dataset), "--split", "train", "--out",
                   str(tmp_path / "bag"), "--topic-prefix", prefix, "--quiet")
    assert rc == 2
    assert_one_error_line(err, "ssp_data", "--topic-prefix", repr(prefix), "ROS 2 topic name")
    assert list(tmp_path.iterdir()) == []


def test_root_topic_prefix_is_valid(dataset, tmp_path, capsys):
    assert main(["to-bag", "--root", str(dataset), "--split", "train", "--out",
                 str(tmp_path / "bag"), "--topic-prefix", "/", "--quiet"]) == 0
    assert "/image_raw, /camera_info, /labels" in capsys.readouterr().out


@pytest.mark.parametrize("clip", ["../../elsewhere/data/synth_000", "..", "a/b"])
def test_to_bag_clip_must_be_a_clip_name(clip, dataset, tmp_path, capsys,
                                         assert_one_error_line):
    rc, err = _run(capsys, "to-bag", "--root", str(dataset), "--clip", clip, "--out",
                   str(tmp_path / "bag"), "--quiet")
    assert rc == 2
    assert_one_error_line(err, "ssp_data", "--clip", repr(clip), "is not a clip name")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------- item 9: prepare --size
def _video(path, n=4, size=(48, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, size[::-1])
    for i in range(n):
        writer.write(np.full((*size, 3), 40 + 10 * i, np.uint8))
    writer.release()
    return path.read_bytes()


def _png(size=(48, 64)):
    return cv2.imencode(".png", np.zeros((*size, 3), np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def uavid_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp("dl")
    path = d / "uavid.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{UAVID_ROOT}/uavid_train/seq1/images.mp4", _video(d / "v.mp4"))
        zf.writestr(f"{UAVID_ROOT}/uavid_train/seq1/Labels/000002.png", _png())
    return path


@pytest.mark.parametrize("size", ["0x0", "100000x100000", "-4x8", "12"])
def test_prepare_size_refused_before_anything_is_written(size, uavid_zip, tmp_path, capsys,
                                                         assert_one_error_line):
    out = tmp_path / "out"
    rc, err = _run(capsys, "prepare", "uavid", "--uavid", str(uavid_zip), "--out", str(out),
                   f"--size={size}", "--quiet")
    assert rc == 2
    assert_one_error_line(err, "ssp_data prepare uavid", "--size", size)
    assert list(tmp_path.iterdir()) == []   # no out/, no .partial, no .cache


@pytest.mark.parametrize("size", [(0, 0), (100000, 100000)])
def test_prepare_api_checks_the_size_too(size, uavid_zip, tmp_path):
    with pytest.raises(PrepareError, match="--size must be HxW with sides 1..8192"):
        prepare_uavid(uavid_zip, tmp_path / "out", size=size, progress=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------- item 11: per-member archive size cap
def _bomb_zip(path, member, mib=300):
    """Write a zip whose large member is ``mib`` MiB of zeros (~300 KiB compressed)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if not member.endswith(".mp4"):
            zf.writestr(f"{UAVID_ROOT}/uavid_train/seq1/images.mp4", _video(path.with_suffix(
                ".mp4")))
        with zf.open(member, "w", force_zip64=True) as f:
            zero = bytes(1 << 20)
            for _ in range(mib):
                f.write(zero)
        if member.endswith(".mp4"):
            zf.writestr(f"{UAVID_ROOT}/uavid_train/seq1/Labels/000002.png", _png())
    return path


@pytest.mark.parametrize("member", ["uavid_train/seq1/images.mp4",
                                    "uavid_train/seq1/Labels/000002.png"])
def test_zip_bomb_member_refused_before_extraction(member, tmp_path_factory, tmp_path, capsys,
                                                   assert_one_error_line):
    bomb = _bomb_zip(tmp_path_factory.mktemp("bomb") / "uavid.zip", f"{UAVID_ROOT}/{member}")
    assert bomb.stat().st_size < 400_000   # 300 MiB of zeros: ~300 KB compressed
    out = tmp_path / "out"
    rc, err = _run(capsys, "prepare", "uavid", "--uavid", str(bomb), "--out", str(out),
                   "--quiet")
    assert rc == 2
    assert_one_error_line(err, "ssp_data", member.rsplit("/", 1)[-1], "refused before "
                          "extraction")
    assert list(tmp_path.iterdir()) == []   # no out/, no .cache with 300 MiB of zeros


def test_streaming_cap_stops_a_member_larger_than_declared():
    with pytest.raises(ArchiveError, match="more than 1 MiB; refused"):
        _copy_capped(io.BytesIO(bytes(3 << 20)), None, 1 << 20, "member 'x'")
    assert len(_copy_capped(io.BytesIO(bytes(100)), None, MAX_READ_BYTES, "x")) == 100


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_prepare_refuses_inputs_that_are_not_files_or_folders(special, tmp_path, capsys,
                                                              assert_one_error_line):
    if special == "fifo":
        special = tmp_path / "uavid.zip"
        os.mkfifo(special)   # reading it would block until a writer appears
    out = tmp_path / "out"
    rc, err = _run(capsys, "prepare", "uavid", "--uavid", str(special), "--out", str(out),
                   "--quiet")
    assert rc == 2
    assert_one_error_line(err, "ssp_data", str(special), "not a regular file")
    assert not out.exists()
