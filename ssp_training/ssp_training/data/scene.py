"""Procedural aerial scenes: a textured ground raster with UAVid train ids, and paths for movers.

A world is laid out like a small town seen from above: a rotated road grid with sidewalks,
blocks of buildings (walls leaning as in an oblique view, gable or flat roofs), parks with tree
clusters and ponds, fields with crop rows, parking lots with parked cars, rivers, and trees
along streets. Buildings and trees cast shadows in one sun direction.

Colours are drawn from overlapping palettes on purpose (grey roofs, roads and gravel; green
roofs, grass and trees; dark water, shadows and dark roofs), and every world gets its own
colour tint, so a classifier has to use texture and context, not colour alone: crop rows,
leafy crowns, window rows, roof ridges and tiles, lane markings, water ripples.
"""


from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Callable

import cv2
import numpy as np

from .canvas import (BACKGROUND, Building, Canvas, FINE, GROUND_COLORS, Lane, MID, ONE, pick, rect,
                     ROAD, ROAD_COLORS, SHIFT, Things, value_noise, VEG_COLORS, VEGETATION, WATER,
                     WATER_COLORS, World)
from .scene_draw import (draw_buildings, draw_cars, draw_fields, draw_shadows,
                         draw_trees)


@dataclass(frozen=True)
class _Grid:
    """A rotated road grid: road centre positions along both rotated axes."""

    centre: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half_extent: float
    roads_u: list[tuple[float, float]]  # (position along u, width) of roads running along v
    roads_v: list[tuple[float, float]]  # (position along v, width) of roads running along u
    sidewalk: float

    def to_world(self, u: float, v: float) -> np.ndarray:
        return self.centre + u * self.axis_u + v * self.axis_v


def _road_positions(rng: np.random.Generator, half: float, m: Callable[[float], float]
                    ) -> list[tuple[float, float]]:
    pos, out = -half + rng.uniform(0.0, m(60.0)), []
    while pos < half:
        if rng.random() < 0.8:  # some grid lines are missing: larger blocks
            out.append((pos, m(rng.uniform(6.0, 10.0))))
        pos += m(rng.uniform(45.0, 85.0))
    return out


def _make_grid(rng: np.random.Generator, shape: tuple[int, int],
               m: Callable[[float], float]) -> _Grid:
    h, w = shape
    angle = rng.uniform(0.0, math.pi / 2.0)
    axis_u = np.array([math.cos(angle), math.sin(angle)])
    axis_v = np.array([-math.sin(angle), math.cos(angle)])
    half = 0.5 * math.hypot(h, w) + m(20.0)
    return _Grid(centre=np.array([w / 2.0, h / 2.0]), axis_u=axis_u, axis_v=axis_v,
                 half_extent=half, roads_u=_road_positions(rng, half, m),
                 roads_v=_road_positions(rng, half, m), sidewalk=m(2.0))


