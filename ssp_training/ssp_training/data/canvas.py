"""The painting primitives of the procedural scenes: class ids, palettes, layers, objects.

``scene.py`` lays a world out and ``scene_draw.py`` paints its objects; both work on a
:class:`Canvas` (label, colour, shade and pattern layers in world texels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Callable

import cv2
import numpy as np
from ssp_perception.classes import IGNORE_INDEX, UAVID

ROAD, VEGETATION, TREE, PERSON, VEHICLE, WATER, BUILDING, ROOF = (
    UAVID.names.index(n) for n in ("road", "vegetation", "tree", "person", "vehicle", "water",
                                   "building", "roof"))
BACKGROUND = IGNORE_INDEX  # clutter: sidewalks, soil, gravel, parking lots (ignored, like UAVid)

# Palettes (RGB). They overlap across classes on purpose, see the module docstring.
VEG_COLORS = ((86, 118, 52), (104, 132, 60), (122, 138, 70), (138, 136, 82), (70, 100, 48))
TREE_COLORS = ((46, 72, 38), (58, 84, 42), (72, 94, 50), (52, 70, 50), (88, 100, 56))
ROAD_COLORS = ((92, 92, 96), (108, 106, 104), (122, 120, 114), (84, 86, 90))
GROUND_COLORS = ((136, 114, 90), (120, 104, 84), (132, 130, 124), (150, 148, 142),
                 (100, 98, 92))
WATER_COLORS = ((38, 58, 70), (46, 70, 74), (56, 72, 66), (34, 52, 62), (62, 78, 84))
WALL_COLORS = ((196, 186, 170), (170, 166, 160), (210, 204, 196), (150, 140, 128),
               (180, 160, 140))
ROOF_COLORS = ((160, 84, 62), (142, 72, 56), (74, 74, 80), (96, 96, 100), (150, 150, 150),
               (92, 118, 98), (112, 86, 66), (126, 76, 64))
CAR_COLORS = ((220, 220, 222), (30, 30, 34), (160, 164, 168), (170, 40, 40), (40, 60, 140),
              (70, 72, 76), (200, 190, 160))
CLOTH_COLORS = ((200, 40, 40), (40, 40, 160), (230, 230, 230), (30, 30, 30), (200, 180, 40),
                (60, 120, 60), (150, 90, 160))

# Per-class texture amplitudes (relative): fine grain (about a texel) and medium (about 1.5 m).
FINE = np.zeros(256, np.float32)
MID = np.zeros(256, np.float32)
for _cls, _fine, _mid in ((ROAD, 0.05, 0.06), (VEGETATION, 0.10, 0.14), (TREE, 0.28, 0.12),
                          (WATER, 0.02, 0.05), (BUILDING, 0.04, 0.03), (ROOF, 0.05, 0.04),
                          (VEHICLE, 0.03, 0.0), (BACKGROUND, 0.12, 0.16)):
    FINE[_cls], MID[_cls] = _fine, _mid

SHIFT = 4                   # fixed-point bits for sub-texel polygon drawing
ONE = float(1 << SHIFT)


@dataclass(frozen=True)
class Lane:
    """A straight path for movers: points ``start + s * direction`` for ``s`` in [0, length)."""

    start: tuple[float, float]
    direction: tuple[float, float]
    length: float


@dataclass
class World:
    """A textured ground raster, its labels, and where vehicles and people may move."""

    rgb: np.ndarray
    """(Hw, Ww, 3) uint8 RGB texture, one texel per image pixel at the nominal altitude."""
    label: np.ndarray
    """(Hw, Ww) uint8 UAVid train ids; 255 = background/clutter (ignored)."""
    gsd: float
    """Metres per texel."""
    sun: tuple[float, float]
    """Ground offset of a shadow per unit of object height (texels per texel)."""
    tint: tuple[float, float, float]
    """Colour tint of this world, applied to movers too."""
    roads: list[Lane] = field(default_factory=list)
    """Driving lanes (both directions of every road)."""
    walkways: list[Lane] = field(default_factory=list)
    """Sidewalk centre lines."""


class Canvas:
    """The layers a world is painted in before the final composition."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.label = np.full(shape, BACKGROUND, np.uint8)
        self.base = np.zeros((*shape, 3), np.float32)   # instance colours (0 = area colour)
        self.shade = np.ones(shape, np.float32)          # multiplicative: shadows, roof slopes
        self.pattern = np.zeros(shape, np.float32)       # additive: markings, rows, windows

    @property
    def shape(self) -> tuple[int, int]:
        return self.label.shape

    def polygon(self, pts: np.ndarray, label: int | None = None,
                color: tuple[float, ...] | None = None, shade: float | None = None) -> None:
        """Fill the world polygon ``pts`` (N, 2) in the given layers."""
        p = [np.round(np.asarray(pts) * ONE).astype(np.int32)]
        if label is not None:
            cv2.fillPoly(self.label, p, int(label), cv2.LINE_8, SHIFT)
        if color is not None:
            cv2.fillPoly(self.base, p, tuple(float(c) for c in color), cv2.LINE_8, SHIFT)
        if shade is not None:
            cv2.fillPoly(self.shade, p, float(shade), cv2.LINE_8, SHIFT)

    def disk(self, centre: np.ndarray, radius: float, label: int | None = None,
             color: tuple[float, ...] | None = None, shade: float | None = None) -> None:
        """Fill a world disk in the given layers."""
        c = tuple(int(round(v * ONE)) for v in centre)
        r = int(round(radius * ONE))
        if label is not None:
            cv2.circle(self.label, c, r, int(label), -1, cv2.LINE_8, SHIFT)
        if color is not None:
            cv2.circle(self.base, c, r, tuple(float(v) for v in color), -1, cv2.LINE_8, SHIFT)
        if shade is not None:
            cv2.circle(self.shade, c, r, float(shade), -1, cv2.LINE_8, SHIFT)

    def line(self, a: np.ndarray, b: np.ndarray, width: float, label: int) -> None:
        """Draw a thick straight band from ``a`` to ``b`` into the label layer."""
        pa = tuple(int(round(v * ONE)) for v in a)
        pb = tuple(int(round(v * ONE)) for v in b)
        cv2.line(self.label, pa, pb, int(label), max(1, int(round(width))), cv2.LINE_8, SHIFT)

    def darken(self, mask_fn: Callable[[np.ndarray], None], factor: float) -> None:
        """Multiply the shade layer by ``factor`` where ``mask_fn`` draws 1s into a mask."""
        mask = np.zeros(self.shape, np.uint8)
        mask_fn(mask)
        self.shade[mask > 0] *= factor


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Return smooth noise (H, W) float32 roughly in [-1, 1] with features of ``cell`` texels."""
    h, w = shape
    if cell <= 1.5:
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    gh, gw = int(math.ceil(h / cell)) + 3, int(math.ceil(w / cell)) + 3
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(round(gw * cell)), int(round(gh * cell))),
                     interpolation=cv2.INTER_CUBIC)
    off = int(cell)
    return big[off:off + h, off:off + w]


def pick(rng: np.random.Generator, palette: tuple, jitter: float = 10.0) -> np.ndarray:
    base = palette[rng.integers(len(palette))]
    noise = rng.uniform(-jitter, jitter, 3)
    return np.array([min(255.0, max(0.0, c + n)) for c, n in zip(base, noise)], np.float32)


def rect(centre: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray, half_u: float,
         half_v: float) -> np.ndarray:
    """Return the 4 corners (4, 2) of a rectangle with the given centre, axes and half sizes."""
    du, dv = axis_u * half_u, axis_v * half_v
    return np.stack([centre - du - dv, centre + du - dv, centre + du + dv, centre - du + dv])


@dataclass(frozen=True)
class Building:
    """A box building: footprint rectangle, height, and the ridge (long) axis."""

    centre: np.ndarray
    ridge: np.ndarray      # unit vector along the long side
    half_long: float
    half_short: float
    height: float

    @property
    def across(self) -> np.ndarray:
        return np.array([-self.ridge[1], self.ridge[0]])

    def footprint(self, offset: np.ndarray | float = 0.0) -> np.ndarray:
        return rect(self.centre + offset, self.ridge, self.across, self.half_long,
                    self.half_short)


@dataclass
class Things:
    """Objects collected while laying out blocks; drawn after all ground areas."""

    buildings: list[Building] = field(default_factory=list)
    trees: list[tuple[np.ndarray, float]] = field(default_factory=list)
    cars: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    fields: list[tuple[np.ndarray, float, float]] = field(default_factory=list)

    def drop_on(self, label: np.ndarray, classes: tuple[int, ...]) -> None:
        """Remove objects whose centre falls on one of ``classes`` (no houses in rivers)."""
        h, w = label.shape

        def on(p: np.ndarray) -> bool:
            x, y = int(round(p[0])), int(round(p[1]))
            return 0 <= x < w and 0 <= y < h and int(label[y, x]) in classes

        self.buildings = [b for b in self.buildings
                          if not any(on(c) for c in np.vstack([b.footprint(), [b.centre]]))]
        self.trees = [t for t in self.trees if not on(t[0])]
        self.cars = [c for c in self.cars if not on(c[0])]
