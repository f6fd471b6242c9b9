"""Generated non-digits for outlier exposure: seeded drawings of things that are no digit.

Owns the "generated non-digit outliers" arrow of DESIGN.md's data flow. A model that has
only seen digits calls everything a digit; shown these with a uniform target (exposure.py)
it learns to answer "not a digit". Each non-digit is drawn the way people draw in the demos
(one anti-aliased pen of constant width, 1/12-1/16 of the drawing's size) and then goes
through `preprocess.to_mnist`, the preprocessing used at inference, so it reaches training
exactly as a drawing reaches the model in a demo.

Families (`TRAINING_FAMILIES`):
- scribble: random walks looping over themselves, splines through many random points,
  zig-zags and waves, coils of loops, hatching and cross-hatching;
- glyph: letters and symbols that resemble no digit (`GLYPHS`), in cv2's Hershey fonts;
- shape: triangles, wide boxes, stars, hearts, spirals, grids, crosses, arrows, filled
  blobs, houses, smileys, suns;
- fragment: one side of a real digit (never a 1) cut by a line near its centre, holding
  30-65% of its ink, and kept only when it looks like no digit (see `cut_digits`);
- pair: two real digits side by side, fitted to the 20-px box like any drawing.

    from mnist_classifier.outliers import generate_outliers
    pool = generate_outliers(20_000, seed=0, digits=(train_images, train_labels))
    pool.shape, pool.dtype  # (20000, 28, 28) uint8, white on black, equal shares, shuffled

Speed: about 1 ms a drawing (20,000 in 22 s, 4,000 of each family in 2.2-5.3 s; drawing,
to_mnist and the nearest-digit check), measured on the 2-core development machine with
`generate_outliers(20_000, 42, (train_images, train_labels))`; training uses 10,000.
"""
from __future__ import annotations

import zlib
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from .errors import UserError
from .preprocess import to_mnist

TRAINING_FAMILIES = ("scribble", "glyph", "shape", "fragment", "pair")

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

# Fragments: many pieces of a digit still read as a digit (the stem of a 4 is a 1, a 9 without
# the left of its loop is a 7), and teaching the model to refuse those would cost accuracy.
FRAGMENT_SHARE = (0.30, 0.65)  # of the source's ink: less is a speck, more is still the digit
MAX_ELONGATION = 3.0  # principal-axis ratio: 95% of MNIST 1s are above 3.4, of other digits below 3
MIN_HOLE = 4  # px at 28x28 of paper enclosed by ink: a loop, read as 0 (the top of an 8 or 9)
REFERENCE = 3000  # real digits a fragment must not be near (pixel distance, nearest neighbour)
CALIBRATION = 500  # other real digits: the median distance to their nearest is the bar
PCA_DIMS = 50  # principal components of real digits used to measure how near a drawing is to one
BAR_PERCENTILE = 50  # a drawing must be farther from every digit than half of real digits are from their nearest
PAIR_GAP = (4, 9)  # px at 28x28 between the digits' boxes: still apart after fitting to 20 px
PAIR_SHIFT = 3  # px, most one digit sits higher or lower than the other


# ---------------------------------------------------------------- public API


def generate_family(family: str, count: int, seed: int, digits) -> np.ndarray:
    """(count, 28, 28) uint8 non-digits of one family; the same seed gives the same images.

    `digits` = (images (N, 28, 28) uint8 white on black, labels (N,)), arrays or tensors:
    fragment and pair are made of them, and every family is checked against them."""
    return _generate(family, count, seed, _Digits.of(digits))


def generate_outliers(count: int, seed: int, digits, families=TRAINING_FAMILIES) -> np.ndarray:
    """(count, 28, 28) uint8: equal shares of each family (+-1), shuffled."""
    digits = _Digits.of(digits)  # fitted once for all the families
    shares = np.diff(np.linspace(0, count, len(families) + 1).round().astype(int))
    mixed = np.concatenate([np.zeros((0, 28, 28), np.uint8)] + [
        _generate(name, int(share), seed, digits) for name, share in zip(families, shares)])
    return mixed[np.random.default_rng(seed).permutation(len(mixed))]


def fashion_as_ink(images) -> np.ndarray:
    """Fashion-MNIST items (white on black) as a drawing of them would reach the model."""
    fitted = _fit_each(np.asarray(images))
    return fitted[fitted.any(axis=(1, 2))]


def _generate(family: str, count: int, seed: int, digits: "_Digits") -> np.ndarray:
    if family not in FAMILIES:
        raise UserError(f"unknown outlier family {family!r}; choose from {', '.join(FAMILIES)}")
    # crc32, not hash(): string hashes change from one Python process to the next.
    return FAMILIES[family](np.random.default_rng([seed, zlib.crc32(family.encode())]), count, digits)


# ---------------------------------------------------------------- looking like no digit


class _Digits(NamedTuple):
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,)
    distance: "_DigitDistance"

    @classmethod
    def of(cls, digits) -> "_Digits":
        if isinstance(digits, cls):
            return digits
        if digits is None or len(digits) != 2 or len(digits[0]) == 0:
            raise UserError("outliers are made and checked with real digits: pass digits=(images, labels)")
        images, labels = (np.asarray(part) for part in digits)
        return cls(images, labels, _DigitDistance(images))


