"""strokes.py and skeletons.py on real MNIST: re-drawn digits have the pen's width, stay where they were, and
the compact distances are exact, batch-independent and safe on empty images."""
from __future__ import annotations

import math

import pytest
import torch

from mnist_classifier.skeletons import FAR, INK_THRESHOLD
from mnist_classifier.strokes import (PEN_WIDTH_RANGE, PEN_WIDTHS_BENCHMARK, random_pen_widths, redraw,
                                      skeleton_distances, uniform_pen_images)

# More than one 1,024-image flood-fill chunk, so chunk boundaries are exercised too.
SAMPLE = 2000


@pytest.fixture(scope="module")
def digits(mnist_data) -> torch.Tensor:
    return mnist_data.test.images[:SAMPLE]


@pytest.fixture(scope="module")
def distances(digits) -> torch.Tensor:
    return skeleton_distances(digits)


def skeleton_length(skeletons: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N,) length in px of the 8-connected path: 1 per straight step, sqrt(2) per
    diagonal step that no orthogonal corner already covers."""
    s = skeletons.float()
    straight = (s[:, :, :-1] * s[:, :, 1:]).sum((1, 2)) + (s[:, :-1] * s[:, 1:]).sum((1, 2))

    def uncovered(a, b, corner1, corner2):
        return (a * b * (1 - (corner1 + corner2).clamp(max=1))).sum((1, 2))

    diagonal = (uncovered(s[:, :-1, :-1], s[:, 1:, 1:], s[:, :-1, 1:], s[:, 1:, :-1])
                + uncovered(s[:, :-1, 1:], s[:, 1:, :-1], s[:, :-1, :-1], s[:, 1:, 1:]))
    return straight + math.sqrt(2) * diagonal


def stroke_thickness(ink: torch.Tensor, skeletons: torch.Tensor) -> torch.Tensor:
    """(N, H, W) ink in [0, 1] -> (N,) mean stroke width in px: ink area / skeleton length."""
    return ink.sum((1, 2)) / skeleton_length(skeletons)


def full_widths(count: int, width: float) -> torch.Tensor:
    return torch.full((count,), width)


def test_redrawn_strokes_have_the_pen_width_whatever_the_original_thickness(digits, distances):
    skeletons = distances == 0
    original = stroke_thickness(digits.float() / 255, skeletons)
    order = original.argsort()
    thin, thick = order[:200], order[-200:]
    # The groups really differ: pressure made the thick writers' strokes >2x wider.
    assert original[thick].median() > 2 * original[thin].median()
    for width in PEN_WIDTHS_BENCHMARK:
        redrawn = stroke_thickness(redraw(distances, full_widths(SAMPLE, width)), skeletons)
        thin_width, thick_width = redrawn[thin].median().item(), redrawn[thick].median().item()
        assert thin_width == pytest.approx(width, rel=0.08)
        assert thick_width == pytest.approx(width, rel=0.08)
        assert thick_width == pytest.approx(thin_width, rel=0.08)


def test_diagonal_strokes_come_out_as_wide_as_straight_ones():
    """Distances to skeleton pixel centres alone would draw a thin pen's diagonals ~30% thinner."""
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    steps = torch.arange(4, 24)
    for offset in (-1, 0, 1):  # 3 px thick bars: one straight, one diagonal
        images[0, 14 + offset, 4:24] = 255
        images[1, steps, (steps + offset).clamp(0, 27)] = 255
    distances = skeleton_distances(images)
    for width in PEN_WIDTHS_BENCHMARK:
        straight, diagonal = stroke_thickness(redraw(distances, full_widths(2, width)), distances == 0)
        assert diagonal.item() == pytest.approx(straight.item(), rel=0.1)  # the bug this catches is 30%


def test_skeleton_is_thin_and_lies_inside_the_original_ink(digits, distances):
    skeletons = distances == 0
    assert skeletons.flatten(1).any(dim=1).all(), "every MNIST digit has a skeleton"
    assert (digits[skeletons] >= INK_THRESHOLD).all()
    ink_area = (digits >= INK_THRESHOLD).sum()
    assert skeletons.sum() < 0.5 * ink_area  # thinned, not the binarised digit itself
    # Away from the skeleton distances grow: a pixel next to it is at most sqrt(2) px away.
    beside = torch.nn.functional.max_pool2d(skeletons[:, None].float(), 3, stride=1, padding=1)[:, 0].bool()
    assert (distances[beside] <= round(math.sqrt(2) * 16)).all()
    assert (distances[~beside] >= 16).all()


