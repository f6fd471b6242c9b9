"""Photos lit unevenly: MNIST test digits photographed grey on white paper, with the light
falling off across the page, read by a model through the preprocessing every front end uses.

    python benchmarks/uneven_light.py                        # the bundled model, 200 digits per case
    python benchmarks/uneven_light.py --checkpoint models/simple_cnn_best.pth --digits 1000

Each digit is enlarged to 280 px, drawn grey (40/255) on paper (235/255), and multiplied by a
light that falls off linearly by `falloff` from one side to the other, the side turning with
the digit's index (8 directions); a vignette (dark corners); and a hard-edged shadow (a hand or
a phone) darkening the 30% of the page nearest one edge (4 directions). The table gives
the share answered with the right digit (verdict `digit` and correct) per falloff; a second
table the same for photos showing what lies beside the page: a strip of table along one side
(turning with the index), the page lying on a dark table (square on, turned, in perspective),
a shadow with camera noise or with the light falling off as well, or ruled and squared paper
(straight, turned, a notebook's blue lines with a red margin).
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

import mnist_classifier
from mnist_classifier.data import load_data
from mnist_classifier.hardware import read_cpu_model

FALLOFFS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)
SHADOW_EDGE = -0.2  # of the page's width from its centre: a shadow over the 30% nearest one edge


def photographed(digit: np.ndarray, falloff: float, direction: int, kind: str = "across") -> np.ndarray:
    y, x = np.mgrid[0:280, 0:280] / 279 - 0.5
    if kind == "corners":
        light = 1 - falloff * 2 * (x ** 2 + y ** 2)
    elif kind == "shadow":  # a hard-edged shadow over the side of the page nearest one edge (30% of it)
        along = [x, -x, y, -y][direction % 4]
        light = np.where(along < SHADOW_EDGE, 1 - falloff, 1.0)
    else:
        angle = direction % 8 * np.pi / 4
        light = 1 - falloff * (0.5 + np.cos(angle) * x + np.sin(angle) * y)
    return np.clip(on_paper(digit) * light, 0, 255).astype(np.uint8)


def on_paper(digit: np.ndarray, side: int = 280) -> np.ndarray:
    """The digit enlarged to `side` px, grey ink (40) on white paper (235), float32."""
    return 235 - cv2.resize(digit, (side, side)).astype(np.float32) * (195 / 255)


def with_table_strip(digit: np.ndarray, width: float, grey: int, direction: int) -> np.ndarray:
    """The page with a strip of table `width` of it wide along one side (which may cover the digit's edge)."""
    page, strip = on_paper(digit), int(width * 280)
    page[[np.s_[:, :strip], np.s_[:strip, :], np.s_[:, -strip:], np.s_[-strip:, :]][direction % 4]] = grey
    return page.astype(np.uint8)


def page_on_table(digit: np.ndarray, page_side: int, photo_side: int = 400) -> np.ndarray:
    photo = np.full((photo_side, photo_side), 25, np.float32)
    top = (photo_side - page_side) // 2
    photo[top:top + page_side, top:top + page_side] = on_paper(digit, page_side)
    return photo.astype(np.uint8)


def page_at_an_angle(digit: np.ndarray, direction: int, perspective: float = 0.0) -> np.ndarray:
    """A 240x300 page on a dark table, turned 5-25 degrees either way (with the index), and with
    `perspective` its corners moved up to that share of its side, as a phone held at a slant sees it."""
    page = np.full((300, 240), 235, np.float32)
    page[90:210, 60:180] = on_paper(digit, 120)
    rng = np.random.default_rng(direction)
    square_on = np.float32([[0, 0], [240, 0], [240, 300], [0, 300]])
    corners = square_on + rng.uniform(-perspective, perspective, (4, 2)).astype(np.float32) * [240, 300]
    turn = cv2.getRotationMatrix2D((120, 150), (-1) ** direction * (5 + direction % 5 * 5), 1.0)
    corners = corners @ turn[:, :2].T + turn[:, 2] + np.float32([80, 50])
    warp = cv2.getPerspectiveTransform(square_on, corners.astype(np.float32))
    return cv2.warpPerspective(page, warp, (400, 400), flags=cv2.INTER_LINEAR, borderValue=25).astype(np.uint8)


def with_noise(photo: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Camera noise: Gaussian, `sigma` grey levels, the same for every run."""
    noisy = photo + np.random.default_rng(seed).normal(0, sigma, photo.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def on_lined_paper(digit: np.ndarray, spacing: int, grey, direction: int, squared: bool,
                   tilt: float = 0.0, margin: bool = False, pen=(40, 40, 40)) -> np.ndarray:
    """The digit written in `pen` over printed lines (every `spacing` px, 2 px wide, `grey` a level
    or an RGB colour), their phase turning with the index, turned `tilt` degrees either way (with
    the index), with a red margin line at 15% of the width if asked; saved as JPEG (quality 85)
    when tilted or coloured, as a phone would."""
    page = np.full((280, 280, 3), 235, np.float32)
    darkness = cv2.resize(digit, (280, 280)).astype(np.float32)[..., None] / 255
    page = page * (1 - darkness) + np.float32(pen) * darkness
    lines, reach = np.zeros((280, 280), np.uint8), 840
    angle = np.radians(tilt if direction % 2 else -tilt)
    cos, sin = np.cos(angle), np.sin(angle)
    for offset in range(direction % spacing - reach, reach, spacing):
        x, y = 140 - sin * offset, 140 + cos * offset
        cv2.line(lines, (int(x - cos * reach), int(y - sin * reach)), (int(x + cos * reach), int(y + sin * reach)), 1, 2)
        if squared:
            x, y = 140 + cos * offset, 140 + sin * offset
            cv2.line(lines, (int(x + sin * reach), int(y - cos * reach)), (int(x - sin * reach), int(y + cos * reach)), 1, 2)
    page[lines > 0] = np.minimum(page[lines > 0], np.float32(grey))
    if margin:
        page[:, 42:44] = np.minimum(page[:, 42:44], np.float32([220, 80, 80]))
    photo = np.clip(page, 0, 255).astype(np.uint8)
    if not tilt and np.ndim(grey) == 0:
        return photo[..., 0]
    _, encoded = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]


SURROUNDINGS = {
    "table strip, 10% of the width, grey 25": lambda d, i: with_table_strip(d, 0.1, 25, i),
    "table strip, 20%, grey 25": lambda d, i: with_table_strip(d, 0.2, 25, i),
    "table strip, 20%, grey 120": lambda d, i: with_table_strip(d, 0.2, 120, i),
    "page covering 36% of a dark table": lambda d, i: page_on_table(d, 240),
    "page covering 64%": lambda d, i: page_on_table(d, 320),
    "page covering 90%": lambda d, i: page_on_table(d, 380),
    "page turned 5-25 degrees on the table": lambda d, i: page_at_an_angle(d, i),
    "page turned, and in perspective (8%)": lambda d, i: page_at_an_angle(d, i, perspective=0.08),
    "hard shadow 20% deep + camera noise 8": lambda d, i: with_noise(photographed(d, 0.2, i, "shadow"), 8, i),
    "hard shadow 30% + light falling off 30%": lambda d, i: (photographed(d, 0.3, i, "shadow").astype(np.float32)
                                                             * photographed(np.zeros_like(d), 0.3, i + 3) / 235
                                                             ).astype(np.uint8),
    "ruled paper, lines every 30 px, grey 170": lambda d, i: on_lined_paper(d, 30, 170, i, squared=False),
    "squared paper, every 20 px, grey 190": lambda d, i: on_lined_paper(d, 20, 190, i, squared=True),
    "ruled, turned 1-5 degrees, JPEG": lambda d, i: on_lined_paper(d, 25, 170, i, False, tilt=1 + i % 5),
    "blue lines, red margin, blue pen, JPEG": lambda d, i: on_lined_paper(d, 28, (140, 170, 230), i, False,
                                                                          margin=True, pen=(30, 40, 120)),
}


def right_share(reader, photos: list[np.ndarray], labels: np.ndarray) -> float:
    answers = reader.predict_batch(photos)
    return float(np.mean([answer.digit == label for answer, label in zip(answers, labels)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="bundled", help="model to read with (default: bundled)")
    parser.add_argument("--digits", type=int, default=200, help="MNIST test digits per case (default: 200)")
    args = parser.parse_args(argv)
    test = load_data("data", log=lambda _line: None).test
    digits, labels = test.images[:args.digits].numpy(), test.labels[:args.digits].numpy()
    reader = mnist_classifier.load(args.checkpoint)
    print(f"{read_cpu_model()}; {reader!r}; {args.digits} MNIST test digits per case, answered the right digit")
    print(f"{'light falls off by':<20}" + "".join(f"{falloff:>8.0%}" for falloff in FALLOFFS))
    for name, kind in (("across the page", "across"), ("to the corners", "corners"), ("hard shadow, 30%", "shadow")):
        shares = [right_share(reader, [photographed(d, falloff, i, kind) for i, d in enumerate(digits)], labels)
                  for falloff in FALLOFFS]
        print(f"{name:<20}" + "".join(f"{share:>8.1%}" for share in shares))
    print(f"\n{'what else the photo shows':<40}{'right':>8}")
    for name, photograph in SURROUNDINGS.items():
        share = right_share(reader, [photograph(d, i) for i, d in enumerate(digits)], labels)
        print(f"{name:<40}{share:>8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
