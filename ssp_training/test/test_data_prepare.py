"""ssp_data prepare on miniature fake downloads with the real names and layout."""

import io
import json
import tarfile
import zipfile

import cv2
import numpy as np
import pytest
from ssp_perception.classes import RURALSCAPES, UAVID
from ssp_training.data import files
from ssp_training.data.archive import ArchiveError, open_source
from ssp_training.data.cli import main
from ssp_training.data.dataset import DatasetInfo, list_clips
from ssp_training.data.prepare import prepare_ruralscapes, prepare_uavid, PrepareError
from ssp_training.data.sources import colours_to_ids, RURALSCAPES_COLOURS

H, W = 48, 64
UAVID_ROOT = "uavid_v1.5_official_release"


def _level(i):
    """Grey level that tags video frame i (survives lossy coding within a few levels)."""
    return 20 + (i * 37) % 200


def _video(path, n, fps, lead=()):
    """Write frames tagged 0..n-1, after extra ``lead`` frames of the given grey levels."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for level in [*lead, *(_level(i) for i in range(n))]:
        writer.write(np.full((H, W, 3), level, np.uint8))
    writer.release()
    return path.read_bytes()


def _png(rgb_or_ids):
    img = rgb_or_ids if rgb_or_ids.ndim == 2 else cv2.cvtColor(rgb_or_ids, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", img)[1].tobytes()


def _uavid_label():
    """Colour label: clutter | road | building | static car | moving car | tree, in columns."""
    colours = [(0, 0, 0), (128, 64, 128), (128, 0, 0), (192, 0, 192), (64, 0, 128), (0, 128, 0),
               (64, 64, 0), (128, 128, 0)]
    rgb = np.zeros((H, W, 3), np.uint8)
    for k, c in enumerate(colours):
        rgb[:, k * 8:(k + 1) * 8] = c
    return rgb


def _vdd_label():
    ids = np.zeros((H, W), np.uint8)
    ids[:H // 2, 0:8] = 6       # water over UAVid clutter -> water
    ids[:H // 2, 16:24] = 5     # roof over UAVid building -> roof
    ids[H // 2:, 8:16] = 6      # water over road: must NOT override road
    return ids


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    d = tmp_path_factory.mktemp("downloads")
    train = _video(d / "train.mp4", 160, 20.0)
    val = _video(d / "val.mp4", 101, 20.0)
    label = _png(_uavid_label())
    uavid = {f"{UAVID_ROOT}/uavid_train/seq1/images.mp4": train,
             f"{UAVID_ROOT}/uavid_train/seq1/Labels/000000.png": label,
             f"{UAVID_ROOT}/uavid_train/seq1/Labels/000100.png": label,
             f"{UAVID_ROOT}/uavid_val/seq16/images.mp4": val,
             f"{UAVID_ROOT}/uavid_val/seq16/Labels/000100.png": label,
             f"{UAVID_ROOT}/uavid_test/seq21/images.mp4": val}
    vdd = {f"UAVid7/{s}/{q}/VDD_Labels/000100.png": _png(_vdd_label())
           for s, q in (("train", "seq1"), ("val", "seq16"))}
    rural_label = np.zeros((H, W, 3), np.uint8)
    for k, c in enumerate(list(RURALSCAPES_COLOURS)[:8]):
        rural_label[:, k * 8:(k + 1) * 8] = c
    rural = {}
    for vid in ("DJI_0043", "DJI_0051"):
        rural[f"ruralscapes/videos/{vid}.MP4"] = _video(d / f"{vid}.mp4", 130, 50.0)
        for i in (0, 50, 100, 125):
            rural[f"ruralscapes/labels/manual_labels/{vid}/segfull_{vid}_{i:06d}.png"] = _png(
                rural_label)
    return {"uavid": _zip(d / "uavid_v1.5_official_release.zip", uavid),
            "vdd": _zip(d / "vdd_uavid.zip", vdd), "rural": _zip(d / "ruralscapes.zip", rural),
            "uavid_members": uavid}


def _snapshot(root):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def test_uavid(downloads, tmp_path):
    out = tmp_path / "uavid"
    report = prepare_uavid(downloads["uavid"], out, vdd=downloads["vdd"], size=(24, 32),
                           progress=False)
    assert report.changed and report.sequences_done == 2
    assert list_clips(out, "train") == ["seq1_000", "seq1_001"]
    assert list_clips(out, "val") == ["seq16_000"]
    info = DatasetInfo.load(out)
    assert info.source == "uavid" and info.class_set == UAVID and info.size == (24, 32)
    assert info.fps == 20.0
    clip = out / "data" / "seq1_000"
    stems = sorted(p.stem for p in (clip / "origin").iterdir())
    assert stems == [f"{i:06d}" for i in range(1, 101)]           # frame 0 dropped
    assert sorted(p.stem for p in (clip / "mask").iterdir()) == ["000100"]
    assert len(list((out / "data" / "seq1_001" / "origin").iterdir())) == 59
    # The labelled frame is video frame 100, not a neighbour.
    frame = files.read_image(clip / "origin" / "000100.png")
    assert frame.shape == (24, 32, 3)
    assert abs(float(frame.mean()) - _level(100)) < 6
    assert abs(_level(99) - _level(100)) > 20 and abs(_level(101) - _level(100)) > 20
    # Colours -> ids, VDD overlays, clutter -> ignore; nearest resize keeps the columns.
    mask = files.read_image(clip / "mask" / "000100.png", grayscale=True)
    road, veg, tree, person, vehicle, water, building, roof = range(8)
    top, bottom = mask[2, 1::4], mask[-2, 1::4]     # one pixel per 8-pixel colour column
    assert list(bottom) == [255, road, building, vehicle, vehicle, tree, person, veg]
    assert list(top[:3]) == [water, road, roof]


def test_uavid_rerun_does_nothing_and_other_settings_are_refused(downloads, tmp_path, capsys):
    out = tmp_path / "uavid"
    prepare_uavid(downloads["uavid"], out, size=(24, 32), progress=False)
    before = _snapshot(out)
    assert main(["prepare", "uavid", "--uavid", str(downloads["uavid"]), "--out", str(out),
                 "--size", "24x32", "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _snapshot(out) == before
    # Removing a finished clip redoes just its sequence.
    for p in sorted((out / "data" / "seq16_000").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (out / "data" / "seq16_000").rmdir()
    report = prepare_uavid(downloads["uavid"], out, size=(24, 32), progress=False)
    assert report.sequences_done == 1 and report.sequences_skipped == 1
    assert (out / "data" / "seq16_000" / "mask" / "000100.png").is_file()
    with pytest.raises(PrepareError, match="other settings"):
        prepare_uavid(downloads["uavid"], out, size=(48, 64), progress=False)


def test_truncated_archive_names_the_file(downloads, tmp_path, capsys):
    data = downloads["uavid"].read_bytes()
    broken = tmp_path / "uavid_v1.5_official_release.zip"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="uavid_v1.5_official_release.zip"):
        prepare_uavid(broken, tmp_path / "out", progress=False)
    assert main(["prepare", "uavid", "--uavid", str(broken), "--out", str(tmp_path / "o2"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(broken) in err and "truncated" in err


def test_corrupt_member_and_missing_frames_are_reported(downloads, tmp_path):
    m = dict(downloads["uavid_members"])
    m[f"{UAVID_ROOT}/uavid_train/seq1/images.mp4"] = b"not a video at all" * 100
    bad_video = _zip(tmp_path / "bad_video.zip", m)
    with pytest.raises(PrepareError, match="seq1/images.mp4"):
        prepare_uavid(bad_video, tmp_path / "a", size=(24, 32), progress=False)
    m = dict(downloads["uavid_members"])
    m[f"{UAVID_ROOT}/uavid_val/seq16/Labels/000300.png"] = m[
        f"{UAVID_ROOT}/uavid_val/seq16/Labels/000100.png"]
    beyond = _zip(tmp_path / "beyond.zip", m)
    with pytest.raises(PrepareError, match="000300.png"):
        prepare_uavid(beyond, tmp_path / "b", size=(24, 32), progress=False)
    m = dict(downloads["uavid_members"])
    m[f"{UAVID_ROOT}/uavid_val/seq16/Labels/000100.png"] = b"\x89PNG truncated"
    bad_png = _zip(tmp_path / "bad_png.zip", m)
    with pytest.raises(ValueError, match="000100.png"):
        prepare_uavid(bad_png, tmp_path / "c", size=(24, 32), progress=False)


def test_unsafe_members_are_refused(tmp_path):
    evil = _zip(tmp_path / "evil.zip", {"ok/a.txt": b"a", "../escape.txt": b"x"})
    with pytest.raises(ArchiveError, match="escape.txt"):
        prepare_uavid(evil, tmp_path / "out", progress=False)
    absolute = _zip(tmp_path / "abs.zip", {"/etc/owned": b"x"})
    with pytest.raises(ArchiveError, match="absolute"):
        open_source(absolute)
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("data/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
        blob = tarfile.TarInfo("data/file.txt")
        blob.size = 1
        tf.addfile(blob, io.BytesIO(b"x"))
    with pytest.raises(ArchiveError, match="link"):
        open_source(link)
    zlink = tmp_path / "zlink.zip"
    with zipfile.ZipFile(zlink, "w") as zf:
        zi = zipfile.ZipInfo("seq1/images.mp4")
        zi.external_attr = (0o120777 << 16)   # S_IFLNK
        zf.writestr(zi, "/etc/passwd")
    with pytest.raises(ArchiveError, match="link"):
        open_source(zlink)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_ruralscapes(downloads, tmp_path):
    out = tmp_path / "rural"
    report = prepare_ruralscapes(downloads["rural"], out, size=(24, 32), progress=False)
    assert report.sequences_done == 2
    assert list_clips(out, "train") == ["DJI_0043_000"]
    assert list_clips(out, "val") == ["DJI_0051_000"]
    info = DatasetInfo.load(out)
    assert info.source == "ruralscapes" and info.class_set == RURALSCAPES and info.fps == 10.0
    clip = out / "data" / "DJI_0043_000"
    # Every 5th frame plus the last (129); first (0) and last (129) dropped.
    expected = [f"{i:06d}" for i in range(5, 130, 5)]
    assert sorted(p.stem for p in (clip / "origin").iterdir()) == expected
    # Labels 0 and 125 are the first and last labels: dropped.
    assert sorted(p.stem for p in (clip / "mask").iterdir()) == ["000050", "000100"]
    frame = files.read_image(clip / "origin" / "000050.png")
    assert abs(float(frame.mean()) - _level(50)) < 6
    mask = files.read_image(clip / "mask" / "000050.png", grayscale=True)
    assert list(mask[5, 1::4]) == [255, 0, 1, 2, 3, 4, 5, 6]
    assert prepare_ruralscapes(downloads["rural"], out, size=(24, 32),
                               progress=False).changed is False


def test_colour_conversion_counts_unknown_colours():
    rgb = np.array([[[0, 0, 0], [255, 255, 0], [1, 2, 3]]], np.uint8)
    ids, unknown = colours_to_ids(rgb, RURALSCAPES_COLOURS)
    assert ids.tolist() == [[0, 1, 0]] and unknown == 1


def test_info_command(downloads, tmp_path, capsys):
    out = tmp_path / "rural"
    prepare_ruralscapes(downloads["rural"], out, size=(24, 32), progress=False)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"] == {"clips": 1, "frames": 25, "labelled": 2,
                                          "with_homography": 0, "with_flow": 0}


def test_labels_are_placed_by_their_stills(downloads, tmp_path, caplog):
    """A video with one extra leading frame: the stills reveal it and the labels follow."""
    val = downloads["uavid_members"][f"{UAVID_ROOT}/uavid_val/seq16/Labels/000100.png"]
    m = {f"{UAVID_ROOT}/uavid_val/seq16/images.mp4": _video(tmp_path / "v.mp4", 101, 20.0,
                                                            lead=(250,)),
         f"{UAVID_ROOT}/uavid_val/seq16/Labels/000100.png": val,
         f"{UAVID_ROOT}/uavid_val/seq16/Images/000000.png": _png(
             np.full((H, W, 3), _level(0), np.uint8)),
         f"{UAVID_ROOT}/uavid_val/seq16/Images/000100.png": _png(
             np.full((H, W, 3), _level(100), np.uint8))}
    out = prepare_uavid(_zip(tmp_path / "shifted.zip", m), tmp_path / "out", size=(24, 32),
                        progress=False).out
    assert "shifting all labels by +1" in caplog.text
    clip = out / "data" / "seq16_000"
    assert sorted(p.stem for p in (clip / "origin").iterdir())[-1] == "000100"
    assert abs(float(files.read_image(clip / "origin" / "000100.png").mean()) - _level(100)) < 6
    assert (clip / "mask" / "000100.png").is_file()
    # Stills that match no frame near their label: the inputs do not belong together.
    m[f"{UAVID_ROOT}/uavid_val/seq16/Images/000100.png"] = _png(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(PrepareError, match="do not belong together"):
        prepare_uavid(_zip(tmp_path / "wrong.zip", m), tmp_path / "out2", size=(24, 32),
                      progress=False)
