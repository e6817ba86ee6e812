"""Side-by-side renderings per clip: input | ground truth | image model | SSP | similarity s.

Each clip gives an MP4 (every frame, ``mp4v``) and a PNG strip of a few frames stacked
vertically (evenly spaced, the clip's labelled frames first). Labels are drawn in the class
set's colours, ignored pixels (and frames without ground truth) in grey, and ``s`` with the
viridis colour map (dark = current frame kept, bright = propagated). Files are written through
a temporary name and ``os.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import tempfile

import cv2
import numpy as np
from ssp_perception import encodings
from ssp_perception.classes import ClassSet
from ssp_perception.encodings import palette_lut
from ssp_perception.files import atomic_write_bytes, FILE_MODE

PANELS = ("input", "ground truth", "image model", "SSP", "similarity s")
IGNORE_COLOUR = (128, 128, 128)
HEADER_PX = 22


def colorize(labels: np.ndarray | None, class_set: ClassSet, size: tuple[int, int]) -> np.ndarray:
    """Return (H, W, 3) uint8 RGB of an (H, W) label map; grey for ignore / None."""
    if labels is None:
        return np.full(size + (3,), IGNORE_COLOUR, np.uint8)
    lut = palette_lut(class_set.colors, IGNORE_COLOUR)
    return encodings.colorize(np.ascontiguousarray(labels, np.uint8), lut)


def similarity_image(sim: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """Return (H, W, 3) uint8 RGB of a [0, 1] similarity map (zeros when None: no state)."""
    s = np.zeros(size, np.float32) if sim is None else np.clip(sim, 0.0, 1.0)
    bgr = cv2.applyColorMap((s * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _with_header(panel: np.ndarray, title: str) -> np.ndarray:
    header = np.full((HEADER_PX, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(header, title, (4, HEADER_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([header, panel], axis=0)


def compose_row(rgb: np.ndarray, gt: np.ndarray | None, image_pred: np.ndarray,
                ssp_pred: np.ndarray, sim: np.ndarray | None, class_set: ClassSet,
                frame_index: int) -> np.ndarray:
    """Return one (22 + H, 5W, 3) uint8 RGB row: the five panels with titles."""
    size = rgb.shape[:2]
    panels = [rgb, colorize(gt, class_set, size), colorize(image_pred, class_set, size),
              colorize(ssp_pred, class_set, size), similarity_image(sim, size)]
    titles = [f"{PANELS[0]} #{frame_index}"] + list(PANELS[1:])
    if gt is None:
        titles[1] += " (none)"
    return np.concatenate([_with_header(p, t) for p, t in zip(panels, titles)], axis=1)


@dataclass
class ClipRenderer:
    """Stream rows of one clip into an MP4 and keep a few rows for the PNG strip."""

    out_dir: Path
    """Folder of the clip's files (``<clip>.mp4`` and ``<clip>.png``)."""
    clip: str
    """Clip name."""
    fps: float
    """Frame rate of the video."""
    strip_rows: int = 6
    """Number of frames in the PNG strip."""
    _writer: cv2.VideoWriter | None = field(default=None, init=False, repr=False)
    _tmp_video: str = field(default="", init=False, repr=False)
    _rows: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _labelled: list[int] = field(default_factory=list, init=False, repr=False)

    def add(self, row: np.ndarray, index: int, labelled: bool) -> None:
        """Append a composed row (RGB) for frame ``index``."""
        if self._writer is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd, self._tmp_video = tempfile.mkstemp(prefix=f".{self.clip}.", suffix=".mp4",
                                                   dir=self.out_dir)
            os.close(fd)
            h, w = row.shape[:2]
            self._writer = cv2.VideoWriter(self._tmp_video, cv2.VideoWriter_fourcc(*"mp4v"),
                                           float(self.fps), (w, h))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write an mp4v video to {self.out_dir}")
        self._writer.write(cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
        # Keep rows at half size: a strip of full-size 5-panel rows gets very large.
        self._rows[index] = cv2.resize(row, (row.shape[1] // 2, row.shape[0] // 2),
                                       interpolation=cv2.INTER_AREA)
        if labelled:
            self._labelled.append(index)

    def close(self) -> list[Path]:
        """Finish the video and write the PNG strip; return the two paths."""
        if self._writer is None:
            return []
        self._writer.release()
        video = self.out_dir / f"{self.clip}.mp4"
        os.chmod(self._tmp_video, FILE_MODE)  # mkstemp made it 0600; outputs are 0644
        os.replace(self._tmp_video, video)
        strip = self.out_dir / f"{self.clip}.png"
        rows = [self._rows[i] for i in self._strip_indices()]
        ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows, axis=0),
                                                    cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"OpenCV could not encode the strip of clip {self.clip}")
        atomic_write_bytes(strip, buf.tobytes())
        return [video, strip]

    def abort(self) -> None:
        """Drop the unfinished video (on an error): nothing half-written keeps a final name."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            Path(self._tmp_video).unlink(missing_ok=True)

    def _strip_indices(self) -> list[int]:
        indices = sorted(self._rows)
        chosen = list(dict.fromkeys(self._labelled[:self.strip_rows]))
        spaced = np.linspace(0, len(indices) - 1, num=min(self.strip_rows, len(indices)))
        for i in spaced.round().astype(int):
            if len(chosen) >= self.strip_rows:
                break
            if indices[i] not in chosen:
                chosen.append(indices[i])
        return sorted(chosen)
