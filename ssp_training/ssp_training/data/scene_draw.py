"""Paint the objects of a procedural scene: fields, shadows, buildings, trees and cars."""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from .canvas import (BUILDING, Building, Canvas, CAR_COLORS, ONE, pick, rect, ROOF, ROOF_COLORS,
                     SHIFT, Things, TREE, TREE_COLORS, VEGETATION, VEHICLE, WALL_COLORS)


def _bbox(poly: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    x0, y0 = np.floor(np.maximum(poly.min(0), 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(poly.max(0), (shape[1], shape[0]))).astype(int)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def draw_fields(cv: Canvas, things: Things) -> None:
    for poly, angle, period in things.fields:
        box = _bbox(poly, cv.shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        rows = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period))
        keep = cv.label[y0:y1, x0:x1] == VEGETATION
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((poly - (x0, y0)) * ONE).astype(np.int32)], 1,
                     cv2.LINE_8, SHIFT)
        cv.pattern[y0:y1, x0:x1] += np.where((mask > 0) & keep, 14.0 * rows, 0.0).astype(
            np.float32)


def _car_rect(centre: np.ndarray, d: np.ndarray, m: Callable[[float], float]) -> np.ndarray:
    return rect(centre, d, np.array([-d[1], d[0]]), m(2.3), m(1.0))


def draw_shadows(cv: Canvas, things: Things, sun: np.ndarray,
                 m: Callable[[float], float]) -> None:
    def draw(mask: np.ndarray) -> None:
        for b in things.buildings:
            foot = b.footprint()
            hull = cv2.convexHull(np.concatenate([foot, foot + sun * b.height]).astype(
                np.float32))[:, 0]
            cv2.fillPoly(mask, [np.round(hull * ONE).astype(np.int32)], 1, cv2.LINE_8, SHIFT)
        for c, r in things.trees:
            p = c + sun * r * 2.0
            cv2.circle(mask, tuple(int(round(v * ONE)) for v in p), int(round(r * ONE)), 1,
                       -1, cv2.LINE_8, SHIFT)
        for c, d in things.cars:
            cv2.fillPoly(mask, [np.round(_car_rect(c + sun * m(1.5), d, m) * ONE).astype(
                np.int32)], 1, cv2.LINE_8, SHIFT)
    cv.darken(draw, 0.55)


def draw_buildings(rng: np.random.Generator, cv: Canvas, things: Things,
                   lean_dir: np.ndarray, m: Callable[[float], float]) -> None:
    # Painted as seen slightly obliquely: the roof is shifted along ``lean_dir`` in proportion
    # to the height, and the band between footprint and roof is the visible facade.
    for b in things.buildings:
        lean = lean_dir * b.height * 0.25
        roof = b.footprint(lean)
        wall = cv2.convexHull(np.concatenate([b.footprint(), roof]).astype(np.float32))[:, 0]
        cv.polygon(wall, label=BUILDING, color=pick(rng, WALL_COLORS), shade=0.9)
        color = pick(rng, ROOF_COLORS, jitter=14.0)
        cv.polygon(roof, label=ROOF, color=color, shade=1.0)
        _windows(cv, wall, b.ridge, lean_dir, m)
        if rng.random() < 0.6:
            _gable(rng, cv, b, lean, m)
        else:
            _flat_roof(rng, cv, roof, color, m)


def _windows(cv: Canvas, wall: np.ndarray, along: np.ndarray, up: np.ndarray,
             m: Callable[[float], float]) -> None:
    box = _bbox(wall, cv.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    a = xx * along[0] + yy * along[1]
    b = xx * up[0] + yy * up[1]
    grid = (np.sin(a * (2 * math.pi / max(m(3.0), 3.0))) > 0.2) & (
        np.sin(b * (2 * math.pi / max(m(0.8), 2.5))) > 0.0)
    region = cv.label[y0:y1, x0:x1] == BUILDING
    cv.pattern[y0:y1, x0:x1] -= np.where(grid & region, 55.0, 0.0).astype(np.float32)


def _gable(rng: np.random.Generator, cv: Canvas, b: Building, lean: np.ndarray,
           m: Callable[[float], float]) -> None:
    # Two slopes meeting at the ridge: one catches the sun, the other is in shade.
    bright, dark = (1.12, 0.8) if rng.random() < 0.5 else (0.8, 1.12)
    for side, shade in ((1.0, bright), (-1.0, dark)):
        centre = b.centre + lean + side * b.across * b.half_short / 2.0
        cv.polygon(rect(centre, b.ridge, b.across, b.half_long, b.half_short / 2.0),
                   shade=shade)
    _stripes(cv, b.footprint(lean), b.across, max(m(0.5), 2.5), 9.0)


def _flat_roof(rng: np.random.Generator, cv: Canvas, roof: np.ndarray, color: np.ndarray,
               m: Callable[[float], float]) -> None:
    edge = np.round(roof * ONE).astype(np.int32)
    cv2.polylines(cv.pattern, [edge], True, 28.0, max(1, int(round(m(0.5)))), cv2.LINE_8,
                  SHIFT)
    centre = roof.mean(0)
    for _ in range(rng.integers(0, 4)):  # rooftop units
        c = centre + (roof[rng.integers(4)] - centre) * rng.uniform(0.0, 0.6)
        unit = rect(c, np.array([1.0, 0.0]), np.array([0.0, 1.0]), m(rng.uniform(0.6, 1.5)),
                    m(rng.uniform(0.6, 1.5)))
        cv.polygon(unit, color=np.clip(color + rng.uniform(-50, 60), 0, 255))


def _stripes(cv: Canvas, poly: np.ndarray, direction: np.ndarray, period: float,
             amp: float) -> None:
    box = _bbox(poly, cv.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    s = np.sin((xx * direction[0] + yy * direction[1]) * (2 * math.pi / period))
    region = cv.label[y0:y1, x0:x1] == ROOF
    cv.pattern[y0:y1, x0:x1] += np.where(region, amp * s, 0.0).astype(np.float32)


def draw_trees(rng: np.random.Generator, cv: Canvas, things: Things,
               sun: np.ndarray) -> None:
    toward_sun = -sun / max(float(np.linalg.norm(sun)), 1e-6)
    for c, r in things.trees:
        cv.disk(c, r, label=TREE, color=pick(rng, TREE_COLORS, jitter=12.0), shade=0.92)
        cv.disk(c + toward_sun * r * 0.35, r * 0.55, shade=1.12)  # the lit side of the crown


def draw_cars(rng: np.random.Generator, cv: Canvas, things: Things,
              m: Callable[[float], float]) -> None:
    for c, d in things.cars:
        cv.polygon(_car_rect(c, d, m), label=VEHICLE, color=pick(rng, CAR_COLORS, jitter=8.0),
                   shade=1.0)
        cv.polygon(rect(c + d * m(0.6), d, np.array([-d[1], d[0]]), m(0.45), m(0.85)),
                   shade=0.45)  # windscreen
