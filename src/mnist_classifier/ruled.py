"""A digit written on ruled or squared paper: the printed lines taken out of the ink map.

To the preprocessing a notebook's lines are ink like the digit's, so the digit's box took in
the whole page (4-40% of such photos were read right; benchmarks/uneven_light.py). A ruling is
found as three or more long straight lines at one angle, spread over the picture with paper
between them (any small tilt; a grid is two rulings), by OpenCV's probabilistic Hough
transform on the ink map shrunk to at most DETECT_SIDE px, thick strokes left out. Printed
lines are fainter than a pen's ink, so all ink no darker than the darkest of them (each line
at its own level: graph paper's heavier fifth lines, a header line) is taken for paper.

Left alone: lines as dark as the pen (nothing tells them from strokes); the edges of one thick
stroke (a tightly cropped "1" has three long parallel lines too, with no paper between); and
camera noise that lines up by chance, whose ink comes and goes along the "line". On a ruled
page, a line square to the ruling that runs from edge to edge, steady along its length, and
fainter than the pen or near the page's side, is its margin: taken out too. A page with nothing
left once the lines are gone keeps them: its lines are then "not a digit".

    ink = without_ruling(ink)    # ink 0..1 on 0 (dark ink on light paper); `ink` itself when unruled
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_SIDE = 100  # px: a smaller picture (its longer side) is a crop of the digit, not a photo of a lined page
SPANNED = 0.6  # a ruling puts ink in most rows or columns (a notebook's margin strip, a shadow hide some)
EDGE_SHARE = 0.1  # ... and out to within this share of the picture's side from an edge
DETECT_SIDE = 200  # px: the lines are looked for on the ink map shrunk to at most this size
SHOWN = 0.02  # ink of a shrunk pixel: a 2 px line shrunk 20 times still shows, a speck does not
THICK = 5  # px on the shrunk map: strokes this wide are no printed line
GAP = 0.35  # of the shrunk side: a line may break this long where a stroke crosses it (the stroke is no thin line)
LONG = 0.6  # of the picture's shorter side: a line at least this long may be a printed one
SAME_ANGLE = np.radians(1.5)
MIN_LINES = 3
APART = 3  # px on the shrunk map: segments closer than this across are one line
SPREAD = 0.3  # of the picture across them: how far apart a ruling's outermost lines lie at least
MAX_POINTS = 400  # along a line, for its levels: a 4000 px photo's line needs no more
BESIDE = 3  # px beside a line's found position where the paper must show
STEADY = 0.7  # a printed line's ink along it: a quarter of its points this near its median at least
# (camera noise lined up by chance over a soft shadow: 0.4-0.64; lines, shadowed too: 0.76-1)
FAINT = 0.75  # a ruling whose ink reaches this is taken as dark as a pen: left in
ABOVE_LINES = 0.12  # ink must stand this far above the lines' own level to be kept
MARGIN_SIDE = 0.3  # of the picture across a margin: a dark one lies this near its side
EDGE_NEAR = 0.05  # of the picture's side: on a ruled page, a line that is no ruling reaching this near two
# opposite edges is its margin


def without_ruling(ink: np.ndarray) -> np.ndarray:
    """The ink map with a ruling's lines (and a ruled page's margin) taken out, or `ink` itself."""
    if max(ink.shape) < MIN_SIDE or not _spans(ink > 0):
        return ink  # a digit on plain paper, a crop of one: ~20 us at 280 px
    scale = 1 / int(np.ceil(max(ink.shape) / DETECT_SIDE))  # a whole factor: OpenCV shrinks those ~5x faster
    if min(ink.shape) * scale < 1:  # a strip that would shrink to nothing across holds no ruling (helper-77)
        return ink
    small = cv2.resize(ink, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else ink
    present = small >= SHOWN
    if not _spans(present):  # only specks reached across
        return ink
    segments = _long_segments(present)
    ruling = _rulings(segments, min(present.shape))
    if not ruling.any():
        return ink
    width = int(np.ceil(2 / scale)) + 1  # where a line found on the shrunk map lies in the full one
    profiles = [_line_profile(ink, segment / scale, width) for segment in segments[ruling]]
    peaks, beside = (np.concatenate(parts) for parts in zip(*profiles))
    level = float(np.median(peaks))
    if level >= FAINT or np.median(beside) >= level / 4 or not _steady(peaks):
        return ink  # as dark as a pen; not thin lines on paper; or no lines at all, but noise in a row
    # Each line at its own level: graph paper's every fifth line, a header line, are darker
    cut = max([float(np.median(own)) for own, _ in profiles if _steady(own) and np.median(own) < FAINT] + [level])
    kept = np.clip((ink - cut - ABOVE_LINES) * np.float32(1 / (1 - cut - ABOVE_LINES)), 0, 1)
    margins = [line for line in _margins(segments[~ruling] / scale, ink.shape, APART / scale)
               if _across(line, segments[ruling]) and _margin_like(_line_profile(ink, line, width)[0], line, ink.shape)]
    kept = _erased(kept, margins, width)
    return kept if kept.any() else ink


def _steady(peaks: np.ndarray) -> bool:
    """Whether ink along a line holds steady, as a printed line's does (see STEADY)."""
    return float(np.percentile(peaks, 25)) >= STEADY * float(np.median(peaks))


