"""Homography helpers: conjugation on Hiera's stride-4 grid, resolution changes, warping."""

import doctest

import cv2
import numpy as np
import pytest
from ssp_perception import geometry
from ssp_perception.geometry import (reprojection_error, rescale_homography, scale_homography,
                                     transform_points, warp_homography)
import torch
import torch.nn.functional as F


pytestmark = pytest.mark.usefixtures("one_thread")


def _rigid(angle_deg: float, tx: float, ty: float, centre=(0.0, 0.0)) -> np.ndarray:
    """Return a rotation about ``centre`` followed by a translation, as a 3x3 homography."""
    a = np.deg2rad(angle_deg)
    cx, cy = centre
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    to_c = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    back = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1.0]])
    return back @ rot @ to_c


def _smooth_image(h: int, w: int, hom: np.ndarray = np.eye(3)) -> np.ndarray:
    """Return a smooth test pattern f(H^-1 x): the pattern moved by ``hom`` (float64, H x W)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = transform_points(np.linalg.inv(hom), np.stack([xs, ys], -1).reshape(-1, 2))
    u, v = pts[:, 0].reshape(h, w), pts[:, 1].reshape(h, w)
    return np.sin(u / 13.0 + 0.3) * np.cos(v / 15.0) + 0.5 * np.sin((u + v) / 23.0)


def _hiera_like_features(img: np.ndarray) -> torch.Tensor:
    """Return a (1, 1, H/4, W/4) map from a 7x7 / stride-4 / padding-3 Gaussian patch conv.

    It has Hiera's patch-embedding geometry (feature pixel i centred on image pixel 4i), and a
    symmetric kernel, so it commutes with rigid motions up to sampling error.
    """
    g = torch.exp(-torch.arange(-3, 4, dtype=torch.float64) ** 2 / (2 * 1.5 ** 2))
    kernel = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    x = torch.from_numpy(img)[None, None]
    return F.conv2d(x, kernel[None, None], stride=4, padding=3)


def test_docstring_examples():
    assert doctest.testmod(geometry).failed == 0


def _centre(h: int, w: int) -> tuple:
    # The middle half of the frame: covered by both views for rotations about the centre.
    return (..., slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))


def test_scale_conjugation_matches_features_of_the_moved_image():
    h, w = 160, 224
    # Pixel-centre conventions differ by an offset, which only shows through the linear part
    # of H: a large rotation makes a wrong convention visible (a pure shift would hide it).
    hom = _rigid(40.0, 6.3, -5.2, centre=(w / 2, h / 2))
    f_prev = _hiera_like_features(_smooth_image(h, w))
    f_cur = _hiera_like_features(_smooth_image(h, w, hom))
    inner = _centre(h // 4, w // 4)

    def err(h4: np.ndarray) -> float:
        warped = warp_homography(f_prev, torch.from_numpy(h4)[None], f_cur.shape[-2:])
        return float((warped - f_cur)[inner].abs().max())

    good = err(scale_homography(hom, 0.25))
    # The half-pixel-centre convention (right for resized images, wrong for Hiera's grid).
    wrong = err(rescale_homography(hom, (h, w), (h // 4, w // 4)))
    amplitude = float(f_cur.abs().max())
    assert good < 0.02 * amplitude, good
    assert wrong > 3 * good, (good, wrong)


def test_scale_homography_numpy_torch_and_batches_agree():
    hom = np.stack([_rigid(2.0, 4.0, -3.0), _rigid(-1.0, 1.5, 7.0)])
    hom[1, 2, :2] = [1e-4, -2e-4]  # a true projective part
    ref = np.stack([np.diag([0.5, 0.5, 1]) @ m @ np.diag([2.0, 2.0, 1]) for m in hom])
    np.testing.assert_allclose(scale_homography(hom, 0.5), ref, rtol=1e-12)
    out = scale_homography(torch.from_numpy(hom), 0.5)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        scale_homography(hom, 0.0)


def test_rescale_homography_matches_cv2_resize():
    h, w, dst = 150, 240, (50, 80)
    hom = _rigid(40.0, 5.5, -3.5, centre=(w / 2, h / 2))
    prev = _smooth_image(h, w).astype(np.float32)
    cur = cv2.warpPerspective(prev, hom, (w, h), flags=cv2.INTER_LINEAR)
    prev_s = cv2.resize(prev, dst[::-1], interpolation=cv2.INTER_LINEAR)
    cur_s = cv2.resize(cur, dst[::-1], interpolation=cv2.INTER_LINEAR)

    def err(hom_s: np.ndarray) -> float:
        warped = cv2.warpPerspective(prev_s, hom_s, dst[::-1], flags=cv2.INTER_LINEAR)
        return float(np.abs(warped - cur_s)[_centre(*dst)].max())

    good = err(rescale_homography(hom, (h, w), dst))
    naive = err(scale_homography(hom, dst[0] / h))  # ignores the half-pixel offset
    assert good < 0.05, good
    assert naive > 3 * good, (good, naive)


def test_rescale_homography_round_trip_and_torch():
    hom = _rigid(4.0, 10.0, -2.0)
    hom[2, :2] = [2e-5, -1e-5]
    there = rescale_homography(hom, (720, 1280), (384, 640))
    back = rescale_homography(there, (384, 640), (720, 1280))
    np.testing.assert_allclose(back, hom, atol=1e-9)
    t = rescale_homography(torch.from_numpy(hom)[None], (720, 1280), (384, 640))
    np.testing.assert_allclose(t[0].numpy(), there, atol=1e-9)


def test_warp_integer_translation_shifts_and_zero_pads():
    x = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).reshape(2, 3, 8, 10)
    hom = torch.eye(3).repeat(2, 1, 1)
    hom[:, 0, 2], hom[:, 1, 2] = 3.0, 2.0  # content moves right by 3, down by 2
    out = warp_homography(x, hom, (8, 10))
    torch.testing.assert_close(out[..., 2:, 3:], x[..., :-2, :-3])
    # Uncovered pixels are zero (up to kornia's float32 coordinate round-off at the edge).
    assert out[..., :2, :].abs().max() < 1e-3 and out[..., :, :3].abs().max() < 1e-3
    same = warp_homography(x, torch.eye(3), (8, 10))  # (3, 3) broadcasts over the batch
    torch.testing.assert_close(same, x)


def test_reprojection_error_numpy_and_torch():
    shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
    assert reprojection_error(np.eye(3), np.eye(3), (48, 64)) == 0.0
    assert reprojection_error(shift, np.eye(3), (48, 64)) == pytest.approx(5.0)
    batch = torch.from_numpy(np.stack([shift, np.eye(3)]))
    err = reprojection_error(batch, torch.eye(3, dtype=torch.float64), (48, 64))
    torch.testing.assert_close(err, torch.tensor([5.0, 0.0], dtype=torch.float64))
    rot = _rigid(1.0, 0, 0)
    assert reprojection_error(rot, np.eye(3), (48, 64)) == pytest.approx(
        float(np.mean(np.linalg.norm(transform_points(rot, _grid(48, 64)) - _grid(48, 64),
                                     axis=-1))))
    with pytest.raises(ValueError, match="size"):
        reprojection_error(shift, shift, (0, 64))


def _grid(h: int, w: int, n: int = 16) -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    return np.stack([xs.ravel(), ys.ravel()], -1)


def test_half_inputs_are_warped_in_float32():
    x = torch.rand(1, 2, 40, 1200)
    hom = torch.tensor([[1.0, 0.0, -1000.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    ref = warp_homography(x, hom, (40, 200))
    half = warp_homography(x.half(), hom, (40, 200))
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), ref, atol=2e-3, rtol=0)
