"""scripts/review_non_digits.py: contact sheets to review by eye, and the stored verdicts."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

import mnist_classifier.honesty as honesty

from .conftest import DATA_DIR, REPO_ROOT


@pytest.fixture(scope="module")
def review():
    spec = importlib.util.spec_from_file_location("review_non_digits", REPO_ROOT / "scripts" / "review_non_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def held_out_pieces(mnist_data):
    return honesty.held_out_family("fragment", mnist_data.test)


def test_sheets_number_every_held_out_image(review, held_out_pieces, tmp_path, mnist_raw_dir):
    assert review.main(["sheets", "--family", "fragment", "--out", str(tmp_path), "--data-dir", str(DATA_DIR)]) == 0
    sheets = sorted((tmp_path / "fragment").glob("*.png"))
    assert [path.name for path in sheets] == [f"{first:04d}.png" for first in range(0, 1000, 100)]
    sheet = np.asarray(Image.open(sheets[0]))
    cell = 28 * review.ZOOM + 16
    assert sheet.shape == (10 * cell, 10 * cell)
    first = sheet[14:14 + 28 * review.ZOOM:review.ZOOM, 8:8 + 28 * review.ZOOM:review.ZOOM]
    assert (first == 255 - held_out_pieces[0]).all()  # image 0, ink dark on paper, top left


def test_store_keeps_what_most_reviewers_read_as_a_digit(review, held_out_pieces, tmp_path, monkeypatch, mnist_raw_dir):
    monkeypatch.setattr(review, "REVIEWED_DIR", tmp_path)
    monkeypatch.setattr(honesty, "REVIEWED_DIR", tmp_path)
    readings = {"ann": "3 7\n10 2\n", "bo": "3 7\n11 5\n", "cy": "3 1\n10 2\n999 4\n"}
    for name, text in readings.items():
        (tmp_path / f"{name}.txt").write_text(text)
    votes = [str(tmp_path / f"{name}.txt") for name in readings]
    assert review.main(["store", "--family", "fragment", "--votes", *votes, "--data-dir", str(DATA_DIR)]) == 0
    with np.load(tmp_path / "fragment.npz") as stored:
        assert np.flatnonzero(honesty.reads_as_digit(stored["votes"])).tolist() == [3, 10]  # 11, 999: one reader each
        assert stored["votes"][3].tolist() == [7, 7, 1] and list(stored["reviewers"]) == list(readings)
        assert (stored["images"] == held_out_pieces).all()


def test_a_malformed_reading_names_the_file_and_line(review, tmp_path):
    (tmp_path / "ann.txt").write_text("3 7\n12 seven\n")
    with pytest.raises(SystemExit, match=r"ann.txt:2: '12 seven' is not `index digit`"):
        review.read_votes(tmp_path / "ann.txt", 1000)
    (tmp_path / "bo.txt").write_text("1000 7\n")
    with pytest.raises(SystemExit, match="index 0-999"):
        review.read_votes(tmp_path / "bo.txt", 1000)
