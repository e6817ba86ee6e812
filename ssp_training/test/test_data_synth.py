"""Synthetic generator: determinism, layout, and ground truth that matches the pictures."""

import json

import cv2
import numpy as np
import pytest
from ssp_perception.classes import UAVID
from ssp_perception.files import OutputError
from ssp_training.data import files
from ssp_training.data.dataset import DatasetInfo, list_clips
from ssp_training.data.synth import clip_name, generate_dataset, generate_sequence, SynthConfig

SIZE = (96, 128)
# Fast, low flight at a low frame rate: several pixels of motion per frame even at this size
# (a wrong homography cannot hide behind a near-identity one), and cars big enough to measure.
FAST = {"size": SIZE, "fps": 5.0, "speed_mps": (6.0, 8.0), "yaw_rate_dps": 20.0,
        "view_width_m": 40.0, "moving_vehicles": 25.0, "moving_persons": 25.0}


@pytest.fixture(scope="module")
def clean():
    """Six clean frames (no nuisances) of a fast flight with many movers."""
    cfg = SynthConfig(frames=6, sequences=2, seed=3, forward_flow=True, **FAST)
    cfg = cfg.without_nuisances()
    return list(generate_sequence(cfg, 1))


def _grid(shape):
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return xs, ys


def _homography_flow(h, shape):
    """Flow that the inverse homography alone predicts: p -> H^-1 p."""
    xs, ys = _grid(shape)
    pts = np.stack([xs, ys], -1).reshape(-1, 1, 2)
    q = cv2.perspectiveTransform(pts, np.linalg.inv(h)).reshape(*shape, 2)
    return q - np.stack([xs, ys], -1)


