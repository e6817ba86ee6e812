"""Render a replay: the comparison video and the latency / TC / flip-rate plots (ROS-free)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .report import ModeRun, Palette

PLOT_FILES = {"latency": "latency_hist.png", "tc": "tc_over_time.png",
              "flip_rate": "flip_rate_over_time.png"}
VIDEO_FILE = "side_by_side.mp4"


# ---- side-by-side video ----------------------------------------------------------------------

# Candidate colours of the changed pixels in the flicker row (RGB), bright on a dimmed grey
# frame; the one farthest from every class colour is used, so no one reads it as a class.
FLICKER_CANDIDATES = ((255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0), (128, 0, 255),
                      (0, 255, 128), (255, 255, 255))


def flicker_color(palette: Palette) -> tuple[int, int, int]:
    """Return the flicker-row colour for ``palette``: the candidate least like any class."""
    colors = palette.colors.astype(np.int64)
    return max(FLICKER_CANDIDATES, key=lambda c: int(np.abs(colors - c).sum(axis=1).min()))


class SideBySideVideo:
    """Write the replay's comparison video to an MP4 with OpenCV.

    Top row: ``input | ground truth | <mode> ...`` (label overlays; the ground-truth column only
    when the bag has labels). Bottom row: the class legend under the input, a key to the
    flicker view under the ground truth, and under each mode its flicker view: the pixels whose
    label changed from the previous frame after motion compensation (flow), on a dimmed frame.
    """

    def __init__(self, path: Path, fps: float, palette: Palette, panels: Sequence[str],
                 ground_truth: bool = False, height: int = 270, alpha: float = 0.55) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
        self.path = Path(path)
        self.fps = fps if math.isfinite(fps) and fps > 0 else 10.0
        self.palette = palette
        self.panels = list(panels)
        self.ground_truth = ground_truth
        self.height = height
        self.alpha = alpha
        self._writer: cv2.VideoWriter | None = None
        self._held: dict[str, np.ndarray | None] = dict.fromkeys(self.panels)
        self.flicker_rgb = flicker_color(palette)

    def write(self, rgb: np.ndarray, labels: dict[str, np.ndarray | None],
              gt: np.ndarray | None = None,
              flicker: dict[str, tuple[np.ndarray, float] | None] | None = None) -> None:
        """Append one frame; a mode without output for it shows its last mask, marked stale.

        ``flicker`` maps a mode to ``(changed mask, flip rate)`` of its last pair, or None on
        its first output (``Evaluator.flicker``).
        """
        h, w = rgb.shape[:2]
        size = (max(2, round(w * self.height / h)) // 2 * 2, self.height)  # even for codecs
        base = cv2.resize(rgb, size)
        flicker = flicker or {}
        top = [_titled(base, "input")]
        bottom = [_legend(self.palette, size)]
        if self.ground_truth:
            top.append(_titled(self._overlay(base, gt, size), "ground truth") if gt is not None
                       else _titled(np.zeros_like(base), "ground truth (none)"))
            bottom.append(_flicker_key(size, self.flicker_rgb))
        for name in self.panels:
            title = name.replace("_", " ")
            fresh = labels.get(name) is not None
            if fresh:
                self._held[name] = labels[name]
            held = self._held[name]
            tile = (np.zeros_like(base) if held is None else self._overlay(base, held, size))
            top.append(_titled(tile, f"{title} (no output)" if not fresh else title))
            pair = flicker.get(name) if fresh else None
            if pair is None:
                bottom.append(_titled(_dim(base), f"{title}: flicker (no previous frame)"))
            else:
                bottom.append(_titled(_flicker(base, pair[0], size, self.flicker_rgb),
                                      f"{title}: flicker {100.0 * pair[1]:.1f} %"))
        frame = np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)])
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (frame.shape[1], frame.shape[0]))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write an MP4 video at {self.path}")
        self._writer.write(frame)

    def _overlay(self, base: np.ndarray, labels: np.ndarray,
                 size: tuple[int, int]) -> np.ndarray:
        color = self.palette.colorize(cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST))
        return cv2.addWeighted(color, self.alpha, base, 1.0 - self.alpha, 0.0)

    def close(self) -> None:
        """Finish the file (safe to call twice)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _titled(tile: np.ndarray, text: str) -> np.ndarray:
    tile = np.ascontiguousarray(tile)
    _text(tile, text, (8, 22), 0.6)
    return tile


