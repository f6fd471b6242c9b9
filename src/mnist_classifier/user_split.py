"""Which of the user's labelled drawings `finetune` learns, and which it keeps back to measure on.

    mine = read_examples("data/user")              # every readable drawing (user_examples.py's store)
    check_enough(mine.labels, "data/user")         # too few, or a digit missing: says how many more
    learn, measure = hold_back(mine.labels.numpy(), seed=0, images=mine.images.numpy())

A seeded fifth of each digit's drawings is held back (at least one of a digit drawn twice,
never its last), and a drawing saved twice stays on one side: the held-back figure is then
about drawings the tuned model never saw. Fine-tuning a fine-tuned model again, the drawings
it (or a model it was tuned from) learnt are never held back: its checkpoint lists them by
content (`learnt_drawings`), so an undo, an edit or another folder cannot mix them in.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Split, load_local_split
from .datasets import USER_DIGITS
from .errors import UserError, to_stderr
from .user_examples import INDEX

HOLD_BACK_SHARE = 0.2  # of each digit's examples, kept out of training to measure on
MIN_EXAMPLES = 20
LEARNT_KEY = "learnt_drawings"  # in a tuned checkpoint's "finetune" record: digests of what it learnt


def read_examples(folder: str | Path) -> Split:
    """The user's examples (the reader `evaluate --dataset user-digits` uses); warnings go to stderr."""
    folder = Path(folder)
    if not folder.exists():  # a file named instead of its folder: the store says so
        raise UserError(f"no labelled drawings: {folder} does not exist; label digits in `mnist-classifier demo` or "
                        "`serve` (press the right digit after a prediction), or point --user-data at their folder")
    return load_local_split(USER_DIGITS, folder, warn=to_stderr)


def check_enough(labels: torch.Tensor, folder: str | Path, num_classes: int = 10) -> None:
    """Refuse a set too small to learn from and measure on, saying exactly what to add."""
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    missing = [str(digit) for digit, count in enumerate(counts) if count == 0]
    more = max(MIN_EXAMPLES - len(labels), len(missing))
    if more == 0:
        return
    need = f"need at least {MIN_EXAMPLES} labelled drawings with every digit 0-{num_classes - 1} among them"
    if len(labels) == 0:
        unlisted = len(list((Path(folder) / "inputs").glob("*.png")))
        if unlisted:  # the labels live only in the index: "none yet" would send the user to draw them all again
            raise UserError(f"{need}: {Path(folder) / INDEX} lists none, yet {Path(folder) / 'inputs'} holds "
                            f"{unlisted:,} drawings: restore {INDEX} (their labels are only in it), or label digits "
                            "again in `mnist-classifier demo` or `serve`")
        raise UserError(f"{need}: {folder} has none yet; label digits in `mnist-classifier demo` or `serve` "
                        "(press the right digit after a prediction)")
    which = ""
    if missing:
        which = f": {', '.join(missing)}" if more == len(missing) else f", including {', '.join(missing)}"
        which += " (none yet)"
    raise UserError(f"{need}: you have {len(labels)} in {folder}; add {more} more{which}")


def hold_back(labels: np.ndarray, seed: int, share: float = HOLD_BACK_SHARE,
              images: np.ndarray | None = None, learnt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-back) indices: per digit a seeded `share`, at least one when it has two or more, never its last.

    With `images`, identical drawings (the same 28x28 input, saved twice) stay together on
    one side: a copy held back of a drawing trained on would grade the model on its homework.
    `learnt`: bool per drawing, those the starting model learnt already: always trained on, and
    the share is of the others."""
    rng = np.random.default_rng(seed)
    copies = _copy_groups(images) if images is not None else np.arange(len(labels))
    fresh = ~learnt if learnt is not None else np.ones(len(labels), bool)
    held = []
    for digit in np.unique(labels):
        members = np.flatnonzero((labels == digit) & fresh)
        if len(members) == 0:
            continue
        count = min(len(members) - 1, max(1, round(share * len(members))))
        groups = [members[copies[members] == group] for group in np.unique(copies[members])]
        # In a seeded order, smallest first (a stable sort keeps the order among equals); the
        # largest is always learnt, and a group too big for what is left of the share is skipped.
        ordered = sorted((groups[order] for order in rng.permutation(len(groups))), key=len)[:-1]
        mine: list[int] = []
        for group in ordered:
            if len(mine) + len(group) <= count:
                mine.extend(group.tolist())
        held.extend(mine)
    chosen = np.zeros(len(labels), bool)
    chosen[held] = True
    return np.flatnonzero(~chosen), np.flatnonzero(chosen)


def distinct(index: np.ndarray, images: np.ndarray) -> np.ndarray:
    """`index` less the repeats of a drawing saved more than once: each held-back drawing is
    counted and scored once, as the user drew it once (helper-86: 11 held back, 10 drawings)."""
    if len(index) == 0:
        return index
    _, first = np.unique(_copy_groups(images[index]), return_index=True)
    return index[np.sort(first)]


def digests(images: np.ndarray) -> list[str]:
    """A short SHA-256 per 28x28 drawing: how a tuned checkpoint names the drawings it learnt."""
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16] for image in images]


def learnt_list(record: Any) -> tuple[list[str], str | None]:
    """(the digests a "finetune" `record` lists as learnt, what is wrong with the list): no record (a
    trained model) lists none; "missing": tuned before the list was kept; "damaged": not a list of
    digests, of which the ones still readable are kept."""
    if record is None:
        return [], None
    if isinstance(record, dict) and LEARNT_KEY not in record:
        return [], "missing"
    listed = record.get(LEARNT_KEY) if isinstance(record, dict) else None
    kept = [digest for digest in listed if isinstance(digest, str)] if isinstance(listed, list) else []
    return kept, None if isinstance(listed, list) and len(kept) == len(listed) else "damaged"


def learnt_mask(listed: list[str], images: np.ndarray) -> np.ndarray:
    """bool per drawing: among the `listed` digests (learnt by the model to start from)."""
    return np.isin(np.array(digests(images), dtype=object), np.array(listed, dtype=object))


def _copy_groups(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> (N,) the same number for identical images."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.unique(flat, axis=0, return_inverse=True)[1].reshape(-1)


def pick(split: Split, index: np.ndarray) -> Split:
    index = torch.from_numpy(index)
    return Split(split.images[index], split.labels[index])
