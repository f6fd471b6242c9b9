"""Generated non-digits: seeded, shaped like what the model sees, and never a digit in disguise."""
from __future__ import annotations

import numpy as np
import pytest

from mnist_classifier.errors import UserError
from mnist_classifier import doodles
from mnist_classifier.doodles import GLYPHS
from mnist_classifier.outliers import (TRAINING_FAMILIES, TRAINING_SHARES, cut_digits, family_sizes, fashion_as_ink,
                                       generate_family, generate_outliers, training_pool, training_shares)


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


def test_the_mix_holds_every_family_in_its_share(digits):
    mixed = generate_outliers(100, seed=3, digits=digits)
    assert mixed.shape == (100, 28, 28)
    sizes = family_sizes(100)
    assert sum(sizes.values()) == 100 and set(sizes) == set(TRAINING_FAMILIES)
    assert sizes == {name: 20 for name in TRAINING_FAMILIES}
    for name, size in sizes.items():
        images = generate_family(name, size, seed=3, digits=digits)
        # each family's drawings are in the mix (shuffled)
        assert all(any(np.array_equal(image, other) for other in mixed) for image in images[:5])


def test_a_training_pool_gives_the_pieces_their_share_and_the_other_families_the_rest(digits):
    shares = training_shares(0.35)
    assert shares["fragment"] == 0.35 and sum(shares.values()) == pytest.approx(1.0)
    assert [shares[name] for name in TRAINING_FAMILIES if name != "fragment"] == pytest.approx([0.1625] * 4)
    assert training_shares() == TRAINING_SHARES == {name: 0.2 for name in TRAINING_FAMILIES}
    pool = training_pool(*digits, count=40, seed=5, shares=training_shares(0.5))
    pieces = generate_family("fragment", 20, seed=5, digits=digits)
    assert sum(any(np.array_equal(image, piece) for piece in pieces) for image in pool) == 20
    with pytest.raises(UserError, match="fragment_share"):
        training_shares(1.2)


def test_family_sizes_add_up_for_any_count():
    for count in (0, 1, 7, 99, 16_000):
        assert sum(family_sizes(count).values()) == count
    assert family_sizes(10, {"scribble": 1, "glyph": 1}) == {"scribble": 5, "glyph": 5}


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


def _size_to_stroke(drawing: np.ndarray) -> float:
    """Longer side of the ink's box over its mean stroke width (2 * area / outline length)."""
    ink = drawing > 127
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    padded = np.pad(ink, 1)
    outline = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(padded[:, 1:] != padded[:, :-1])
    width = 2 * ink.sum() / (outline * np.pi / 4)  # pixel edges overstate a curve's length by 4/pi
    return max(rows[-1] - rows[0], cols[-1] - cols[0]) / width


@pytest.mark.parametrize("draw", [
    doodles.scribble_drawing,
    doodles.shape_drawing,
    pytest.param(doodles.glyph_drawing, marks=pytest.mark.xfail(strict=True, reason=(
        "OpenCV 5's putText draws Hershey fonts as bold outline fonts whatever the thickness: "
        "strokes come out ~1/5 of the glyph instead of 1/12-1/16"))),
])
def test_drawings_use_a_thin_pen_like_a_mouse(draw):
    # 12-16 pen widths across by design; this estimate reads a drawn square of 14 as 10,
    # and a bold pen (a fifth of the size, as cv2's fonts come out) as under 5.
    rng = np.random.default_rng(5)
    ratios = [_size_to_stroke(draw(rng)) for _ in range(150)]
    assert np.median(ratios) > 6.5, np.median(ratios)  # scribbles ~7.8, shapes ~9.4, glyphs ~4.5


def test_fashion_items_are_fitted_and_blank_ones_dropped(mnist_data):
    items = np.zeros((4, 28, 28), np.uint8)
    items[1, 2:26, 4:24] = 200  # a solid garment-like block, off centre
    items[3] = mnist_data.test.images[0].numpy()
    fitted = fashion_as_ink(items)
    assert fitted.shape == (2, 28, 28) and fitted.dtype == np.uint8
    rows = np.flatnonzero(fitted[0].any(axis=1))
    assert rows[-1] - rows[0] + 1 == 20  # to_mnist's 20-px box, not fill_frame's 28


