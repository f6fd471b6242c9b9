"""The page a photo shows, evened out before preprocess.py looks for the ink: light that falls
off across it or to its corners (`evenly_lit`), a shadow or a strip of table coming in from its
border (`shadows_lifted`), and a page lying on a table, at any angle (`page_flattened`).

Each one changes a picture only when its border says it is such a photo (a drawn canvas, a
scan and the training set-up's paper digits stop at a ~3 us check in preprocess._ink_map), and
each returns the grey levels (float32, 0..1) with the paper at the border's median level.
"""
from __future__ import annotations

import cv2
import numpy as np

UNEVEN_LIGHT = 0.04  # paper ~10/255 brighter at one edge than the other: corrected (evenly_lit)
MIN_LIT_SIDE = 20  # px; smaller photos are read as they are (at 12 px the fit lost as many digits as it won)
DARKEST_LIGHT = 0.06  # what the light is divided by never goes below this (preprocess.MIN_CONTRAST's level)

# More than a tenth of the border 8% off the paper's level: a shadow or the table (shadows_lifted),
# and lifted only when under 0.5% of it is left off the paper's level
SHADOW_STEP, SHADOW_BORDER, SHADOW_LEFT = 0.08, 0.1, 0.005
SHADOW_KERNEL = 0.25  # the closing's side, of the picture's shorter side: wider than a digit's strokes
SHADOW_SIDE = 320  # px; larger photos find their paper level at about this size

# A page on a table: the area apart from the border's level covers 30% of the picture or more,
# and the drawing on it leaves at most 15% of it dark
PAGE_OF_PICTURE, PAGE_DARK = 0.3, 0.15
PAGE_CORNER_TOLERANCE = 0.02  # of the outline's length: a page's outline simplified so has 4 corners
PAGE_SOLID = 0.95  # and fills 95% of the four-cornered shape: a sheet, not a thick 0 or a blob
PAGE_INSET = 0.03  # the flattened page is cut this share in from each side: its edge is no paper
PAGE_MIN_SIDE = 64  # px; smaller pictures are drawings (a 28x28 bag is no photo of a page)


def evenly_lit(gray: np.ndarray, border: np.ndarray, paper: float) -> np.ndarray:
    """A photo whose light falls off across the page or to its corners, as if lit evenly at the
    border's median.

    One paper level for the whole image reads the shadowed side of a photo as ink: with 30%
    less light at one edge, 79.5% of MNIST test digits photographed so came out right, with 40%
    24.5% (benchmarks/uneven_light.py). The light is fitted to the border, robustly (ink that
    reaches the edge is left out), as a plane plus a bowl in each direction (a lens darkens the
    corners); the image is divided by it (paper reflects a share of the light, ink less). Light
    that barely varies changes nothing."""
    height, width = gray.shape
    if min(height, width) < MIN_LIT_SIDE:  # a border of a few pixels next to the ink cannot tell the light
        return gray
    across, down = np.linspace(-0.5, 0.5, width), np.linspace(-0.5, 0.5, height)  # pixel centres
    xs = np.concatenate([across, across, np.full(height - 2, -0.5), np.full(height - 2, 0.5)])
    ys = np.concatenate([np.full(width, -0.5), np.full(width, 0.5), down[1:-1], down[1:-1]])
    design = np.stack([np.ones_like(xs), xs, ys, xs * xs, ys * ys], axis=1)
    residuals = border - paper
    for _ in range(2):  # start from the median's inliers, then refit on the fit's own
        spread = median(np.abs(residuals))
        inliers = np.abs(residuals) <= max(3 * spread, DARKEST_LIGHT / 2)
        if inliers.sum() < 2 * design.shape[1]:
            return gray
        coefficients = np.linalg.lstsq(design[inliers], border[inliers], rcond=None)[0]
        residuals = border - design @ coefficients
    level, tilt_x, tilt_y, bowl_x, bowl_y = (float(value) for value in coefficients)
    along_x = (tilt_x * across + bowl_x * across * across).astype(np.float32)
    along_y = (tilt_y * down + bowl_y * down * down).astype(np.float32)
    if np.ptp(along_x) + np.ptp(along_y) < UNEVEN_LIGHT:
        return gray
    light = level + along_y[:, None] + along_x[None, :]
    if paper >= 0.5:  # dark ink on light paper: reflectance, the light divided out
        return gray * (paper / np.maximum(light, DARKEST_LIGHT))
    return gray - (light - paper)  # light ink on a dark ground: the glow subtracted


