"""Photos lit unevenly: MNIST test digits photographed grey on white paper, with the light
falling off across the page, read by a model through the preprocessing every front end uses.

    python benchmarks/uneven_light.py                        # the bundled model, 200 digits per case
    python benchmarks/uneven_light.py --checkpoint models/simple_cnn_best.pth --digits 1000

Each digit is enlarged to 280 px, drawn grey (40/255) on paper (235/255), and multiplied by a
light that falls off linearly by `falloff` from one side to the other, the side turning with
the digit's index (8 directions); a vignette (dark corners) for comparison. The table gives
the share answered with the right digit (verdict `digit` and correct) per falloff.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

import mnist_classifier
from mnist_classifier.data import load_data
from mnist_classifier.hardware import read_cpu_model

FALLOFFS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)


def photographed(digit: np.ndarray, falloff: float, direction: int, vignette: bool = False) -> np.ndarray:
    y, x = np.mgrid[0:280, 0:280] / 279 - 0.5
    if vignette:
        light = 1 - falloff * 2 * (x ** 2 + y ** 2)
    else:
        angle = direction % 8 * np.pi / 4
        light = 1 - falloff * (0.5 + np.cos(angle) * x + np.sin(angle) * y)
    paper = 235 - cv2.resize(digit, (280, 280)).astype(np.float32) * (195 / 255)
    return np.clip(paper * light, 0, 255).astype(np.uint8)


def right_share(reader, digits: np.ndarray, labels: np.ndarray, falloff: float, vignette: bool) -> float:
    answers = reader.predict_batch([photographed(d, falloff, i, vignette) for i, d in enumerate(digits)])
    return float(np.mean([answer.digit == label for answer, label in zip(answers, labels)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="bundled", help="model to read with (default: bundled)")
    parser.add_argument("--digits", type=int, default=200, help="MNIST test digits per case (default: 200)")
    args = parser.parse_args(argv)
    test = load_data("data", log=lambda _line: None).test
    digits, labels = test.images[:args.digits].numpy(), test.labels[:args.digits].numpy()
    reader = mnist_classifier.load(args.checkpoint)
    print(f"{read_cpu_model()}; {reader!r}; {args.digits} MNIST test digits per case, answered the right digit")
    print(f"{'light falls off by':<20}" + "".join(f"{falloff:>8.0%}" for falloff in FALLOFFS))
    for name, vignette in (("across the page", False), ("to the corners", True)):
        shares = [right_share(reader, digits, labels, falloff, vignette) for falloff in FALLOFFS]
        print(f"{name:<20}" + "".join(f"{share:>8.1%}" for share in shares))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
