"""Validation during training: mIoU on labelled frames and TC over whole clips, in order.

Every validation clip is run frame by frame at the working size with the model kind's
``predict_clip`` (SSP: the node's streaming step, ``ssp_perception.streaming.advance``, with
the homographies of ``data.homography``; a failed registration is handled by
``val.on_registration_failure``, "identity" by default like ``ssp_eval`` (Ref), so a model is
validated and scored the same way; image models: each frame alone). Teacher recipes may
validate on the centre square crop of each frame (``val.center_crop``, SSP_SPEC §1.2).
Non-finite logits are an error, never a score. mIoU pools one confusion matrix over all
labelled frames (§7.2). TC is the paper's metric (§7.3) with one deliberate deviation:
out-of-view pixels are ignored, not counted as class 0 (``eval.metrics.pair_consistency``).

Flow for TC: with ``val.flow: gt`` the dataset's backward flow of frame i+1 (i+1 -> i) is used
and the pair is compared in frame i+1; with a provider, the flow i -> i+1 is computed and the
pair compared in frame i, as in Ref. Pairwise mIoU is symmetric in its two maps, so both give
the same score up to which frame's pixels are counted.
"""

from __future__ import annotations

from dataclasses import replace
import time
from typing import Any, Iterator

import numpy as np
from ssp_perception.progress import progress_bar
from ssp_perception.registration import create_registrator, RegistrationConfig
from ssp_perception.streaming import all_finite, NonFiniteOutputError
import torch
from torch import nn

from .data.dataset import SequenceDataset, SequenceFrame, to_tensor_image
from .eval.metrics import ConsistencyScore, pair_consistency, SegmentationScore
from .flow import create_flow_provider, FlowProvider
from .model_kinds import ModelKind
from .recipes import Recipe


def _homographies(frames: Iterator[SequenceFrame], source: str, reg_cfg: dict
                  ) -> Iterator[tuple[SequenceFrame, np.ndarray | None]]:
    """Pair each frame with its previous -> current homography.

    None for the first frame and where it is unknown: a failed registration or a frame
    without ``registration/<stem>.npy``. The streaming step then applies its
    registration-failure policy.
    """
    registrator = create_registrator(RegistrationConfig(**reg_cfg)) \
        if source == "registrator" else None
    for i, frame in enumerate(frames):
        if source == "registrator":
            result = registrator.register_next(frame.image)
            h = result.homography if result.success else None
        elif source == "identity":
            h = np.eye(3)
        else:
            h = frame.homography
        yield frame, (None if i == 0 else h)


def center_crop(frame: SequenceFrame) -> SequenceFrame:
    """Return ``frame`` cut to its centre square of side min(H, W), ground truth included.

    The homography is conjugated with the crop's offset; flow vectors are unchanged (a crop
    only shifts pixel positions), flow into the cut-off border counts as out of view.
    """
    h, w = frame.image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    win = (slice(y0, y0 + side), slice(x0, x0 + side))
    homography = frame.homography
    if homography is not None:
        shift = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
        homography = np.linalg.inv(shift) @ homography @ shift
    return replace(
        frame, image=np.ascontiguousarray(frame.image[win]), homography=homography,
        label=None if frame.label is None else np.ascontiguousarray(frame.label[win]),
        flow_bwd=None if frame.flow_bwd is None else np.ascontiguousarray(frame.flow_bwd[win]),
        occlusion=None if frame.occlusion is None else np.ascontiguousarray(
            frame.occlusion[win]))


def predict_sequence(model: nn.Module, kind: ModelKind, frames: Iterator[SequenceFrame],
                     device: torch.device, homography: str = "dataset",
                     registration: dict | None = None, clip: str = "",
                     on_registration_failure: str = "identity"
                     ) -> Iterator[tuple[SequenceFrame, np.ndarray]]:
    """Yield (frame, (H, W) uint8 prediction) for a clip's frames, in order.

    Non-finite logits raise ``NonFiniteOutputError`` naming ``clip`` and the frame.
    """
    policy = {"on_registration_failure": on_registration_failure} \
        if kind.needs_homography else {}
    pending: list[SequenceFrame] = []

    def feed():
        for frame, h in _homographies(frames, homography, registration or {}):
            pending.append(frame)
            ht = None if h is None else torch.as_tensor(h, dtype=torch.float32,
                                                        device=device)[None]
            yield to_tensor_image(frame.image)[None].to(device), ht

    try:
        for logits in kind.predict_clip(model, feed(), **policy):
            if not all_finite(logits):
                raise NonFiniteOutputError("non-finite logits (NaN or inf)")
            # predict_clip yields exactly once per frame it consumed, so pending holds one.
            yield pending.pop(0), logits[0].argmax(0).to(torch.uint8).cpu().numpy()
    except NonFiniteOutputError as err:
        raise NonFiniteOutputError(
            f"validation: model kind {kind.name!r}: {err} on clip {clip or '?'} frame "
            f"{pending[0].stem if pending else '?'}; the weights are broken (training "
            f"diverged or model.init holds NaN)") from None


def _pair_tc(prev: tuple[SequenceFrame, np.ndarray], cur: tuple[SequenceFrame, np.ndarray],
             provider: FlowProvider | None, num_classes: int) -> float:
    (f0, p0), (f1, p1) = prev, cur
    if provider is None:
        if f1.flow_bwd is None:
            raise ValueError(f"val.flow 'gt' but frame {f1.stem} has no stored flow")
        return pair_consistency(p1, p0, f1.flow_bwd, num_classes)
    return pair_consistency(p0, p1, provider.flow(f0.image, f1.image), num_classes)


@torch.no_grad()
def validate(model: nn.Module, kind: ModelKind, recipe: Recipe, clips: tuple[str, ...],
             device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Return {"miou", "tc", "per_class_iou", "frames", "labelled", "clips", "seconds"}."""
    val, data = recipe.val, recipe.data
    t0 = time.perf_counter()
    seq = SequenceDataset(data.root, val.split, size=(data.size[0], data.size[1]))
    wanted = set(clips[:val.max_clips] if val.max_clips else clips)
    num_classes = data.num_classes
    seg, cons = SegmentationScore(num_classes), ConsistencyScore()
    provider = None
    if val.tc and val.flow != "gt":
        provider = create_flow_provider(val.flow, val.flow_weights or None, device=str(device))
    frames_seen = 0
    chosen = [c for c in seq if c.name in wanted]
    for clip in progress_bar(chosen, desc="validate", disable=not progress, leave=False):
        n = min(len(clip), val.max_frames) if val.max_frames else len(clip)
        frames = (clip.frame(i) for i in range(n))
        if val.center_crop:
            frames = (center_crop(f) for f in frames)
        prev = None
        for frame, pred in predict_sequence(model, kind, frames, device, data.homography,
                                            data.registration, clip.name,
                                            val.on_registration_failure):
            frames_seen += 1
            if frame.label is not None:
                seg.update(pred, frame.label)
            if val.tc and prev is not None:
                cons.update(clip.name, _pair_tc(prev, (frame, pred), provider, num_classes))
            # Keep only what the next pair needs: the image for flow, the prediction.
            prev = (frame, pred)
    per_class = seg.per_class()
    return {"miou": seg.miou(), "tc": cons.mean() if val.tc else float("nan"),
            "per_class_iou": [None if np.isnan(v) else float(v) for v in per_class],
            "frames": frames_seen, "labelled": seg.frames, "clips": len(chosen),
            "seconds": round(time.perf_counter() - t0, 1)}
