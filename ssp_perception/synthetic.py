"""Synthetic camera frames with known motion, for benchmarks and tests (ROS-free).

A procedurally textured canvas is seen by a camera that moves smoothly (rotation, translation,
zoom, a little perspective), so registration does real work and every frame-to-frame
homography is known.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np


def textured_image(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB image of multi-scale coloured noise (corner-rich texture)."""
    hgt, wid = size
    rng = np.random.default_rng(seed)
    img = np.zeros((hgt, wid, 3), np.float32)
    # Three octaves: coarse blobs give large structures, fine grain gives ORB/SIFT corners.
    for sigma, amp in ((16.0, 0.5), (4.0, 0.3), (1.0, 0.2)):
        noise = cv2.GaussianBlur(rng.standard_normal((hgt, wid, 3)).astype(np.float32),
                                 (0, 0), sigma)
        img += amp * noise / (noise.std() + 1e-6)
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    return (img * 255.0 + 0.5).astype(np.uint8)


def camera_pose(t: float, size: tuple[int, int]) -> np.ndarray:
    """Return the 3x3 map from canvas pixels to frame pixels at time ``t`` (frames).

    The canvas is twice the frame size and the motion stays bounded (sinusoids with periods of
    about 150-400 frames), so a 1000-frame run never leaves the texture.
    """
    hgt, wid = size
    angle = 0.12 * np.sin(2 * np.pi * t / 400.0)
    scale = 1.0 + 0.05 * np.sin(2 * np.pi * t / 250.0)
    tx = 0.22 * wid * np.sin(2 * np.pi * t / 300.0)
    ty = 0.22 * hgt * np.sin(2 * np.pi * t / 170.0 + 1.0)
    persp = 1e-5 * np.sin(2 * np.pi * t / 150.0) * 640.0 / wid
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    # canvas centre (W, H) -> origin, rotate/zoom, -> frame centre shifted by (tx, ty)
    to_origin = np.array([[1.0, 0.0, -float(wid)], [0.0, 1.0, -float(hgt)], [0.0, 0.0, 1.0]])
    motion = np.array([[c, -s, wid / 2.0 + tx], [s, c, hgt / 2.0 + ty], [persp, 0.0, 1.0]])
    return motion @ to_origin


def synthetic_frames(size: tuple[int, int], n: int, seed: int = 0,
                     speed: float = 1.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``n`` (frame (H, W, 3) uint8 RGB, H prev -> cur (3, 3) float64) pairs.

    The first frame's homography is the identity (it has no previous frame). ``speed`` scales
    the time step, i.e. the camera motion per frame.
    """
    hgt, wid = size
    canvas = textured_image((2 * hgt, 2 * wid), seed)
    prev_pose = None
    for k in range(n):
        pose = camera_pose(k * speed, size)
        frame = cv2.warpPerspective(canvas, pose, (wid, hgt), flags=cv2.INTER_LINEAR)
        h = np.eye(3) if prev_pose is None else pose @ np.linalg.inv(prev_pose)
        prev_pose = pose
        yield frame, h / h[2, 2]
