"""Batched random affine augmentation: one grid_sample call per batch.

Each image gets its own small shift, rotation and scale, drawn from a
`torch.Generator` so that a seeded run (and a resumed one) sees the same batches.
Works on [0, 1] images *before* normalisation, so the zero padding that
`grid_sample` adds at the borders is true background.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import UserError
from .hardware import to_device

MAX_SHIFT_PIXELS = 2.0
MAX_ROTATION_DEGREES = 10.0
SCALE_RANGE = (0.9, 1.1)


def random_affine(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """images: (B, 1, H, W) float in [0, 1] -> same shape, each image moved a little."""
    batch, _, height, width = images.shape
    draws = to_device(torch.rand(batch, 4, generator=generator, device=generator.device), images.device)
    angle = (draws[:, 0] * 2 - 1) * math.radians(MAX_ROTATION_DEGREES)
    low, high = SCALE_RANGE
    # grid_sample maps output -> input coordinates, so a zoom of s needs 1/s here.
    inverse_scale = 1.0 / (low + draws[:, 1] * (high - low))
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    shift_x = (draws[:, 2] * 2 - 1) * MAX_SHIFT_PIXELS * 2 / width
    shift_y = (draws[:, 3] * 2 - 1) * MAX_SHIFT_PIXELS * 2 / height
    cos, sin = torch.cos(angle) * inverse_scale, torch.sin(angle) * inverse_scale
    theta = torch.stack(
        (torch.stack((cos, -sin, shift_x), dim=1), torch.stack((sin, cos, shift_y), dim=1)), dim=1
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


MAX_CROP_SHIFT_PIXELS = 2


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """images: (B, 1, H, W) float in [0, 1] -> each image shifted by whole pixels and mirrored half the time.

    The shift is a random 28x28 crop of the image padded by 2 px; the mirror is
    left-right. Right for clothing (a shirt mirrored is still a shirt), wrong for digits.
    Whole-pixel moves and a mirror land on pixel centres, so sampling copies pixels exactly.
    """
    batch, _, height, width = images.shape
    draws = to_device(torch.rand(batch, 3, generator=generator, device=generator.device), images.device)
    span = 2 * MAX_CROP_SHIFT_PIXELS + 1
    shift_x = (draws[:, 0] * span).floor().clamp_(max=span - 1) - MAX_CROP_SHIFT_PIXELS
    shift_y = (draws[:, 1] * span).floor().clamp_(max=span - 1) - MAX_CROP_SHIFT_PIXELS
    mirror = torch.where(draws[:, 2] < 0.5, -1.0, 1.0)
    zero, one = torch.zeros_like(mirror), torch.ones_like(mirror)
    theta = torch.stack(
        (torch.stack((mirror, zero, -shift_x * 2 / width), dim=1), torch.stack((zero, one, -shift_y * 2 / height), dim=1)),
        dim=1,
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class Augmentation:
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    note: str  # for reports: what training did to the images
    # Is a left-right mirror harmless to the label? Then training shows mirrored images,
    # and test-time augmentation (combine.py) averages mirrored views too.
    mirrors: bool = False


# A dataset names its policy (DatasetSpec.augmentation); `augment: true` in a recipe applies it.
AUGMENTATIONS = {
    "affine": Augmentation(random_affine, "random shift, rotation, scale"),
    "crop_flip": Augmentation(random_crop_flip, "random 2-px crop, left-right mirror", mirrors=True),
}


def require_augmentation(name: str, dataset: str) -> str:
    """`name` if it is a policy above; else the error a dataset's author needs, before any training."""
    if name not in AUGMENTATIONS:
        choices = ", ".join(sorted(AUGMENTATIONS))
        raise UserError(f"dataset '{dataset}' names augmentation '{name}', which does not exist: "
                        f"set its DatasetSpec.augmentation to one of {choices}")
    return name
