"""The evaluation loop: every model over every clip of a split, in lockstep, frame by frame.

All models see the same frame before the next is read, so a clip is decoded once, each pair's
optical flow for TC is computed once and shared by every model, and memory does not grow with
the clip length (only the previous frame's predictions are kept). Per clip and model the loop
resets the state, steps through the frames (timed), scores labelled frames into the pooled
confusion matrix and scores each consecutive pair's consistency (SSP_SPEC §7).

Decision (TC direction): each pair (i-1, i) is compared on frame i's grid, with the flow from
frame i to frame i-1 (``P_{i-1}`` warped forward). Ref warps ``P_i`` back onto frame i-1 with
the flow i-1 -> i; both score the agreement of consecutive predictions along the motion over
co-visible pixels. We take the direction every dataset stores as ground truth (``flow/*.npz``
"bwd", the direction of the TC loss), so ground-truth, DIS and RAFT TC measure the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from ssp_perception.classes import ClassSet
from ssp_perception.progress import progress_bar
from ssp_perception.streaming import all_finite, NonFiniteOutputError
import torch

from .efficiency import count_flops, count_parameters, LatencyMeter
from .inputs import EvalError
from .metrics import ConsistencyScore, OUT_OF_VIEW, pair_consistency, SegmentationScore
from .predictors import Frame, Prediction, Predictor
from .render import ClipRenderer, compose_row
from .report import ModelResult
from ..data.dataset import SequenceFrame
from ..flow import FlowProvider


@dataclass
class Entry:
    """One model to evaluate: its row name, artifact and streaming predictor."""

    name: str
    """Row label in tables and plots."""
    checkpoint: str
    """Artifact path."""
    predictor: Predictor
    """The streaming predictor."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Details written to the report (homography source, flow, ...)."""


@dataclass(frozen=True)
class RunSettings:
    """How the loop scores and measures."""

    num_classes: int
    """Number of classes C."""
    ignore_index: int = 255
    """Ground-truth value that is never scored."""
    tc_out_of_view: str = "ignore"
    """TC pixels whose flow leaves the image: "ignore" (ours) or "class0" (Ref, §12.8)."""
    latency_warmup: int = 3
    """Frames per model whose step time is not recorded (first frames of the first clip)."""
    flops_skip: int = 3
    """Leading frames of the first clip stepped before FLOPs are counted (state warm-up)."""
    flops_frames: int = 8
    """Frames whose FLOPs are averaged (8 = one DFF keyframe period)."""

    def __post_init__(self) -> None:
        if self.tc_out_of_view not in OUT_OF_VIEW:
            raise ValueError(f"tc_out_of_view must be one of {OUT_OF_VIEW}, "
                             f"got {self.tc_out_of_view!r}")
        if self.latency_warmup < 0 or self.flops_skip < 0 or self.flops_frames < 1:
            raise ValueError("latency_warmup and flops_skip must be >= 0, flops_frames >= 1")


@dataclass
class RenderPlan:
    """Which predictors feed the side-by-side video (image model and SSP of one checkpoint)."""

    image: Predictor
    """Image model (no propagation)."""
    ssp: Predictor
    """SSP with propagation (its similarity map is drawn too)."""
    class_set: ClassSet
    """Colours of the label panels."""
    out_dir: Path
    """Folder for ``<clip>.mp4`` and ``<clip>.png``."""
    fps: float = 10.0
    """Video frame rate."""


class _Tracker:
    """Scores and timings of one entry across all clips."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.seg = SegmentationScore(settings.num_classes, settings.ignore_index)
        self.tc = ConsistencyScore()
        self.latency = LatencyMeter(warmup=settings.latency_warmup)
        self.frames = 0
        self.prev_labels: np.ndarray | None = None

    def score(self, clip: str, labels: np.ndarray, gt: np.ndarray | None,
              pair_flow: np.ndarray | None) -> None:
        """Score one frame's (H, W) labels; ``pair_flow`` maps it to the previous frame."""
        self.frames += 1
        if gt is not None:
            self.seg.update(labels, gt)
        if pair_flow is not None:
            self.tc.update(clip, pair_consistency(
                labels, self.prev_labels, pair_flow, self.settings.num_classes,
                self.settings.ignore_index, self.settings.tc_out_of_view))
        self.prev_labels = labels

    def end_clip(self, clip: str) -> None:
        """Close a clip (a one-frame clip still gets its empty TC curve)."""
        self.tc.curves.setdefault(clip, [])
        self.prev_labels = None


