"""Read prepared datasets (docs/DATA_FORMAT.md) and serve them to PyTorch.

The same layout holds synthetic, UAVid and RuralScapes data, so every loader works on all:

* :class:`ImageDataset` — labelled frames for image models (spec §5.4 image augmentations).
* :class:`VideoPairDataset` — a labelled frame and its previous frame(s) for video models, with
  the video augmentations applied identically to both, and optionally the ground-truth
  homography and flow transformed with them.
* :class:`TeacherLogitsDataset` — KD pairs (spec §6.4: frame j odd, paired with j-1) with the
  teacher's logits, resized with antialiasing and augmented like the frames.
* :class:`SequenceDataset` — whole clips in order, for evaluation and replay.

The readers of the on-disk format (``DatasetInfo``, ``load_frame``, ``load_mask``, ...) live in
``frames.py`` and are re-exported here.

Samples are dicts of tensors: ``image``/``prev_image`` (3, H, W) float32 normalised with the
ImageNet mean/std of ``ssp_perception.config``; ``label`` (H, W) int64 with 255 = ignore;
``homography`` (3, 3) float32 prev -> cur at the sample's resolution after augmentation;
``flow`` (2, H, W) float32 cur -> prev; ``occlusion`` (H, W) bool; ``teacher_logits`` and
``prev_teacher_logits`` (C, H, W) float32; plus ``clip`` and ``stem`` strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from ssp_perception.classes import ClassSet, IGNORE_INDEX
import torch
from torch.utils.data import Dataset

from .augment import Geometry, image_geometry, image_photometric, leaves_frame
from .augment import PairPhotometric, video_geometry
# The on-disk readers, re-exported: a dataset's users read its frames through this module.
from .frames import (clip_frames, DatasetInfo, denormalize, list_clips, load_flow,  # noqa: F401
                     load_frame, load_homography, load_logits, load_mask, logits_path,
                     resize_logits, save_logits, sibling, SOURCES, SPLITS, to_tensor_image)

# -------------------------------------------------------------------------------- datasets


def _seed_rng(seed: int | None) -> np.random.Generator:
    """Return the augmentation generator of this process (one per DataLoader worker).

    Without a seed it derives from torch's per-worker seed, so runs are reproducible under
    ``torch.manual_seed``; with one, workers still draw different streams.
    """
    if seed is None:
        return np.random.default_rng(torch.initial_seed() % 2 ** 63)
    worker = torch.utils.data.get_worker_info()
    return np.random.default_rng([seed, 0 if worker is None else worker.id])


class _Clips:
    """Frames and labels of the clips of one split, indexed once."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.info = DatasetInfo.load(root)
        self.root = Path(root)
        self.split = split
        self.clips = list_clips(root, split)
        self.frames = {c: clip_frames(root, c) for c in self.clips}
        self.labelled = {c: [sibling(f, "mask").is_file() for f in fs]
                         for c, fs in self.frames.items()}


def _check_size(size: Sequence[int], name: str = "size") -> tuple[int, int]:
    if len(size) != 2 or not all(int(v) > 0 for v in size):
        raise ValueError(f"{name} must be (H, W) with positive entries, got {size!r}")
    return int(size[0]), int(size[1])


class ImageDataset(Dataset):
    """Labelled frames of a split for image models (spec §5.4 image augmentations)."""

    def __init__(self, root: str | Path, split: str, size: tuple[int, int],
                 augment: bool = False, square_crop: bool = False,
                 seed: int | None = None) -> None:
        """Index the labelled frames of ``split``; frames are resized to ``size`` (H, W)."""
        self.data = _Clips(root, split)
        self.size = _check_size(size)
        self.augment, self.square_crop, self.seed = augment, square_crop, seed
        self.items = [(c, f) for c in self.data.clips
                      for f, lab in zip(self.data.frames[c], self.data.labelled[c]) if lab]
        if not self.items:
            raise ValueError(f"split {split!r} of {root} has no labelled frames")
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        clip, frame = self.items[i]
        image = load_frame(frame, self.size)
        label = load_mask(sibling(frame, "mask"), self.size, self.data.info.class_set)
        rng = self._generator() if self.augment else None
        geo = image_geometry(self.size, rng, self.square_crop)
        image, label = geo.image(image), geo.mask(label)
        if rng is not None:
            image = image_photometric(image, rng)
        return {"image": to_tensor_image(image), "label": torch.from_numpy(label.astype(np.int64)),
                "clip": clip, "stem": frame.stem}

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = _seed_rng(self.seed)
        return self._rng


