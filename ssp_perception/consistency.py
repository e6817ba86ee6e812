"""Flow-based temporal consistency (TC): the paper's metric with OpenCV DIS optical flow.

Convention (SSP_SPEC §4.2/§4.3): a flow ``F`` from image ``a`` to image ``b`` satisfies
``a(p) ≈ b(p + F(p))``, in pixels, channel 0 = x (column), 1 = y (row). TC of a pair of label
maps is the pairwise mIoU of ``pred_a`` and ``pred_b`` pulled back into ``a``'s frame with
nearest sampling (SSP_SPEC §7.3); the flip rate over the same pixels is the share of labels that
changed. Both ``ssp_replay``'s report and ``ssp_eval`` (``ssp_training.eval.metrics``) use these
functions.

Decision (deviation from Ref, SSP_SPEC §12.8): pixels whose flow target leaves the image are
*ignored* by default. Ref counts them as class 0; ``out_of_view="class0"`` reproduces that.

Example::

    >>> a = np.zeros((4, 6), np.uint8); a[:, 3:] = 1
    >>> b = np.roll(a, 1, axis=1)                  # the scene moved one pixel to the right
    >>> flow = np.zeros((4, 6, 2), np.float32); flow[..., 0] = 1.0
    >>> pair_consistency(a, b, flow, num_classes=2)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .classes import IGNORE_INDEX
from .metrics import flip_rate, pair_miou

DIS_PRESETS = {"ultrafast": cv2.DISOpticalFlow_PRESET_ULTRAFAST,
               "fast": cv2.DISOpticalFlow_PRESET_FAST,
               "medium": cv2.DISOpticalFlow_PRESET_MEDIUM}
OUT_OF_VIEW = ("ignore", "class0")


def check_flow_pair(a: np.ndarray, b: np.ndarray) -> None:
    """Raise ValueError unless ``a`` and ``b`` are H x W x 3 uint8 RGB images of one size."""
    for name, img in (("a", a), ("b", b)):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"flow input {name} must be an HxWx3 uint8 RGB image, "
                             f"got {img.dtype} {img.shape}")
    if a.shape != b.shape:
        raise ValueError(f"flow inputs differ in size: {a.shape} vs {b.shape}")


@dataclass
class DISFlow:
    """OpenCV Dense Inverse Search flow on grey images (no weights, runs anywhere)."""

    preset: str = "medium"
    name: str = "dis"

    def __post_init__(self) -> None:
        if self.preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {self.preset!r}; allowed: {sorted(DIS_PRESETS)}")
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return the (H, W, 2) float32 flow from ``a`` to ``b``."""
        check_flow_pair(a, b)
        ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        # DIS calc(I0, I1) returns F with I0(x) ≈ I1(x + F(x)): exactly our convention.
        return self._dis.calc(ga, gb, None).astype(np.float32, copy=False)


def warp_labels(labels: np.ndarray, flow: np.ndarray,
                fill: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Warp an (H, W) integer label map by an (H, W, 2) flow with nearest sampling.

    Return ``(warped, in_view)``: ``warped(p) = labels(p + F(p))`` and ``fill`` where
    ``p + F(p)`` falls outside the image; ``in_view`` is the (H, W) bool mask of the rest.
    """
    if labels.ndim != 2 or flow.shape != labels.shape + (2,):
        raise ValueError(f"expected labels (H,W) and flow (H,W,2), got {labels.shape} and "
                         f"{flow.shape}")
    h, w = labels.shape
    xs = np.rint(np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]).astype(np.int64)
    ys = np.rint(np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]).astype(np.int64)
    in_view = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    warped = np.full_like(labels, fill)
    warped[in_view] = labels[ys[in_view], xs[in_view]]
    return warped, in_view


def pair_consistency(pred_a: np.ndarray, pred_b: np.ndarray, flow_ab: np.ndarray,
                     num_classes: int, ignore_index: int = IGNORE_INDEX,
                     out_of_view: str = "ignore") -> float:
    """Return the pairwise mIoU (0..1) of ``pred_a`` and ``pred_b`` warped into ``a``'s frame.

    ``flow_ab`` (H, W, 2) maps frame a to frame b (``a(p) ≈ b(p + F(p))``), so the warped map
    is ``pred_b(p + F(p))``. Out-of-view pixels are skipped (``"ignore"``) or set to class 0
    (``"class0"``, Ref's behaviour). NaN when no pixel is left to compare.
    """
    if out_of_view not in OUT_OF_VIEW:
        raise ValueError(f"out_of_view must be one of {OUT_OF_VIEW}, got {out_of_view!r}")
    warped, in_view = warp_labels(pred_b, flow_ab, fill=ignore_index)
    if out_of_view == "class0":
        warped[~in_view] = 0
    return pair_miou(pred_a, warped, num_classes, ignore_index=ignore_index)


def pair_flip_rate(pred_a: np.ndarray, pred_b: np.ndarray, flow_ab: np.ndarray,
                   ignore_index: int = IGNORE_INDEX) -> float:
    """Return the share of in-view pixels whose label differs from ``pred_b`` warped back."""
    warped, _ = warp_labels(pred_b, flow_ab, fill=ignore_index)
    return flip_rate(pred_a, warped, ignore_index=ignore_index)
