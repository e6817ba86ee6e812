"""Independently moving vehicles and people for the synthetic generator.

A mover is a small RGBA sprite (with its own shadow) that slides along a straight lane of the
world at constant speed. Its pose at frame ``k`` is the 3x3 map sprite pixel -> world texel, so
``G_k · pose(k)`` places it in image ``k`` and ``G_{k-1} · pose(k-1) · (G_k · pose(k))⁻¹`` is
the exact backward motion of its pixels: the homography of the ground does not explain them.
Lanes run past the edge of the world, and movers wrap around at the lane ends, which lie
outside every camera view by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import cv2
import numpy as np

from .camera import translate
from .canvas import CAR_COLORS, CLOTH_COLORS, Lane, PERSON, VEHICLE, World

_SUPERSAMPLE = 4  # sprites are drawn 4x larger and area-averaged: anti-aliased edges


@dataclass(frozen=True)
class Mover:
    """One moving object: sprite, lane and speed."""

    label: int
    """UAVid train id painted under the sprite (vehicle or person)."""
    sprite: np.ndarray
    """(h, w, 4) float32: RGB 0..255 and opacity 0..1."""
    shadow: np.ndarray
    """(h, w) float32 shadow opacity 0..1 (darkens what lies below, keeps its label)."""
    anchor: tuple[float, float]
    """Sprite pixel that sits on the lane."""
    lane: Lane
    s0: float
    """Position along the lane at frame 0, texels."""
    speed: float
    """Texels per frame along the lane direction."""
    offset: float
    """Sideways offset from the lane line, texels."""

    def pose(self, k: int) -> np.ndarray:
        """Return the 3x3 map from sprite pixels to world texels at frame ``k``."""
        s = (self.s0 + self.speed * k) % self.lane.length
        dx, dy = self.lane.direction
        px = self.lane.start[0] + dx * s - dy * self.offset
        py = self.lane.start[1] + dy * s + dx * self.offset
        rot = np.array([[dx, -dy, 0.0], [dy, dx, 0.0], [0.0, 0.0, 1.0]])
        return translate(px, py) @ rot @ translate(-self.anchor[0], -self.anchor[1])


def _canvas(length: float, width: float, shadow: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Return sprite size (w, h) and anchor covering the body and its shadow offset."""
    pad = 2.0
    half_w = 0.5 * length + abs(shadow[0]) + pad
    half_h = 0.5 * width + abs(shadow[1]) + pad
    return int(math.ceil(2 * half_w)), int(math.ceil(2 * half_h)), np.array([half_w, half_h])


def _finish(big_rgb: np.ndarray, big_alpha: np.ndarray, big_shadow: np.ndarray,
            size: tuple[int, int], tint: tuple[float, float, float]
            ) -> tuple[np.ndarray, np.ndarray]:
    rgb = cv2.resize(big_rgb * big_alpha[..., None], size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(big_alpha, size, interpolation=cv2.INTER_AREA)
    shadow = cv2.resize(big_shadow, size, interpolation=cv2.INTER_AREA)
    # Un-premultiply so edge pixels keep the body colour and only fade through alpha.
    rgb = rgb / np.maximum(alpha, 1e-3)[..., None] * np.asarray(tint, np.float32)
    sprite = np.concatenate([np.clip(rgb, 0, 255), alpha[..., None]], axis=2)
    return sprite.astype(np.float32), (shadow * (1.0 - alpha)).astype(np.float32)


def _poly(img: np.ndarray, pts: np.ndarray, value: float | tuple) -> None:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], value, cv2.LINE_8, 4)