def consecutive_offsets(t: int) -> tuple[int, ...]:
    """Return the offsets -1, -2, ..., -t of the previous frames of an unrolled sample."""
    return tuple(range(-1, -t - 1, -1))


def unrolled_frames(batch: dict) -> torch.Tensor:
    """Return an unrolled batch's frames (B, T + 1, 3, H, W), oldest first, ``image`` last."""
    return torch.cat([batch["prev_images"].flip(1), batch["image"][:, None]], dim=1)


class VideoPairDataset(Dataset):
    """A frame and its previous frame(s), augmented together (spec §5.4 video, §6.4).

    ``offsets`` are the negative frame offsets of the previous frames, e.g. (-1,) for SSP or
    (-1, -2, -3) for TCB. ``prev_image`` is the frame at ``offsets[0]``; with more offsets all
    of them are stacked in ``prev_images`` (T, 3, H, W). ``homography`` maps the
    ``offsets[0]`` frame to the current one (composed from the stored per-frame homographies);
    ``flow``/``occlusion`` need ``offsets[0] == -1``. With ``labelled_only=False`` every frame
    with enough history is a sample; unlabelled ones get an all-ignore label and
    ``has_label`` False. With ``chain=True`` (unrolled SSP training, ``data.unroll``) the
    offsets must be -1, -2, ..., -T and ``with_homography`` adds ``chain_homographies``
    (T, 3, 3): element t maps frame j - T + t to the next one, oldest first (the last is
    ``homography``).
    """

    def __init__(self, root: str | Path, split: str, size: tuple[int, int],
                 crop: tuple[int, int] | None = None, square_crop: bool = False,
                 augment: bool = False, offsets: Sequence[int] = (-1,),
                 with_homography: bool = False, with_flow: bool = False,
                 labelled_only: bool = True, seed: int | None = None,
                 chain: bool = False) -> None:
        """Index the samples of ``split``; frames are resized to ``size`` (H, W) on load."""
        self.data = _Clips(root, split)
        self.size = _check_size(size)
        self.crop = None if crop is None else _check_size(crop, "crop")
        if self.crop is not None and square_crop:
            raise ValueError("give either crop=(h, w) or square_crop=True, not both")
        self.offsets = tuple(int(o) for o in offsets)
        if not self.offsets or any(o >= 0 for o in self.offsets):
            raise ValueError(f"offsets must be negative frame offsets, got {offsets!r}")
        if with_flow and self.offsets[0] != -1:
            raise ValueError("with_flow needs offsets[0] == -1 (flow is stored per frame pair)")
        if chain and self.offsets != consecutive_offsets(len(self.offsets)):
            raise ValueError(f"chain needs the offsets -1, -2, ..., -T, got {offsets!r}")
        self.chain = chain
        self.square_crop, self.augment, self.seed = square_crop, augment, seed
        self.with_homography, self.with_flow = with_homography, with_flow
        self.items = self._index(labelled_only)
        if not self.items:
            raise ValueError(f"split {split!r} of {root} has no frame with a label and "
                             f"{-min(self.offsets)} previous frame(s)")
        self._rng: np.random.Generator | None = None

    def _index(self, labelled_only: bool) -> list[tuple[str, int]]:
        depth = -min(self.offsets)
        return [(c, j) for c in self.data.clips for j in range(depth, len(self.data.frames[c]))
                if self.data.labelled[c][j] or not labelled_only]

    def __len__(self) -> int:
        return len(self.items)

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = _seed_rng(self.seed)
        return self._rng

    def __getitem__(self, i: int) -> dict:
        clip, j = self.items[i]
        rng = self._generator() if self.augment else None
        geo = video_geometry(self.size, rng, self.crop, self.square_crop)
        photo = PairPhotometric.sample(rng) if rng is not None else None
        return self._sample(clip, j, [j + o for o in self.offsets], geo, photo)

    def _sample(self, clip: str, j: int, prev: list[int], geo: Geometry,
                photo: PairPhotometric | None) -> dict:
        frames = self.data.frames[clip]

        def image(k: int) -> torch.Tensor:
            img = geo.image(load_frame(frames[k], self.size))
            return to_tensor_image(photo(img) if photo is not None else img)

        out = {"image": image(j), "clip": clip, "stem": frames[j].stem}
        prev_images = [image(k) for k in prev]
        out["prev_image"] = prev_images[0]
        if len(prev_images) > 1:
            out["prev_images"] = torch.stack(prev_images)
        out.update(self._label(frames[j], geo))
        if self.with_homography and self.chain:   # frame k - 1 -> k for k = j - T + 1 .. j
            steps = np.stack([geo.homography(load_homography(frames[k], self.size,
                                                             self.data.info.size))
                              for k in range(prev[-1] + 1, j + 1)]).astype(np.float32)
            out["chain_homographies"] = torch.from_numpy(steps)
            out["homography"] = torch.from_numpy(steps[-1].copy())   # frame j - 1 -> j
        elif self.with_homography:
            h = np.eye(3)
            for k in range(prev[0] + 1, j + 1):   # compose prev[0] -> ... -> j
                h = load_homography(frames[k], self.size, self.data.info.size) @ h
            out["homography"] = torch.from_numpy(geo.homography(h).astype(np.float32))
        if self.with_flow:
            bwd, occ = load_flow(frames[j], self.size)
            flow = geo.flow(bwd)
            out["flow"] = torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))
            out["occlusion"] = torch.from_numpy((geo.occlusion(occ) > 0) | leaves_frame(flow))
        return out

    def _label(self, frame: Path, geo: Geometry) -> dict:
        path = sibling(frame, "mask")
        has = path.is_file()
        label = (geo.mask(load_mask(path, self.size, self.data.info.class_set)) if has
                 else np.full(geo.size, IGNORE_INDEX, np.uint8))
        return {"label": torch.from_numpy(label.astype(np.int64)),
                "has_label": torch.tensor(has)}