def _margin_like(peaks: np.ndarray, line: np.ndarray, shape: tuple[int, int]) -> bool:
    """A printed margin is steady along its length, and fainter than the pen or near the page's side:
    the stem of a tightly cropped "1" runs edge to edge too, but down the middle and as dark as a pen
    (on an empty page the margin is the darkest ink there is)."""
    if not _steady(peaks):
        return False
    x1, y1, x2, y2 = line
    down = abs(y2 - y1) > abs(x2 - x1)
    where = ((x1 + x2) / 2 / shape[1]) if down else ((y1 + y2) / 2 / shape[0])
    return float(np.median(peaks)) < FAINT or min(where, 1 - where) <= MARGIN_SIDE


def _across(line: np.ndarray, ruling: np.ndarray) -> bool:
    """Whether `line` is square to the ruling's lines, as a margin is (a slanted stroke is not)."""
    angles = _angles(np.vstack([line[None], ruling]))
    return bool(np.any(np.abs(np.abs(_turn(angles[0], angles[1:])) - np.pi / 2) <= SAME_ANGLE))


def _spans(present: np.ndarray) -> bool:
    """Whether ink reaches most columns (or rows), out to an edge of the picture, as a ruling's lines
    do: a digit drawn in the middle of its picture (evaluate's 10,000 marker digits) stops here."""
    for axis in (0, 1):
        reached = present.any(axis=axis)
        edge = max(1, int(EDGE_SHARE * len(reached)))
        if reached.mean() >= SPANNED and (reached[:edge].any() or reached[-edge:].any()):
            return True
    return False


def _long_segments(present: np.ndarray) -> np.ndarray:
    """(K, 4) float segments x1, y1, x2, y2 of thin lines on the shrunk map, each at least LONG of
    its shorter side. Blobs and thick strokes are left out first (what an opening keeps): their
    many points cost the transform time and give it nothing to find."""
    binary = present.view(np.uint8)
    thin = binary & ~cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((THICK, THICK), np.uint8)) & 1
    length = LONG * min(binary.shape)
    found = cv2.HoughLinesP(thin, 1, np.pi / 360, threshold=int(0.8 * length), minLineLength=length,
                            maxLineGap=max(2, int(GAP * min(binary.shape))))
    return np.zeros((0, 4), np.float32) if found is None else found.reshape(-1, 4).astype(np.float32)


def _rulings(segments: np.ndarray, side: int) -> np.ndarray:
    """bool per segment: in a group at one angle that is a ruling (_spread_lines); `side`: the
    shrunk map's shorter side."""
    ruling = np.zeros(len(segments), bool)
    if len(segments) < MIN_LINES:
        return ruling
    angles = _angles(segments)
    turned = np.abs(_turn(angles[:, None], angles[None, :])) <= SAME_ANGLE
    left = np.ones(len(segments), bool)
    while left.sum() >= MIN_LINES:
        seed = int(np.argmax(np.where(left, (turned & left[None, :]).sum(axis=1), -1)))
        group = turned[seed] & left
        left &= ~group
        if _spread_lines(segments[group], angles[seed], side):
            ruling |= group
    return ruling