class _DigitDistance:
    """Distance from an image to the nearest of REFERENCE real digits: in the digits' first
    PCA_DIMS principal components, plus the image's ink outside them (which no digit has).
    50 numbers instead of 784 make it ~15x cheaper than pixel distance, neighbours nearly alike."""

    def __init__(self, images: np.ndarray):
        rows = np.linspace(0, len(images) - 1, min(len(images), REFERENCE + CALIBRATION)).astype(int)
        flat = images[rows].reshape(len(rows), -1).astype(np.float32) / 255
        calibration, reference = flat[:len(rows) // 7], flat[len(rows) // 7:]
        self.mean = reference.mean(axis=0)
        centred = reference - self.mean
        _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending: the last are the main axes
        self.basis = np.ascontiguousarray(vectors[:, ::-1][:, :PCA_DIMS])
        self.points = centred @ self.basis
        self.bar = float(np.percentile(self.nearest(calibration), BAR_PERCENTILE))

    def nearest(self, flat: np.ndarray) -> np.ndarray:
        centred = flat - self.mean
        projected = centred @ self.basis
        outside = (centred * centred).sum(axis=1) - (projected * projected).sum(axis=1)
        squared = ((projected * projected).sum(axis=1)[:, None] - 2 * projected @ self.points.T
                   + (self.points * self.points).sum(axis=1)[None, :])
        return np.sqrt(np.maximum(squared.min(axis=1) + outside, 0))

    def far(self, images: np.ndarray) -> np.ndarray:
        """True for images with ink that are farther from every real digit than BAR_PERCENTILE
        percent of real digits are from their nearest other digit."""
        flat = images.reshape(len(images), -1).astype(np.float32) / 255
        return flat.any(axis=1) & (self.nearest(flat) > self.bar)


def _gather(count: int, make, accept) -> tuple[np.ndarray, ...]:
    """Arrays from batches `make(size)` (the first: 28x28 images), rows where `accept(images)`,
    until `count`. Batches are sized to what is kept, so little is drawn in vain."""
    found, made, have = [], 0, 0
    while have < count:
        if made > 100 * count + 1000:
            raise RuntimeError("outlier generation keeps almost nothing; the filters are broken")
        size = int((count - have) * (made / have if have else 2.0) * 1.1) + 8
        batch = make(size)
        keep = accept(batch[0])
        found.append(tuple(part[keep] for part in batch))
        made, have = made + size, have + int(keep.sum())
    return tuple(np.concatenate(parts)[:count] for parts in zip(*found))


def _fit_each(images) -> np.ndarray:
    """Each image through to_mnist; blank where it has no ink, so indices stay aligned."""
    fitted = np.zeros((len(images), 28, 28), np.uint8)
    for index, image in enumerate(images):
        pre = to_mnist(image)
        if pre.has_ink:
            fitted[index] = pre.image
    return fitted


# ---------------------------------------------------------------- drawing


def _drawn(draw):
    """A family from a function that makes one drawing."""
    def family(rng: np.random.Generator, count: int, digits: _Digits) -> np.ndarray:
        return _gather(count, lambda size: (_fit_each([draw(rng) for _ in range(size)]),), digits.distance.far)[0]
    return family


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


def _scribble_drawing(rng):
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


def _glyph_drawing(rng):
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


def _shape_drawing(rng):
    parts, max_turn = SHAPES[rng.integers(len(SHAPES))](rng)
    return _render(parts, rng, max_turn)


# ---------------------------------------------------------------- fragment (real digits)


class Fragments(NamedTuple):
    images: np.ndarray  # (n, 28, 28) uint8 through to_mnist: what the model is shown
    pieces: np.ndarray  # (n, 28, 28) uint8, each the part of its source digit that was kept
    sources: np.ndarray  # (n,) index of each piece's digit in `digits`


def cut_digits(rng: np.random.Generator, digits, count: int) -> Fragments:
    """`count` pieces of real digits other than 1 (a piece of a 1 is a 1) that look like no
    digit: not a lone stroke, not a loop, and no nearer to some real digit than half of all
    real digits are to their nearest other one."""
    images, labels = digits[0], digits[1]
    take = min(len(images), REFERENCE + CALIBRATION)  # a small training slice (tests) has fewer
    sample = images[rng.choice(len(images), take, replace=False)]
    split = max(1, take * CALIBRATION // (REFERENCE + CALIBRATION))
    reference, bar = sample[split:], np.median(_nearest_distance(sample[:split], sample[split:]))
    candidates = np.flatnonzero(labels != 1)
    blank = np.zeros((0, 28, 28), np.uint8)
    found, tried, have = [Fragments(blank, blank, np.zeros(0, np.int64))], 0, 0
    while have < count:
        # Cut about as many as will be kept (to_mnist on the rest would be wasted time).
        rate = max(have / tried, 0.05) if tried else 0.3
        picked = rng.choice(candidates, size=int((count - have) / rate * 1.1) + 16)
        tried += len(picked)
        pieces, halfway = _cut_near_centre(rng, images[picked].astype(np.float32))
        pieces, picked = pieces[halfway].astype(np.uint8), picked[halfway]
        shown = _fit_each(pieces)
        unlike = (shown.any(axis=(1, 2)) & ~_looks_like_one_or_zero(shown)
                  & (_nearest_distance(shown, reference) > bar))
        found.append(Fragments(shown[unlike], pieces[unlike], picked[unlike]))
        have += int(unlike.sum())
    return Fragments(*(np.concatenate(field)[:count] for field in zip(*found)))


def _cut_near_centre(rng, images: np.ndarray):
    """Each image with one side of a random line within 2 px of its centre of mass blanked,
    and whether what is left holds a FRAGMENT_SHARE of its ink."""
    row, col = _centre_of_mass(images)
    angle, shift = rng.uniform(0, 2 * np.pi, len(images)), rng.uniform(-2, 2, len(images))
    grid = np.arange(28, dtype=np.float32)
    across = ((grid[None, None, :] - col[:, None, None]) * np.cos(angle)[:, None, None]
              + (grid[None, :, None] - row[:, None, None]) * np.sin(angle)[:, None, None])
    pieces = images * (across > shift[:, None, None])
    share = pieces.sum(axis=(1, 2)) / images.sum(axis=(1, 2))
    return pieces, (share >= FRAGMENT_SHARE[0]) & (share <= FRAGMENT_SHARE[1])


def _centre_of_mass(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid = np.arange(images.shape[1], dtype=np.float32)
    mass = np.maximum(images.sum(axis=(1, 2)), 1e-6)
    return images.sum(axis=2) @ grid / mass, images.sum(axis=1) @ grid / mass


def _nearest_distance(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pixel (L2, ink 0..1) distance from each image to its nearest reference image."""
    a = images.reshape(len(images), -1).astype(np.float32) / 255
    b = reference.reshape(len(reference), -1).astype(np.float32) / 255
    squared = (a * a).sum(axis=1)[:, None] - 2 * a @ b.T + (b * b).sum(axis=1)[None, :]
    return np.sqrt(np.maximum(squared.min(axis=1), 0))


def _looks_like_one_or_zero(images: np.ndarray) -> np.ndarray:
    """A lone straight stroke (the stem of a 4 or 7) reads as 1, a closed loop as 0."""
    return (_elongation(images.astype(np.float32)) > MAX_ELONGATION) | np.array([_has_hole(i) for i in images], bool)


def _elongation(images: np.ndarray) -> np.ndarray:
    """How much longer the ink is along its main axis than across it (ratio of spreads)."""
    grid = np.arange(images.shape[1], dtype=np.float32)
    mass = np.maximum(images.sum(axis=(1, 2)), 1e-6)
    row, col = _centre_of_mass(images)
    var_row = images.sum(axis=2) @ grid ** 2 / mass - row ** 2
    var_col = images.sum(axis=1) @ grid ** 2 / mass - col ** 2
    covariance = np.einsum("nij,i,j->n", images, grid, grid) / mass - row * col
    mean, spread = (var_row + var_col) / 2, np.hypot((var_row - var_col) / 2, covariance)
    return np.sqrt((mean + spread) / np.maximum(mean - spread, 1e-6))


def _has_hole(image: np.ndarray) -> bool:
    """True when at least MIN_HOLE paper pixels are enclosed by ink (unreachable from the border)."""
    paper = np.pad((image < 64).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(paper, None, (0, 0), 2)
    return int(np.count_nonzero(paper == 1)) >= MIN_HOLE


def _fragment(rng, count, digits):
    return cut_digits(rng, digits, count).images


# ---------------------------------------------------------------- pair (real digits)


def _pair(rng, count, digits):
    def make(size):
        return (_fit_each([_side_by_side(rng, digits.images) for _ in range(size)]),)

    return _gather(count, make, lambda images: images.any(axis=(1, 2)))[0]


def _side_by_side(rng, images: np.ndarray) -> np.ndarray:
    """Two random digits' ink next to each other, a random gap between, one a little higher."""
    left, right = (_crop(images[i]) for i in rng.integers(len(images), size=2))
    gap, shift = int(rng.integers(*PAIR_GAP)), int(rng.integers(-PAIR_SHIFT, PAIR_SHIFT + 1))
    top_left, top_right = 2 + max(0, -shift), 2 + max(0, shift)
    height = max(top_left + left.shape[0], top_right + right.shape[0]) + 2
    canvas = np.zeros((height, left.shape[1] + gap + right.shape[1] + 4), np.uint8)
    canvas[top_left:top_left + left.shape[0], 2:2 + left.shape[1]] = left
    canvas[top_right:top_right + right.shape[0], 2 + left.shape[1] + gap:-2] = right
    return canvas


def _crop(image: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] if len(rows) else image[:1, :1]


FAMILIES = {"scribble": _drawn(_scribble_drawing), "glyph": _drawn(_glyph_drawing),
            "shape": _drawn(_shape_drawing), "fragment": _fragment, "pair": _pair}
