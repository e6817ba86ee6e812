"""What the downloads of UAVid (+ VDD) and RuralScapes hold, and how they become clips.

Label colours and their train ids (SSP_SPEC §6.1, §6.2), the clip rules of each dataset and
the sequence plans read from a download; :mod:`.prepare` executes the plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import re

import cv2
import numpy as np
from ssp_perception.classes import ClassSet, IGNORE_INDEX, RURALSCAPES, UAVID

from .archive import Source


UAVID_VAL = ("seq16", "seq17", "seq18", "seq19", "seq20", "seq36", "seq37")
RURALSCAPES_VAL = ("DJI_0051", "DJI_0056", "DJI_0061", "DJI_0086", "DJI_0088", "DJI_0089",
                   "DJI_0116")

# UAVid colour -> UAVid id (spec §6.1); both car colours are "vehicle".
UAVID_COLOURS = {(0, 0, 0): 0, (128, 64, 128): 1, (128, 128, 0): 2, (0, 128, 0): 3,
                 (64, 64, 0): 4, (64, 0, 128): 5, (192, 0, 192): 5, (128, 0, 0): 7}
VDD_WATER, VDD_ROOF = 6, 5
UAVID_WATER, UAVID_BUILDING, UAVID_ROOF = 6, 7, 8
# RuralScapes colour -> raw id (spec §6.2); raw 0 is "unlabeled".
RURALSCAPES_COLOURS = {(0, 0, 0): 0, (255, 255, 0): 1, (0, 255, 0): 2, (0, 127, 0): 3,
                       (0, 255, 255): 4, (127, 127, 0): 5, (255, 255, 255): 6,
                       (127, 127, 63): 7, (255, 0, 255): 8, (127, 127, 127): 9,
                       (255, 0, 0): 10, (255, 127, 0): 11, (0, 0, 255): 12}


class PrepareError(RuntimeError):
    """A dataset cannot be prepared from the given inputs (the message says why)."""


def colours_to_ids(rgb: np.ndarray, table: dict[tuple[int, int, int], int],
                   default: int = 0) -> tuple[np.ndarray, int]:
    """Return (ids (H, W) uint8, number of pixels with a colour not in ``table``)."""
    code = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[
        ..., 2]
    keys = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in table), np.uint32)
    values = np.array([table[((k >> 16) & 255, (k >> 8) & 255, k & 255)] for k in keys],
                      np.uint8)
    pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    known = keys[pos] == code
    return np.where(known, values[pos], default).astype(np.uint8), int((~known).sum())


def raw_to_train(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Map raw ids (0 = ignore, k = class k-1) to train ids with 255 = ignore."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[1:num_classes + 1] = np.arange(num_classes, dtype=np.uint8)
    return lut[ids]


def uavid_mask(colour: np.ndarray, vdd: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Return (train-id mask, unknown-colour pixels) of a UAVid colour label (+ VDD ids)."""
    ids, unknown = colours_to_ids(colour, UAVID_COLOURS)
    if vdd is not None:
        if vdd.shape != ids.shape:
            vdd = cv2.resize(vdd, ids.shape[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
        ids[(vdd == VDD_WATER) & (ids == 0)] = UAVID_WATER
        ids[(vdd == VDD_ROOF) & (ids == UAVID_BUILDING)] = UAVID_ROOF
    return raw_to_train(ids, UAVID.num_classes), unknown


def ruralscapes_mask(colour: np.ndarray) -> tuple[np.ndarray, int]:
    """Return (train-id mask, unknown-colour pixels) of a RuralScapes colour label."""
    ids, unknown = colours_to_ids(colour, RURALSCAPES_COLOURS)
    return raw_to_train(ids, RURALSCAPES.num_classes), unknown


# ---------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Rules:
    """How a dataset turns a video into clips (spec §6.1, §6.2)."""

    name: str
    class_set: ClassSet
    step: int
    """Keep every ``step``-th video frame (plus the last one when ``step > 1``)."""
    drop_first: bool
    drop_last: bool
    clip_len: int
    min_len: int
    require_label: bool
    drop_label_ends: bool
    """Drop the first and last label of a sequence (RuralScapes)."""


UAVID_RULES = Rules("uavid", UAVID, step=1, drop_first=True, drop_last=False, clip_len=100,
                    min_len=50, require_label=False, drop_label_ends=False)
RURALSCAPES_RULES = Rules("ruralscapes", RURALSCAPES, step=5, drop_first=True, drop_last=True,
                          clip_len=50, min_len=10, require_label=True, drop_label_ends=True)


@dataclass
class SequencePlan:
    """One source video and the labels that belong to its frames."""

    name: str
    split: str
    video: str
    labels: dict[int, str] = field(default_factory=dict)
    """Video frame index -> colour label member."""
    extra: dict[int, str] = field(default_factory=dict)
    """Video frame index -> VDD id label member (UAVid only)."""
    stills: dict[int, str] = field(default_factory=dict)
    """Label index -> the labelled picture as a still image, when the download has them
    (UAVid ``Images/``): used to check which video frame each label belongs to."""


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def plan_uavid(src: Source, vdd: Source | None) -> list[SequencePlan]:
    """Find the labelled UAVid sequences (train and val) in the inputs."""
    video_re = re.compile(r"(?:^|.*/)uavid_(train|val|test)/([^/]+)/images\.mp4$", re.I)
    label_re = re.compile(r"(?:^|.*/)uavid_(?:train|val|test)/([^/]+)/Labels/(\d+)\.png$", re.I)
    plans: dict[str, SequencePlan] = {}
    for name in src.names():
        m = video_re.match(name)
        if m and m.group(1).lower() != "test":
            seq = m.group(2)
            plans[seq] = SequencePlan(seq, "val" if seq in UAVID_VAL else "train", name)
    still_re = re.compile(r"(?:^|.*/)uavid_(?:train|val)/([^/]+)/Images/(\d+)\.png$", re.I)
    for name in src.names():
        m = label_re.match(name)
        if m and m.group(1) in plans:
            plans[m.group(1)].labels[int(m.group(2))] = name
        m = still_re.match(name)
        if m and m.group(1) in plans:
            plans[m.group(1)].stills[int(m.group(2))] = name
    if vdd is not None:
        vdd_re = re.compile(r"(?:^|.*/)([^/]+)/VDD_Labels/(\d+)\.png$", re.I)
        for name in vdd.names():
            m = vdd_re.match(name)
            if m and m.group(1) in plans:
                plans[m.group(1)].extra[int(m.group(2))] = name
    if not plans:
        raise PrepareError(f"{src.path}: no uavid_train/<seq>/images.mp4 or "
                           "uavid_val/<seq>/images.mp4 found: is this the UAVid v1.5 video "
                           "release?")
    unlabelled = [p.name for p in plans.values() if not p.labels]
    if unlabelled:
        raise PrepareError(f"{src.path}: sequences without Labels/*.png: "
                           f"{', '.join(sorted(unlabelled, key=_natural_key))}")
    return sorted(plans.values(), key=lambda p: _natural_key(p.name))


def plan_ruralscapes(src: Source) -> list[SequencePlan]:
    """Find the RuralScapes videos and their colour labels in the input."""
    video_re = re.compile(r"(?:^|.*/)videos/([^/]+)\.(?:mp4|mov|avi)$", re.I)
    label_re = re.compile(r"(?:^|.*/)labels/manual_labels/([^/]+)/[^/]*?(\d+)\.png$", re.I)
    plans = {}
    for name in src.names():
        m = video_re.match(name)
        if m:
            seq = m.group(1)
            plans[seq] = SequencePlan(seq, "val" if seq in RURALSCAPES_VAL else "train", name)
    for name in src.names():
        m = label_re.match(name)
        if m and m.group(1) in plans:
            plans[m.group(1)].labels[int(m.group(2))] = name
    if not plans:
        raise PrepareError(f"{src.path}: no videos/<VIDEO>.mp4 found: is this the RuralScapes "
                           "download?")
    return sorted([p for p in plans.values() if p.labels], key=lambda p: _natural_key(p.name))