def _text(tile: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    """Draw white text with a black outline (readable on any background)."""
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)


def _dim(base: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return (grey * 0.4).astype(np.uint8)


def _flicker(base: np.ndarray, changed: np.ndarray, size: tuple[int, int],
             color: tuple[int, int, int]) -> np.ndarray:
    tile = _dim(base)
    mask = cv2.resize(changed.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    tile[mask] = color
    return tile


def _legend(palette: Palette, size: tuple[int, int]) -> np.ndarray:
    """Return a tile listing each class's colour swatch and name, in as many columns as needed."""
    width, height = size
    tile = np.full((height, width, 3), 32, np.uint8)
    top = 30 if height >= 150 else 4  # small tiles (tests, thumbnails) skip the heading
    if top > 4:
        _text(tile, "classes", (8, 22), 0.6)
    per_column = max(1, (height - top) // 12)  # rows of at least 12 px
    columns = math.ceil(palette.num_classes / per_column)
    rows = math.ceil(palette.num_classes / columns)
    step = min(30, (height - top) // rows)
    box = max(4, step - 6)
    for i, (name, color) in enumerate(zip(palette.names, palette.colors)):
        x = 8 + (i // rows) * (width // columns)
        y = top + (i % rows) * step
        cv2.rectangle(tile, (x, y), (x + box, y + box), tuple(int(c) for c in color), cv2.FILLED)
        _text(tile, name.replace("_", " "), (x + box + 6, y + box - 2), min(0.5, step / 40))
    return tile


def _flicker_key(size: tuple[int, int], color: tuple[int, int, int]) -> np.ndarray:
    """Return a tile that explains the flicker row."""
    width, height = size
    tile = np.full((height, width, 3), 32, np.uint8)
    lines = ("flicker (bottom row):", "pixels whose label changed", "from the previous frame,",
             "motion-compensated with", "optical flow (DIS)")
    for i, line in enumerate(lines):
        _text(tile, line, (8, 22 + 24 * i), 0.55)
    cv2.rectangle(tile, (8, 22 + 24 * len(lines)), (28, 42 + 24 * len(lines)), color,
                  cv2.FILLED)
    _text(tile, "= changed", (34, 38 + 24 * len(lines)), 0.55)
    return tile


# ---- plots --------------------------------------------------------------------------------------

def write_plots(out_dir: Path, runs: Sequence[ModeRun],
                series: dict[str, dict[str, list[tuple[int, float]]]]) -> list[str]:
    """Write the latency histogram and the TC / flip-rate curves; return the file names."""
    # The object-oriented API needs no pyplot and no global backend switch.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for run in runs:
        lat = [r.latency_ms for r in run.records if r.labels_png is not None]
        if lat:
            ax.hist(lat, bins=min(40, max(5, len(lat) // 2)), alpha=0.6, label=run.name)
    ax.set_xlabel("latency publish -> labels [ms]")
    ax.set_ylabel("frames")
    ax.set_title("End-to-end latency")
    _legend_if_any(ax)
    fig.savefig(out_dir / PLOT_FILES["latency"], dpi=100)

    for key, ylabel in (("tc", "TC (pair mIoU, flow-warped)"),
                        ("flip_rate", "flip rate (changed labels)")):
        fig = Figure(figsize=(7, 4), layout="constrained")
        ax = fig.add_subplot()
        for name, per_mode in series.items():
            if per_mode[key]:
                x, y = zip(*per_mode[key])
                ax.plot(x, y, label=name, linewidth=1.2)
        ax.set_xlabel("frame")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"{ylabel} over time")
        _legend_if_any(ax)
        fig.savefig(out_dir / PLOT_FILES[key], dpi=100)
    return list(PLOT_FILES.values())


def _legend_if_any(ax: Any) -> None:
    # A one-frame bag has no TC pair to draw: no legend (matplotlib warns about an empty one).
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
