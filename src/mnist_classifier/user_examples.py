"""The user's labelled drawings in `data/user/`: what the demos save and `finetune` learns from.

    store = ExampleStore("data/user")
    saved = store.add(drawing, model_input, label=7, model="simple_cnn", answer=answer)
    saved.counts[7]                 # examples of 7 now stored
    store.undo()                    # removes the last one added (by anyone)
    images, labels = store.arrays() # (N, 28, 28) uint8 inputs and their labels, for training

On disk: `drawings/<id>.png` (the drawing as it was given to the preprocessing),
`inputs/<id>.png` (the 28x28 the model saw) and one JSON line per example in
`examples.jsonl`. Several server processes may write at once: every change to the index
happens under a file lock, images are written to a temporary name and renamed, and a line
is appended with one write, so a crash leaves at worst one unreadable line, which readers
skip with a warning. Torch-free.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from filelock import FileLock, Timeout

from .answer import Answer
from .errors import UserError
from .files import write_atomically

DEFAULT_USER_DATA = Path("data") / "user"
INDEX = "examples.jsonl"
LOCK = ".examples.lock"
MAX_EXAMPLES = 20_000
MAX_BYTES = 200 * 1024 * 1024
LOCK_TIMEOUT = 10.0  # seconds: another process holding the lock longer than this has hung


@dataclass(frozen=True)
class Example:
    id: str
    label: int
    drawing: str  # path relative to the store
    input: str  # path relative to the store: the 28x28 PNG
    time: str  # ISO 8601, UTC
    model: str  # the model that answered when it was saved
    verdict: str | None  # its answer then: "digit", "not_a_digit", or None when none was asked
    answer: int | None  # its best guess then
    confidence: float | None
    bytes: int  # of both PNGs: what the store's size limit counts


@dataclass(frozen=True)
class Saved:
    example: Example
    counts: list[int]  # examples per label after the change

    @property
    def total(self) -> int:
        return sum(self.counts)


class ExampleStore:
    """A folder of labelled drawings; safe to share between processes."""

    def __init__(self, folder: str | Path = DEFAULT_USER_DATA, num_classes: int = 10,
                 max_examples: int = MAX_EXAMPLES, max_bytes: int = MAX_BYTES,
                 warn: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.num_classes, self.max_examples, self.max_bytes = num_classes, max_examples, max_bytes
        self.warn = warn
        self._warned: set[int] = set()  # line numbers already reported: a corrupt line is said once

    @property
    def index(self) -> Path:
        return self.folder / INDEX

    # ------------------------------------------------------------------ reading
    def examples(self) -> list[Example]:
        """Every readable example, oldest first; unreadable lines are skipped with a warning."""
        try:
            text = self.index.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except OSError as error:
            raise UserError(f"cannot read {self.index} ({error.strerror}): check its permissions") from None
        examples = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            example = self._parse(line)
            if example is None:
                if number not in self._warned:
                    self._warned.add(number)
                    self.warn(f"warning: skipping line {number} of {self.index}: not a readable example")
                continue
            examples.append(example)
        return examples

    def _parse(self, line: str) -> Example | None:
        try:
            fields = json.loads(line)
            example = Example(**fields)
        except (ValueError, TypeError):
            return None
        label_ok = type(example.label) is int and 0 <= example.label < self.num_classes
        paths_ok = all(isinstance(p, str) and _inside(p) for p in (example.drawing, example.input))
        return example if label_ok and paths_ok and isinstance(example.bytes, int) else None

    def counts(self) -> list[int]:
        return _counts(self.examples(), self.num_classes)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 28, 28) uint8 model inputs and (N,) int64 labels; examples whose image is gone are skipped."""
        images, labels = [], []
        for example in self.examples():
            path = self.folder / example.input
            # imread of a missing file prints OpenCV's own warning line: ours below says it better
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
            if image is None or image.shape != (28, 28):
                self.warn(f"warning: skipping example {example.id}: {example.input} is missing or not 28x28")
                continue
            images.append(image)
            labels.append(example.label)
        if not images:
            return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)
        return np.stack(images), np.array(labels, np.int64)

    # ------------------------------------------------------------------ writing
    def add(self, drawing: np.ndarray, model_input: np.ndarray, label: int, model: str,
            answer: Answer | None = None) -> Saved:
        """Store one labelled drawing. `drawing`: uint8 grayscale or BGR; `model_input`: (28, 28) uint8."""
        if type(label) is not int or not 0 <= label < self.num_classes:
            raise UserError(f"label must be a whole number 0..{self.num_classes - 1}, got {label!r}")
        if model_input is None or model_input.shape != (28, 28):
            raise UserError("nothing to save: the drawing has no ink")
        drawing_png, input_png = _png(drawing), _png(model_input)
        example_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        example = Example(
            id=example_id, label=label, drawing=f"drawings/{example_id}.png", input=f"inputs/{example_id}.png",
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), model=model,
            verdict=None if answer is None else answer.verdict,
            answer=None if answer is None else answer.best_guess,
            confidence=None if answer is None else round(answer.confidence, 6),
            bytes=len(drawing_png) + len(input_png))
        with self._locked():
            existing = self.examples()
            self._check_room(existing, example.bytes)
            try:
                # Images first: a line never names a file that is not there yet.
                write_atomically(self.folder / example.drawing, drawing_png)
                write_atomically(self.folder / example.input, input_png)
                self._append(example)
            except OSError as error:
                for name in (example.drawing, example.input):
                    (self.folder / name).unlink(missing_ok=True)
                raise UserError(f"cannot save the example in {self.folder} ({error.strerror}): "
                                "free some space or pick another --user-data") from None
            counts = _counts(existing + [example], self.num_classes)
        return Saved(example, counts)

    def undo(self) -> Saved | None:
        """Remove the example added last; None when there is none."""
        with self._locked():
            existing = self.examples()
            if not existing:
                return None
            last = existing[-1]
            # The index is rewritten whole (temporary file + rename), so a crash keeps the old one.
            self._rewrite(existing[:-1])
            for name in (last.drawing, last.input):
                (self.folder / name).unlink(missing_ok=True)
            return Saved(last, _counts(existing[:-1], self.num_classes))

    def _check_room(self, existing: list[Example], adding: int) -> None:
        if len(existing) >= self.max_examples:
            raise UserError(f"{self.folder} already holds {len(existing):,} examples, the limit: "
                            "fine-tune on them, then move them elsewhere to collect more")
        used = sum(example.bytes for example in existing)
        if used + adding > self.max_bytes:
            raise UserError(f"{self.folder} would pass its {self.max_bytes // (1024 * 1024):,} MB limit "
                            f"({used / (1024 * 1024):,.1f} MB used): move some examples elsewhere")

    def _append(self, example: Example) -> None:
        line = json.dumps(asdict(example), separators=(",", ":")) + "\n"
        with open(self.index, "ab") as index:
            # A crash in the middle of an earlier append left a line without its end:
            # end it, so that only that line is lost, not the next one too.
            if index.tell() > 0 and not _ends_with_newline(self.index):
                line = "\n" + line
            index.write(line.encode("utf-8"))
            index.flush()
            os.fsync(index.fileno())

    def _rewrite(self, examples: list[Example]) -> None:
        text = "".join(json.dumps(asdict(example), separators=(",", ":")) + "\n" for example in examples)
        write_atomically(self.index, text.encode("utf-8"))

    def _locked(self) -> FileLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {self.folder} ({error.strerror}): pick another --user-data") from None
        return _TimedLock(str(self.folder / LOCK), timeout=LOCK_TIMEOUT)


class _TimedLock(FileLock):
    """A FileLock whose timeout is a one-line UserError."""

    def __enter__(self):
        try:
            return super().__enter__()
        except Timeout:
            raise UserError(f"{self.lock_file} is held by another process for over {LOCK_TIMEOUT:g} s; "
                            "if none is running, delete that file") from None


def _counts(examples: list[Example], num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for example in examples:
        counts[example.label] += 1
    return counts


def _png(image: np.ndarray) -> bytes:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"cannot encode a drawing of shape {image.shape} as PNG")
    return encoded.tobytes()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def _inside(relative: str) -> bool:
    """A stored path may only point inside the store: the index is data, not a list of files to trust."""
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts
