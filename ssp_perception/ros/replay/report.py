"""Evaluate replayed segmentations and write the report files (ROS-free).

``ssp_replay`` (``driver.py``) drives the ROS node and hands this module plain records: one
:class:`FrameRecord` per input frame and mode. Everything here is numpy / OpenCV; the plots and
the side-by-side video are in ``render.py``.

Metrics (defined in full in ``docs/REPLAY.md``):

- ``miou``: one confusion matrix pooled over all frames that have ground truth (SSP_SPEC §7.2).
- ``tc``: the paper's temporal consistency (SSP_SPEC §7.3) with OpenCV's DIS optical flow in
  place of RAFT: for consecutive outputs P_a, P_b (a < b), the flow F from frame a to frame b
  pulls P_b back into frame a with nearest sampling, ``tc = pair_miou(P_a, warp(P_b))``,
  averaged over pairs. Both modes are measured with the same flows, computed on the input
  frames, so the number does not depend on the node's own registration.
- ``flip_rate``: over the same pairs and pixels, the fraction of labels that changed.
- ``tc_online`` / ``flip_rate_online``: means of the node's own homography-based estimates
  (``SegmentationStatus.tc_estimate`` / ``label_flip_rate``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from ...consistency import DISFlow, pair_consistency, pair_flip_rate, warp_labels
from ...encodings import colorize, palette_lut
from ...files import atomic_write_text
from ...metrics import confusion_matrix, iou_per_class, mean_iou

REPORT_VERSION = 1
# Order of the side-by-side panels and of the report columns: the baseline first.
MODE_ORDER = ("image_model", "ssp")


@dataclass(frozen=True)
class StatusSample:
    """Hold the fields of one ``ssp_msgs/SegmentationStatus`` that the report uses."""

    frame_index: int
    """Frames processed on the stream before this one (0 = the stream's first frame)."""
    temporal_state_used: bool
    """True when the previous fused output was propagated into this frame."""
    reset_reason: str
    """Lower-case name of the reset constant, e.g. "none", "first_frame", "time_gap"."""
    registration_success: bool
    """True when the previous -> current homography passed the node's checks."""
    tc_estimate: float
    """Node's online mIoU between current and homography-warped previous labels (NaN if none)."""
    label_flip_rate: float
    """Node's online fraction of co-visible pixels whose label changed (NaN if none)."""
    similarity_mean: float
    """Mean of the similarity map s (NaN when the state was not used)."""
    mean_confidence: float
    """Mean top-class probability."""
    total_ms: float
    """Node-side latency, receive -> status."""
    model_ms: float
    """Image model forward time."""
    registration_ms: float
    """Feature matching and homography time."""
    fuse_ms: float
    """Warps, similarity block and fusion time."""
    frames_dropped: int
    """Node's cumulative count of frames replaced before the worker took them."""


@dataclass
class FrameRecord:
    """Record what one mode did with one input frame (``labels_png`` None: no output)."""

    stamp_ns: int
    """Header stamp of the input frame, nanoseconds."""
    sent_s: float = math.nan
    """Monotonic time the frame was published."""
    received_s: float = math.nan
    """Monotonic time its labels arrived (NaN when they never did)."""
    labels_png: bytes | None = None
    """The node's label mask, PNG-compressed to keep long replays in memory."""
    status: StatusSample | None = None
    """The node's status for this frame, when it arrived."""
    rejected: str = ""
    """Why the node rejected this frame (its ``rejected`` topic: e.g. "nonfinite_output")."""
    rejected_detail: str = ""
    """The node's one-line message about the rejection."""

    @property
    def latency_ms(self) -> float:
        """Return publish -> labels received in milliseconds (NaN without output)."""
        return (self.received_s - self.sent_s) * 1e3


@dataclass
class ModeRun:
    """Hold one replay of the whole bag through the node in one mode ("ssp" or "image_model")."""

    name: str
    records: list[FrameRecord]
    """One record per input frame, in bag order."""
    wall_s: float
    """Seconds from the first publish to the last output."""


@dataclass(frozen=True)
class Palette:
    """Describe the label space for metrics and rendering."""

    names: tuple[str, ...]
    colors: np.ndarray
    """(C, 3) uint8 RGB colour of each class."""
    ignore_index: int = 255

    def __post_init__(self) -> None:
        colors = np.asarray(self.colors, dtype=np.uint8)
        if colors.shape != (len(self.names), 3):
            raise ValueError(f"Palette: need one RGB colour per class ({len(self.names)}), "
                             f"got an array of shape {colors.shape}")
        if not self.names:
            raise ValueError("Palette: the class list is empty")
        object.__setattr__(self, "colors", colors)

    @property
    def num_classes(self) -> int:
        """Return the number of classes."""
        return len(self.names)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Return an (H, W, 3) uint8 RGB image of ``labels``; ignored / unknown ids are black."""
        return colorize(np.ascontiguousarray(labels, np.uint8), palette_lut(self.colors))


def encode_labels(labels: np.ndarray) -> bytes:
    """Return ``labels`` (H, W) uint8 as PNG bytes (lossless, ~50x smaller for masks)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(labels, dtype=np.uint8))
    if not ok:
        raise ValueError(f"could not PNG-encode a label mask of shape {labels.shape}")
    return buf.tobytes()


