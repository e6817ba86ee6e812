"""Dataset readers, PyTorch datasets and augmentations on a small clean synthetic dataset."""

import json
import shutil

import cv2
import numpy as np
import pytest
from ssp_perception.classes import UAVID
from ssp_training.data import augment
from ssp_training.data.dataset import (clip_frames, DatasetInfo, denormalize, ImageDataset,
                                       list_clips, load_logits, logits_path, resize_logits,
                                       save_logits, SequenceDataset, sibling,
                                       TeacherLogitsDataset, to_tensor_image, VideoPairDataset)
from ssp_training.data.synth import clip_name, generate_dataset, SynthConfig
import torch

STORED = (96, 128)
SIZE = (64, 96)       # load size: exercises the resize on load


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Make a clean (nuisance-free), fast-moving synthetic dataset: 2 train clips, 1 val."""
    cfg = SynthConfig(size=STORED, frames=5, sequences=3, seed=11, val_fraction=0.34, fps=5.0,
                      speed_mps=(6.0, 8.0), view_width_m=40.0, yaw_rate_dps=15.0)
    return generate_dataset(tmp_path_factory.mktemp("ds") / "synth", cfg.without_nuisances(),
                            progress=False)


def _valid_error(sample):
    """Mean |warp(prev, H) - cur| and |prev - cur| over pixels both frames see."""
    cur, prev = denormalize(sample["image"]), denormalize(sample["prev_image"])
    h, w = cur.shape[:2]
    hmat = sample["homography"].double().numpy()
    warped = cv2.warpPerspective(prev, hmat, (w, h), flags=cv2.INTER_LINEAR)
    seen = cv2.warpPerspective(np.ones((h, w), np.uint8), hmat, (w, h),
                               flags=cv2.INTER_NEAREST) > 0
    valid = cv2.erode((seen & ~sample["occlusion"].numpy()).astype(np.uint8),
                      np.ones((3, 3), np.uint8)) > 0
    err = np.abs(warped.astype(np.float32) - cur)[valid].mean()
    err_id = np.abs(prev.astype(np.float32) - cur)[valid].mean()
    return err, err_id, valid.mean()


@pytest.mark.parametrize("crop, square", [(None, False), ((48, 64), False), (None, True)])
def test_pair_homography_and_flow_follow_the_augmentation(root, crop, square):
    ds = VideoPairDataset(root, "train", SIZE, crop=crop, square_crop=square, augment=True,
                          with_homography=True, with_flow=True, seed=0)
    assert len(ds) == 2 * 4   # every frame but the first of both train clips is labelled
    xs = ys = None
    for i in range(len(ds)):
        s = ds[i]
        h, w = s["image"].shape[1:]
        expect = crop or ((min(SIZE),) * 2 if square else SIZE)
        assert (h, w) == tuple(expect) and s["prev_image"].shape == s["image"].shape
        assert s["label"].shape == (h, w) and s["label"].dtype == torch.int64
        assert s["homography"].dtype == torch.float32 and s["flow"].shape == (2, h, w)
        err, err_id, share = _valid_error(s)
        assert share > 0.4 and err < 8.0 and err < 0.5 * err_id, (i, err, err_id)
        # The flow, transformed with the same augmentation, explains the pixels too.
        if xs is None or xs.shape != (h, w):
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        flow = s["flow"].numpy()
        prev, cur = denormalize(s["prev_image"]), denormalize(s["image"])
        by_flow = cv2.remap(prev, xs + flow[0], ys + flow[1], cv2.INTER_LINEAR)
        ok = cv2.erode((~s["occlusion"].numpy()).astype(np.uint8), np.ones((3, 3))) > 0
        assert np.abs(by_flow.astype(np.float32) - cur)[ok].mean() < 8.0


def test_pair_samples_repeat_under_a_seed_and_batch(root):
    a = VideoPairDataset(root, "train", SIZE, augment=True, seed=4)
    b = VideoPairDataset(root, "train", SIZE, augment=True, seed=4)
    for i in (0, 3):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["label"], sb["label"])
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=3)))
    assert batch["image"].shape == (3, 3, *SIZE) and len(batch["clip"]) == 3


def test_pair_options(root):
    tcb = VideoPairDataset(root, "train", SIZE, offsets=(-1, -2, -3), with_homography=True)
    s = tcb[0]
    assert s["prev_images"].shape == (3, 3, *SIZE) and s["stem"] == "000003"
    assert torch.equal(s["prev_images"][0], s["prev_image"])
    # The composed homography (frame j-1 -> j) agrees with the stored one.
    single = VideoPairDataset(root, "train", SIZE, with_homography=True)
    composed = VideoPairDataset(root, "train", SIZE, offsets=(-2,), with_homography=True)
    i3 = single.items.index((clip_name(0), 3))
    np.testing.assert_allclose(single[i3]["homography"].numpy(), s["homography"].numpy())
    # Offset -2 composes the stored j-1 -> j and j-2 -> j-1 homographies.
    h2 = composed[composed.items.index((clip_name(0), 3))]["homography"].double()
    h1 = single[single.items.index((clip_name(0), 2))]["homography"].double()
    h = (single[i3]["homography"].double() @ h1)
    np.testing.assert_allclose(h2.numpy(), (h / h[2, 2]).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        VideoPairDataset(root, "train", SIZE, crop=(32, 32), square_crop=True)
    with pytest.raises(ValueError, match="offsets"):
        VideoPairDataset(root, "train", SIZE, offsets=(1,))
    with pytest.raises(ValueError, match="with_flow"):
        VideoPairDataset(root, "train", SIZE, offsets=(-2,), with_flow=True)


def test_unlabelled_frames(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "partial")
    for f in clip_frames(copy, clip_name(0))[1:4]:
        sibling(f, "mask").unlink()
    only = VideoPairDataset(copy, "train", SIZE)
    every = VideoPairDataset(copy, "train", SIZE, labelled_only=False)
    assert len(only) == 5 and len(every) == 8
    s = [every[i] for i in range(len(every)) if not every[i]["has_label"]][0]
    assert bool((s["label"] == 255).all())
    assert len(ImageDataset(copy, "train", SIZE)) == 10 - 3


def test_image_dataset(root):
    plain = ImageDataset(root, "val", SIZE)
    assert len(plain) == 5
    s = plain[2]
    assert s["image"].shape == (3, *SIZE) and s["clip"] == clip_name(2)
    assert set(np.unique(s["label"].numpy())) <= set(range(UAVID.num_classes)) | {255}
    aug = ImageDataset(root, "val", SIZE, augment=True, square_crop=True, seed=1)
    assert aug[2]["image"].shape == (3, SIZE[0], SIZE[0])
    changed = [not torch.equal(ImageDataset(root, "val", SIZE, augment=True, seed=k)[2]["image"],
                               s["image"]) for k in range(4)]
    assert any(changed)


def test_teacher_logits_pairs_follow_the_frames(root, tmp_path):
    logits_dir = tmp_path / "logits"
    c = UAVID.num_classes
    for clip in list_clips(root, "train"):
        for f in clip_frames(root, clip):
            mask = cv2.imread(str(sibling(f, "mask")), cv2.IMREAD_UNCHANGED)
            small = cv2.resize(mask, (64, 48), interpolation=cv2.INTER_NEAREST_EXACT)
            z = np.where(np.arange(c)[:, None, None] == small[None], 8.0, 0.0)  # (C, 48, 64)
            save_logits(logits_path(logits_dir, clip, f.stem), z.astype(np.float32))
    ds = TeacherLogitsDataset(root, "train", logits_dir, SIZE, square_crop=True,
                              augment=True, seed=3)
    assert [ds.items[i][1] for i in range(len(ds))] == [1, 3, 1, 3]
    for i in range(len(ds)):
        s = ds[i]
        assert s["teacher_logits"].shape == (c, SIZE[0], SIZE[0])
        assert s["prev_teacher_logits"].shape == s["teacher_logits"].shape
        label = s["label"].numpy()
        agree = (s["teacher_logits"].argmax(0).numpy() == label)[label != 255].mean()
        assert agree > 0.85, agree   # same flip/scale/crop as the frame and its label
    with pytest.raises(FileNotFoundError, match="teacher logits"):
        TeacherLogitsDataset(root, "train", tmp_path / "empty", SIZE)


def test_logits_files(tmp_path):
    z = np.random.default_rng(0).normal(0, 5, (4, 6, 8)).astype(np.float32)
    p = save_logits(tmp_path / "a" / "b" / "000001.npz", torch.from_numpy(z))
    back = load_logits(p)
    assert back.dtype == np.float32 and back.shape == z.shape
    np.testing.assert_allclose(back, z, atol=5e-3)
    assert p.read_bytes() == save_logits(tmp_path / "x.npz", z).read_bytes()
    with pytest.raises(ValueError, match="C, h, w"):
        save_logits(tmp_path / "y.npz", z[0])
    with pytest.raises(ValueError, match="float16"):
        save_logits(tmp_path / "y.npz", z * 1e5)
    # float32 (Ref's dtype) keeps every bit and any finite range.
    exact = save_logits(tmp_path / "f32.npz", z * 1e5, dtype="float32")
    np.testing.assert_array_equal(load_logits(exact), z * 1e5)
    with pytest.raises(ValueError, match="dtype"):
        save_logits(tmp_path / "y.npz", z, dtype="float64")


def test_logits_grow_bicubically_or_bilinearly_and_shrink_antialiased():
    import torch.nn.functional as F
    z = np.random.default_rng(1).normal(0, 3, (3, 6, 8)).astype(np.float32)
    x = torch.from_numpy(z)[None]
    for mode in ("bicubic", "bilinear"):
        want = F.interpolate(x, size=(12, 16), mode=mode, align_corners=False)[0].numpy()
        np.testing.assert_allclose(resize_logits(z, (12, 16), mode), want, atol=1e-6)
    assert not np.allclose(resize_logits(z, (12, 16), "bicubic"),
                           resize_logits(z, (12, 16), "bilinear"))
    # Shrinking ignores the mode: antialiased bilinear as Ref's loader.
    small = F.interpolate(x, size=(3, 4), mode="bilinear", align_corners=False,
                          antialias=True)[0].numpy()
    np.testing.assert_allclose(resize_logits(z, (3, 4), "bicubic"), small, atol=1e-6)
    with pytest.raises(ValueError, match="upsample"):
        resize_logits(z, (12, 16), "nearest")


def test_sequences_in_order_with_ground_truth(root):
    seq = SequenceDataset(root, "val", size=SIZE)
    assert len(seq) == 1
    clip = seq[0]
    frames = list(clip)
    assert [f.stem for f in frames] == [f"{i:06d}" for i in range(5)]
    assert frames[0].homography is None and frames[0].flow_bwd is None
    f = frames[2]
    assert f.image.shape == (*SIZE, 3) and f.label.shape == SIZE
    assert f.flow_bwd.shape == (*SIZE, 2) and f.occlusion.shape == SIZE
    # The homography is moved to the load size: it warps frame 1 onto frame 2.
    h, w = SIZE
    warped = cv2.warpPerspective(frames[1].image, f.homography, (w, h))
    seen = cv2.warpPerspective(np.ones(SIZE, np.uint8), f.homography, (w, h)) > 0
    ok = cv2.erode((seen & (f.occlusion == 0)).astype(np.uint8), np.ones((3, 3))) > 0
    err = np.abs(warped.astype(np.float32) - f.image)[ok].mean()
    assert err < 0.5 * np.abs(frames[1].image.astype(np.float32) - f.image)[ok].mean()


def test_denormalize_inverts_normalisation():
    img = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = to_tensor_image(img)
    assert x.shape == (3, 5, 7) and abs(float(x.mean())) < 3
    np.testing.assert_array_equal(denormalize(x), img)
    np.testing.assert_array_equal(denormalize(torch.stack([x, x]))[1], img)


def test_dataset_info_errors_name_the_problem(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        DatasetInfo.load(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    d = json.loads((bad / "dataset.json").read_text())
    del d["fps"]
    (bad / "dataset.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="fps"):
        DatasetInfo.load(bad)
    (bad / "dataset.json").write_text(json.dumps({**d, "fps": 20.0, "format": 7}))
    with pytest.raises(ValueError, match="format"):
        DatasetInfo.load(bad)
    (bad / "val.txt").write_text("no_such_clip\n")
    with pytest.raises(FileNotFoundError, match="no_such_clip"):
        list_clips(bad, "val")


def test_geometry_matches_plain_operations():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    flip = augment.Geometry.identity((40, 60)).then(augment.flip_matrix(60), (40, 60))
    np.testing.assert_array_equal(flip.image(img), img[:, ::-1])
    np.testing.assert_array_equal(flip.mask(img[..., 0]), img[:, ::-1, 0])
    flow = np.zeros((40, 60, 2), np.float32)
    flow[..., 0] = 2.0
    assert np.allclose(flip.flow(flow)[..., 0], -2.0)
    # Scale-and-crop as one warp equals cv2.resize followed by slicing.
    big = (48, 72)
    geo = augment.Geometry.identity((40, 60)).then(
        augment.resize_transform((40, 60), big), big)
    geo = augment.crop_geometry(geo, (40, 60), None)
    ref = cv2.resize(img, big[::-1], interpolation=cv2.INTER_LINEAR)[4:44, 6:66]
    assert np.abs(geo.image(img).astype(int) - ref).max() <= 1
    # The homography transform is a conjugation: identity stays identity.
    np.testing.assert_allclose(geo.homography(np.eye(3)), np.eye(3), atol=1e-12)


def test_photometric_uses_the_original_brightness_range():
    grey = np.full((4, 4, 3), 100, np.uint8)
    assert int(augment.brightness_contrast(grey, 1.0, 0.2)[0, 0, 0]) == 151   # +0.2*255
    assert int(augment.brightness_contrast(grey, 1.2, 0.0)[0, 0, 0]) == 120
    p = augment.PairPhotometric(contrast=0.9, brightness=-0.1, hue=10, sat=5, val=-5,
                                gamma=1.1)
    a = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(p(a), p(a.copy()))
    assert not np.array_equal(p(a), a)
    out = augment.image_photometric(a, np.random.default_rng(3))
    assert out.shape == a.shape and out.dtype == np.uint8
