"""Robust homography fitting from point matches, and the checks that reject implausible fits.

The registrators (``registration.py``) find and match features; this module turns the matches
into one previous -> current homography and decides whether it can be camera motion between
consecutive frames. Every method is judged by these rules, so thresholds stay in input pixels.
"""

from __future__ import annotations

import math
from typing import Protocol

import cv2
import numpy as np

from .geometry import transform_points

ESTIMATORS = {"usac_magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC}


class FitSettings(Protocol):
    """The settings fitting and checking read (a ``RegistrationConfig`` provides them)."""

    estimator: str
    reproj_threshold_px: float
    max_iters: int
    confidence: float
    min_inliers: int
    min_inlier_ratio: float
    max_scale_change: float
    max_anisotropy: float
    max_perspective: float
    max_corner_shift: float


def fit_homography(src: np.ndarray, dst: np.ndarray, size: tuple[int, int],
                   cfg: FitSettings) -> tuple[np.ndarray | None, int, str]:
    """Fit previous -> current from matched (M, 2) points; return (H or None, inliers, reason).

    ``H`` is normalised (h33 = 1) and returned only when it passed every check; ``reason``
    says why not otherwise ("" on success). ``size`` (H, W) is the current frame's.
    """
    n = len(src)
    h, mask = cv2.findHomography(src.astype(np.float32), dst.astype(np.float32),
                                 ESTIMATORS[cfg.estimator], cfg.reproj_threshold_px,
                                 maxIters=cfg.max_iters, confidence=cfg.confidence)
    inliers = int(mask.sum()) if mask is not None else 0
    if h is None:
        return None, inliers, "robust estimation found no homography"
    if inliers < cfg.min_inliers:
        return None, inliers, f"{inliers} inliers, fewer than min_inliers {cfg.min_inliers}"
    if inliers / n < cfg.min_inlier_ratio:
        return None, inliers, (f"inlier ratio {inliers / n:.2f} below min_inlier_ratio "
                               f"{cfg.min_inlier_ratio}")
    reason = check_homography(h, size, cfg)
    if reason:
        return None, inliers, reason
    return np.asarray(h, dtype=np.float64) / h[2, 2], inliers, ""


def check_homography(h: np.ndarray, size: tuple[int, int], cfg: FitSettings) -> str:
    """Return why ``h`` (prev -> cur, frames of ``size`` (H, W)) is implausible, or "".

    Frame-to-frame camera motion is small: the frame keeps its orientation (no reflection),
    stays in front of the camera (w > 0 at every corner), barely changes area, shear or
    perspective, and corners move by a fraction of the diagonal. Anything else is a degenerate
    fit (collinear or clustered inliers, a repeated texture) and must not move state.
    """
    h = np.asarray(h, dtype=np.float64)
    if h.shape != (3, 3) or not np.isfinite(h).all():
        return "homography is not a finite 3x3 matrix"
    if abs(h[2, 2]) < 1e-12:
        return "homography has h33 = 0 (maps the origin to infinity)"
    h = h / h[2, 2]
    hgt, wid = size
    corners = np.array([[0.0, 0.0], [wid - 1.0, 0.0], [wid - 1.0, hgt - 1.0], [0.0, hgt - 1.0]])
    w = np.concatenate([corners, np.ones((4, 1))], axis=1) @ h[2]
    if (w <= 1e-6).any():
        return "a frame corner maps behind the camera (w <= 0)"
    if w.max() / w.min() > 1.0 + cfg.max_perspective:
        return (f"perspective change {w.max() / w.min() - 1.0:.3f} exceeds "
                f"max_perspective {cfg.max_perspective}")
    if np.linalg.det(h) <= 0.0:
        return "homography reverses orientation (det <= 0)"
    warped = transform_points(h, corners)
    area_ratio = _polygon_area(warped) / _polygon_area(corners)
    if not 1.0 / cfg.max_scale_change <= area_ratio <= cfg.max_scale_change:
        return (f"area ratio {area_ratio:.3f} outside "
                f"1/{cfg.max_scale_change}..{cfg.max_scale_change}")
    # Local linear part at the frame centre: the Jacobian of the projective map there.
    centre = np.array([(wid - 1) / 2.0, (hgt - 1) / 2.0])
    sv = np.linalg.svd(_jacobian(h, centre), compute_uv=False)
    if sv[1] <= 0.0 or sv[0] / sv[1] > cfg.max_anisotropy:
        return f"anisotropy {sv[0] / max(sv[1], 1e-12):.3f} exceeds {cfg.max_anisotropy}"
    shift = np.linalg.norm(warped - corners, axis=1).max() / math.hypot(hgt, wid)
    if shift > cfg.max_corner_shift:
        return (f"corner moved {shift:.3f} of the diagonal, more than "
                f"max_corner_shift {cfg.max_corner_shift}")
    return ""


def _jacobian(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Return the 2x2 Jacobian of the projective map ``h`` at point ``p`` (x, y)."""
    x, y = p
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = h[0, 0] * x + h[0, 1] * y + h[0, 2]
    v = h[1, 0] * x + h[1, 1] * y + h[1, 2]
    return np.array([[h[0, 0] * w - u * h[2, 0], h[0, 1] * w - u * h[2, 1]],
                     [h[1, 0] * w - v * h[2, 0], h[1, 1] * w - v * h[2, 1]]]) / (w * w)


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


__all__ = ["ESTIMATORS", "FitSettings", "check_homography", "fit_homography"]