def decode_labels(png: bytes) -> np.ndarray:
    """Return the (H, W) uint8 mask of :func:`encode_labels`."""
    labels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise ValueError("corrupt label PNG in a replay record")
    return labels


# ---- temporal consistency -----------------------------------------------------------------------

class FlowConsistency:
    """Measure TC and flip rate between two label maps with DIS optical flow (the core's)."""

    def __init__(self, preset: str = "medium") -> None:
        self._dis = DISFlow(preset)

    def flow(self, rgb_a: np.ndarray, rgb_b: np.ndarray) -> np.ndarray:
        """Return the (H, W, 2) float32 flow F with ``a(x) ~ b(x + F(x))``."""
        return self._dis.flow(rgb_a, rgb_b)

    @staticmethod
    def warp_back(labels_b: np.ndarray, flow: np.ndarray, ignore_index: int) -> np.ndarray:
        """Return ``labels_b`` pulled into frame a; pixels that leave the view get ignore."""
        return warp_labels(labels_b, flow, fill=ignore_index)[0]

    def pair(self, labels_a: np.ndarray, labels_b: np.ndarray, flow: np.ndarray,
             palette: Palette) -> tuple[float, float]:
        """Return (tc, flip rate) of ``labels_a`` vs ``labels_b`` warped back with ``flow``."""
        tc = pair_consistency(labels_a, labels_b, flow, palette.num_classes,
                              ignore_index=palette.ignore_index)
        flips = pair_flip_rate(labels_a, labels_b, flow, ignore_index=palette.ignore_index)
        return tc, flips

    def changed(self, labels_a: np.ndarray, labels_b: np.ndarray, flow: np.ndarray,
                ignore_index: int) -> np.ndarray:
        """Return the (H, W) bool mask of the pixels the flip rate counts as changed.

        ``labels_b`` is pulled back into frame a with ``flow`` (motion compensation); pixels
        out of view or ignored in either map are never marked.
        """
        warped = self.warp_back(labels_b, flow, ignore_index)
        return (warped != labels_a) & (warped != ignore_index) & (labels_a != ignore_index)


# ---- evaluation pass ----------------------------------------------------------------------------

@dataclass
class _ModeState:
    cm: np.ndarray
    labelled: int = 0
    last_index: int = -1
    last_labels: np.ndarray | None = None
    flicker: tuple[np.ndarray, float] | None = None
    tc_series: list[tuple[int, float]] = field(default_factory=list)
    flip_series: list[tuple[int, float]] = field(default_factory=list)


