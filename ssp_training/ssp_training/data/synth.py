"""Synthetic aerial video with exact labels, homographies, flow and occlusion (``ssp_data synth``).

Each sequence is a drone flight over its own procedural town (``scene.py``): the camera
translates, yaws, changes altitude and tilts slightly (``camera.py``), cars and people move on
their own (``movers.py``), and per-frame nuisances make the pictures flicker the way real
footage does (``nuisance.py``). Because the ground is planar, the homography between frames is
exact; the movers' own motion is added to the ground-truth flow, and the occlusion mask marks
pixels whose scene point is not visible in the previous frame.

Everything is a function of the config and its seed: the same config writes the same bytes.

    >>> cfg = SynthConfig(size=(64, 96), frames=3, sequences=1)
    >>> frames = list(generate_sequence(cfg, 0))
    >>> frames[1].image.shape, frames[1].homography.shape, frames[1].flow_bwd.shape
    ((64, 96, 3), (3, 3), (64, 96, 2))
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
import json
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from ssp_perception.classes import IGNORE_INDEX, UAVID
from ssp_perception.cli import raise_if_interrupted
from ssp_perception.files import staged_dir
from ssp_perception.progress import progress_bar

from . import files
from .camera import FlightParams, fly, footprint, ground_to_image, intrinsics, translate
from .movers import Mover, paint, place, Placed, spawn_movers
from .nuisance import NuisanceModel, Strengths
from .scene import build_world

FORMAT_VERSION = 1
GENERATOR_VERSION = 1
# Frame rates a synthetic camera may have (it sets the motion per frame; real cameras: 1..240).
FPS_RANGE = (0.1, 1000.0)
# Most movers of each kind per view-sized area (defaults 4 and 6): at 100 the roads and paths
# are full, and each one more costs time per frame (1e9 never finished).
MAX_MOVERS = 100.0
_WRITE_AHEAD = 6  # frames whose files may be queued for the writer threads at once


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic dataset; the seed makes it reproducible."""

    size: tuple[int, int] = (384, 640)
    """Frame size (H, W) in pixels."""
    frames: int = 60
    """Frames per sequence (clip)."""
    sequences: int = 4
    """Number of sequences; each is one clip with its own world and flight."""
    seed: int = 0
    """Seed of everything random."""
    fps: float = 20.0
    """Frame rate (UAVid's 20 fps by default); sets the motion per frame."""
    val_fraction: float = 0.25
    """Share of sequences in the val split (at least one when there are two or more)."""
    view_width_m: float = 100.0
    """Ground width seen at the nominal altitude, metres (sets the metres per pixel)."""
    hfov_deg: float = 60.0
    """Horizontal field of view of the camera."""
    speed_mps: tuple[float, float] = (2.0, 6.0)
    """Range of the drone's ground speed, m/s."""
    yaw_rate_dps: float = 6.0
    """Largest yaw rate, degrees per second."""
    altitude_change: float = 0.15
    """Largest relative change of altitude within a flight."""
    tilt_deg: float = 8.0
    """Largest camera tilt away from nadir, degrees."""
    moving_vehicles: float = 4.0
    """Mean number of moving vehicles per view-sized area of the world."""
    moving_persons: float = 6.0
    """Mean number of walking people per view-sized area of the world."""
    noise: float = 1.0
    """Sensor noise strength (0 = off)."""
    exposure: float = 1.0
    """Exposure drift and flicker, and vignetting, strength (0 = off)."""
    white_balance: float = 1.0
    """White-balance drift and flicker strength (0 = off)."""
    blur: float = 1.0
    """Motion and vibration blur strength (0 = off)."""
    jpeg: float = 1.0
    """JPEG artefact strength (0 = off)."""
    haze: float = 1.0
    """Haze strength (0 = off)."""
    forward_flow: bool = False
    """Also compute and store the forward flow (previous -> current): +1 MB per 384x640 frame."""

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"SynthConfig: {msg}")

        size = tuple(self.size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 16 for v in size):
            fail(f"size must be (H, W) integers >= 16, got {self.size!r}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "speed_mps", tuple(float(v) for v in self.speed_mps))
        if self.frames < 1 or self.sequences < 1:
            fail(f"frames and sequences must be >= 1, got {self.frames} and {self.sequences}")
        if not FPS_RANGE[0] <= self.fps <= FPS_RANGE[1]:   # NaN and inf fail too
            fail(f"fps must be a finite number in {FPS_RANGE[0]:g}..{FPS_RANGE[1]:g}, got "
                 f"{self.fps}")
        if not 0.0 <= self.val_fraction < 1.0:
            fail(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.view_width_m > 0:
            fail(f"view_width_m must be > 0, got {self.view_width_m}")
        if not 20.0 <= self.hfov_deg <= 100.0:
            fail(f"hfov_deg must be in [20, 100], got {self.hfov_deg}")
        for name in ("moving_vehicles", "moving_persons"):
            if not 0.0 <= getattr(self, name) <= MAX_MOVERS:
                fail(f"{name} must be in 0..{MAX_MOVERS:g} per view-sized area, got "
                     f"{getattr(self, name)}")
        for f in ("noise", "exposure", "white_balance", "blur", "jpeg", "haze"):
            if not 0.0 <= getattr(self, f) <= 3.0:
                fail(f"{f} strength must be in [0, 3], got {getattr(self, f)}")
        self.flight()  # validates the motion ranges

    def flight(self) -> FlightParams:
        """Return the camera motion ranges."""
        return FlightParams(speed_mps=self.speed_mps, yaw_rate_dps=self.yaw_rate_dps,
                            altitude_change=self.altitude_change, tilt_deg=self.tilt_deg)

    def strengths(self) -> Strengths:
        """Return the nuisance strengths."""
        return Strengths(noise=self.noise, exposure=self.exposure,
                         white_balance=self.white_balance, blur=self.blur, jpeg=self.jpeg,
                         haze=self.haze)

    def without_nuisances(self) -> SynthConfig:
        """Return this config with every nuisance switched off (clean renders)."""
        return SynthConfig(**{**asdict(self), "noise": 0.0, "exposure": 0.0,
                              "white_balance": 0.0, "blur": 0.0, "jpeg": 0.0, "haze": 0.0})

    def to_dict(self) -> dict:
        """Return the plain-JSON form (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in fields(self) for v in [getattr(self, f.name)]}

    def split(self) -> tuple[list[int], list[int]]:
        """Return (train, val) sequence indices; val takes the last sequences."""
        n_val = round(self.sequences * self.val_fraction)
        if self.val_fraction > 0 and self.sequences >= 2:
            n_val = min(max(n_val, 1), self.sequences - 1)
        idx = list(range(self.sequences))
        return idx[:self.sequences - n_val], idx[self.sequences - n_val:]

    @property
    def camera_matrix(self) -> np.ndarray:
        """Return the 3x3 intrinsics of every synthetic frame."""
        return intrinsics(self.size, self.hfov_deg)


def clip_name(seq_index: int) -> str:
    """Return the clip folder name of a synthetic sequence."""
    return f"synth_{seq_index:03d}"


@dataclass(frozen=True)
class SynthFrame:
    """One synthetic frame and its ground truth."""

    index: int
    """Frame index in the sequence."""
    image: np.ndarray
    """(H, W, 3) uint8 RGB, with the nuisances."""
    label: np.ndarray
    """(H, W) uint8 UAVid train ids, 255 = background (ignored)."""
    homography: np.ndarray | None
    """(3, 3) float64, previous frame -> this frame, pixel coordinates; None for frame 0."""
    flow_bwd: np.ndarray | None
    """(H, W, 2) float32: pixel p here is at p + flow_bwd[p] in the previous frame."""
    flow_fwd: np.ndarray | None
    """(H, W, 2) float32 on the previous frame's grid: p there is at p + flow_fwd[p] here;
    None unless ``forward_flow``."""
    occlusion: np.ndarray | None
    """(H, W) uint8, 1 = this pixel's scene point is not visible in the previous frame."""
    moving: np.ndarray
    """(H, W) bool, pixels whose appearance a mover changes (its body or its shadow)."""


@dataclass
class _Rendered:
    """What frame k leaves behind for frame k+1's flow and occlusion."""

    g: np.ndarray
    layer: np.ndarray
    placed: list[Placed]


class _PixelGrid:
    """Pixel coordinates of a frame, reused for every flow and occlusion computation."""

    def __init__(self, size: tuple[int, int]) -> None:
        h, w = size
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self.size = size
        self.xy = np.stack([xs, ys], axis=-1)        # (H, W, 2)
        self.points = self.xy.reshape(-1, 1, 2)      # (N, 1, 2), cv2.perspectiveTransform form

    def motion(self, a: np.ndarray) -> np.ndarray:
        """Return ``a(p) - p`` (H, W, 2) for every pixel p."""
        return cv2.perspectiveTransform(self.points, a).reshape(self.xy.shape) - self.xy

    def motion_at(self, a: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Return ``a(p) - p`` (n, 2) for the pixels (ys, xs)."""
        p = self.xy[ys, xs]                          # (n, 2)
        return cv2.perspectiveTransform(p[:, None, :], a)[:, 0, :] - p


def _flow(grid: _PixelGrid, movers: list[Mover], src: _Rendered, dst_g: np.ndarray,
          dst_k: int) -> np.ndarray:
    """Return the (H, W, 2) flow from frame ``src`` to the frame with ground map ``dst_g``.

    Ground pixels move by the plane homography; each mover's pixels by its own map.
    """
    flow = grid.motion(dst_g @ np.linalg.inv(src.g))
    for p in src.placed:
        x0, y0, x1, y1 = p.box
        ys, xs = np.nonzero(src.layer[y0:y1, x0:x1] == p.index + 1)
        if ys.size == 0:
            continue
        dst_map = dst_g @ movers[p.index].pose(dst_k)
        flow[ys + y0, xs + x0] = grid.motion_at(dst_map @ np.linalg.inv(p.to_image),
                                                ys + y0, xs + x0)
    return flow


_OUTSIDE = np.iinfo(np.uint16).max  # layer id of "outside the frame"; movers never reach it


def _occlusion(grid: _PixelGrid, bwd: np.ndarray, layer: np.ndarray,
               prev_layer: np.ndarray) -> np.ndarray:
    """Return (H, W) uint8, 1 where p's scene point is not visible in the previous frame.

    That is where ``p + bwd(p)`` falls outside the previous frame, or on another layer there
    (the point was covered by a mover, or it is a mover's point hidden behind another one).
    """
    target = grid.xy + bwd
    seen = cv2.remap(prev_layer, target[..., 0], target[..., 1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=_OUTSIDE)
    return (seen != layer).astype(np.uint8)


def _world_frame(cfg: SynthConfig, gs: list[np.ndarray], gsd: float
                 ) -> tuple[tuple[int, int], np.ndarray]:
    """Return the world raster shape covering every view, and the shift into it."""
    pad = 12.0 / gsd  # room for movers and trees at the edge of the outermost views
    pts = np.concatenate([footprint(g, cfg.size) for g in gs])
    lo = np.floor(pts.min(0) - pad)
    hi = np.ceil(pts.max(0) + pad)
    return (int(hi[1] - lo[1]), int(hi[0] - lo[0])), translate(lo[0], lo[1])


def generate_sequence(cfg: SynthConfig, seq_index: int) -> Iterator[SynthFrame]:
    """Yield the frames of sequence ``seq_index`` of the dataset that ``cfg`` defines."""
    if not 0 <= seq_index < cfg.sequences:
        raise ValueError(f"seq_index must be in [0, {cfg.sequences}), got {seq_index}")
    rng = np.random.default_rng([cfg.seed, seq_index])
    k_mat = cfg.camera_matrix
    h, w = cfg.size
    gsd = cfg.view_width_m / w
    poses = fly(rng, cfg.frames, cfg.fps, gsd, k_mat, cfg.size, cfg.flight())
    gs = [ground_to_image(p, k_mat) for p in poses]
    shape, shift = _world_frame(cfg, gs, gsd)
    gs = [g @ shift for g in gs]  # world texel -> image, in the raster's own coordinates
    world = build_world(rng, shape, gsd)
    views = shape[0] * shape[1] / float(h * w)
    movers = spawn_movers(rng, world, cfg.fps, int(round(cfg.moving_vehicles * views)),
                          int(round(cfg.moving_persons * views)))
    centre = np.array([[(w - 1) / 2.0, (h - 1) / 2.0, 1.0]])
    motion = [0.0] + [float(np.linalg.norm(_apply(gs[i] @ np.linalg.inv(gs[i - 1]), centre)
                                           - centre[:, :2])) for i in range(1, len(gs))]
    nuisance = NuisanceModel(np.random.default_rng([cfg.seed, seq_index, 1]), cfg.strengths(),
                             cfg.size, cfg.frames, cfg.fps, np.asarray(motion))
    grid = _PixelGrid(cfg.size)
    prev: _Rendered | None = None
    for k, g in enumerate(gs):
        image = cv2.warpPerspective(world.rgb, g, (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        label = cv2.warpPerspective(world.label, g, (w, h), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_INDEX)
        layer = np.zeros((h, w), np.uint16)
        moving = np.zeros((h, w), bool)
        placed = place(movers, k, g, cfg.size)
        paint(movers, placed, image, label, layer, moving)
        cur = _Rendered(g=g, layer=layer, placed=placed)
        homography = bwd = fwd = occ = None
        if prev is not None:
            homography = g @ np.linalg.inv(prev.g)
            homography = homography / homography[2, 2]
            bwd = _flow(grid, movers, cur, prev.g, k - 1)
            occ = _occlusion(grid, bwd, layer, prev.layer)
            if cfg.forward_flow:
                fwd = _flow(grid, movers, prev, g, k)
        yield SynthFrame(index=k, image=nuisance.apply(image, k), label=label,
                         homography=homography, flow_bwd=bwd, flow_fwd=fwd, occlusion=occ,
                         moving=moving)
        prev = cur


def _apply(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = pts @ a.T
    return q[:, :2] / q[:, 2:3]


def _write_frame(clip_dir: Path, frame: SynthFrame, forward_flow: bool) -> None:
    stem = f"{frame.index:06d}"
    files.write_png(clip_dir / "origin" / f"{stem}.png", frame.image)
    files.write_png(clip_dir / "mask" / f"{stem}.png", frame.label)
    if frame.homography is None:
        return
    files.write_npy(clip_dir / "registration" / f"{stem}.npy", frame.homography)
    arrays = {"bwd": frame.flow_bwd.astype(np.float16), "occ": frame.occlusion,
              "moving": frame.moving.astype(np.uint8)}
    if forward_flow and frame.flow_fwd is not None:
        arrays["fwd"] = frame.flow_fwd.astype(np.float16)
    files.write_npz(clip_dir / "flow" / f"{stem}.npz", arrays, compress=("occ", "moving"))


def dataset_description(cfg: SynthConfig) -> dict:
    """Return the ``dataset.json`` content of a synthetic dataset."""
    return {"format": FORMAT_VERSION, "class_set": UAVID.to_dict(), "fps": float(cfg.fps),
            "size": list(cfg.size), "source": "synthetic",
            "generator": {"name": "ssp_data synth", "version": GENERATOR_VERSION,
                          **cfg.to_dict()},
            "camera": {"K": cfg.camera_matrix.tolist()}}


SYNTH_TOOL = "ssp_data synth"
_SYNTH_ENTRIES = {"dataset.json", "train.txt", "val.txt", "data"}


def is_legacy_synth(folder: Path) -> bool:
    """Return True if ``folder`` is a synthetic dataset written before output markers existed.

    Such a folder holds exactly what the generator writes (``dataset.json`` naming
    ``ssp_data synth`` as its generator, the split lists and ``data/``), so ``--force`` may
    replace it; anything else in it makes it the user's.
    """
    try:
        names = {p.name for p in folder.iterdir()}
        desc = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return (names <= _SYNTH_ENTRIES and "dataset.json" in names and isinstance(desc, dict)
            and isinstance(desc.get("generator"), dict)
            and desc["generator"].get("name") == SYNTH_TOOL)


def generate_dataset(out_dir: str | Path, cfg: SynthConfig, progress: bool = True,
                     overwrite: bool = False, workers: int = 2) -> Path:
    """Write the dataset ``cfg`` defines to ``out_dir`` (layout of docs/DATA_FORMAT.md).

    The dataset is built in a staging sibling folder and renamed into place at the end
    (:func:`ssp_perception.files.staged_dir`), so ``out_dir`` is either absent, the previous
    content, or the complete new dataset. ``overwrite`` (``--force``) replaces only an earlier
    synthetic dataset (marker file, or :func:`is_legacy_synth`); a regular file or any other
    folder raises :class:`ssp_perception.files.OutputError` before anything is written.
    ``workers`` threads encode and write files while the next frame renders (OpenCV and zlib
    release the GIL).
    """
    out = Path(out_dir)
    train, val = cfg.split()
    bar = progress_bar(total=cfg.sequences * cfg.frames, unit="frame", disable=not progress,
                       desc="synth")
    pending: deque[Future] = deque()
    # The parallelism is per frame (render here, encode and write in the pool), so OpenCV's
    # own worker threads only add synchronisation: on this 2-core machine under load,
    # single-threaded OpenCV halved both CPU time and wall time per frame. Restored below.
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with staged_dir(out, SYNTH_TOOL, force=overwrite, legacy=is_legacy_synth) as tmp:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for seq in range(cfg.sequences):
                    clip_dir = tmp / "data" / clip_name(seq)
                    for sub in ("origin", "mask", "registration", "flow"):
                        (clip_dir / sub).mkdir(parents=True)
                    for frame in generate_sequence(cfg, seq):
                        pending.append(pool.submit(_write_frame, clip_dir, frame,
                                                   cfg.forward_flow))
                        while len(pending) > _WRITE_AHEAD:
                            pending.popleft().result()
                        bar.update(1)
                        raise_if_interrupted()
                while pending:
                    pending.popleft().result()
            files.write_lines(tmp / "train.txt", [clip_name(i) for i in train])
            files.write_lines(tmp / "val.txt", [clip_name(i) for i in val])
            files.write_json(tmp / "dataset.json", dataset_description(cfg))
    finally:
        cv2.setNumThreads(cv_threads)
        bar.close()
    return out


__all__ = ["SYNTH_TOOL", "SynthConfig", "SynthFrame", "clip_name", "dataset_description",
           "generate_dataset", "generate_sequence", "is_legacy_synth"]
