"""Review by eye of the held-out non-digits: which of them a reader takes for a digit.

The generators make some drawings that are digits after all (a coil with a tail is a 6, the
top of a 9 is a 7). Refusing those would be wrong, so `evaluate` scores refusal on the
reviewed sets too: the held-out images most reviewers judged to be no digit.

The rule each reviewer applies: an image is a digit only when someone who saw the drawing
alone would read it as one specific digit without hesitating; anything ambiguous (2 or Z,
5 or S, a mirrored 6), letter-like or a mere mark is not. The stored review (4 Dec 2026):
three independent reviewers, AI assistants judging each numbered image by eye, blind to the
model's answers and to each other's; a digit when at least two of them read it as one
(fragments: 55 of 1,000, any one reviewer 87; scribbles: 19, any one 26).

    python scripts/review_non_digits.py sheets --family fragment --out /tmp/sheets
    #   -> numbered contact sheets of the held-out images, no model verdicts on them (review blind)
    python scripts/review_non_digits.py store --family fragment --votes anna.txt ben.txt cleo.txt
    #   -> the images and each reviewer's readings (lines `index digit`) into src/mnist_classifier/reviewed/

The images are stored, not regenerated, so the review stays valid when a generator changes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from mnist_classifier.data import load_data
from mnist_classifier.honesty import REVIEWED_DIR, held_out_family, reads_as_digit, reviewed_path
from mnist_classifier.outliers import TRAINING_FAMILIES

SHEET_SIDE = 10  # images per row and column of a contact sheet
ZOOM = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("sheets", "store"))
    parser.add_argument("--family", required=True, choices=TRAINING_FAMILIES)
    parser.add_argument("--out", type=Path, default=Path("reports/review_sheets"), help="sheets: folder for the PNGs")
    parser.add_argument("--votes", nargs="+", type=Path, default=[],
                        help="store: one file per reviewer, a line `index digit` for each image read as a digit")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args(argv)
    if args.action == "store" and not args.votes:
        parser.error("store needs --votes: one file per reviewer")
    test = load_data(args.data_dir, log=lambda _line: None).test
    images = held_out_family(args.family, test)
    if args.action == "sheets":
        for path in write_sheets(images, args.out / args.family):
            print(path)
        return 0
    votes = np.stack([read_votes(path, len(images)) for path in args.votes], axis=1)
    REVIEWED_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(reviewed_path(args.family), images=images, votes=votes,
                        reviewers=np.array([path.stem for path in args.votes]))
    print(f"{reviewed_path(args.family)}: {len(images)} images, {reads_as_digit(votes).sum()} read as digits by most "
          f"of {votes.shape[1]} reviewers (by any: {(votes >= 0).any(axis=1).sum()})")
    return 0


def read_votes(path: Path, count: int) -> np.ndarray:
    """(count,) the digit the reviewer read in each image, -1 where none."""
    votes = np.full(count, -1, np.int8)
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not all(part.isdigit() for part in parts) or int(parts[0]) >= count or int(parts[1]) > 9:
            raise SystemExit(f"error: {path}:{number}: {line.strip()!r} is not `index digit` "
                             f"(index 0-{count - 1}, digit 0-9); fix the line and store again")
        votes[int(parts[0])] = int(parts[1])
    return votes


def write_sheets(images: np.ndarray, folder: Path) -> list[Path]:
    """PNG sheets of SHEET_SIDE x SHEET_SIDE images, ink dark on paper, each numbered."""
    folder.mkdir(parents=True, exist_ok=True)
    per_sheet, cell = SHEET_SIDE * SHEET_SIDE, 28 * ZOOM + 16
    paths = []
    for first in range(0, len(images), per_sheet):
        sheet = np.full((cell * SHEET_SIDE, cell * SHEET_SIDE), 255, np.uint8)
        for offset, image in enumerate(images[first:first + per_sheet]):
            top, left = divmod(offset, SHEET_SIDE)
            y, x = top * cell + 14, left * cell + 8
            sheet[y:y + 28 * ZOOM, x:x + 28 * ZOOM] = 255 - cv2.resize(image, None, fx=ZOOM, fy=ZOOM,
                                                                       interpolation=cv2.INTER_NEAREST)
            cv2.putText(sheet, str(first + offset), (x, y - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1, cv2.LINE_AA)
        paths.append(folder / f"{first:04d}.png")
        cv2.imwrite(str(paths[-1]), sheet)
    return paths


if __name__ == "__main__":
    sys.exit(main())