class Evaluator:
    """Accumulate mIoU, flow TC and flip rate for every mode while the bag is read once more."""

    def __init__(self, runs: Sequence[ModeRun], palette: Palette,
                 flow_preset: str = "medium") -> None:
        lengths = {len(r.records) for r in runs}
        if len(lengths) > 1:
            raise ValueError(f"mode runs cover different frame counts: "
                             f"{ {r.name: len(r.records) for r in runs} }")
        self.runs = list(runs)
        self.palette = palette
        self._consistency = FlowConsistency(flow_preset)
        c = palette.num_classes
        self._state = {r.name: _ModeState(cm=np.zeros((c, c), np.int64)) for r in runs}
        self._frames: dict[int, np.ndarray] = {}
        self._flows: dict[tuple[int, int], np.ndarray] = {}

    def labels_at(self, run: ModeRun, index: int, shape: tuple[int, int]) -> np.ndarray | None:
        """Return the mode's labels for frame ``index`` at ``shape`` (None when it had none)."""
        png = run.records[index].labels_png
        if png is None:
            return None
        labels = decode_labels(png)
        if labels.shape != shape:
            # The node may publish at its working resolution (SSP_SPEC §13); compare at input.
            labels = cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return labels

    def update(self, index: int, rgb: np.ndarray, gt: np.ndarray | None) -> dict[str, Any]:
        """Score frame ``index`` (input RGB, optional GT) and return each mode's labels."""
        shape = rgb.shape[:2]
        self._frames[index] = rgb
        current = {}
        for run in self.runs:
            state = self._state[run.name]
            labels = self.labels_at(run, index, shape)
            current[run.name] = labels
            if labels is None:
                continue
            if gt is not None:
                self._score_gt(state, labels, gt)
            state.flicker = None
            # A change of the camera's resolution ends the chain of pairs (the node resets its
            # state there too): frames of two sizes have no optical flow between them.
            if state.last_labels is not None and state.last_labels.shape == labels.shape:
                flow = self._flow(state.last_index, index)
                tc, flips = self._consistency.pair(state.last_labels, labels, flow, self.palette)
                state.tc_series.append((index, tc))
                state.flip_series.append((index, flips))
                mask = self._consistency.changed(state.last_labels, labels, flow,
                                                 self.palette.ignore_index)
                state.flicker = (mask, flips)
            state.last_index, state.last_labels = index, labels
        self._forget(index)
        return current

    def flicker(self) -> dict[str, tuple[np.ndarray, float] | None]:
        """Return, per mode, the changed-pixel mask and flip rate of its latest pair, or None.

        None for a mode on its first output (no previous frame). The mask is in the previous
        output's frame (the flow pulls the new labels back), at most a frame's motion away.
        """
        return {name: state.flicker for name, state in self._state.items()}

    def _score_gt(self, state: _ModeState, labels: np.ndarray, gt: np.ndarray) -> None:
        if gt.shape != labels.shape:
            labels = cv2.resize(labels, (gt.shape[1], gt.shape[0]),
                                interpolation=cv2.INTER_NEAREST)
        state.cm += confusion_matrix(labels, gt, self.palette.num_classes,
                                     ignore_index=self.palette.ignore_index)
        state.labelled += 1

    def _flow(self, a: int, b: int) -> np.ndarray:
        # Modes share pairs in lockstep (and often in realtime), so each flow is computed once.
        if (a, b) not in self._flows:
            self._flows[(a, b)] = self._consistency.flow(self._frames[a], self._frames[b])
        return self._flows[(a, b)]

    def _forget(self, index: int) -> None:
        # Only each mode's last output frame can start a later pair; flows are used once.
        keep = {s.last_index for s in self._state.values()} | {index}
        self._frames = {i: f for i, f in self._frames.items() if i in keep}
        self._flows.clear()

    def series(self, name: str) -> dict[str, list[tuple[int, float]]]:
        """Return the per-pair TC and flip-rate series of mode ``name`` (frame index, value)."""
        state = self._state[name]
        return {"tc": list(state.tc_series), "flip_rate": list(state.flip_series)}

    def summary(self, run: ModeRun) -> dict[str, Any]:
        """Return the report entry of one mode (see ``docs/REPLAY.md`` for each key)."""
        state = self._state[run.name]
        statuses = [r.status for r in run.records if r.status is not None]
        frames_out = sum(r.labels_png is not None for r in run.records)
        rejected = sum(bool(r.rejected) for r in run.records)
        latencies = [r.latency_ms for r in run.records if r.labels_png is not None]
        summary: dict[str, Any] = {
            "frames_in": len(run.records),
            "frames_out": frames_out,
            "dropped": len(run.records) - frames_out - rejected,
            "rejected": rejected,
            "rejected_reasons": dict(Counter(r.rejected for r in run.records if r.rejected)),
            "node_dropped": statuses[-1].frames_dropped if statuses else 0,
            "wall_s": run.wall_s,
            "fps": frames_out / run.wall_s if run.wall_s > 0 else math.nan,
            "latency_ms": percentiles(latencies),
            "node_latency_ms": percentiles([s.total_ms for s in statuses]),
            "stage_ms_mean": {k: _nanmean([getattr(s, f"{k}_ms") for s in statuses])
                              for k in ("model", "registration", "fuse")},
            "labelled_frames": state.labelled,
            "miou": mean_iou(state.cm) if state.labelled else math.nan,
            "iou_per_class": dict(zip(self.palette.names, iou_per_class(state.cm).tolist()))
            if state.labelled else {},
            "tc": _nanmean([v for _, v in state.tc_series]),
            "tc_pairs": len(state.tc_series),
            "flip_rate": _nanmean([v for _, v in state.flip_series]),
            "tc_online": _nanmean([s.tc_estimate for s in statuses]),
            "flip_rate_online": _nanmean([s.label_flip_rate for s in statuses]),
        }
        summary.update(_status_summary(statuses))
        return summary