def test_redraw_is_deterministic_and_per_image(distances):
    widths = random_pen_widths(SAMPLE, torch.Generator().manual_seed(5))
    batch = redraw(distances, widths)
    assert batch.dtype == torch.float32 and batch.shape == distances.shape
    assert 0 <= batch.min() and batch.max() <= 1
    assert torch.equal(batch, redraw(distances, widths))
    for i in (0, 17, SAMPLE - 1):
        assert torch.equal(batch[i], redraw(distances[i:i + 1], widths[i:i + 1])[0])


def test_distances_of_an_image_do_not_depend_on_its_batch(digits, distances):
    for i in (0, 1023, 1024, SAMPLE - 1):  # either side of a flood-fill chunk boundary
        assert torch.equal(skeleton_distances(digits[i:i + 1])[0], distances[i])


def test_distances_are_the_same_on_one_thread_as_on_several(digits, distances):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = skeleton_distances(digits)
        torch.set_num_threads(3)  # three chunks: boundaries that no flood-fill chunk has
        three_threads = skeleton_distances(digits)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one_thread, distances) and torch.equal(three_threads, distances)


def centres_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 2) (row, column) of each image's ink."""
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = images.float()
    total = mass.sum((1, 2))
    return torch.stack(((mass * rows).sum((1, 2)) / total, (mass * cols).sum((1, 2)) / total), dim=1)


def test_uniform_pen_keeps_each_digit_where_it_was(digits):
    sample = digits[:500]
    for width in PEN_WIDTHS_BENCHMARK:
        redrawn = uniform_pen_images(sample, width)
        assert redrawn.dtype == torch.uint8 and redrawn.shape == sample.shape
        moves = centres_of_mass(redrawn) - centres_of_mass(sample)
        # Ink moves when pressure made one end of a stroke heavier, and a pixel skeleton of
        # an even-width stroke sits half a pixel off its centre (up-left, ~0.2 px on average).
        assert moves.mean(dim=0).abs().max() < 0.35
        assert moves.norm(dim=1).median() < 0.75
        assert moves.norm(dim=1).quantile(0.95) < 1.5


def test_a_symmetric_stroke_is_redrawn_exactly_where_it_was():
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 6:22, 12:15] = 255  # a 3 px bar: its skeleton is its centre line
    for width in PEN_WIDTHS_BENCHMARK:
        moves = centres_of_mass(uniform_pen_images(image, width)) - centres_of_mass(image)
        assert moves.abs().max() < 0.1


def test_an_all_black_image_is_redrawn_empty_and_leaves_its_batch_alone(digits):
    batch = torch.cat([torch.zeros(1, 28, 28, dtype=torch.uint8), digits[:1]])
    distances = skeleton_distances(batch)
    assert (distances[0] == FAR).all()
    assert (redraw(distances, full_widths(2, PEN_WIDTHS_BENCHMARK[-1]))[0] == 0).all()
    redrawn = uniform_pen_images(batch, 2.5)
    assert (redrawn[0] == 0).all()
    assert torch.equal(redrawn[1], uniform_pen_images(digits[:1], 2.5)[0])
    assert skeleton_distances(batch[:0]).shape == (0, 28, 28)
    blank_stack = torch.zeros(40, 28, 28, dtype=torch.uint8)  # more than one thinning stack, on any thread count
    assert (skeleton_distances(blank_stack) == FAR).all()


def test_random_pen_widths_are_seeded_and_span_the_range():
    low, high = PEN_WIDTH_RANGE
    widths = random_pen_widths(1000, torch.Generator().manual_seed(0))
    assert torch.equal(widths, random_pen_widths(1000, torch.Generator().manual_seed(0)))
    assert low <= widths.min() < low + 0.1 and high - 0.1 < widths.max() <= high