class TeacherLogitsDataset(VideoPairDataset):
    """KD pairs of spec §6.4: frames j = 1, 3, 5, ... of each clip with frame j-1.

    Every frame counts, labelled or not (labels are returned where they exist, all-ignore
    elsewhere). The teacher logits of both frames are read from
    ``<logits_dir>/<clip>/<stem>.npz`` (:func:`save_logits`), resized to ``size``
    (:func:`resize_logits`: antialiased bilinear when shrinking, ``upsample`` when growing),
    then warped by the same augmentation as the frames.
    """

    def __init__(self, root: str | Path, split: str, logits_dir: str | Path,
                 size: tuple[int, int], crop: tuple[int, int] | None = None,
                 square_crop: bool = False, augment: bool = False, skip: int = 2,
                 with_homography: bool = False, with_flow: bool = False,
                 seed: int | None = None, upsample: str = "bilinear") -> None:
        """Index the KD pairs of ``split``; ``skip`` = 2 keeps odd frames as in Ref."""
        if skip < 1:
            raise ValueError(f"skip must be >= 1, got {skip}")
        resize_logits(np.zeros((1, 1, 1), np.float32), (1, 1), upsample)  # checks the mode
        self.skip, self.upsample = skip, upsample
        self.logits_dir = Path(logits_dir)
        super().__init__(root, split, size, crop=crop, square_crop=square_crop,
                         augment=augment, offsets=(-1,), with_homography=with_homography,
                         with_flow=with_flow, labelled_only=False, seed=seed)
        missing = [logits_path(self.logits_dir, c, self.data.frames[c][k].stem)
                   for c, j in self.items for k in (j - 1, j)
                   if not logits_path(self.logits_dir, c, self.data.frames[c][k].stem).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} teacher logits files missing, e.g. "
                                    f"{missing[0]} (run the teacher's export-logits first)")

    def _index(self, labelled_only: bool) -> list[tuple[str, int]]:
        return [(c, j) for c in self.data.clips for j in range(1, len(self.data.frames[c]))
                if j % self.skip == 1 % self.skip]

    def _sample(self, clip: str, j: int, prev: list[int], geo: Geometry,
                photo: PairPhotometric | None) -> dict:
        out = super()._sample(clip, j, prev, geo, photo)
        frames = self.data.frames[clip]
        for key, k in (("teacher_logits", j), ("prev_teacher_logits", prev[0])):
            z = resize_logits(load_logits(logits_path(self.logits_dir, clip, frames[k].stem)),
                              self.size, self.upsample)
            out[key] = torch.from_numpy(np.ascontiguousarray(geo.logits(z)))
        return out