def shadows_lifted(gray: np.ndarray, paper: float) -> np.ndarray:
    """A photo of dark ink with a shadow or a strip of table reaching into the page from its
    border, the paper's own level divided out everywhere.

    A plane and a bowl cannot follow a hard edge: with a shadow 30% deep over 30% of the page,
    17% of MNIST test digits photographed so came out right (benchmarks/uneven_light.py). Where
    more than a tenth of the border departs from the paper's level, the paper is found pixel by
    pixel as a morphological closing wider than any stroke: strokes vanish from it, while a
    shadow that comes in from the border keeps its edge (the picture's edge does not count).
    Dark areas of it that do not reach the border are drawn things, not shadows, and stay. When
    the border does not come out even (a slanting shadow's tip, narrower than the closing), the
    picture is left as it was."""
    height, width = gray.shape
    if border_off_paper(gray, paper) < SHADOW_BORDER:
        return gray
    if paper - float(gray.min()) <= float(gray.max()) - paper:  # light ink (a board): a closing keeps it
        return gray
    scale = min(1.0, SHADOW_SIDE / max(height, width))
    small = gray if scale == 1 else cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                                               interpolation=cv2.INTER_AREA)
    small = cv2.medianBlur(small, 5)  # sensor noise: a closing would follow its peaks, not the paper
    side = max(3, round(min(small.shape) * SHADOW_KERNEL)) | 1
    level = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    level = np.maximum(_reaching_the_border(level, paper), DARKEST_LIGHT)
    evened = border_of(small) / border_of(level)
    evened *= paper / median(evened)  # the paper back at its level
    if _off_paper(evened, paper) >= SHADOW_LEFT:
        return gray
    if scale < 1:  # enlarged, a hard edge blurs: the darker side of it wins (paper there merely looks paper)
        level = cv2.resize(cv2.erode(level, np.ones((3, 3), np.uint8)), (width, height), interpolation=cv2.INTER_LINEAR)
    lifted = gray / level
    lifted *= np.float32(paper / median(border_of(lifted)))  # the paper back at its level
    np.minimum(lifted, np.float32(paper), out=lifted)  # dark ink: nothing is brighter than the paper
    return lifted


def page_flattened(gray: np.ndarray, apart: np.ndarray) -> np.ndarray | None:
    """The page seen square on, a margin in from its edges, when a photo shows a page lying on a
    table (its border then is the table, and the page itself looks like ink); else None.

    `apart`: uint8, 1 where the picture departs from its border's level (the ink map's mask).
    The page is its largest area, when that has four corners at any tilt or in perspective
    (OpenCV's convex hull and Douglas-Peucker simplification find them); it is warped to a
    rectangle, the way up that turns it the least (so a page turned past 45 degrees is read
    sideways). A page darker than the table (grey paper on a white desk, a slate) must lie
    inside the picture: a shadow is darker too, and comes in from its edge. A page turned 5-25
    degrees was 0% right before (the box round it, whose sides had to be the page's, found only a
    page square to the photo), 99.5% after; turned and in perspective 0% -> 99%
    (benchmarks/uneven_light.py, 7 Dec)."""
    if min(gray.shape) < PAGE_MIN_SIDE or np.count_nonzero(apart) < PAGE_OF_PICTURE * apart.size:
        return None
    darker = float(np.mean(gray[apart.view(bool)])) <= median(border_of(gray))
    corners = _page_corners(apart, inside_only=darker)
    if corners is None:
        return None
    top_left, top_right, bottom_right, bottom_left = corners
    width = round(max(np.linalg.norm(top_right - top_left), np.linalg.norm(bottom_right - bottom_left)))
    height = round(max(np.linalg.norm(bottom_left - top_left), np.linalg.norm(bottom_right - top_right)))
    square_on = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    flat = cv2.warpPerspective(gray, cv2.getPerspectiveTransform(corners, square_on), (width, height),
                               flags=cv2.INTER_LINEAR)
    inset_rows, inset_cols = max(1, round(PAGE_INSET * height)), max(1, round(PAGE_INSET * width))
    flat = flat[inset_rows:height - inset_rows, inset_cols:width - inset_cols]
    return np.ascontiguousarray(flat) if min(flat.shape) >= MIN_LIT_SIDE else None


