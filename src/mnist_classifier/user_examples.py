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
skip with a one-line warning naming its problem, and images no line names, which the next
process to add an example removes (the dying add named them in a journal first; no other
image is ever removed for want of a line: an index moved away or re-encoded names none). Torch-free.

A readable line is a JSON object with exactly the fields of `Example`; its label a bare
whole number 0..9 (`"3"` and `3.0` are refused, as `add` refuses them, rather than
guessed at), its two paths inside the folder. An unreadable line is never rewritten or
dropped, by `undo` neither: a user may mend it by hand.
"""
from __future__ import annotations

import codecs
import json
import numbers
import os
import re
import time
import uuid
from contextlib import suppress
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from filelock import FileLock, Timeout

from .answer import Answer
from .errors import UserError
from .files import OUT_OF_ROOM, ROOM_FIX, write_atomically

DEFAULT_USER_DATA = Path("data") / "user"
INDEX = "examples.jsonl"
LOCK = ".examples.lock"
JOURNAL = ".adding"  # the images an add is writing, until its line is in the index
MAX_EXAMPLES = 20_000
MAX_BYTES = 200 * 1024 * 1024
_EXAMPLE_IMAGE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}\.png")  # the names `add` gives
_NAMED_IMAGE = re.compile(rb"(?:drawings|inputs)/" + _EXAMPLE_IMAGE.pattern.encode())  # in the index's bytes
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


@dataclass(frozen=True)
class _Line:
    """One line of the index."""

    number: int  # from 1, as an editor counts
    raw: bytes  # exactly as on disk, its line end included: what undo writes back for every other line
    example: Example | None  # None: blank or unreadable


class ExampleStore:
    """A folder of labelled drawings; safe to share between processes."""

    def __init__(self, folder: str | Path = DEFAULT_USER_DATA, num_classes: int = 10,
                 max_examples: int = MAX_EXAMPLES, max_bytes: int = MAX_BYTES,
                 warn: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.num_classes, self.max_examples, self.max_bytes = num_classes, max_examples, max_bytes
        self.warn = warn
        self._warned: set[int] = set()  # line numbers already reported: a corrupt line is said once
        self._swept = False  # temporary files of a killed writer are removed at this store's first add

    @property
    def index(self) -> Path:
        return self.folder / INDEX

    @property
    def journal(self) -> Path:
        return self.folder / JOURNAL

    # ------------------------------------------------------------------ reading
    def examples(self) -> list[Example]:
        """Every readable example, oldest first; unreadable lines are skipped with a warning."""
        return [line.example for line in self._lines() if line.example is not None]

    def _lines(self) -> list[_Line]:
        """Every line of the index as it is on disk, parsed; each unreadable one is warned about once."""
        lines = []
        for number, raw in enumerate(_split_lines(self._index_bytes()), start=1):
            text = raw.decode("utf-8", errors="replace").strip().removeprefix("\ufeff")  # an editor's BOM
            example, problem = self._parse(text) if text else (None, "")
            if problem:
                self._warn_once(number, problem)
            lines.append(_Line(number, raw, example))
        return lines

    def _index_bytes(self) -> bytes:
        self._refuse_a_file()
        try:
            return _utf8_or_refused(self.index, self.index.read_bytes())
        except FileNotFoundError:
            return b""
        except IsADirectoryError:
            raise UserError(f"{self.index} is a folder, where the index of labelled drawings belongs: move it "
                            "away, or name another --user-data folder") from None
        except OSError as error:
            raise UserError(f"cannot read {self.index} ({error.strerror}): check its permissions") from None

    def _refuse_a_file(self) -> None:
        if not self.folder.is_file():
            return
        if self.folder.name == INDEX:  # the index named instead of its folder
            raise UserError(f"{self.folder} is a file: name the folder that holds it ({self.folder.parent})")
        raise UserError(f"{self.folder} is a file, not a folder for labelled drawings: name a folder (default "
                        f"{DEFAULT_USER_DATA})")

    def check_usable(self) -> None:
        """Refuse, at start-up, a folder the first label could not be saved in: a file, or a place this
        process may not write (checked, not created: a run that labels nothing leaves nothing behind)."""
        self._refuse_a_file()
        existing = next(folder for folder in (self.folder, *self.folder.absolute().parents) if folder.exists())
        if not existing.is_dir():
            raise UserError(f"{self.folder} cannot be a folder: {existing} is a file; name another folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"cannot save labelled drawings in {self.folder}: {existing} is not writable; "
                            "name another folder or fix its permissions")

    def _parse(self, text: str) -> tuple[Example | None, str]:
        """(the example, "") or (None, what is wrong with the line, in a few words)."""
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            return None, f"invalid JSON ({error.msg.removesuffix(' at')} at column {error.colno})"  # not "at at"
        except RecursionError:
            return None, "invalid JSON (nested too deeply)"
        except ValueError:  # Python refuses to read an integer of more than 4,300 digits
            return None, "invalid JSON (a number too long to read)"
        if not isinstance(fields, dict):
            return None, f"{_shown(fields)} is not a JSON object"
        problem = self._fields_problem(fields)
        return (None, problem) if problem else (Example(**fields), "")

    def _fields_problem(self, fields: dict) -> str:
        expected = [field.name for field in dataclass_fields(Example)]
        missing = [name for name in expected if name not in fields]
        if missing:
            return f"missing the field{'s' * (len(missing) > 1)} {', '.join(map(_shown, missing))}"
        unknown = [name for name in fields if name not in expected]
        if unknown:
            return f"unknown field{'s' * (len(unknown) > 1)} {', '.join(map(_shown, unknown))}"
        label = fields["label"]
        if type(label) is not int or not 0 <= label < self.num_classes:
            return self._label_problem(label)
        for name in ("drawing", "input"):
            if not (isinstance(fields[name], str) and _inside(fields[name])):
                return f"{name} {_shown(fields[name])} is not a path inside {self.folder}"
        if not isinstance(fields["bytes"], int):
            return f"bytes {_shown(fields['bytes'])} is not a whole number"
        return ""

    def _label_problem(self, label: object) -> str:
        said = f"label {_shown(label)} is not a class 0..{self.num_classes - 1}"
        if type(label) is int:
            return said
        # The usual hand edit: a quoted or decimal label. Say what the reader expects instead of guessing.
        return f'{said}: a label is a bare whole number, 3 not "3" or 3.0'

    def _warn_once(self, number: int, problem: str) -> None:
        if number not in self._warned:
            self._warned.add(number)
            self.warn(f"warning: skipping line {number} of {self.index}: {problem}; mend or delete that line to "
                      "use the rest without this warning")

    def counts(self) -> list[int]:
        """Examples per label, as finetune can learn them: one whose image was deleted is not counted (helper-86)."""
        return self._learnable_counts(self.examples())

    def _learnable_counts(self, examples: list[Example]) -> list[int]:
        return _counts([example for example in examples if (self.folder / example.input).is_file()], self.num_classes)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 28, 28) uint8 model inputs and (N,) int64 labels; examples whose image is gone are skipped.

        No index, or an empty one, gives N = 0; an index whose lines are all unreadable is a UserError,
        as "no examples yet" would send the user to draw afresh rather than mend the file."""
        images, labels = [], []
        lines = [line for line in self._lines() if line.raw.strip()]
        self._refuse_lost_inputs(lines)
        for line in lines:
            if line.example is None:
                continue
            image, problem = self._input_image(line.example)
            if problem:
                self._warn_once(line.number, problem)
                continue
            images.append(image)
            labels.append(line.example.label)
        if lines and not images:
            raise UserError(self._none_readable(len(lines)))
        if not images:
            return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)
        return np.stack(images), np.array(labels, np.int64)

    def _refuse_lost_inputs(self, lines: list[_Line]) -> None:
        """Every readable line's image gone at once: one line about the folder, not a warning per line
        that would send the user to delete labels that are fine."""
        inputs = {(self.folder / line.example.input).parent for line in lines if line.example is not None}
        if inputs and not any(folder.is_dir() for folder in inputs):
            raise UserError(f"{', '.join(sorted(map(str, inputs)))} is missing: the 28x28 images of the "
                            f"{sum(line.example is not None for line in lines)} labelled drawings in {self.index} "
                            "were there; restore it (the lines themselves are fine)")

    def _input_image(self, example: Example) -> tuple[np.ndarray | None, str]:
        """(the 28x28 the model saw, "") or (None, what is wrong with its PNG)."""
        path = self.folder / example.input
        if not path.is_file():  # imread of a missing file prints OpenCV's own warning line: ours says it better
            return None, f"its input image {example.input} is missing"
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            return None, f"its input image {example.input} is not a readable PNG"
        if image.shape != (28, 28):
            return None, f"its input image {example.input} is {image.shape[1]}x{image.shape[0]}, not 28x28"
        return image, ""

    def _none_readable(self, count: int) -> str:
        if count == 1:
            said = f"the one line of {self.index} is not readable (see the warning above): mend or delete it"
        else:
            said = (f"none of the {count} lines of {self.index} is readable (see the warnings above): "
                    "mend or delete them")
        return f"{said}, or label new drawings in `mnist-classifier demo` or `serve`"

    # ------------------------------------------------------------------ writing
    def add(self, drawing: np.ndarray, model_input: np.ndarray, label: int, model: str,
            answer: Answer | None = None) -> Saved:
        """Store one labelled drawing. `drawing`: uint8 grayscale or BGR; `model_input`: (28, 28) uint8."""
        if not isinstance(label, numbers.Integral) or isinstance(label, bool) or not 0 <= label < self.num_classes:
            raise UserError(f"label must be a whole number 0..{self.num_classes - 1}, got {label!r}")
        label = int(label)  # numpy's integers too: the line is JSON
        if model_input is None or not np.asarray(model_input).any():
            raise UserError("nothing to save: the drawing has no ink")
        model_input, drawing = _pixels(model_input, "model_input"), _pixels(drawing, "drawing")
        if model_input.shape != (28, 28):
            raise UserError(f"model_input must be the (28, 28) image to_mnist makes, got shape {model_input.shape}")
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
            self._finish_an_interrupted_add()
            self._check_room(existing, example.bytes)
            try:
                # The journal, then the images, then the line: a line never names a file that is not
                # there yet, and images a killed add leaves without their line are the journal's to remove.
                write_atomically(self.journal, f"{example.drawing}\n{example.input}\n".encode())
                write_atomically(self.folder / example.drawing, drawing_png)
                write_atomically(self.folder / example.input, input_png)
                self._append(example)
            except OSError as error:
                for name in (example.drawing, example.input, JOURNAL):
                    (self.folder / name).unlink(missing_ok=True)
                raise self._write_error("save the example in", error) from None
            with suppress(OSError):  # the line is in: a journal left behind only names images it names
                self.journal.unlink()
            counts = self._learnable_counts(existing + [example])
        return Saved(example, counts)

    def undo(self) -> Saved | None:
        """Remove the example added last; None when there is none. Every other line stays byte for byte."""
        with self._locked():
            lines = self._lines()
            readable = [line for line in lines if line.example is not None]
            if not readable:
                return None
            last = readable[-1]
            # Unreadable lines are kept: a label typo mended by hand must not cost the example.
            # The index is rewritten whole (temporary file + rename), so a crash keeps the old one.
            kept = b"".join(line.raw for line in lines if line.number != last.number)
            try:
                write_atomically(self.index, kept)
            except OSError as error:
                raise self._write_error("undo the last example in", error) from None
            for name in (last.example.drawing, last.example.input):
                # Only an image `add` named is removed: a line edited (or planted) to name the index,
                # the lock or a file behind a symlink keeps that file (helper-78).
                if _NAMED_IMAGE.fullmatch(name.encode("utf-8")) and name.encode("utf-8") not in kept:
                    (self.folder / name).unlink(missing_ok=True)
            # The lines below it moved up one: those already reported stay reported.
            self._warned = {number - (number > last.number) for number in self._warned if number != last.number}
            return Saved(last.example, self._learnable_counts([line.example for line in readable[:-1]]))

    def _finish_an_interrupted_add(self) -> None:
        """Remove what a writer killed mid-`add` left: the images its journal names that no line
        names (it wrote them, then died before its line), and, once per store, temporary files.
        Called under the lock, so no other writer is between its journal and its line. Images no
        journal names are never removed: an index moved away, or re-saved by an editor in another
        encoding, names none of the drawings, and they are the user's work."""
        try:
            pending = self.journal.read_bytes().split()
        except FileNotFoundError:
            pending = []
        if pending:
            named = set(_NAMED_IMAGE.findall(self._index_bytes()))
            for name in pending:
                if _NAMED_IMAGE.fullmatch(name) and name not in named:
                    (self.folder / name.decode()).unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)
        if not self._swept:
            for path in [*(self.folder / "drawings").glob(".*.tmp"), *(self.folder / "inputs").glob(".*.tmp")]:
                path.unlink(missing_ok=True)
            self._swept = True

    def _write_error(self, doing: str, error: OSError) -> UserError:
        """The fix the failure calls for: room on the disk, or the right to write there."""
        fix = ROOM_FIX if error.errno in OUT_OF_ROOM else f"check that you may write to {self.folder} and its files"
        return UserError(f"cannot {doing} {self.folder} ({error.strerror or error}): {fix}, or pick another --user-data")

    def _check_room(self, existing: list[Example], adding: int) -> None:
        if len(existing) >= self.max_examples:
            raise UserError(f"{self.folder} already holds {len(existing):,} examples, the limit: "
                            "fine-tune on them, then move them elsewhere to collect more")
        used = sum(example.bytes for example in existing)
        if used + adding > self.max_bytes:
            raise UserError(f"{self.folder} would pass its {self.max_bytes / (1024 * 1024):,.1f} MB limit "
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

    def _locked(self) -> FileLock:
        self._refuse_a_file()
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


def _pixels(image, name: str) -> np.ndarray:
    """uint8 pixels as an array (a torch tensor or a list too); 0..1 floats or bools would be stored
    as black, so they are refused."""
    array = np.asarray(image) if image is not None else None
    if array is None or array.dtype != np.uint8:
        raise UserError(f"{name} must hold uint8 pixels (0..255), got "
                        f"{'None' if array is None else array.dtype}: scale 0..1 floats by 255 first")
    return array


def _png(image: np.ndarray) -> bytes:
    """uint8 pixels (add checked them: _pixels) as PNG bytes."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"cannot encode a drawing of shape {image.shape} as PNG")
    return encoded.tobytes()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def _utf8_or_refused(index: Path, data: bytes) -> bytes:
    """The index's bytes, unless an editor saved it as UTF-16 or UTF-32 ("Unicode"): then one error
    naming the encoding, rather than a warning for every line of it (helper-92: 601)."""
    marked = data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    # No mark: ASCII text with a zero byte beside every character (a crash's zero-filled block has no text)
    even, odd = data[:64:2], data[1:64:2]
    unmarked = len(odd) >= 4 and any(not any(zeros) and all(text) for zeros, text in ((odd, even), (even, odd)))
    if marked or unmarked:
        raise UserError(f"{index} is not UTF-8 (an editor saved it as UTF-16 or UTF-32, 'Unicode'): save it again "
                        "as UTF-8, which finetune, the demos and serve read")
    return data


def _split_lines(data: bytes) -> list[bytes]:
    """The file's lines, each with its b"\\n" (the last may lack one): joined, they are the file exactly."""
    parts = data.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _shown(value: object, limit: int = 40) -> str:
    """A value as the JSON line has it, cut short: a warning stays one readable line."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _inside(relative: str) -> bool:
    """A stored path may only point inside the store: the index is data, not a list of files to trust."""
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts
