"""Generated non-digits for outlier exposure: seeded drawings of things that are no digit.

Owns the "generated non-digit outliers" arrow of DESIGN.md's data flow. A model that has
only seen digits calls everything a digit; shown these with a uniform target (exposure.py)
it learns to answer "not a digit". Each non-digit is drawn the way people draw in the demos
(one anti-aliased pen of constant width, 1/12-1/16 of the drawing's size) and then goes
through `preprocess.to_mnist`, the preprocessing used at inference, so it reaches training
exactly as a drawing reaches the model in a demo.

Families (`TRAINING_FAMILIES`, mixed in training by `TRAINING_SHARES`); the first three are
drawn by doodles.py, and any drawing that comes out nearer to some real digit than half of
real digits are to their nearest other digit is left out:
- scribble: random walks looping over themselves, splines through many random points,
  zig-zags and waves, coils of loops, hatching and cross-hatching;
- glyph: letters and symbols that resemble no digit (`doodles.GLYPHS`), in cv2's Hershey fonts;
- shape: triangles, wide boxes, stars, hearts, spirals, grids, crosses, arrows, filled
  blobs, houses, smileys, suns;
- fragment: one side of a real digit (never a 1) cut by a line near its centre, holding
  30-65% of its ink, and kept only when it looks like no digit (see `cut_digits`);
- pair: two real digits side by side, fitted to the 20-px box like any drawing.

    from mnist_classifier.outliers import generate_outliers
    pool = generate_outliers(20_000, seed=0, digits=(train_images, train_labels))
    pool.shape, pool.dtype  # (20000, 28, 28) uint8, white on black, TRAINING_SHARES of each family, shuffled

Speed: 20,000 in 9.6-10.9 s on one core (two runs; ~0.5 ms each, about half of it in
to_mnist and most of the rest drawing with cv2; per 4,000: scribble 3.1 s, shape 2.4,
fragment 2.4, glyph 2.0, pair 1.4), training's 10,000 in about 5.5 s; measured on the
2-core development machine by this, run under `taskset -c 0 python`:
    import time; from mnist_classifier.data import load_data
    train = load_data("data").train; start = time.perf_counter()
    generate_outliers(20_000, 42, (train.images, train.labels)); print(time.perf_counter() - start)
"""
from __future__ import annotations

import zlib
from typing import NamedTuple

import cv2
import numpy as np

from .doodles import glyph_drawing, scribble_drawing, shape_drawing
from .errors import UserError
from .preprocess import to_mnist

TRAINING_FAMILIES = ("scribble", "glyph", "shape", "fragment", "pair")
EQUAL_SHARE = 1 / len(TRAINING_FAMILIES)


def training_shares(fragment_share: float = EQUAL_SHARE) -> dict[str, float]:
    """Each family's share of a training pool: `fragment_share` (config key) for the pieces of
    digits, the family refused least, and the rest split equally between the other four.

    SimpleCNN's recipe gives pieces 0.35: over 8 seeds (6 Dec) its reviewed pieces refused
    rose from 83.6% to 88.8% at the same test accuracy (99.43%), to 90.7% with the non-digits'
    weight 0.1 as well (99.42%); 45% gained nothing more (one seed, 5 Dec). ImprovedCNN keeps
    equal shares: it refuses 93-94% of the reviewed ones already.
    """
    if not 0 <= fragment_share <= 1:
        raise UserError(f"fragment_share must be between 0 and 1, got {fragment_share!r}")
    rest = (1 - fragment_share) / (len(TRAINING_FAMILIES) - 1)
    return {family: fragment_share if family == "fragment" else rest for family in TRAINING_FAMILIES}


TRAINING_SHARES = training_shares()  # equal: generate_outliers' default, finetune's yardstick (honesty.held_out_mix)

