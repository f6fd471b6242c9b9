"""Seeded drawings of things that are no digit: scribbles, glyphs and shapes, drawn as people draw.

Each function takes a `numpy.random.Generator` and returns one CANVAS x CANVAS uint8
drawing (ink 255 on 0), made with one anti-aliased pen of constant width, the drawing
12-16 pen widths across, as with a mouse on the demos' canvas. outliers.py turns them
into training and measuring sets (through `preprocess.to_mnist`, like any drawing).

    rng = np.random.default_rng(0)
    scribble_drawing(rng), glyph_drawing(rng), shape_drawing(rng)   # (96, 96) uint8 each
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# Drawing: the pen is chosen first and the drawing sized to it, so the ratio is exact
# whatever the pen's whole-pixel width. Fatter pens only cost time: to_mnist scales all to 20 px.
CANVAS = 96  # px
PENS = (3, 4, 5)  # px, anti-aliased
PEN_TO_SIZE = (12.0, 16.0)  # a drawing's longer side is 12-16 pen widths, as with a mouse
SUBPIXEL = 4  # cv2 `shift`: vertices at 1/16 px, so smooth curves do not snap to the grid

# Only characters that look like no digit. Left out, because digits are written so:
# O o Q D (0); l I i j | ! / ( ) [ ] { } (1, brackets are a 1 with serifs); Z z ? (2);
# S s $ (5); b G (6); T t (7); B & (8); g q P p a d (9); A h y (4); and the open curves and
# corners C c U u V v L J, which are how an unfinished 0, 4, 6 or 7 looks. - _ . , are a stroke or a dot.
GLYPHS = tuple("EFHKMNRWXYekmnrwx#@%+=*<>~^")
HERSHEY_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
                 cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL,
                 cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX)


def _pen_and_size(rng: np.random.Generator, pens=PENS) -> tuple[int, float]:
    pen = int(rng.choice(pens))
    return pen, pen * rng.uniform(*PEN_TO_SIZE)


def _render(parts, rng: np.random.Generator, max_turn: float = np.pi) -> np.ndarray:
    """Draw [(points (k, 2), "open" | "closed" | "filled")] given in any unit (y down):
    turned, scaled to the pen and centred, with one pen as a person would."""
    turn = rng.uniform(-max_turn, max_turn)
    rotation = np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    parts = [(np.asarray(points, float) @ rotation, kind) for points, kind in parts]
    every = np.vstack([points for points, _ in parts])
    low, high = every.min(axis=0), every.max(axis=0)
    pen, size = _pen_and_size(rng)
    scale = size / max(float((high - low).max()), 1e-6)
    offset = CANVAS / 2 - (low + high) / 2 * scale
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    for points, kind in parts:
        fixed = np.round((points * scale + offset) * (1 << SUBPIXEL)).astype(np.int32)
        if kind == "filled":
            cv2.fillPoly(canvas, [fixed], 255, cv2.LINE_AA, shift=SUBPIXEL)
        cv2.polylines(canvas, [fixed], kind != "open", 255, pen, cv2.LINE_AA, shift=SUBPIXEL)
    return canvas


def _smooth(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """Catmull-Rom spline through the points: the curve a hand makes through them."""
    p = np.vstack([points[:1], points, points[-1:]])
    p0, p1, p2, p3 = p[:-3], p[1:-2], p[2:-1], p[3:]
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None, None]
    curve = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                   + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3)
    return np.vstack([curve.transpose(1, 0, 2).reshape(-1, 2), points[-1:]])


def _arc(radius=1.0, centre=(0.0, 0.0), start=0.0, stop=2 * np.pi, steps=40) -> np.ndarray:
    angle = np.linspace(start, stop, steps)
    return np.stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle)], axis=1)


def _shaky(points, rng: np.random.Generator, amount: float = 0.04) -> np.ndarray:
    """Vertices a little off, as a hand puts them."""
    points = np.asarray(points, float)
    return points + rng.normal(0, amount, points.shape)


# ---------------------------------------------------------------- scribble


def _random_walk(rng):
    """A pen that keeps turning while its curvature drifts: loops tangled on themselves."""
    while True:
        steps = rng.integers(60, 110)
        curvature = rng.normal(0, 0.15) + np.cumsum(rng.normal(0, 0.04, steps))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(curvature)
        # Three turns or more, measured over 4-step chords so that jitter does not count:
        # an 8 turns twice, a 6 or 9 about one and a quarter times.
        if np.abs(np.diff(heading[::4])).sum() > 6 * np.pi:
            return [(np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1), axis=0), "open")]


def _spline_scrawl(rng):
    # Seven points or more: a curve through fewer can pass for a 2, 3 or 5.
    return [(_smooth(rng.uniform(-1, 1, (rng.integers(7, 11), 2))), "open")]


def _zigzag(rng):
    # Five strokes or more (two are a V, three a Z or N, four a W), and not so flat that it is a 1.
    corners = rng.integers(6, 11)
    x = np.linspace(-1, 1, corners)
    y = np.where(np.arange(corners) % 2, 1.0, -1.0) * rng.uniform(0.35, 0.7)
    points = _shaky(np.stack([x, y], axis=1), rng, 0.05)
    return [(_smooth(points) if rng.random() < 0.4 else points, "open")]  # a wave, or sharp


def _coil(rng):
    """Loops in a row like a cursive 'eeee'; kept about level, so it never stands up as an 8."""
    loops = rng.integers(3, 6)
    t = np.linspace(0, 2 * np.pi * loops, 24 * loops)
    radius = rng.uniform(0.3, 0.6)
    return [(np.stack([t / (2 * np.pi) - radius * np.cos(t), radius * np.sin(t)], axis=1), "open")]


def _hatching(rng):
    parts = [(_shaky([[-1, y], [1, y]], rng, 0.05), "open") for y in np.linspace(-0.8, 0.8, rng.integers(4, 8))]
    if rng.random() < 0.4:  # cross-hatched: a second set at a steep angle
        cos, sin = np.cos(rng.uniform(0.9, 2.2)), np.sin(rng.uniform(0.9, 2.2))
        parts += [(points @ np.array([[cos, sin], [-sin, cos]]), kind) for points, kind in parts]
    return parts


SCRIBBLES = (_random_walk, _spline_scrawl, _zigzag, _coil, _hatching)


def scribble_drawing(rng):
    kind = SCRIBBLES[rng.integers(len(SCRIBBLES))]
    return _render(kind(rng), rng, 0.5 if kind is _coil else np.pi)


# ---------------------------------------------------------------- glyph


@lru_cache(maxsize=None)
def _ink_box(char: str, font: int) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the character's ink at scale 1, from its origin.
    getTextSize gives the font's box, which is twice the height of an 'e' or a '~'."""
    canvas = np.zeros((256, 256), np.uint8)
    cv2.putText(canvas, char, (64, 192), font, 4.0, 255, 1)
    rows, cols = np.flatnonzero(canvas.any(axis=1)), np.flatnonzero(canvas.any(axis=0))
    return (cols[0] - 64) / 4, (rows[0] - 192) / 4, (cols[-1] - cols[0] + 1) / 4, (rows[-1] - rows[0] + 1) / 4


