"""The on-disk format of prepared datasets (docs/DATA_FORMAT.md): description, clips, frames.

``dataset.json`` (:class:`DatasetInfo`), the split lists, and the per-frame files: RGB frames,
masks (train ids, 255 = ignore), ground-truth homographies and flow, teacher logits. The
PyTorch datasets built on these readers are in ``dataset.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path

import cv2
import numpy as np
from ssp_perception.classes import ClassSet
from ssp_perception.config import IMAGENET_MEAN, IMAGENET_STD
from ssp_perception.geometry import resize_transform
import torch

from . import files

FORMAT_VERSION = 1
SOURCES = ("synthetic", "uavid", "ruralscapes")
SPLITS = ("train", "val")
_MEAN = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
_STD = np.asarray(IMAGENET_STD, np.float32) * 255.0


@dataclass(frozen=True)
class DatasetInfo:
    """The description of a prepared dataset (``<root>/dataset.json``)."""

    root: Path
    class_set: ClassSet
    fps: float
    size: tuple[int, int]
    """(H, W) of the stored frames and masks."""
    source: str
    generator: dict
    """How the data was made: the generator's or preparation tool's parameters."""
    camera_matrix: np.ndarray | None = None
    """3x3 intrinsics at ``size`` when known (synthetic data), else None."""

    @classmethod
    def load(cls, root: str | Path) -> DatasetInfo:
        """Read and validate ``<root>/dataset.json``; errors name the file and the problem."""
        root = Path(root)
        path = root / "dataset.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {root} is not a prepared dataset (make one with "
                "`ssp_data synth` or `ssp_data prepare`)")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err

        def need(key: str) -> object:
            if key not in d:
                raise ValueError(f"{path}: missing key {key!r}")
            return d[key]

        if need("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: format {d['format']!r} is not supported (this reader "
                             f"knows format {FORMAT_VERSION})")
        size = need("size")
        if not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and v > 0 for v in size)):
            raise ValueError(f"{path}: size must be [H, W] positive integers, got {size!r}")
        source = need("source")
        if source not in SOURCES:
            raise ValueError(f"{path}: source must be one of {SOURCES}, got {source!r}")
        fps = need("fps")
        if not isinstance(fps, (int, float)) or fps <= 0:
            raise ValueError(f"{path}: fps must be a positive number, got {fps!r}")
        try:
            class_set = ClassSet.from_dict(need("class_set"))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        k = d.get("camera", {}).get("K") if isinstance(d.get("camera"), dict) else None
        return cls(root=root, class_set=class_set, fps=float(fps), size=(size[0], size[1]),
                   source=source, generator=dict(d.get("generator", {})),
                   camera_matrix=None if k is None else np.asarray(k, np.float64))


def check_clip_name(clip: str, root: str | Path, source: str) -> str:
    """Return ``clip`` if it is one folder name under ``<root>/data``; else raise DataError."""
    if clip in ("", ".", "..") or "/" in clip or "\\" in clip:
        raise files.DataError(f"{source}: {clip!r} is not a clip name (one folder name under "
                              f"{Path(root) / 'data'}, no path separators)")
    return clip


def list_clips(root: str | Path, split: str) -> list[str]:
    """Return the clip names of ``split`` (``<root>/<split>.txt``), checking they exist."""
    root = Path(root)
    path = root / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no split {split!r} in {root}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise files.DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"
                              ) from None
    clips = [line.strip() for line in text.splitlines() if line.strip()]
    for c in clips:
        check_clip_name(c, root, str(path))
    twice = sorted({c for c in clips if clips.count(c) > 1})
    if twice:
        raise files.DataError(f"{path} lists clip{'s' if len(twice) > 1 else ''} "
                              f"{', '.join(twice[:5])} more than once (each would be scored "
                              "again)")
    # A clip without frames: no origin/ folder, or one that holds no *.png (stops at the first).
    missing = [c for c in clips if not (root / "data" / c / "origin").is_dir()
               or next((root / "data" / c / "origin").glob("*.png"), None) is None]
    if missing:
        raise FileNotFoundError(f"{path} lists clips without frames (no "
                                f"data/<clip>/origin/*.png) under {root / 'data'}: "
                                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return clips


def clip_frames(root: str | Path, clip: str) -> list[Path]:
    """Return the frame files of a clip in temporal order."""
    folder = Path(root) / "data" / clip / "origin"
    frames = sorted(folder.glob("*.png"))
    if not frames:
        raise FileNotFoundError(f"no frames (*.png) in {folder}")
    return frames


def sibling(frame: Path, kind: str) -> Path:
    """Return the file of ``kind`` (mask, registration, flow) that belongs to a frame file."""
    ext = {"origin": ".png", "mask": ".png", "registration": ".npy", "flow": ".npz"}[kind]
    return frame.parent.parent / kind / f"{frame.stem}{ext}"


def load_frame(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Return an RGB uint8 frame, resized to ``size`` (H, W) if given.

    Downscaling uses area averaging and upscaling bilinear interpolation: both follow the
    half-pixel-centre convention of ``resize_transform`` and, like PIL's bilinear (spec
    §6.4), do not alias when shrinking 1440x2560 frames to 736x1280.
    """
    img = files.read_image(path)
    return _resize(img, size, cv2.INTER_AREA, cv2.INTER_LINEAR)


