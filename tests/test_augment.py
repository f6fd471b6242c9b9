"""Batched training augmentation on real images: what each dataset's policy does to them."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mnist_classifier.augment as augment
from mnist_classifier.augment import random_affine, random_crop_flip
from mnist_classifier.config import resolve_config
from mnist_classifier.datasets import DATASETS
from mnist_classifier.training import train

from .conftest import DATA_DIR


def unit_batch(split, count: int = 64) -> torch.Tensor:
    return split.images[:count].unsqueeze(1).float() / 255


def shifted_and_mirrored(image: np.ndarray, dx: int, dy: int, mirror: bool) -> np.ndarray:
    """Independent reference: mirror, then move by (dx, dy) with zeros flowing in."""
    source = image[:, ::-1] if mirror else image
    padded = np.pad(source, 2)
    return padded[2 - dy : 2 - dy + 28, 2 - dx : 2 - dx + 28]


def test_crop_flip_copies_pixels_exactly_with_a_shift_and_maybe_a_mirror(mnist_data):
    images = unit_batch(mnist_data.test)
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    seen = set()
    for original, moved in zip(images[:, 0].numpy(), out[:, 0].numpy()):
        matches = [(dx, dy, mirror) for dx in range(-2, 3) for dy in range(-2, 3) for mirror in (False, True)
                   if np.array_equal(moved, shifted_and_mirrored(original, dx, dy, mirror))]
        assert matches, "every output is the input moved by whole pixels, mirrored or not"
        seen.add(matches[0])
    assert {mirror for _, _, mirror in seen} == {False, True}
    assert len({(dx, dy) for dx, dy, _ in seen}) >= 8  # the shifts vary from image to image


@pytest.mark.parametrize("policy", [random_affine, random_crop_flip])
def test_a_seeded_generator_gives_the_same_batch(mnist_data, policy):
    images = unit_batch(mnist_data.test, 16)
    first = policy(images, torch.Generator().manual_seed(5))
    second = policy(images, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    assert not torch.equal(first, images)


def test_affine_moves_digits_a_little_and_keeps_their_ink(mnist_data):
    images = unit_batch(mnist_data.test)
    out = random_affine(images, torch.Generator().manual_seed(1))
    ink_before, ink_after = images.sum(dim=(1, 2, 3)), out.sum(dim=(1, 2, 3))
    assert torch.all((ink_after / ink_before - 1).abs() < 0.3)  # scale 0.9-1.1 changes area by < 21%
    assert torch.all(out.amin() >= 0) and torch.all(out.amax() <= 1 + 1e-6)


@pytest.mark.parametrize("dataset, policy", [("mnist", "affine"), ("fashion-mnist", "crop_flip")])
def test_each_dataset_trains_with_its_own_policy(dataset, policy, tmp_path, request, monkeypatch):
    request.getfixturevalue("mnist_raw_dir" if dataset == "mnist" else "fashion_raw")
    used = []
    for name, registered in list(augment.AUGMENTATIONS.items()):
        def recorded(images, generator, _name=name, _transform=registered.transform):
            used.append(_name)
            return _transform(images, generator)
        monkeypatch.setitem(augment.AUGMENTATIONS, name, dataclasses.replace(registered, transform=recorded))
    config = resolve_config(None, dict(dataset=dataset, limit_train=200, epochs=1, batch_size=100, augment=True,
                                       val_size=100, data_dir=str(DATA_DIR), save_dir=str(tmp_path / "m"),
                                       log_dir=str(tmp_path / "r")))
    train(config, log=lambda _line: None)
    assert set(used) == {policy} and DATASETS[dataset].augmentation == policy