def _status_summary(statuses: Sequence[StatusSample]) -> dict[str, Any]:
    # Registration is only attempted when the stream has a previous frame.
    attempts = [s for s in statuses if s.frame_index > 0]
    reasons: dict[str, int] = {}
    for s in statuses:
        if s.reset_reason not in ("none", "first_frame"):
            reasons[s.reset_reason] = reasons.get(s.reset_reason, 0) + 1
    return {
        "registration_success_rate": (sum(s.registration_success for s in attempts)
                                      / len(attempts)) if attempts else math.nan,
        "temporal_state_used_rate": (sum(s.temporal_state_used for s in statuses)
                                     / len(statuses)) if statuses else math.nan,
        "resets": sum(reasons.values()),
        "reset_reasons": reasons,
        "similarity_mean": _nanmean([s.similarity_mean for s in statuses]),
        "mean_confidence": _nanmean([s.mean_confidence for s in statuses]),
    }


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """Return p50 / p90 / p99 / mean of the finite ``values`` (NaN each when there are none)."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if not arr.size:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(arr.mean())}


def _nanmean(values: Iterable[float]) -> float:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    return float(arr.mean()) if arr.size else math.nan


# ---- report files -------------------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """Return ``value`` with NaN / inf turned into None so that the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented standard JSON (NaN -> null) atomically."""
    atomic_write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


SUMMARY_ROWS = (("mIoU", "miou", 100.0, "{:.1f}"), ("TC", "tc", 100.0, "{:.1f}"),
                ("flip rate %", "flip_rate", 100.0, "{:.2f}"), ("FPS", "fps", 1.0, "{:.1f}"))
DETAIL_ROWS = SUMMARY_ROWS + (
    ("TC online (node)", "tc_online", 100.0, "{:.1f}"),
    ("flip rate online %", "flip_rate_online", 100.0, "{:.2f}"),
    ("frames in", "frames_in", 1.0, "{:.0f}"), ("frames out", "frames_out", 1.0, "{:.0f}"),
    ("dropped", "dropped", 1.0, "{:.0f}"), ("rejected", "rejected", 1.0, "{:.0f}"),
    ("latency p50 ms", ("latency_ms", "p50"), 1.0, "{:.1f}"),
    ("latency p90 ms", ("latency_ms", "p90"), 1.0, "{:.1f}"),
    ("latency p99 ms", ("latency_ms", "p99"), 1.0, "{:.1f}"),
    ("node latency p50 ms", ("node_latency_ms", "p50"), 1.0, "{:.1f}"),
    ("registration success %", "registration_success_rate", 100.0, "{:.1f}"),
    ("resets", "resets", 1.0, "{:.0f}"),
    ("labelled frames", "labelled_frames", 1.0, "{:.0f}"),
)


def _cell(summary: dict[str, Any], key: str | tuple[str, str], scale: float, fmt: str) -> str:
    value = summary
    for part in (key,) if isinstance(key, str) else key:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value * scale)


def format_table(modes: dict[str, dict[str, Any]], rows: Sequence[tuple] = SUMMARY_ROWS) -> str:
    """Return a markdown table, one row per metric and one column per mode."""
    names = list(modes)
    lines = ["| metric | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for label, key, scale, fmt in rows:
        cells = [_cell(modes[n], key, scale, fmt) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """Return the human-readable report (``report.md``) of a ``report.json`` dict."""
    modes = report["modes"]
    src = report["input"]
    lines = [
        "# ssp_replay report", "",
        f"- bag: `{src['bag']}` ({src['storage']}), image topic `{src['image_topic']}`, "
        f"labels `{src['label_topic'] or 'none'}`",
        f"- replay: `{report['replay']['mode']}`"
        + (f" at {report['replay']['rate']}x the bag rate"
           if report["replay"]["mode"] == "realtime" else "")
        + f", {src['frames']} frames, model `{report['model'].get('model_id', '?')}`",
        "", format_table(modes, DETAIL_ROWS), "",
        "mIoU, TC and flip rate in percent. TC and flip rate are measured between consecutive "
        "outputs with DIS optical flow (see docs/REPLAY.md); the online values are the node's "
        "own homography-based estimates.", "",
    ]
    for name, summary in modes.items():
        per_class = summary.get("iou_per_class") or {}
        if per_class:
            cells = ", ".join(f"{k} {_cell({'v': v}, 'v', 100.0, '{:.1f}')}"
                              for k, v in per_class.items())
            lines.append(f"- {name} IoU per class: {cells}")
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in report["files"].values()), ""]
    return "\n".join(lines)


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    """Write ``report.json`` and ``report.md`` into ``out_dir``."""
    write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(jsonable(report)))


def ordered_modes(names: Iterable[str]) -> list[str]:
    """Return mode names with the baseline first (MODE_ORDER), then any others."""
    names = list(names)
    return [n for n in MODE_ORDER if n in names] + [n for n in names if n not in MODE_ORDER]
