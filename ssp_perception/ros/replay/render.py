"""Render a replay: the side-by-side video and the latency / TC / flip-rate plots (ROS-free)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .report import ModeRun, Palette

PLOT_FILES = {"latency": "latency_hist.png", "tc": "tc_over_time.png",
              "flip_rate": "flip_rate_over_time.png"}
VIDEO_FILE = "side_by_side.mp4"


# ---- side-by-side video ----------------------------------------------------------------------

class SideBySideVideo:
    """Write ``input | image model | SSP`` overlays to an MP4 with OpenCV."""

    def __init__(self, path: Path, fps: float, palette: Palette, panels: Sequence[str],
                 height: int = 360, alpha: float = 0.55) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
        self.path = Path(path)
        self.fps = fps if math.isfinite(fps) and fps > 0 else 10.0
        self.palette = palette
        self.panels = list(panels)
        self.height = height
        self.alpha = alpha
        self._writer: cv2.VideoWriter | None = None
        self._held: dict[str, np.ndarray | None] = dict.fromkeys(self.panels)

    def write(self, rgb: np.ndarray, labels: dict[str, np.ndarray | None]) -> None:
        """Append one frame; a mode without output for it shows its last mask, marked stale."""
        h, w = rgb.shape[:2]
        width = max(2, round(w * self.height / h)) // 2 * 2  # even sizes for the codecs
        tiles = [_titled(cv2.resize(rgb, (width, self.height)), "input", False)]
        for name in self.panels:
            fresh = labels.get(name) is not None
            if fresh:
                self._held[name] = labels[name]
            held = self._held[name]
            if held is None:
                tile = np.zeros((self.height, width, 3), np.uint8)
            else:
                tile = self._overlay(rgb, held, (width, self.height))
            tiles.append(_titled(tile, name.replace("_", " "), not fresh))
        frame = cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR)
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (frame.shape[1], frame.shape[0]))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write an MP4 video at {self.path}")
        self._writer.write(frame)

    def _overlay(self, rgb: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        color = self.palette.colorize(cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST))
        base = cv2.resize(rgb, size)
        return cv2.addWeighted(color, self.alpha, base, 1.0 - self.alpha, 0.0)

    def close(self) -> None:
        """Finish the file (safe to call twice)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def _titled(tile: np.ndarray, title: str, stale: bool) -> np.ndarray:
    tile = np.ascontiguousarray(tile)
    text = f"{title} (no output)" if stale else title
    cv2.putText(tile, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)
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
    ax.legend()
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
        ax.legend()
        fig.savefig(out_dir / PLOT_FILES[key], dpi=100)
    return list(PLOT_FILES.values())