def glyph_drawing(rng):
    """One character with its ink sized to the pen, tilted up to 20 degrees, squeezed a little."""
    char = GLYPHS[rng.integers(len(GLYPHS))]
    font = int(rng.choice(HERSHEY_FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.3 else 0)
    left, top, width, height = _ink_box(char, font)
    pen, size = _pen_and_size(rng, PENS[:2])  # smaller: it is tilted after drawing
    scale = size / max(width, height)
    origin = (round(CANVAS / 2 - (left + width / 2) * scale), round(CANVAS / 2 - (top + height / 2) * scale))
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    cv2.putText(canvas, char, origin, font, scale, 255, pen, cv2.LINE_AA)
    tilt = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), rng.uniform(-20, 20), 1.0)
    linear = tilt[:, :2] @ np.diag(rng.uniform(0.75, 1.0, 2))
    matrix = np.hstack([linear, (CANVAS / 2 - linear @ [CANVAS / 2, CANVAS / 2])[:, None]])
    return cv2.warpAffine(canvas, matrix, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR)


# ---------------------------------------------------------------- shape
# Each returns (parts, how far it may turn). No plain circle (a 0) or lone line (a 1).


def _triangle(rng):
    angle = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.normal(0, 0.2, 3)
    return [(np.stack([np.cos(angle), np.sin(angle)], axis=1), "closed")], np.pi