def _labels(pred: Prediction) -> np.ndarray:
    # max().indices, not argmax(): the same result, much faster on CPU (see ssp_perception.stream)
    return pred.logits.max(dim=1).indices[0].to(torch.uint8).cpu().numpy()


def ping_pong(frames: list[Frame], n: int) -> list[Frame]:
    """Return ``n`` frames walking ``frames`` forth and back (0, 1, .., k, k-1, .., 0, 1, ..).

    Lets a short clip feed a longer run of steps without a jump in the motion; a backward
    step carries the inverse of the forward homography, so SSP's propagation stays aligned.
    """
    if len(frames) < 2:
        return frames[:1] * n
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    out = [replace(frames[0], homography=None)]
    for i in range(1, n):
        a, b = order[(i - 1) % len(order)], order[i % len(order)]
        h = frames[b].homography if b == a + 1 else frames[a].homography
        if b != a + 1 and h is not None:
            h = np.linalg.inv(h)
        out.append(replace(frames[b], homography=h))
    return out


def measure_gflops(predictor: Predictor, frames: list[Frame], skip: int, count: int) -> float:
    """Return mean GFLOPs per step over ``count`` steps after ``skip`` warm-up steps.

    The steps run from a fresh state over ``frames`` played forth and back as needed, so a
    short clip still gives ``skip + count`` steps (DFF's period of 8 holds one keyframe).
    """
    if not frames:
        return float("nan")
    predictor.reset()
    total = 0
    for i, frame in enumerate(ping_pong(frames, skip + count)):
        if i < skip:
            predictor.step(frame)
        else:
            total += count_flops(lambda f=frame: predictor.step(f))
    predictor.reset()
    return total / count / 1e9


def run_evaluation(entries: list[Entry], clips: Iterable[tuple[str, Iterable[SequenceFrame]]],
                   to_frame: Callable[[SequenceFrame], Frame], settings: RunSettings,
                   flow: FlowProvider | None, device: torch.device,
                   flops_frames: list[Frame], render: RenderPlan | None = None,
                   progress: bool = True) -> list[ModelResult]:
    """Evaluate ``entries`` over ``clips``; return one result per entry.

    ``clips`` yields ``(name, frames)``; ``to_frame`` turns a dataset frame into network
    input. ``flow`` estimates TC flows; None means ground truth (``flow_bwd``).
    ``flops_frames`` (the first frames of a clip) are stepped once per model, from a fresh
    state, to count FLOPs before the timed loop (which they also warm up).
    """
    gflops = []
    for e in entries:
        try:
            gflops.append(measure_gflops(e.predictor, flops_frames, settings.flops_skip,
                                         settings.flops_frames))
        except NonFiniteOutputError as err:
            raise _nonfinite(e, err, "the first frames (FLOP count)") from None
    trackers = [_Tracker(settings) for _ in entries]
    for clip, frames in clips:
        renderer = ClipRenderer(render.out_dir, clip, render.fps) if render else None
        try:
            _run_clip(clip, frames, entries, trackers, to_frame, flow, device, render,
                      renderer, progress)
        except BaseException:
            if renderer is not None:
                renderer.abort()
            raise
        if renderer is not None:
            renderer.close()
    return [_result(entry, tr, settings, g) for entry, tr, g in zip(entries, trackers, gflops)]


