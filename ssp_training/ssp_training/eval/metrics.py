"""Accumulators for the paper's two scores on top of ``ssp_perception.metrics``.

- mIoU (SSP_SPEC §7.2): one confusion matrix pooled over every labelled frame of the split,
  ignore index skipped, macro mean over the classes present in GT or predictions.
- TC (SSP_SPEC §7.3): for each clip and each consecutive pair, the prediction of one frame is
  warped into the other with optical flow (nearest) and the two maps are compared with the
  pairwise mIoU; a clip's TC is the mean over its pairs and the split's TC the unweighted mean
  over clips.

Decision (the issue; deviation from Ref, SSP_SPEC §12.8): pixels whose flow target leaves the
image are *ignored* by default. Ref counts them as class 0; ``out_of_view="class0"``
reproduces that for comparisons with the paper's numbers.

Example::

    >>> import numpy as np
    >>> a = np.zeros((4, 6), np.uint8); a[:, 3:] = 1
    >>> b = np.roll(a, 1, axis=1)                  # the scene moved one pixel to the right
    >>> flow = np.zeros((4, 6, 2), np.float32); flow[..., 0] = 1.0
    >>> pair_consistency(a, b, flow, num_classes=2)
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
# The pairwise TC term is the core's (ssp_replay's report uses the same function).
from ssp_perception.consistency import OUT_OF_VIEW, pair_consistency  # noqa: F401
from ssp_perception.metrics import confusion_matrix, iou_per_class, mean_iou


@dataclass
class SegmentationScore:
    """Pool a confusion matrix over labelled frames; report mIoU and per-class IoU."""

    num_classes: int
    """Number of classes C of the label space."""
    ignore_index: int = 255
    """Ground-truth value that is never scored."""

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.frames = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one (H, W) prediction and its (H, W) ground truth to the pool."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.frames += 1

    def miou(self) -> float:
        """Return the pooled macro mIoU (0..1; NaN before any labelled pixel)."""
        return mean_iou(self.matrix)

    def per_class(self) -> np.ndarray:
        """Return the (C,) IoU per class (NaN where absent from GT and predictions)."""
        return iou_per_class(self.matrix)


@dataclass
class ConsistencyScore:
    """Collect pairwise TC values per clip; report per-clip means and their unweighted mean."""

    curves: dict[str, list[float]] = field(default_factory=dict)
    """Per clip, the pairwise TC (0..1) of each consecutive pair in frame order."""

    def update(self, clip: str, value: float) -> None:
        """Append the TC of the clip's next consecutive pair."""
        self.curves.setdefault(clip, []).append(float(value))

    def per_clip(self) -> dict[str, float]:
        """Return each clip's mean pairwise TC (NaN for a clip with no valid pair)."""
        return {clip: _nanmean(v) for clip, v in self.curves.items()}

    def mean(self) -> float:
        """Return the unweighted mean over clips of the clip TC (NaN-clips skipped)."""
        return _nanmean(list(self.per_clip().values()))


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