def _angles(segments: np.ndarray) -> np.ndarray:
    """Each segment's direction, 0 to pi."""
    return np.mod(np.arctan2(segments[:, 3] - segments[:, 1], segments[:, 2] - segments[:, 0]), np.pi)


def _turn(first, second):
    """From direction `second` to `first`, -pi/2 to pi/2: 179.5 and 0.5 degrees are 1 apart
    (compared on the doubled circle)."""
    return np.angle(np.exp(2j * (np.asarray(first) - np.asarray(second)))) / 2


def _spread_lines(segments: np.ndarray, angle: float, side: int) -> bool:
    """Whether these segments at `angle` lie on MIN_LINES or more lines APART px or more from one
    another, spread over SPREAD of the picture across them (`side` px): a ruling, not the
    edges of one thick stroke."""
    across = np.float32([-np.sin(angle), np.cos(angle)])
    offsets = np.sort((segments[:, :2] + segments[:, 2:]) / 2 @ across)
    distinct = 1 + int((np.diff(offsets) >= APART).sum())
    return distinct >= MIN_LINES and offsets[-1] - offsets[0] >= SPREAD * side


def _line_profile(ink: np.ndarray, line: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """At each point along `line` (x1, y1, x2, y2): the darkest ink within `reach` px across (where a
    line found on the shrunk map lies), and the darker of the two points BESIDE px further out.
    A stroke crossing a line is a small part of its length: medians are the line's and the paper's."""
    x1, y1, x2, y2 = line
    length = float(np.hypot(x2 - x1, y2 - y1))
    steps = np.linspace(0, 1, min(int(length), MAX_POINTS) + 1, dtype=np.float32)[:, None]
    out = reach + BESIDE
    across = np.arange(-out, out + 1, dtype=np.float32)[None, :]
    normal = np.float32([y1 - y2, x2 - x1]) / max(length, 1e-6)
    xs = np.clip(np.round(x1 + steps * (x2 - x1) + across * normal[0]), 0, ink.shape[1] - 1).astype(int)
    ys = np.clip(np.round(y1 + steps * (y2 - y1) + across * normal[1]), 0, ink.shape[0] - 1).astype(int)
    profile = ink[ys, xs]
    return profile[:, BESIDE:-BESIDE].max(axis=1), np.maximum(profile[:, 0], profile[:, -1])


def _margins(segments: np.ndarray, shape: tuple[int, int], tolerance: float) -> list[np.ndarray]:
    """Of these segments (none of a ruling), the lines that run from one edge of the picture to the
    opposite one (to within EDGE_NEAR of its side), across or down, the pieces of one line (within
    `tolerance` px of it) joined: a stroke of the digit stops short of them."""
    found = []
    for segment in segments:
        x1, y1, x2, y2 = segment
        along, side = (1, shape[0]) if abs(y2 - y1) > abs(x2 - x1) else (0, shape[1])
        length = max(float(np.hypot(x2 - x1, y2 - y1)), 1e-6)
        off = [np.abs((segments[:, k] - x1) * (y2 - y1) - (segments[:, k + 1] - y1) * (x2 - x1)) / length
               for k in (0, 2)]
        pieces = segments[(off[0] <= tolerance) & (off[1] <= tolerance)][:, [along, along + 2]]
        if pieces.min() <= EDGE_NEAR * side and pieces.max() >= (1 - EDGE_NEAR) * side:
            found.append(segment)
    return found


def _erased(ink: np.ndarray, segments: list[np.ndarray], width: int) -> np.ndarray:
    """The map with each segment, drawn on through the whole picture, `width` px wide, set to 0."""
    if not segments:
        return ink
    mask = np.zeros(ink.shape, np.uint8)
    reach = 2 * max(ink.shape)
    for x1, y1, x2, y2 in segments:
        along = np.float32([x2 - x1, y2 - y1]) / max(float(np.hypot(x2 - x1, y2 - y1)), 1e-6)
        start, end = np.float32([x1, y1]) - reach * along, np.float32([x2, y2]) + reach * along
        cv2.line(mask, tuple(int(v) for v in start), tuple(int(v) for v in end), 1, width + 2)
    ink[mask > 0] = 0
    return ink
