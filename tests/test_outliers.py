"""Generated non-digits: seeded, shaped like what the model sees, and never a digit in disguise."""
from __future__ import annotations

import numpy as np
import pytest

from mnist_classifier.errors import UserError
from mnist_classifier.doodles import GLYPHS
from mnist_classifier.outliers import TRAINING_FAMILIES, cut_digits, generate_family, generate_outliers


@pytest.fixture(scope="module")
def digits(mnist_data):
    return mnist_data.train.images[:20_000].numpy(), mnist_data.train.labels[:20_000].numpy()


def _ink_components(image: np.ndarray) -> int:
    import cv2

    count, _labels, stats, _ = cv2.connectedComponentsWithStats((image > 64).astype(np.uint8))
    return int((stats[1:, cv2.CC_STAT_AREA] >= 6).sum())


@pytest.mark.parametrize("family", TRAINING_FAMILIES)
def test_each_family_is_seeded_inked_and_centred_like_to_mnist_output(family, digits):
    first = generate_family(family, 60, seed=7, digits=digits)
    assert first.shape == (60, 28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, generate_family(family, 60, seed=7, digits=digits))  # same seed, same drawings
    assert not np.array_equal(first, generate_family(family, 60, seed=8, digits=digits))
    assert first.any(axis=(1, 2)).all()  # every one has ink
    # to_mnist placed each: the ink's box fits MNIST's 20 px and its centre of mass is near (14, 14)
    grid = np.arange(28)
    mass = first.sum(axis=(1, 2)).astype(float)
    rows, cols = first.sum(axis=2) @ grid / mass, first.sum(axis=1) @ grid / mass
    assert np.abs(rows - 14).max() < 2.5 and np.abs(cols - 14).max() < 2.5


def test_the_mix_holds_every_family_in_equal_shares(digits):
    mixed = generate_outliers(100, seed=3, digits=digits)
    assert mixed.shape == (100, 28, 28)
    shares = [generate_family(name, 20, seed=3, digits=digits) for name in TRAINING_FAMILIES]
    # each family's drawings are in the mix (shuffled), 20 of each
    for images in shares:
        assert all(any(np.array_equal(image, other) for other in mixed) for image in images[:5])


def test_glyphs_leave_out_every_character_that_reads_as_a_digit():
    looks_like_digits = set("OoQDlIij|!Zz?Ss$bGTtB&gqPpAhyCcUuVvLJ")
    assert not looks_like_digits & set(GLYPHS)
    assert not set("0123456789") & set(GLYPHS)


def test_fragments_come_from_digits_other_than_1_and_keep_part_of_their_ink(digits):
    images, labels = digits
    cut = cut_digits(np.random.default_rng(0), digits, 80)
    assert len(cut.images) == 80
    assert (labels[cut.sources] != 1).all()
    share = cut.pieces.astype(float).sum(axis=(1, 2)) / images[cut.sources].astype(float).sum(axis=(1, 2))
    assert ((share >= 0.30) & (share <= 0.65)).all(), share
    # a piece is a part of its source: no ink where the source had none
    assert (cut.pieces <= images[cut.sources]).all()


def test_pairs_show_two_separate_digits_most_of_the_time(digits):
    pairs = generate_family("pair", 100, seed=1, digits=digits)
    two_or_more = np.mean([_ink_components(image) >= 2 for image in pairs])
    assert two_or_more >= 0.8, two_or_more


def test_unknown_family_names_the_choices(digits):
    with pytest.raises(UserError, match="scribble"):
        generate_family("letters", 5, seed=0, digits=digits)