def _road_lines(grid: _Grid) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Return (start, end, unit direction, width) of every road centre line."""
    e = grid.half_extent
    lines = [(grid.to_world(u, -e), grid.to_world(u, e), grid.axis_v, wd)
             for u, wd in grid.roads_u]
    lines += [(grid.to_world(-e, v), grid.to_world(e, v), grid.axis_u, wd)
              for v, wd in grid.roads_v]
    return lines


def _ground_cover(rng: np.random.Generator, cv: Canvas, m: Callable[[float], float]) -> None:
    shape = cv.shape
    cover = value_noise(rng, shape, m(40.0)) + 0.5 * value_noise(rng, shape, m(12.0))
    cv.label[cover > rng.uniform(-0.4, 0.1)] = VEGETATION


def _water(rng: np.random.Generator, cv: Canvas, m: Callable[[float], float]) -> None:
    """Add ponds and, sometimes, a meandering river (drawn over blocks, under roads)."""
    shape = cv.shape
    cv.label[value_noise(rng, shape, m(45.0)) > 0.72] = WATER
    if rng.random() < 0.45:
        h, w = shape
        course = rng.uniform(0.0, 2.0 * math.pi)
        d = np.array([math.cos(course), math.sin(course)])
        reach = math.hypot(h, w) / 2.0 + m(30.0)
        p = np.array([w / 2.0, h / 2.0]) - d * reach + np.array([-d[1], d[0]]) * (
            rng.uniform(-0.3, 0.3) * min(h, w))
        pts, heading = [], course
        for _ in range(int(2.0 * reach / m(10.0)) + 1):
            pts.append(p.copy())
            heading = course + float(np.clip(heading - course + rng.uniform(-0.25, 0.25),
                                             -0.7, 0.7))
            p = p + m(10.0) * np.array([math.cos(heading), math.sin(heading)])
        poly = np.round(np.asarray(pts) * ONE).astype(np.int32)
        cv2.polylines(cv.label, [poly], False, WATER, int(m(rng.uniform(12.0, 30.0))),
                      cv2.LINE_8, SHIFT)


def _draw_roads(rng: np.random.Generator, cv: Canvas, grid: _Grid,
                m: Callable[[float], float]) -> tuple[list[Lane], list[Lane]]:
    lines = _road_lines(grid)
    for a, b, _, wd in lines:  # sidewalks first, so every road lies on top of every sidewalk
        cv.line(a, b, wd + 2.0 * grid.sidewalk, BACKGROUND)
    lanes, walks = [], []
    for a, b, d, wd in lines:
        cv.line(a, b, wd, ROAD)
        normal = np.array([-d[1], d[0]])
        length = float(np.linalg.norm(b - a))
        for side in (-1.0, 1.0):
            # Right-hand traffic: the lane at +normal*wd/4 runs along d, the other against it.
            start = a + side * normal * wd / 4.0 if side > 0 else b + side * normal * wd / 4.0
            lanes.append(Lane(tuple(start), tuple(d * side), length))
            walk = a + side * normal * (wd / 2.0 + grid.sidewalk / 2.0)
            walks.append(Lane(tuple(walk), tuple(d), length))
        _lane_markings(rng, cv, a, d, length, m)
    return lanes, walks


def _lane_markings(rng: np.random.Generator, cv: Canvas, a: np.ndarray, d: np.ndarray,
                   length: float, m: Callable[[float], float]) -> None:
    if rng.random() < 0.3:  # unmarked road
        return
    dash, gap = m(3.0), m(rng.uniform(3.0, 6.0))
    width = max(1, int(round(m(0.15))))
    s = rng.uniform(0.0, dash + gap)
    while s < length:
        p0, p1 = a + d * s, a + d * min(s + dash, length)
        cv2.line(cv.pattern, tuple(int(round(v * ONE)) for v in p0),
                 tuple(int(round(v * ONE)) for v in p1), 110.0, width, cv2.LINE_8, SHIFT)
        s += dash + gap


def _blocks(grid: _Grid) -> list[tuple[float, float, float, float]]:
    """Return the (u0, u1, v0, v1) rectangles between neighbouring roads, sidewalks excluded."""
    def edges(roads: list[tuple[float, float]]) -> list[tuple[float, float]]:
        e = grid.half_extent
        bounds = [(-e, -e)] + [(p - wd / 2 - grid.sidewalk, p + wd / 2 + grid.sidewalk)
                               for p, wd in roads] + [(e, e)]
        return [(bounds[i][1], bounds[i + 1][0]) for i in range(len(bounds) - 1)
                if bounds[i + 1][0] - bounds[i][1] > 1.0]
    return [(u0, u1, v0, v1) for u0, u1 in edges(grid.roads_u) for v0, v1 in edges(grid.roads_v)]


def _in_world(pts: np.ndarray, shape: tuple[int, int], pad: float = 0.0) -> bool:
    h, w = shape
    return bool(pts[:, 0].max() >= -pad and pts[:, 1].max() >= -pad
                and pts[:, 0].min() <= w + pad and pts[:, 1].min() <= h + pad)


def _fill_blocks(rng: np.random.Generator, cv: Canvas, grid: _Grid,
                 m: Callable[[float], float]) -> Things:
    things = Things()
    urban = rng.uniform(0.35, 0.85)
    for u0, u1, v0, v1 in _blocks(grid):
        centre = grid.to_world((u0 + u1) / 2.0, (v0 + v1) / 2.0)
        poly = rect(centre, grid.axis_u, grid.axis_v, (u1 - u0) / 2.0, (v1 - v0) / 2.0)
        if not _in_world(poly, cv.shape, pad=m(10.0)):
            continue
        r = rng.random()
        if r < urban:
            cv.polygon(poly, label=BACKGROUND if rng.random() < 0.5 else VEGETATION)
            _building_block(rng, grid, (u0, u1, v0, v1), m, things)
        elif r < urban + (1.0 - urban) * 0.45:  # park
            cv.polygon(poly, label=VEGETATION)
            _tree_clusters(rng, poly, m, things)
            if rng.random() < 0.3:
                _pond(rng, cv, centre, min(u1 - u0, v1 - v0))
        elif r < urban + (1.0 - urban) * 0.8:  # field with crop rows
            cv.polygon(poly, label=VEGETATION)
            things.fields.append((poly, rng.uniform(0.0, math.pi), m(rng.uniform(1.0, 2.5))))
        else:  # parking lot
            cv.polygon(poly, label=BACKGROUND)
            _parking(rng, grid, (u0, u1, v0, v1), m, things)
    return things


def _building_block(rng: np.random.Generator, grid: _Grid,
                    block: tuple[float, float, float, float], m: Callable[[float], float],
                    things: Things) -> None:
    u0, u1, v0, v1 = block
    # Lots run along the block's long axis, in one or two rows; a, b = along, across.
    long_u = (u1 - u0) >= (v1 - v0)
    a0, a1, b0, b1 = (u0, u1, v0, v1) if long_u else (v0, v1, u0, u1)
    ax_a, ax_b = (grid.axis_u, grid.axis_v) if long_u else (grid.axis_v, grid.axis_u)

    def world(a: float, b: float) -> np.ndarray:
        return grid.to_world(a, b) if long_u else grid.to_world(b, a)

    rows = 2 if (b1 - b0) > m(28.0) else 1
    for row in range(rows):
        rb0 = b0 + (b1 - b0) * row / rows
        rb1 = b0 + (b1 - b0) * (row + 1) / rows
        a = a0
        while a < a1 - m(6.0):
            lot_w = min(m(rng.uniform(10.0, 24.0)), a1 - a)
            _lot(rng, world, ax_a, ax_b, (a, a + lot_w, rb0, rb1), m, things)
            a += lot_w


def _lot(rng: np.random.Generator, world: Callable[[float, float], np.ndarray],
         ax_a: np.ndarray, ax_b: np.ndarray, lot: tuple[float, float, float, float],
         m: Callable[[float], float], things: Things) -> None:
    a0, a1, b0, b1 = lot
    r = rng.random()
    setback = m(rng.uniform(1.0, 3.0))
    half_a = 0.5 * (a1 - a0 - 2 * setback) * rng.uniform(0.7, 0.95)
    half_b = 0.5 * (b1 - b0 - 2 * setback) * rng.uniform(0.6, 0.95)
    if r < 0.78 and min(half_a, half_b) > m(2.0):
        ca = rng.uniform(a0 + setback + half_a, max(a0 + setback + half_a, a1 - setback - half_a))
        cb = rng.uniform(b0 + setback + half_b, max(b0 + setback + half_b, b1 - setback - half_b))
        ridge, half_long, half_short = (ax_a, half_a, half_b) if half_a >= half_b else (
            ax_b, half_b, half_a)
        building = Building(centre=world(ca, cb), ridge=ridge, half_long=half_long,
                            half_short=half_short, height=m(rng.uniform(6.0, 22.0)))
        things.buildings.append(building)
        if rng.random() < 0.4:  # a garden tree next to the house
            corner = building.footprint()[rng.integers(4)]
            things.trees.append((corner + rng.uniform(-1, 1, 2) * m(2.0),
                                 m(rng.uniform(2.0, 4.0))))
    elif r < 0.9:  # garden
        for _ in range(rng.integers(1, 4)):
            things.trees.append((world(rng.uniform(a0, a1), rng.uniform(b0, b1)),
                                 m(rng.uniform(2.0, 4.5))))
    else:  # yard with parked cars
        for _ in range(rng.integers(1, 3)):
            things.cars.append((world(rng.uniform(a0 + m(3), max(a0 + m(3), a1 - m(3))),
                                      rng.uniform(b0 + m(3), max(b0 + m(3), b1 - m(3)))),
                                ax_a if rng.random() < 0.5 else ax_b))


def _parking(rng: np.random.Generator, grid: _Grid, area: tuple[float, float, float, float],
             m: Callable[[float], float], things: Things) -> None:
    u0, u1, v0, v1 = area
    slot_u, slot_v = m(2.8), m(6.0)
    u = u0 + m(1.0)
    while u + slot_u < u1:
        v = v0 + m(1.0)
        while v + slot_v < v1:
            if rng.random() < 0.55:
                things.cars.append((grid.to_world(u + slot_u / 2, v + slot_v / 2), grid.axis_v))
            v += slot_v + m(1.0)
        u += slot_u


def _tree_clusters(rng: np.random.Generator, poly: np.ndarray, m: Callable[[float], float],
                   things: Things) -> None:
    lo, hi = poly.min(0), poly.max(0)
    n_clusters = max(1, int(float(np.prod(hi - lo)) / m(28.0) ** 2))
    path = poly.astype(np.float32)
    for _ in range(n_clusters):
        c = rng.uniform(lo, hi)
        spread = m(rng.uniform(3.0, 9.0))
        for _ in range(rng.integers(2, 12)):
            p = c + rng.standard_normal(2) * spread
            if cv2.pointPolygonTest(path, (float(p[0]), float(p[1])), False) >= 0:
                things.trees.append((p, m(rng.uniform(2.0, 4.5))))


def _pond(rng: np.random.Generator, cv: Canvas, centre: np.ndarray, size: float) -> None:
    n = 24
    ang = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    radius = size * rng.uniform(0.15, 0.3) * (1.0 + 0.25 * rng.uniform(-1, 1, n))
    stretch = rng.uniform(0.7, 1.3)
    pts = centre + np.stack([np.cos(ang) * radius * stretch, np.sin(ang) * radius], axis=1)
    cv.polygon(pts, label=WATER)


def _street_trees(rng: np.random.Generator, grid: _Grid, shape: tuple[int, int],
                  m: Callable[[float], float], things: Things) -> None:
    h, w = shape
    for a, b, d, wd in _road_lines(grid):
        if rng.random() > 0.4:
            continue
        normal = np.array([-d[1], d[0]])
        length = float(np.linalg.norm(b - a))
        spacing = m(rng.uniform(7.0, 11.0))
        for side in (-1.0, 1.0):
            s = rng.uniform(0.0, spacing)
            while s < length:
                p = a + d * s + side * normal * (wd / 2.0 + grid.sidewalk)
                if -m(5.0) <= p[0] <= w + m(5.0) and -m(5.0) <= p[1] <= h + m(5.0):
                    things.trees.append((p, m(rng.uniform(2.0, 3.5))))
                s += spacing


def _area_colours(rng: np.random.Generator, cv: Canvas, m: Callable[[float], float]) -> None:
    """Give roads, grass, water and clutter their colours (instances are painted later).

    Each area class blends two colours of its palette with a smooth noise field; done with
    per-class lookup tables, which is ~10x faster than masked assignments on a large raster.
    """
    lut_a = np.zeros((256, 3), np.float32)
    lut_b = np.zeros((256, 3), np.float32)
    coarse = np.zeros(256, bool)
    for cls, palette, use_coarse in ((VEGETATION, VEG_COLORS, True),
                                     (BACKGROUND, GROUND_COLORS, False),
                                     (WATER, WATER_COLORS, True), (ROAD, ROAD_COLORS, False)):
        lut_a[cls], lut_b[cls], coarse[cls] = pick(rng, palette), pick(rng, palette), use_coarse
    mix_a = value_noise(rng, cv.shape, m(30.0))
    mix_b = value_noise(rng, cv.shape, m(8.0))
    t = (np.where(coarse[cv.label], mix_a, mix_b) + 1.0) * 0.5           # (Hw, Ww) in [0, 1]
    ca, cb = np.take(lut_a, cv.label, axis=0), np.take(lut_b, cv.label, axis=0)  # (Hw, Ww, 3)
    cv.base[:] = ca + (cb - ca) * t[..., None]


def build_world(rng: np.random.Generator, shape: tuple[int, int], gsd: float) -> World:
    """Return a random world of ``shape`` (Hw, Ww) texels, ``gsd`` metres per texel."""
    def m(metres: float) -> float:
        return metres / gsd

    cv = Canvas(shape)
    sun_angle = rng.uniform(0.0, 2.0 * math.pi)
    sun = np.array([math.cos(sun_angle), math.sin(sun_angle)]) * rng.uniform(0.35, 0.8)
    lean_angle = rng.uniform(0.0, 2.0 * math.pi)
    lean_dir = np.array([math.cos(lean_angle), math.sin(lean_angle)])
    _ground_cover(rng, cv, m)
    grid = _make_grid(rng, shape, m)
    things = _fill_blocks(rng, cv, grid, m)
    _water(rng, cv, m)
    roads, walks = _draw_roads(rng, cv, grid, m)
    _street_trees(rng, grid, shape, m, things)
    things.drop_on(cv.label, (WATER, ROAD))
    _area_colours(rng, cv, m)
    draw_fields(cv, things)
    draw_shadows(cv, things, sun, m)
    draw_buildings(rng, cv, things, lean_dir, m)
    draw_trees(rng, cv, things, sun)
    draw_cars(rng, cv, things, m)
    tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    rgb = _compose(rng, cv, m, tint)
    return World(rgb=rgb, label=cv.label, gsd=gsd, sun=(float(sun[0]), float(sun[1])),
                 tint=(float(tint[0]), float(tint[1]), float(tint[2])), roads=roads,
                 walkways=walks)


def _compose(rng: np.random.Generator, cv: Canvas, m: Callable[[float], float],
             tint: np.ndarray) -> np.ndarray:
    fine = value_noise(rng, cv.shape, 1.0)
    mid = value_noise(rng, cv.shape, max(m(1.5), 2.0))
    gain = 1.0 + FINE[cv.label] * fine + MID[cv.label] * mid          # (Hw, Ww)
    rgb = cv.base * gain[..., None]
    rgb += cv.pattern[..., None]
    rgb *= cv.shade[..., None] * tint
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