def load_mask(path: str | Path, size: tuple[int, int] | None = None,
              class_set: ClassSet | None = None) -> np.ndarray:
    """Return an (H, W) uint8 train-id mask, resized with nearest neighbour if ``size``.

    With ``class_set`` every value must be a train id of it or its ignore index: a mask
    written with other ids (label ids, colours, another class set) is refused here, naming
    the file, instead of failing deep in a loss or a metric.
    """
    mask = files.read_image(path, grayscale=True)
    if class_set is not None:
        ids = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # the values present
        bad = ids[(ids >= class_set.num_classes) & (ids != class_set.ignore_index)]
        if bad.size:
            raise files.DataError(
                f"{path}: holds class id{'s' if bad.size > 1 else ''} "
                f"{', '.join(str(int(v)) for v in bad[:5])}{' ...' if bad.size > 5 else ''}, "
                f"outside class set {class_set.name!r} (0..{class_set.num_classes - 1}, "
                f"{class_set.ignore_index} = ignore)")
    return _resize(mask, size, cv2.INTER_NEAREST_EXACT, cv2.INTER_NEAREST_EXACT)


def _resize(a: np.ndarray, size: tuple[int, int] | None, down: int, up: int) -> np.ndarray:
    if size is None or tuple(a.shape[:2]) == tuple(size):
        return a
    h, w = size
    flag = down if h * w < a.shape[0] * a.shape[1] else up
    return cv2.resize(a, (int(w), int(h)), interpolation=flag)


def load_homography(frame: Path, size: tuple[int, int] | None = None,
                    stored_size: tuple[int, int] | None = None) -> np.ndarray:
    """Return the stored prev -> this homography of a frame, moved to ``size`` if given."""
    h = files.read_npy(sibling(frame, "registration")).astype(np.float64)
    if h.shape != (3, 3) or not np.isfinite(h).all() or h[2, 2] == 0:
        raise files.DataError(f"{sibling(frame, 'registration')}: expected a finite 3x3 "
                              f"homography with h[2, 2] != 0, got shape {h.shape}")
    if size is not None and stored_size is not None and tuple(size) != tuple(stored_size):
        t = resize_transform(stored_size, size)
        h = t @ h @ np.linalg.inv(t)
    return h / h[2, 2]