def _box(rng):
    # At least as wide as tall: a tall box reads as a 0.
    half = rng.uniform(0.45, 1.0)
    corners = _shaky([[-1, -half], [1, -half], [1, half], [-1, half]], rng, 0.03)
    crossed = rng.random() < 0.4  # an envelope or a window
    return [(corners, "closed")] + [(corners[[0, 2]], "open"), (corners[[1, 3]], "open")] * crossed, 0.3


def _star(rng):
    if rng.random() < 0.5:  # the outline, inner corners and all
        k = np.arange(10)
        radius, angle = np.where(k % 2, rng.uniform(0.35, 0.5), 1.0), -np.pi / 2 + k * np.pi / 5
    else:  # the pentagram, in one stroke
        radius, angle = 1.0, -np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    return [(_shaky(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), rng, 0.03), "closed")], 0.4


def _heart(rng):
    t = np.linspace(0, 2 * np.pi, 48)
    x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y], axis=1), "filled" if rng.random() < 0.3 else "closed")], 0.4


def _spiral(rng):
    # Two turns or more: with fewer a spiral is a 6, a 9 or an @.
    angle = np.linspace(0, 2 * np.pi * rng.uniform(2.2, 3.5), 90)
    points = np.stack([np.cos(angle) * rng.choice([-1, 1]), np.sin(angle)], axis=1) * (angle[:, None] + 0.3)
    return [(points, "open")], np.pi


def _grid(rng):
    cuts = np.linspace(-1, 1, rng.integers(4, 6))[1:-1]  # 2 or 3 lines each way: tic-tac-toe and up
    return ([(_shaky([[c, -1], [c, 1]], rng), "open") for c in cuts]
            + [(_shaky([[-1, c], [1, c]], rng), "open") for c in cuts]), 0.25


def _cross(rng):
    return [(_shaky([[-1, -1], [1, 1]], rng, 0.08), "open"), (_shaky([[1, -1], [-1, 1]], rng, 0.08), "open")], 0.25


def _arrow(rng):
    # Lying down: an arrow standing up is a 1 with a hat. Sometimes with a head at both ends.
    head = np.array([[0.6, -0.35], [1, 0], [0.6, 0.35]]) * [rng.choice([-1, 1]), 1]
    heads = [head, head * [-1, 1]][:1 + (rng.random() < 0.3)]
    return [(_shaky([[-1, 0], [1, 0]], rng, 0.03), "open")] + [(_shaky(h, rng, 0.03), "open") for h in heads], 0.5


def _blob(rng):
    angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    radius = 1 + sum(rng.uniform(0, 0.25) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    return [(np.stack([np.cos(angle), rng.uniform(0.6, 1.0) * np.sin(angle)], axis=1) * radius[:, None], "filled")], np.pi


def _house(rng):
    door = [(_shaky([[-0.15, 1], [-0.15, 0.5], [0.15, 0.5], [0.15, 1]], rng, 0.02), "open")] * (rng.random() < 0.6)
    return [(_shaky([[-0.7, 0], [0.7, 0], [0.7, 1], [-0.7, 1]], rng, 0.03), "closed"),
            (_shaky([[-0.85, 0.05], [0, -0.8], [0.85, 0.05]], rng, 0.03), "open")] + door, 0.2


def _smiley(rng):
    eyes = [(_arc(0.08, (side * 0.35, -0.3), steps=12), "filled") for side in (-1, 1)]
    return [(_arc(), "closed"), *eyes, (_arc(0.55, (0, 0.05), 0.2 * np.pi, 0.8 * np.pi, 16), "open")], 0.4


def _sun(rng):
    count = rng.integers(7, 11)
    angles = np.arange(count) * 2 * np.pi / count
    rays = [(np.array([[np.cos(a), np.sin(a)]]) * [[0.62], [1.0]], "open") for a in angles]
    return [(_arc(0.45), "closed"), *rays], np.pi


SHAPES = (_triangle, _box, _star, _heart, _spiral, _grid, _cross, _arrow, _blob, _house, _smiley, _sun)


def shape_drawing(rng):
    parts, max_turn = SHAPES[rng.integers(len(SHAPES))](rng)
    return _render(parts, rng, max_turn)