def test_same_seed_same_bytes_and_layout(tmp_path):
    cfg = SynthConfig(size=(64, 96), frames=4, sequences=2, seed=5, forward_flow=True)
    a = generate_dataset(tmp_path / "a", cfg, progress=False)
    b = generate_dataset(tmp_path / "b", cfg, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # Layout of docs/DATA_FORMAT.md.
    info = DatasetInfo.load(a)
    assert info.source == "synthetic" and info.size == (64, 96) and info.class_set == UAVID
    assert json.loads((a / "dataset.json").read_text())["generator"]["seed"] == 5
    assert list_clips(a, "train") == [clip_name(0)] and list_clips(a, "val") == [clip_name(1)]
    clip = a / "data" / clip_name(0)
    expected = [f"{i:06d}.png" for i in range(4)]
    assert sorted(p.name for p in (clip / "origin").iterdir()) == expected
    assert not (clip / "registration" / "000000.npy").exists()
    assert not (clip / "flow" / "000000.npz").exists()
    h = files.read_npy(clip / "registration" / "000001.npy")
    assert h.shape == (3, 3) and h.dtype == np.float64
    flow = files.read_npz(clip / "flow" / "000001.npz")
    assert flow["bwd"].shape == (64, 96, 2) and flow["bwd"].dtype == np.float16
    assert flow["fwd"].shape == (64, 96, 2) and flow["occ"].dtype == np.uint8
    mask = files.read_image(clip / "mask" / "000002.png", grayscale=True)
    assert set(np.unique(mask)) <= set(range(UAVID.num_classes)) | {255}
    # A different seed gives a different dataset.
    c = generate_dataset(tmp_path / "c", SynthConfig(size=(64, 96), frames=4, sequences=2,
                                                     seed=6), progress=False)
    assert (c / "data" / clip_name(0) / "origin" / "000000.png").read_bytes() != (
        clip / "origin" / "000000.png").read_bytes()


def test_existing_output_is_kept_unless_forced(tmp_path):
    cfg = SynthConfig(size=(32, 48), frames=2, sequences=1)
    out = generate_dataset(tmp_path / "d", cfg, progress=False)
    marker = out / "data" / clip_name(0) / "origin" / "000000.png"
    before = marker.read_bytes()
    with pytest.raises(OutputError, match="pass --force"):
        generate_dataset(out, SynthConfig(size=(32, 48), frames=2, sequences=1, seed=9),
                         progress=False)
    assert marker.read_bytes() == before
    generate_dataset(out, SynthConfig(size=(32, 48), frames=2, sequences=1, seed=9),
                     progress=False, overwrite=True)
    assert marker.read_bytes() != before
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_homography_warps_previous_frame_onto_current(clean):
    h, w = SIZE
    for a, b in zip(clean, clean[1:]):
        warped = cv2.warpPerspective(a.image, b.homography, (w, h), flags=cv2.INTER_LINEAR)
        in_view = cv2.warpPerspective(np.ones((h, w), np.uint8), b.homography, (w, h),
                                      flags=cv2.INTER_NEAREST) > 0
        moved = cv2.warpPerspective(a.moving.astype(np.uint8), b.homography, (w, h),
                                    flags=cv2.INTER_NEAREST) > 0
        static = cv2.erode((in_view & ~b.moving & ~moved).astype(np.uint8),
                           np.ones((3, 3), np.uint8)) > 0
        assert static.mean() > 0.5
        err = np.abs(warped.astype(np.float32) - b.image)[static].mean()
        err_identity = np.abs(a.image.astype(np.float32) - b.image)[static].mean()
        # Left: bilinear resampling of a fine texture twice; right: camera motion.
        assert err < 6.0 and err < 0.3 * err_identity, (err, err_identity)


def test_flow_and_occlusion_follow_the_homography_where_nothing_moves(clean):
    h, w = SIZE
    for a, b in zip(clean, clean[1:]):
        expected = _homography_flow(b.homography, (h, w))
        static = ~b.moving
        np.testing.assert_allclose(b.flow_bwd[static], expected[static], atol=2e-3)
        xs, ys = _grid((h, w))
        tx, ty = xs + expected[..., 0], ys + expected[..., 1]
        outside = (np.rint(tx) < 0) | (np.rint(tx) > w - 1) | (np.rint(ty) < 0) | (
            np.rint(ty) > h - 1)
        # Occluded = leaves the previous frame, or hidden/revealed by a mover (near movers).
        occ = b.occlusion.astype(bool)
        assert np.array_equal(occ[static & ~occ], outside[static & ~occ])
        assert np.all(occ[outside & static])
        near_mover = cv2.dilate((b.moving | a.moving).astype(np.uint8), np.ones((9, 9))) > 0
        assert np.all(outside[occ & ~near_mover] | b.moving[occ & ~near_mover])


def test_movers_are_not_explained_by_the_homography_but_by_the_flow(clean):
    h, w = SIZE
    xs, ys = _grid((h, w))
    mover_px = 0
    for a, b in zip(clean, clean[1:]):
        body = (b.label == 4) & b.moving & (b.occlusion == 0)   # moving vehicles, visible
        body = cv2.erode(body.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if not body.any():
            continue
        mover_px += int(body.sum())
        ground = _homography_flow(b.homography, (h, w))
        assert np.median(np.linalg.norm(b.flow_bwd - ground, axis=-1)[body]) > 0.5
        by_flow = cv2.remap(a.image, xs + b.flow_bwd[..., 0], ys + b.flow_bwd[..., 1],
                            cv2.INTER_LINEAR)
        by_h = cv2.warpPerspective(a.image, b.homography, (w, h), flags=cv2.INTER_LINEAR)
        e_flow = np.abs(by_flow.astype(np.float32) - b.image)[body].mean()
        e_h = np.abs(by_h.astype(np.float32) - b.image)[body].mean()
        assert e_flow < e_h, (e_flow, e_h)
    assert mover_px > 50, "the fixture should show moving vehicles"


def test_forward_and_backward_flow_agree(clean):
    h, w = SIZE
    xs, ys = _grid((h, w))
    for b in clean[1:]:
        visible = (b.occlusion == 0) & ~b.moving
        # fwd lives on the previous frame's grid: sample it where bwd lands.
        fwd_at = cv2.remap(b.flow_fwd, xs + b.flow_bwd[..., 0], ys + b.flow_bwd[..., 1],
                           cv2.INTER_LINEAR)
        roundtrip = np.linalg.norm(b.flow_bwd + fwd_at, axis=-1)[visible]
        assert np.percentile(roundtrip, 95) < 0.05


def test_nuisances_change_pixels_only():
    cfg = SynthConfig(size=(64, 96), frames=4, sequences=1, seed=2)
    noisy = list(generate_sequence(cfg, 0))
    plain = list(generate_sequence(cfg.without_nuisances(), 0))
    diffs = []
    for n, p in zip(noisy, plain):
        assert np.array_equal(n.label, p.label)
        assert (n.homography is None) == (p.homography is None)
        if n.homography is not None:
            np.testing.assert_array_equal(n.homography, p.homography)
            np.testing.assert_array_equal(n.flow_bwd, p.flow_bwd)
        diffs.append(np.abs(n.image.astype(np.float32) - p.image).mean(axis=(0, 1)))
    diffs = np.array(diffs)                       # (frames, 3)
    assert diffs.mean() > 2.0                    # the nuisances are visible
    assert np.ptp(diffs.mean(axis=1)) > 0.2      # and change from frame to frame (flicker)


def test_every_class_appears_and_masks_match_the_class_set():
    cfg = SynthConfig(size=(96, 128), frames=2, sequences=6, seed=0, moving_persons=30)
    seen = set()
    for s in range(cfg.sequences):
        for f in generate_sequence(cfg, s):
            seen |= set(np.unique(f.label).tolist())
    assert seen == set(range(UAVID.num_classes)) | {255}


@pytest.mark.parametrize("bad, match", [
    ({"size": (8, 96)}, "size"), ({"frames": 0}, "frames"), ({"val_fraction": 1.0}, "val"),
    ({"noise": 5.0}, "noise"), ({"tilt_deg": 45.0}, "tilt"), ({"fps": 0.0}, "fps"),
    ({"speed_mps": (3.0, 1.0)}, "speed")])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        SynthConfig(**bad)


def test_split_keeps_both_sides_populated():
    assert SynthConfig(sequences=2).split() == ([0], [1])
    assert SynthConfig(sequences=1).split() == ([0], [])
    assert SynthConfig(sequences=8, val_fraction=0.25).split() == (list(range(6)), [6, 7])
    assert SynthConfig(sequences=3, val_fraction=0.0).split() == ([0, 1, 2], [])