def load_flow(frame: Path, size: tuple[int, int] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Return (bwd (H, W, 2) float32, occ (H, W) uint8) of a frame, resized if ``size``.

    Resizing samples the nearest stored vector (no blending across motion boundaries) and
    scales the vectors by the resize factors.
    """
    path = sibling(frame, "flow")
    data = files.read_npz(path)
    if "bwd" not in data or "occ" not in data:
        raise files.DataError(f"{path}: expected arrays 'bwd' and 'occ', found {sorted(data)}")
    bwd, occ = data["bwd"].astype(np.float32), data["occ"].astype(np.uint8)
    if bwd.ndim != 3 or bwd.shape[2] != 2 or occ.shape != bwd.shape[:2] \
            or not np.isfinite(bwd).all():
        raise files.DataError(f"{path}: expected finite 'bwd' (H, W, 2) and 'occ' (H, W), got "
                              f"{bwd.shape} and {occ.shape}")
    if size is not None and tuple(size) != bwd.shape[:2]:
        (h0, w0), (h, w) = bwd.shape[:2], size
        bwd = cv2.resize(bwd, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        bwd *= np.array([w / w0, h / h0], np.float32)
        occ = cv2.resize(occ, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return bwd, occ


def to_tensor_image(img: np.ndarray) -> torch.Tensor:
    """Return an RGB uint8 (H, W, 3) image as a normalised (3, H, W) float32 tensor."""
    x = (img.astype(np.float32) - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Return normalised (3, H, W) or (B, 3, H, W) tensors as RGB uint8 (H, W, 3) arrays."""
    x = image.detach().float().cpu().numpy()
    x = np.moveaxis(x, -3, -1) * _STD + _MEAN
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------ teacher logits


def logits_path(logits_dir: str | Path, clip: str, stem: str) -> Path:
    """Return where the teacher logits of frame ``stem`` of ``clip`` live."""
    return Path(logits_dir) / clip / f"{stem}.npz"


LOGIT_DTYPES = ("float16", "float32")
"""Stored dtypes of teacher logits: float16 (ours, half the disk) or float32 (Ref, §4.5)."""
LOGIT_UPSAMPLING = ("bilinear", "bicubic")
"""How teacher logits stored below the working size are upsampled on load."""


def save_logits(path: str | Path, logits: np.ndarray | torch.Tensor,
                dtype: str = "float16") -> Path:
    """Write (C, h, w) teacher logits as a compressed ``.npz`` (array "logits") of ``dtype``.

    For float16, values beyond its range (±65504) are an error rather than silently becoming
    inf; non-finite values are always an error. The parent folder is created; the write is
    atomic.
    """
    if dtype not in LOGIT_DTYPES:
        raise ValueError(f"logits dtype {dtype!r} is not one of {', '.join(LOGIT_DTYPES)}")
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    arr = np.asarray(logits)
    if arr.ndim != 3:
        raise ValueError(f"logits must be (C, h, w), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"logits for {path} hold non-finite values")
    if dtype == "float16" and np.abs(arr).max(initial=0.0) > 65504.0:
        raise ValueError(f"logits for {path} hold values beyond the float16 range; export "
                         "with --dtype float32")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_npz(path, {"logits": arr.astype(dtype)}, compress=True)


def load_logits(path: str | Path) -> np.ndarray:
    """Return teacher logits saved by :func:`save_logits` as (C, h, w) float32."""
    data = files.read_npz(path)
    if "logits" not in data or data["logits"].ndim != 3:
        raise files.DataError(f"{path}: expected one (C, h, w) array named 'logits'")
    return data["logits"].astype(np.float32)


def resize_logits(logits: np.ndarray, size: tuple[int, int],
                  upsample: str = "bilinear") -> np.ndarray:
    """Resize (C, h, w) logits to ``size``.

    Shrinking is antialiased bilinear (Ref's "ResizeRight" linear, §4.5). Growing in both
    dimensions uses ``upsample``: "bilinear", or "bicubic" as Ref's teacher upsamples its
    stride-4 logits (``F.interpolate``, align_corners=False, no antialiasing, so a = -0.75).
    """
    if upsample not in LOGIT_UPSAMPLING:
        raise ValueError(f"upsample {upsample!r} is not one of {', '.join(LOGIT_UPSAMPLING)}")
    if tuple(logits.shape[1:]) == tuple(size):
        return logits
    x = torch.from_numpy(np.ascontiguousarray(logits))[None]
    grows = size[0] >= x.shape[-2] and size[1] >= x.shape[-1]
    if grows:
        y = torch.nn.functional.interpolate(x, size=tuple(size), mode=upsample,
                                            align_corners=False)
    else:
        y = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear",
                                            align_corners=False, antialias=True)
    return y[0].numpy()