def _run_clip(clip: str, frames: Iterable[SequenceFrame], entries: list[Entry],
              trackers: list[_Tracker], to_frame: Callable[[SequenceFrame], Frame],
              flow: FlowProvider | None, device: torch.device, render: RenderPlan | None,
              renderer: ClipRenderer | None, progress: bool) -> None:
    """Step every entry through one clip, frame by frame, and score it."""
    for predictor in [e.predictor for e in entries] + ([render.image, render.ssp]
                                                       if render else []):
        predictor.reset()
    prev_rgb: np.ndarray | None = None
    for cf in progress_bar(frames, desc=clip, unit="frame", disable=not progress, leave=False):
        frame = to_frame(cf)
        pair_flow = None if prev_rgb is None else _pair_flow(flow, prev_rgb, cf, clip)
        for entry, tr in zip(entries, trackers):
            where = f"clip {clip} frame {cf.index}"
            try:
                pred = tr.latency.measure(lambda e=entry: e.predictor.step(frame), device)
            except NonFiniteOutputError as err:
                raise _nonfinite(entry, err, where) from None
            # Outside the timed step: SSP checks inside its step, the other methods here.
            if not all_finite(pred.logits):
                raise _nonfinite(entry, "non-finite logits (NaN or inf)", where)
            tr.score(clip, _labels(pred), cf.label, pair_flow)
        if renderer is not None:
            _render_frame(render, renderer, cf, frame)
        prev_rgb = cf.image
    for tr in trackers:
        tr.end_clip(clip)


def _nonfinite(entry: Entry, what: object, where: str) -> NonFiniteOutputError:
    """Return the one-line error for an entry whose model produced NaN or inf."""
    return NonFiniteOutputError(f"{entry.checkpoint} ({entry.name}): {what} on {where}; the "
                                f"model's weights are broken, so nothing was scored")


def _pair_flow(flow: FlowProvider | None, prev_rgb: np.ndarray, cf: SequenceFrame,
               clip: str) -> np.ndarray:
    """Return the (H, W, 2) flow from frame ``cf`` to the previous frame (module docstring)."""
    if flow is not None:
        return flow.flow(cf.image, prev_rgb)
    if cf.flow_bwd is None:
        raise EvalError(f"clip {clip} frame {cf.index}: ground-truth flow requested but the "
                        "dataset has none for this frame; use --flow dis (or raft)")
    return cf.flow_bwd


def _render_frame(plan: RenderPlan, renderer: ClipRenderer, cf: SequenceFrame,
                  frame: Frame) -> None:
    image = _labels(plan.image.step(frame))
    ssp = plan.ssp.step(frame)
    sim = None if ssp.similarity is None else ssp.similarity[0, 0].float().cpu().numpy()
    row = compose_row(cf.image, cf.label, image, _labels(ssp), sim, plan.class_set, cf.index)
    renderer.add(row, cf.index, labelled=cf.label is not None)


def _pct(v: float) -> float:
    return 100.0 * v


def _result(entry: Entry, tr: _Tracker, settings: RunSettings, gflops: float) -> ModelResult:
    names = entry.extra.get("class_names") or [str(i) for i in range(settings.num_classes)]
    per_class = {n: (None if np.isnan(v) else _pct(float(v)))
                 for n, v in zip(names, tr.seg.per_class())}
    timing = tr.latency.summary()
    extra = {k: v for k, v in entry.extra.items() if k != "class_names"}
    return ModelResult(
        name=entry.name, checkpoint=entry.checkpoint, kind=entry.predictor.kind,
        miou=_pct(tr.seg.miou()), per_class_iou=per_class, tc=_pct(tr.tc.mean()),
        tc_per_clip={c: (None if np.isnan(v) else _pct(v)) for c, v in tr.tc.per_clip().items()},
        tc_curves={c: [None if np.isnan(v) else _pct(v) for v in curve]
                   for c, curve in tr.tc.curves.items()},
        params=count_parameters(entry.predictor.module), gflops=gflops, fps=timing["fps"],
        latency_ms=timing["latency_ms"], latency_p90_ms=timing["latency_p90_ms"],
        cpu_ms=timing["cpu_ms"],
        frames=tr.frames, labelled_frames=tr.seg.frames, extra=extra)