def car_sprite(rng: np.random.Generator, gsd: float, sun_local: np.ndarray,
               tint: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (sprite, shadow, anchor) of a car seen from above, heading along +x."""
    length, width = rng.uniform(4.0, 5.2) / gsd, rng.uniform(1.7, 2.0) / gsd
    shadow_off = sun_local * 1.5 / gsd
    w, h, anchor = _canvas(length, width, shadow_off)
    s = _SUPERSAMPLE
    rgb = np.zeros((h * s, w * s, 3), np.float32)
    alpha = np.zeros((h * s, w * s), np.float32)
    shadow = np.zeros((h * s, w * s), np.float32)

    def box(cx: float, cy: float, hl: float, hw: float) -> np.ndarray:
        return np.array([[cx - hl, cy - hw], [cx + hl, cy - hw], [cx + hl, cy + hw],
                         [cx - hl, cy + hw]]) * s

    ax, ay = anchor
    _poly(shadow, box(ax + shadow_off[0], ay + shadow_off[1], length / 2, width / 2), 0.55)
    color = np.asarray(CAR_COLORS[rng.integers(len(CAR_COLORS))], np.float32)
    _poly(alpha, box(ax, ay, length / 2, width / 2), 1.0)
    _poly(rgb, box(ax, ay, length / 2, width / 2), tuple(float(c) for c in color))
    glass = (40.0, 46.0, 54.0)
    _poly(rgb, box(ax + 0.17 * length, ay, 0.08 * length, 0.42 * width), glass)   # windscreen
    _poly(rgb, box(ax - 0.3 * length, ay, 0.05 * length, 0.4 * width), glass)    # rear window
    roof = tuple(float(min(255.0, c * 1.1 + 10.0)) for c in color)
    _poly(rgb, box(ax - 0.05 * length, ay, 0.16 * length, 0.38 * width), roof)
    sprite, shade = _finish(rgb, alpha, shadow, (w, h), tint)
    return sprite, shade, anchor


def person_sprite(rng: np.random.Generator, gsd: float, sun_local: np.ndarray,
                  tint: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (sprite, shadow, anchor) of a walking person seen from above, facing +x."""
    # Shoulders; the oblique view shows some body. Never under ~2 px, or people would vanish
    # from the labels at the small training sizes (a real person at 0.4 m/px is ~1 px).
    depth, width = max(0.45 / gsd, 1.8), max(0.7 / gsd, 2.4)
    shadow_off = sun_local * 1.7 / gsd
    w, h, anchor = _canvas(depth, width, shadow_off)
    s = _SUPERSAMPLE
    rgb = np.zeros((h * s, w * s, 3), np.float32)
    alpha = np.zeros((h * s, w * s), np.float32)
    shadow = np.zeros((h * s, w * s), np.float32)
    ax, ay = anchor * s
    sh_end = (anchor + shadow_off) * s
    cv2.line(shadow, (int(ax * 16), int(ay * 16)), (int(sh_end[0] * 16), int(sh_end[1] * 16)),
             0.5, max(1, int(0.35 / gsd * s)), cv2.LINE_8, 4)
    axes = (max(1, int(depth / 2 * s * 16)), max(1, int(width / 2 * s * 16)))
    centre = (int(ax * 16), int(ay * 16))
    cloth = tuple(float(c) for c in CLOTH_COLORS[rng.integers(len(CLOTH_COLORS))])
    cv2.ellipse(alpha, centre, axes, 0.0, 0.0, 360.0, 1.0, -1, cv2.LINE_8, 4)
    cv2.ellipse(rgb, centre, axes, 0.0, 0.0, 360.0, cloth, -1, cv2.LINE_8, 4)
    hair = (float(rng.uniform(20, 90)),) * 3
    cv2.circle(rgb, centre, max(1, int(0.12 / gsd * s * 16)), hair, -1, cv2.LINE_8, 4)
    sprite, shade = _finish(rgb, alpha, shadow, (w, h), tint)
    return sprite, shade, anchor


def _local(v: tuple[float, float], d: tuple[float, float]) -> np.ndarray:
    """Return world vector ``v`` in the frame of a sprite heading along ``d``."""
    return np.array([v[0] * d[0] + v[1] * d[1], -v[0] * d[1] + v[1] * d[0]])


def _inside(lane: Lane, shape: tuple[int, int]) -> tuple[float, float] | None:
    """Return the range of lane positions inside the world raster (Liang-Barsky clipping)."""
    h, w = shape
    lo, hi = 0.0, lane.length
    for p, d, size in ((lane.start[0], lane.direction[0], w),
                       (lane.start[1], lane.direction[1], h)):
        if abs(d) < 1e-12:
            if not 0.0 <= p < size:
                return None
            continue
        a, b = (0.0 - p) / d, (size - p) / d
        lo, hi = max(lo, min(a, b)), min(hi, max(a, b))
    return (lo, hi) if hi - lo > 1.0 else None


def spawn_movers(rng: np.random.Generator, world: World, fps: float, vehicles: int,
                 persons: int) -> list[Mover]:
    """Return ``vehicles`` cars on the roads and ``persons`` people on the sidewalks."""
    movers = []
    gsd, shape = world.gsd, world.label.shape
    for kind, count, all_lanes in (("car", vehicles, world.roads),
                                   ("person", persons, world.walkways)):
        lanes = [(lane, r) for lane in all_lanes for r in [_inside(lane, shape)] if r]
        if not lanes:  # no road crosses this world: nobody moves there
            continue
        for _ in range(count):
            lane, (s_lo, s_hi) = lanes[rng.integers(len(lanes))]
            s0 = float(rng.uniform(s_lo, s_hi))
            if kind == "person" and rng.random() < 0.5:  # people walk both ways
                end = (lane.start[0] + lane.direction[0] * lane.length,
                       lane.start[1] + lane.direction[1] * lane.length)
                lane = Lane(end, (-lane.direction[0], -lane.direction[1]), lane.length)
                s0 = lane.length - s0
            sun = _local(world.sun, lane.direction)
            if kind == "car":
                sprite, shadow, anchor = car_sprite(rng, gsd, sun, world.tint)
                speed, offset, label = rng.uniform(5.0, 13.0), 0.0, VEHICLE
            else:
                sprite, shadow, anchor = person_sprite(rng, gsd, sun, world.tint)
                speed, offset, label = rng.uniform(0.8, 1.7), rng.uniform(-0.6, 0.6) / gsd, PERSON
            movers.append(Mover(label=label, sprite=sprite, shadow=shadow,
                                anchor=(float(anchor[0]), float(anchor[1])), lane=lane, s0=s0,
                                speed=speed / gsd / fps, offset=offset))
    return movers


@dataclass(frozen=True)
class Placed:
    """Where a mover landed in one frame."""

    index: int
    """Position in the mover list; the layer id in the frame is ``index + 1``."""
    to_image: np.ndarray
    """3x3 map sprite pixel -> image pixel."""
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) image region the sprite touches."""


def place(movers: list[Mover], k: int, g: np.ndarray, size: tuple[int, int]) -> list[Placed]:
    """Return the movers visible in frame ``k`` under ground homography ``g``."""
    h, w = size
    out = []
    for i, mv in enumerate(movers):
        m = g @ mv.pose(k)
        sh, sw = mv.sprite.shape[:2]
        corners = np.array([[0, 0, 1], [sw, 0, 1], [sw, sh, 1], [0, sh, 1]], np.float64) @ m.T
        xy = corners[:, :2] / corners[:, 2:3]
        x0, y0 = np.floor(xy.min(0)).astype(int) - 1
        x1, y1 = np.ceil(xy.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 > x0 and y1 > y0:
            out.append(Placed(index=i, to_image=m, box=(int(x0), int(y0), int(x1), int(y1))))
    return out


def paint(movers: list[Mover], placed: list[Placed], image: np.ndarray, label: np.ndarray,
          layer: np.ndarray, moving: np.ndarray) -> None:
    """Draw placed movers into a float32 image, its labels, layer ids and moving mask."""
    for p in placed:
        mv = movers[p.index]
        x0, y0, x1, y1 = p.box
        m = translate(-x0, -y0) @ p.to_image
        dsize = (x1 - x0, y1 - y0)
        rgba = cv2.warpPerspective(mv.sprite, m, dsize, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        shadow = cv2.warpPerspective(mv.shadow, m, dsize, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        roi = image[y0:y1, x0:x1]
        alpha = rgba[..., 3:4]
        roi *= (1.0 - shadow)[..., None]
        roi *= 1.0 - alpha
        roi += rgba[..., :3] * alpha
        body = alpha[..., 0] > 0.5
        label[y0:y1, x0:x1][body] = mv.label
        layer[y0:y1, x0:x1][body] = p.index + 1
        moving[y0:y1, x0:x1] |= (alpha[..., 0] > 0.01) | (shadow > 0.01)
