"""Uniform-pen strokes: MNIST digits re-drawn with a pen of one constant width.

People draw in our demos with a pen of constant width; MNIST strokes swell and thin
with the writer's pressure. This module owns the arrow "MNIST digit -> the same digit
drawn with an even pen", for training (random widths per image) and for the
uniform-pen benchmark (PEN_WIDTHS_BENCHMARK).

How: each digit is binarised and skeletonised once, and the distance of every pixel to
that skeleton is kept as one uint8 per pixel (skeletons.py, free of torch). Drawing the skeleton with a
pen of radius r is then one tensor op, ink = clamp(r + 0.5 - distance, 0, 1), whose
half-pixel ramp anti-aliases the edge, so any batch can be re-drawn at any widths for
almost nothing:

    from mnist_classifier.strokes import skeleton_distances, random_pen_widths, redraw
    distances = skeleton_distances(data.train.images)           # once per run
    widths = random_pen_widths(len(index), generator)           # 1.5-3.5 px
    ink = redraw(distances[index], widths)                      # (B, 28, 28) in [0, 1]

skeleton_distances runs skeletons.py's on torch's threads (its costs are given there);
redraw of a batch of 128 takes ~60 us (AMD EPYC, 4 Dec 2026). Re-drawn at w px,
the ink area divided by the skeleton length comes out at w +- 10% on real digits, whether
the original stroke was thin or thick. (Generating non-digits on threads was slower, 2.0 ->
2.6 s: that work is mostly Python, so outliers.py stays on one.)

An image whose ink never reaches skeletons.INK_THRESHOLD has no skeleton: it is re-drawn empty
(all zeros), by redraw and uniform_pen_images alike. No MNIST digit is such an image.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import skeletons
from .skeletons import DISTANCE_SCALE

PEN_WIDTH_RANGE = (1.5, 3.5)  # px at 28x28; preprocess thickens drawings to >= 2 px
PEN_WIDTHS_BENCHMARK = (1.5, 2.5, 3.5)  # the uniform-pen benchmark's widths


def skeleton_distances(images: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) uint8 digits -> (N, 28, 28) uint8: round(16 * distance to the skeleton), FAR-capped.

    A pixel of the skeleton itself holds 0. Split over torch's threads; same result as one.
    """
    return torch.from_numpy(skeletons.skeleton_distances(images.cpu().numpy(), threads=torch.get_num_threads()))


def redraw(distances: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(B, 28, 28) compact distances, (B,) pen widths in px (diameter) -> (B, 28, 28) float32 ink in [0, 1].

    Runs on the distances' device; ~60 us for 128 images on a CPU.
    """
    radius = (widths.to(device=distances.device, dtype=torch.float32) / 2).view(-1, 1, 1)
    distance = distances.float() / DISTANCE_SCALE
    # A pixel centre within r - 0.5 of the skeleton is covered, beyond r + 0.5 it is not;
    # the linear ramp between approximates the pen's coverage of that pixel.
    return (radius + 0.5 - distance).clamp_(0.0, 1.0)


def random_pen_widths(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count,) float32 widths drawn uniformly from PEN_WIDTH_RANGE, on the generator's device."""
    low, high = PEN_WIDTH_RANGE
    return low + (high - low) * torch.rand(count, generator=generator, device=generator.device)


def random_pen_images(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, 28, 28) uint8 digits -> the same, each re-drawn with a pen of a seeded random width
    from PEN_WIDTH_RANGE (training's widths): what calibration checks its threshold against."""
    return _pen_images(images, random_pen_widths(len(images), torch.Generator().manual_seed(seed)))


def uniform_pen_images(images: torch.Tensor, width: float) -> torch.Tensor:
    """(N, 28, 28) uint8 digits -> (N, 28, 28) uint8, every digit re-drawn with a pen `width` px wide."""
    return uniform_pen_sets(images, (width,))[0]


def uniform_pen_sets(images: torch.Tensor, widths: Sequence[float]) -> list[torch.Tensor]:
    """uniform_pen_images for each of `widths`, the skeletons found once (they cost ~0.2 ms a digit)."""
    distances = skeleton_distances(images)
    return [_ink(redraw(distances, torch.full((len(images),), float(width)))) for width in widths]


def _pen_images(images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    return _ink(redraw(skeleton_distances(images), widths))


def _ink(coverage: torch.Tensor) -> torch.Tensor:
    return (coverage * 255).round_().to(torch.uint8)