# ------------------------------------------------------------------------------ sequences


@dataclass(frozen=True)
class SequenceFrame:
    """One frame of a clip in evaluation order, with whatever ground truth exists."""

    index: int
    stem: str
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    label: np.ndarray | None
    """(H, W) uint8 train ids (255 = ignore), or None for unlabelled frames."""
    homography: np.ndarray | None
    """(3, 3) float64 previous -> this frame, or None (first frame, or not stored)."""
    flow_bwd: np.ndarray | None
    """(H, W, 2) float32 this -> previous, or None."""
    occlusion: np.ndarray | None
    """(H, W) uint8, 1 = not visible in the previous frame, or None."""


@dataclass(frozen=True)
class ClipSequence:
    """A clip's frames in order; iterate it to load them one at a time."""

    name: str
    frames: tuple[Path, ...]
    size: tuple[int, int] | None
    stored_size: tuple[int, int]
    class_set: ClassSet | None = None
    """The dataset's class set: masks holding other ids are refused (None = not checked)."""

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[SequenceFrame]:
        for i, frame in enumerate(self.frames):
            yield self.frame(i)

    def frame(self, i: int) -> SequenceFrame:
        """Return frame ``i`` with its ground truth (resized to ``size`` if set)."""
        path = self.frames[i]
        mask = sibling(path, "mask")
        has_h = i > 0 and sibling(path, "registration").is_file()
        has_f = i > 0 and sibling(path, "flow").is_file()
        bwd, occ = load_flow(path, self.size) if has_f else (None, None)
        return SequenceFrame(
            index=i, stem=path.stem, image=load_frame(path, self.size),
            label=load_mask(mask, self.size, self.class_set) if mask.is_file() else None,
            homography=load_homography(path, self.size, self.stored_size) if has_h else None,
            flow_bwd=bwd, occlusion=occ)


class SequenceDataset:
    """The clips of a split in order (for evaluation, replay and benchmarks)."""

    def __init__(self, root: str | Path, split: str,
                 size: tuple[int, int] | None = None) -> None:
        """Index ``split``; frames are resized to ``size`` (H, W) if given."""
        self.info = DatasetInfo.load(root)
        self.size = None if size is None else _check_size(size)
        self.clips = [ClipSequence(name=c, frames=tuple(clip_frames(root, c)), size=self.size,
                                   stored_size=self.info.size, class_set=self.info.class_set)
                      for c in list_clips(root, split)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> ClipSequence:
        return self.clips[i]

    def __iter__(self) -> Iterator[ClipSequence]:
        return iter(self.clips)