def _page_corners(apart: np.ndarray, inside_only: bool = False) -> np.ndarray | None:
    """(4, 2) float32 corners of the page, clockwise from the top left; None when the largest
    area apart from the border's level is no four-cornered sheet with a little dark inside (or,
    `inside_only`, when it reaches the picture's edge)."""
    outlines, _ = cv2.findContours(apart, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(outlines, key=cv2.contourArea)
    height, width = apart.shape
    if inside_only and (outline.min() == 0 or outline[..., 0].max() == width - 1 or outline[..., 1].max() == height - 1):
        return None
    hull = cv2.convexHull(outline)
    corners = cv2.approxPolyDP(hull, PAGE_CORNER_TOLERANCE * cv2.arcLength(hull, True), True)
    if len(corners) != 4:
        return None
    area = cv2.contourArea(corners)
    if area < PAGE_OF_PICTURE * apart.size or cv2.contourArea(outline) < PAGE_SOLID * area:
        return None
    inside = np.zeros_like(apart)
    cv2.fillConvexPoly(inside, corners, 1)
    if np.count_nonzero(inside > apart) > PAGE_DARK * area:
        return None  # a drawing: a thick stroke leaves much of its outline dark
    points = corners.reshape(4, 2).astype(np.float32)
    # Image rows grow downwards: the top left has the smallest x + y, the top right the smallest y - x
    order = [int(np.argmin(points.sum(1))), int(np.argmin(points[:, 1] - points[:, 0])),
             int(np.argmax(points.sum(1))), int(np.argmax(points[:, 1] - points[:, 0]))]
    return points[order] if len(set(order)) == 4 else None  # a page turned 45 degrees has no way up


def border_off_paper(gray: np.ndarray, paper: float) -> float:
    """The share of the picture's border more than SHADOW_STEP off the paper's level (0 for a
    picture too small to tell): from a tenth, shadows_lifted lifts; under SHADOW_LEFT, it is even."""
    return _off_paper(border_of(gray), paper) if min(gray.shape) >= MIN_LIT_SIDE else 0.0


def border_of(gray: np.ndarray) -> np.ndarray:
    """The picture's outermost pixels, each once (top, bottom, then the sides between)."""
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def _off_paper(border: np.ndarray, paper: float) -> float:
    """The share of the border more than SHADOW_STEP off the paper's level."""
    return np.count_nonzero(np.abs(border - paper) > SHADOW_STEP * paper) / len(border)


def _reaching_the_border(level: np.ndarray, paper: float) -> np.ndarray:
    """The closing's dark areas that touch the border (shadows, table); the others set to paper."""
    dark = (level < (1 - SHADOW_STEP) * paper).view(np.uint8)
    count, labels = cv2.connectedComponents(dark, connectivity=8)
    if count <= 1:
        return level
    touching = np.zeros(count, bool)
    touching[np.unique(border_of(labels))] = True
    touching[0] = True  # not dark
    return np.where(touching[labels], level, np.float32(paper))


# numpy's own median spends ~15 us on checks and dispatch, more than the work on a 56x56
# digit; to_mnist runs for every request and 55,000 times per training set-up.
def median(values: np.ndarray) -> float:
    """np.median of a 1-D array of finite floats (the sum of two ints could overflow here),
    the same value, in ~2 us instead of ~15."""
    middle = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, middle)[middle])
    below, above = np.partition(values, (middle - 1, middle))[middle - 1:middle + 1]
    return float((below + above) / 2)