# Fragments: many pieces of a digit still read as a digit (the stem of a 4 is a 1, a 9 without
# the left of its loop is a 7), and teaching the model to refuse those would cost accuracy.
FRAGMENT_SHARE = (0.30, 0.65)  # of the source's ink: less is a speck, more is still the digit
MAX_ELONGATION = 3.0  # principal-axis ratio: 95% of MNIST 1s are above 3.4, of other digits below 3
MIN_HOLE = 4  # px at 28x28 of paper enclosed by ink: a loop, read as 0 (the top of an 8 or 9)
REFERENCE = 3000  # real digits a fragment must not be near (pixel distance, nearest neighbour)
CALIBRATION = 500  # other real digits: the median distance to their nearest is the bar
PCA_DIMS = 50  # principal components of real digits used to measure how near a drawing is to one
BAR_PERCENTILE = 50  # a drawing must be farther from every digit than half of real digits are from their nearest
FRAGMENT_SLICE = 512  # cut pieces checked at a time
PAIR_GAP = (4, 9)  # px at 28x28 between the digits' boxes: still apart after fitting to 20 px
PAIR_SHIFT = 3  # px, most one digit sits higher or lower than the other


# ---------------------------------------------------------------- public API


def generate_family(family: str, count: int, seed: int, digits) -> np.ndarray:
    """(count, 28, 28) uint8 non-digits of one family; the same seed gives the same images.

    `digits` = (images (N, 28, 28) uint8 white on black, labels (N,)), arrays or tensors:
    fragment and pair are made of them, and every family is checked against them."""
    return _generate(family, count, seed, _Digits.of(digits))


def generate_outliers(count: int, seed: int, digits, shares: dict[str, float] = TRAINING_SHARES) -> np.ndarray:
    """(count, 28, 28) uint8: each family's share of `count` (`family_sizes`), shuffled."""
    digits = _Digits.of(digits)  # fitted once for all the families
    mixed = np.concatenate([np.zeros((0, 28, 28), np.uint8)] + [
        _generate(name, size, seed, digits) for name, size in family_sizes(count, shares).items()])
    return mixed[np.random.default_rng(seed).permutation(len(mixed))]


def training_pool(images: np.ndarray, labels: np.ndarray, count: int, seed: int,
                  shares: dict[str, float]) -> np.ndarray:
    """generate_outliers for a training run: its split's digits and labels as positional
    inputs, the way prepared.py hands an extra its inputs (in a worker process, maybe)."""
    return generate_outliers(count, seed=seed, digits=(images, labels), shares=shares)


def family_sizes(count: int, shares: dict[str, float] = TRAINING_SHARES) -> dict[str, int]:
    """How many of `count` each family gets: its share, rounded so that the sizes add up to `count`."""
    weights = np.array(list(shares.values()), float)
    bounds = (np.concatenate(([0.0], np.cumsum(weights) / weights.sum())) * count).round().astype(int)
    return {name: int(size) for name, size in zip(shares, np.diff(bounds))}


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
        # Start by guessing that all are kept (drawings and pairs: ~97% are), then go by the
        # rate seen. Drawing is sequential, so batch sizes never change which images come out.
        size = int((count - have) * (made / have if have else 1.0) * 1.1) + 8
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


# ---------------------------------------------------------------- drawn families (doodles.py)


def _drawn(draw):
    """A family from a function that makes one drawing."""
    def family(rng: np.random.Generator, count: int, digits: _Digits) -> np.ndarray:
        return _gather(count, lambda size: (_fit_each([draw(rng) for _ in range(size)]),), digits.distance.far)[0]
    return family


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
        # to_mnist and the checks in slices, stopping once enough are kept: the batch is
        # oversized by its first guessed rate, and these steps are most of the time.
        for start in range(0, len(pieces), FRAGMENT_SLICE):
            if have >= count:
                break
            part = slice(start, start + FRAGMENT_SLICE)
            shown = _fit_each(pieces[part])
            unlike = (shown.any(axis=(1, 2)) & ~_looks_like_one_or_zero(shown)
                      & (_nearest_distance(shown, reference) > bar))
            found.append(Fragments(shown[unlike], pieces[part][unlike], picked[part][unlike]))
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


FAMILIES = {"scribble": _drawn(scribble_drawing), "glyph": _drawn(glyph_drawing),
            "shape": _drawn(shape_drawing), "fragment": _fragment, "pair": _pair}