def test_the_not_a_digit_class_is_an_eleventh_logit_fixed_at_zero():
    import math

    import torch
    import torch.nn.functional as F

    from mnist_classifier.exposure import Exposure

    exposure = Exposure(outlier_weight=0.25, target="class")
    labels = torch.tensor([3])
    # worked by hand: all logits 0 -> each of the 11 classes 1/11, so each cross-entropy is log 11
    flat = exposure.loss(torch.zeros(2, 10), labels, label_smoothing=0.0)
    assert flat.item() == pytest.approx(math.log(11) * (1 + 0.25))
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = exposure.loss(logits, torch.tensor([1, 7]), label_smoothing=0.1)
    eleven = torch.cat((logits, torch.zeros(5, 1)), dim=1)
    expected = (F.cross_entropy(eleven[:2], torch.tensor([1, 7]), label_smoothing=0.1)
                + 0.25 * F.cross_entropy(eleven[2:], torch.full((3,), 10)))
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert (logits.grad[2:] > 0).all()  # every non-digit's digit logits are pushed down, towards "not a digit"
    # without non-digits in the batch it is the plain 10-class loss (clothes train so)
    assert exposure.loss(logits[:2], torch.tensor([1, 7]), 0.1).item() == pytest.approx(
        F.cross_entropy(logits[:2], torch.tensor([1, 7]), label_smoothing=0.1).item())


def test_digits_shown_on_paper_are_what_the_preprocessing_returns(mnist_data):
    import cv2
    import torch

    from mnist_classifier.exposure import Exposure
    from mnist_classifier.preprocess import digits_on_paper, to_mnist

    split = mnist_data.train
    digits = split.images[:64]
    on_paper = torch.from_numpy(digits_on_paper(digits.numpy()))
    enlarged = cv2.resize(digits[5].numpy(), (56, 56), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(on_paper[5].numpy(), to_mnist(255 - enlarged).image)  # dark on light, 2x
    assert not torch.equal(on_paper, digits)  # softer edges, re-centred: not the same pixels
    exposure = Exposure(paper_share=0.5, on_paper=on_paper)
    indices = torch.arange(64)
    shown = exposure.digits(split, indices, torch.Generator().manual_seed(3))
    from_paper = (shown == on_paper).all(dim=(1, 2)) & ~(shown == digits).all(dim=(1, 2))
    as_written = (shown == digits).all(dim=(1, 2))
    assert (from_paper | as_written).all() and 16 <= from_paper.sum() <= 48  # about half, each one or the other
    assert torch.equal(shown, exposure.digits(split, indices, torch.Generator().manual_seed(3)))  # seeded


def test_the_energy_target_hinges_the_digit_score_on_both_sides():
    import math

    import torch
    import torch.nn.functional as F

    from mnist_classifier.exposure import ENERGY_MARGINS, Exposure

    exposure = Exposure(outlier_weight=0.3, target="energy")
    low, high = ENERGY_MARGINS
    # worked by hand: 10 equal logits c have logsumexp c + log 10
    digit = torch.full((1, 10), high - math.log(10) - 1.0)  # one short of the digits' margin
    non_digit = torch.full((1, 10), low - math.log(10) + 2.0)  # two over the non-digits' margin
    logits = torch.cat((digit, non_digit)).requires_grad_()
    loss = exposure.loss(logits, torch.tensor([4]), label_smoothing=0.0)
    assert loss.item() == pytest.approx(math.log(10) + 0.3 * (1.0 ** 2 + 2.0 ** 2), rel=1e-5)
    loss.backward()
    assert (logits.grad[1] > 0).all()  # the non-digit's logits are pushed down
    # inside both margins only the digits' cross-entropy is left
    apart = torch.cat((torch.full((1, 10), high), torch.full((1, 10), low - 5.0)))
    assert exposure.loss(apart, torch.tensor([4]), 0.0).item() == pytest.approx(
        F.cross_entropy(apart[:1], torch.tensor([4])).item())
