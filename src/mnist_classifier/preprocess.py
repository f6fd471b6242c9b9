"""Any image -> the 28x28 MNIST-like input the model expects.

The one preprocessing used by `predict`, the desktop demo and the web demo. It copies
how MNIST itself was made: find the ink, crop its bounding box, scale the longer side to
20 px keeping the aspect ratio (anti-aliased), then place it in a 28x28 canvas so that
its centre of mass sits at the centre. Output is light ink on black, uint8 0..255.

    to_mnist("digit.png").image   # (28, 28) uint8, or None when the image is blank

Reading the file and resolving its colours and transparency into grey levels is images.py's;
evening out a photo's page (falling light, shadows, a table at the border, a page lying at an
angle on a table), paper.py's; taking a ruled or squared page's printed lines out, ruled.py's.

Speed: 0.4 ms for a 280x280 grayscale canvas, 0.7 ms for RGBA (median of 1000 runs
on one core of the 2-core development machine; `make bench` measures it end to end).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .images import grayscale, load_image
from .paper import SHADOW_LEFT, UNEVEN_LIGHT, border_of, border_off_paper, evenly_lit, page_flattened, shadows_lifted
from .paper import median as _median
from .ruled import without_ruling

CANVAS = 28  # MNIST image side
BOX = 20  # MNIST scales the digit's longer side to 20 px
CENTRE = 14.0  # where MNIST puts the centre of mass (row and column)
NOISE_FLOOR = 0.10  # ink below 10% of the contrast is paper texture or JPEG noise
MIN_CONTRAST = 0.06  # weaker than ~15/255 between ink and background: no ink at all
# nor within 7 standard deviations of the paper's own noise (seen along the border): an empty
# page photographed with sensor noise of 4/255 has a pixel 0.06 off somewhere
NOISE_MARGIN = 7.0
LIFTED_INK = 0.3  # a shadow lifted from a photo as it was (_evened) must leave ink this much darker than paper
SPECK_FRACTION = 0.05  # blobs under 5% of the largest stroke are dust, not digit
EDGE_LINING = 0.5  # a blob along half an edge or more is the photo's surroundings (_drop_specks)
MIN_STROKE = 2.0  # px at 28x28; a quarter of MNIST digits are thinner; see _thicken
POOL_SIDE = 128  # thin strokes on big images are max-pooled to about this size first
# Strokes wider than this share of the drawing's longer side leave no shape to read: a small
# digit drawn with a wide pen fills in to a blob the model calls an 8, 99% sure (helper-85).
# 5,000 MNIST test digits, each drawn 2x, 3x and (as crisp marker ink) 10x their size, reach 0.311.
MAX_STROKE_SHARE = 0.33
COUNTER_SHARE = 0.02  # paper enclosed by the ink, of the drawing's box, that shows a loop left open
BOLDNESS_MIN_SIDE = 2 * BOX  # below this the stroke estimate is pixel-bound (MNIST's own 28 px reach 0.37)


@dataclass(frozen=True)
class Preprocessed:
    image: np.ndarray | None  # (28, 28) uint8, white ink on black; None when no ink
    has_ink: bool
    too_bold: bool = False  # strokes too wide for the drawing's size to show its shape (MAX_STROKE_SHARE)


NO_INK = Preprocessed(image=None, has_ink=False)


def to_mnist(image) -> Preprocessed:
    """Array, PIL image, path or encoded bytes -> MNIST-like 28x28 (or NO_INK)."""
    array = image if isinstance(image, np.ndarray) else load_image(image)
    gray = grayscale(array)
    ink = _ink_map(gray)
    if ink is None:
        return NO_INK
    apart = (ink > 0).view(np.uint8)
    page = page_flattened(gray, apart)
    if page is not None:  # a page photographed on a table: its own border is the paper
        ink = _ink_map(page, on_a_page=True)
    if ink is None:
        return NO_INK
    crop = _crop_to_ink(ink)
    return Preprocessed(image=_place_on_canvas(_fit_box(crop)), has_ink=True, too_bold=_too_bold(crop))


def digits_on_paper(digits: np.ndarray, side: int = 56, marker: bool = False) -> np.ndarray:
    """(N, 28, 28) uint8 MNIST digits -> the same as `to_mnist` returns them drawn `side` px,
    dark on light: the path every user's drawing takes, for training and for measuring.

    The enlargement is bilinear: soft edges, like an out-of-focus photo (training's default;
    2x leaves edges as soft as 10x, at a third of the cost: 0.08-0.16 ms per digit, the CPU
    decides). `marker`: crisp ink instead, the enlarged digit's half-ink outline, like a felt
    pen on paper (evaluate's row, at 280 px). A digit that loses all its ink stays black.
    """
    drawn = np.zeros(digits.shape, np.uint8)  # filled in place: no list of 55,000 small arrays
    for index, digit in enumerate(digits):
        big = cv2.resize(digit, (side, side), interpolation=cv2.INTER_LINEAR)
        pre = to_mnist(np.where(big >= 128, 0, 255).astype(np.uint8) if marker else 255 - big)
        if pre.has_ink:
            drawn[index] = pre.image
    return drawn


def preview(pre: Preprocessed, size: int) -> np.ndarray:
    """(size, size) uint8 blow-up of the 28x28 for display; black when no ink."""
    if size < 1:
        raise ValueError(f"preview size must be positive, got {size}")
    if pre.image is None:
        return np.zeros((size, size), np.uint8)
    # Nearest neighbour: the user should see the model's pixels, not a smoothed guess.
    return cv2.resize(pre.image, (size, size), interpolation=cv2.INTER_NEAREST)


# ------------------------------------------------------------ pixels -> ink map


def _ink_map(gray: np.ndarray, on_a_page: bool = False) -> np.ndarray | None:
    """Grayscale -> ink 0..1 on background 0, or None when there is no visible ink. `on_a_page`:
    the picture is a page cut out of a photo, so what lines its edges is shadow, not drawing."""
    border = border_of(gray)
    background = _median(border)  # the paper: the border is mostly paper
    if float(border.max() - border.min()) >= UNEVEN_LIGHT:  # ~3 us: a drawn canvas or scan stops here
        evened = _evened(gray, border, background)
        if evened is not gray:  # its paper's noise is then measured on the evened border
            gray, border = evened, border_of(evened)
    darkest, brightest = float(gray.min()), float(gray.max())
    # Ink is whatever departs furthest from the paper: darker or lighter.
    dark_ink = background - darkest > brightest - background
    if dark_ink:
        ink, contrast = background - gray, background - darkest
    else:
        ink, contrast = gray - background, brightest - background
    if contrast < max(MIN_CONTRAST, NOISE_MARGIN * _noise_of(border)):
        return None
    # Stretch to 0..1 and ramp the noise floor down to 0: paper texture and JPEG
    # ringing then neither show up in the output nor widen the bounding box.
    # (In place: fresh 300 kB temporaries cost more than the arithmetic.)
    ink *= np.float32(1 / (contrast * (1 - NOISE_FLOOR)))
    ink -= np.float32(NOISE_FLOOR / (1 - NOISE_FLOOR))
    # A table beside the page is dark beside light paper; on a dark canvas an edge-lining blob is a stroke.
    on_paper = dark_ink and background >= 0.5
    ink = np.clip(ink, 0, 1, out=ink)
    if on_paper:  # printed lines are dark on light paper; a drawing's are its own
        ink = without_ruling(ink)
    ink = _drop_specks(ink, surroundings_possible=on_paper, surroundings_certain=on_a_page)
    return None if on_a_page and not ink.any() else ink  # on a page, all of it may have been shadow


def _evened(gray: np.ndarray, border: np.ndarray, paper: float) -> np.ndarray:
    """The photo with its light evened out (paper.py): falling light fitted and divided out, then a
    shadow or table lifted. On a noisy photo, or with the light falling off as well, the fit can take
    up part of a shadow's hard step, which then no longer lifts though the border is not even: it
    is lifted from the photo as it was instead (a shadow 20% deep with noise 8/255: 68.5% -> 99%
    right; with light falling off 30%: 72% -> 99.5%; benchmarks/uneven_light.py, 7 Dec)."""
    lit = evenly_lit(gray, border, paper)
    if paper < 0.5:  # a dark canvas or board: no shadow to lift
        return lit
    lifted = shadows_lifted(lit, paper)
    if lifted is lit and lit is not gray and border_off_paper(lit, paper) >= SHADOW_LEFT:
        unlit = shadows_lifted(gray, paper)
        # kept only with ink left on it: an empty page's shadow edge leaves 0.07-0.2 (a "1"), digits 0.42 and up
        if unlit is not gray and paper - float(unlit.min()) >= LIFTED_INK:
            return unlit
    return lifted


def _noise_of(border: np.ndarray) -> float:
    """The paper's noise as a standard deviation, from the differences between border pixels 4
    apart (JPEG smooths neighbours together): a shadow's or a table's edge, ink or a line
    reaching the border are a few steps among hundreds; 0 on a drawn canvas or a clean scan."""
    if len(border) <= 4:  # a picture of a few pixels has no paper to measure
        return 0.0
    return 1.4826 / np.sqrt(2) * _median(np.abs(border[4:] - border[:-4]))


def _drop_specks(ink: np.ndarray, surroundings_possible: bool = False,
                 surroundings_certain: bool = False) -> np.ndarray:
    """Remove what is not the drawing: dust, blobs much smaller than the main stroke; and, on a
    photo of dark ink on light paper (`surroundings_possible`), a dark blob along half an edge
    of the picture or more, the table beside the page, when a drawing of some size is elsewhere,
    or always on a page cut out of its photo (`surroundings_certain`: a shadow on it).
    (A stroke on a dark canvas may run along an edge; a 7's bar may sit on it: never dropped.)"""
    count, labels = cv2.connectedComponents((ink > 0).view(np.uint8), connectivity=8)
    if count <= 2 and not surroundings_certain:
        return ink  # one blob (label 0 is the background): nothing to drop
    # bincount on the labels is ~4x faster than connectedComponentsWithStats here.
    areas = np.bincount(labels.ravel(), minlength=count)
    keep = np.ones(count, bool)
    keep[0] = False
    if surroundings_possible or surroundings_certain:
        lining = _lining_an_edge(labels, count)
        rest = keep & ~lining
        drawing_elsewhere = rest.any() and areas[rest].max() >= SPECK_FRACTION * areas[lining].max(initial=0)
        if surroundings_certain or drawing_elsewhere:
            keep = rest  # never for a stray dot: a drawing lining an edge beside a speck stays
        if not keep.any():
            return np.zeros_like(ink)
    keep &= areas >= SPECK_FRACTION * areas[keep].max()
    return ink if keep[1:].all() else ink * keep[labels]


def _lining_an_edge(labels: np.ndarray, count: int) -> np.ndarray:
    """bool per blob label: whether it covers EDGE_LINING or more of one of the picture's four edges."""
    lining = np.zeros(count, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        lining |= np.bincount(edge, minlength=count) >= EDGE_LINING * len(edge)
    lining[0] = False
    return lining


def _crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """The bounding box of the ink (after the noise floor and specks are gone)."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


# ------------------------------------------------------------ ink -> 28x28


def _fit_box(crop: np.ndarray) -> np.ndarray:
    """Scale so the longer side is BOX px (aspect kept); ink peak renormalised to 1."""
    digit = _resized_to(_thicken(crop), BOX)
    peak = float(digit.max())
    return digit / peak if peak > 0 else digit


def _resized_to(crop: np.ndarray, side: int) -> np.ndarray:
    """Scaled so that its longer side is `side` px, its aspect kept."""
    scale = side / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    if (height, width) == crop.shape:
        return crop
    # INTER_AREA averages (anti-aliases) when shrinking; it is blocky when enlarging.
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _thicken(crop: np.ndarray) -> np.ndarray:
    """Dilate strokes that would come out thinner than MNIST's (a 1-px line on a big
    canvas would otherwise shrink to a faint hairline the model has never seen)."""
    if max(crop.shape) > POOL_SIDE * 2 and _grow_needed(crop) > 0:
        # Max-pooling shrinks the image without fading thin lines, so the dilation
        # below stays small and fast even on a 4096-px image.
        crop = _max_pool(crop, max(crop.shape) // POOL_SIDE)
    grow = _grow_needed(crop)
    if grow <= 0:
        return crop
    radius = (grow + 1) // 2
    padded = _framed(crop, radius)  # room for the strokes to grow at the edges
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    return cv2.dilate(padded, kernel)


def _too_bold(crop: np.ndarray) -> bool:
    """Whether the strokes are too wide for the drawing's size to show a digit's shape."""
    longest = max(crop.shape)
    if longest < BOLDNESS_MIN_SIDE:
        return False
    if longest > POOL_SIDE * 2:  # averaging keeps each stroke's share of the size, at a fraction of the cost
        crop = _resized_to(crop, POOL_SIDE)
    return _stroke_width(crop) / max(crop.shape) > MAX_STROKE_SHARE and not _has_open_counter(crop)


def _has_open_counter(crop: np.ndarray) -> bool:
    """Whether the ink encloses paper of some size (a 0's, 6's, 8's or 9's counter): a bold digit
    whose loops stayed open shows its shape, where a small one drawn with a wide pen filled them
    (helper-87: a heavy typeset 8 was refused)."""
    paper = np.pad(crop <= 0.5, 1, constant_values=True).astype(np.uint8)  # the frame joins all outer paper
    count, regions, stats, _ = cv2.connectedComponentsWithStats(paper, connectivity=4)
    outside = regions[0, 0]
    enclosed = [stats[label, cv2.CC_STAT_AREA] for label in range(1, count) if label != outside]
    return max(enclosed, default=0) >= COUNTER_SHARE * crop.size


def _grow_needed(crop: np.ndarray) -> int:
    """Pixels of dilation so that strokes end up MIN_STROKE px wide after scaling.

    Dilating by d widens strokes and the box alike: (w + d) * BOX / (L + d) = MIN_STROKE
    solved for d, with w the stroke width and L the longer side."""
    width, longest = _stroke_width(crop), max(crop.shape)
    grow = (MIN_STROKE * longest - BOX * width) / (BOX - MIN_STROKE)
    return int(np.ceil(grow)) if grow > 0.5 else 0


def _stroke_width(crop: np.ndarray) -> float:
    """Mean stroke width in px: 2 * area / perimeter, for long thin strokes."""
    mask = crop > 0.5
    area = np.count_nonzero(mask)
    if area == 0:
        return 0.0
    # Ink pixels' sides that face paper: changes between neighbours, plus ink on the image's rim.
    edges = (np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
             + sum(np.count_nonzero(rim) for rim in (mask[0], mask[-1], mask[:, 0], mask[:, -1])))
    # Counting pixel edges overstates a curve's length by 4/pi on average over angles.
    return 2.0 * area / (edges * np.pi / 4)


def _max_pool(image: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = -(-image.shape[0] // factor), -(-image.shape[1] // factor)  # ceil
    padded = np.zeros((rows * factor, cols * factor), image.dtype)
    padded[:image.shape[0], :image.shape[1]] = image
    image = padded
    return image.reshape(rows, factor, cols, factor).max(axis=(1, 3))


def _place_on_canvas(digit: np.ndarray) -> np.ndarray:
    """Paste into 28x28 with the centre of mass at (CENTRE, CENTRE), nothing cut off."""
    height, width = digit.shape
    mass = float(digit.sum())
    centre_row = float(digit.sum(axis=1) @ np.arange(height)) / mass
    centre_col = float(digit.sum(axis=0) @ np.arange(width)) / mass
    # Integer shift (floor of x + 0.5, not banker's rounding), clamped so the whole
    # digit stays on the canvas: a lopsided digit may sit off-centre, never cropped.
    top = min(max(int(np.floor(CENTRE - centre_row + 0.5)), 0), CANVAS - height)
    left = min(max(int(np.floor(CENTRE - centre_col + 0.5)), 0), CANVAS - width)
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    canvas[top:top + height, left:left + width] = np.clip(
        digit * 255 + 0.5, 0, 255).astype(np.uint8)
    return canvas


def _framed(image: np.ndarray, margin: int) -> np.ndarray:
    """np.pad(image, margin): a 2-D image in a frame of `margin` zeros, in ~2 us instead of ~17."""
    out = np.zeros((image.shape[0] + 2 * margin, image.shape[1] + 2 * margin), image.dtype)
    out[margin:margin + image.shape[0], margin:margin + image.shape[1]] = image
    return out


# ------------------------------------------------------------ objects that fill the frame

FILL_TRIM = 0.02  # weaker than 2% of full contrast: background (JPEG noise, paper grain)


def fill_frame(image) -> Preprocessed:
    """Any image -> 28x28 the way Fashion-MNIST was made from product photos: trim the
    background, scale the longer side to 28 px, centre the box, light object on black.

    Unlike `to_mnist`, faint pixels are kept: on clothing they are texture, not noise.
    A 28x28 Fashion-MNIST image comes back (nearly) unchanged."""
    array = image if isinstance(image, np.ndarray) else load_image(image)
    gray = grayscale(array)
    border = border_of(gray)
    background = _median(border)
    if background >= 0.5:  # a photo on white: negate, as Zalando did
        item = (background - gray) / background
    else:
        item = (gray - background) / (1.0 - background)
    item = np.clip(item, 0, 1)
    if item.max() < MIN_CONTRAST:
        return NO_INK
    rows, cols = np.flatnonzero((item > FILL_TRIM).any(axis=1)), np.flatnonzero((item > FILL_TRIM).any(axis=0))
    crop = item[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    crop = _resized_to(crop, CANVAS)
    height, width = crop.shape
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    top, left = (CANVAS - height) // 2, (CANVAS - width) // 2
    canvas[top:top + height, left:left + width] = np.clip(crop * 255 + 0.5, 0, 255).astype(np.uint8)
    return Preprocessed(image=canvas, has_ink=True)


# How a user's image becomes a dataset's 28x28 input: DatasetSpec.framing names one.
FRAMINGS = {"digit": to_mnist, "fill": fill_frame}
