"""`mnist-classifier predict IMAGE...`: classify image files, one answer per file.

    mnist-classifier predict digit.png photo.jpg --top 3
    mnist-classifier predict *.png --json > answers.json
    mnist-classifier predict data/user/drawings/       # a folder: the images directly in it, by name

Every file goes through the preprocessing of the checkpoint's dataset: for MNIST the same
as the demos (`preprocess.to_mnist`), for Fashion-MNIST `preprocess.fill_frame`; so a PNG
of any size and either polarity works. A file that cannot be read gets its own
error (a line on stderr, or an "error" field in JSON) and the others are still
classified; the exit status is 1 when any file failed. An image with no ink is
answered "empty" (any dataset), never a made-up label; a drawing the model does not take for a
digit is answered `not a digit (best guess 4, 31.0%)` (verdict `not_a_digit` in JSON),
with exit status 0: a refusal is an answer.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


from .errors import ImageError, UserError
from .answer import DIGIT, EMPTY, Answer, empty_answer, percent
from .inference import Predictor
from .reader import framing_of, load_predictor

DEFAULT_TOP = 3
# What a folder named on the command line stands for: its files with these suffixes (any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class FileAnswer:
    """What `predict` says about one file: an Answer (digit, not a digit, empty) or an error."""

    file: str
    answer: Answer | None = None
    error: str | None = None


def classify_files(paths: list[str], predictor: Predictor) -> list[FileAnswer]:
    """Preprocess every file, then run the model once on all of them together."""
    results = [answer for path in paths for answer in _files_named_by(Path(path))]
    prepared, readable = [], []
    prepare = framing_of(predictor)
    for result in results:
        if result.error is not None:
            continue
        try:
            prepared.append(prepare(Path(result.file)))
            readable.append(result)
        except ImageError as error:
            result.error = str(error)
    # One batch: a hundred files cost about as much as one forward pass.
    for result, answer in zip(readable, predictor.answers(prepared)):
        result.answer = answer
    return results


def _files_named_by(path: Path) -> list[FileAnswer]:
    """A file stands for itself; a folder for the image files directly in it, in name order
    (hidden files and other suffixes skipped), or for one error when it holds none."""
    if not path.expanduser().is_dir():  # a quoted '~/digits' too, as a file's '~' is expanded where it is read
        return [FileAnswer(str(path))]
    path = path.expanduser()
    try:
        images = sorted(child for child in path.iterdir() if child.suffix.lower() in IMAGE_SUFFIXES
                        and not child.name.startswith(".") and child.is_file())
    except OSError as error:  # unreadable: its own error line, the other files still answered
        return [FileAnswer(str(path), error=f"cannot list this folder ({error.strerror}); check its permissions")]
    if not images:
        suffixes = ", ".join(suffix[1:] for suffix in IMAGE_SUFFIXES)
        return [FileAnswer(str(path), error=f"folder with no image files in it ({suffixes}); name the images")]
    return [FileAnswer(str(image)) for image in images]


def answer_line(result: FileAnswer, class_names: list[str], top: int, refusal: str = "not a digit") -> str:
    """One human-readable line: `digit.png: 7 (98.5%)  top 3: ...` or `x.png: not a digit (best guess 4, 31.0%)`
    (`refusal`: what a refused image is called; a clothes model says "not recognised")."""
    if result.error is not None:
        return f"{result.file}: error: {_without_the_name(result.error, result.file)}"
    answer = result.answer
    if answer.verdict == EMPTY:
        return f"{result.file}: empty (the image has no visible ink)"
    ranked = ", ".join(f"{class_names[i]} {percent(prob, 1)}" for i, prob in answer.top(top))
    guess = class_names[answer.best_guess]
    said = f"{guess} ({percent(answer.confidence, 1)})" if answer.verdict == DIGIT else \
        f"{refusal} (best guess {guess}, {percent(answer.confidence, 1)})"
    hint = f"  ({answer.hint})" if answer.hint else ""
    return f"{result.file}: {said}  top {top}: {ranked}{hint}"


def _without_the_name(error: str, file: str) -> str:
    """The line starts with the file's name already: "x.png: error: not an image file ...",
    not "x.png: error: x.png is not an image file ..." (ImageError's messages start with the name)."""
    for prefix in (f"{file}: ", f"{file} is "):
        if error.startswith(prefix):
            return error[len(prefix):]
    return error


def answer_dict(result: FileAnswer, class_names: list[str], top: int) -> dict:
    """The JSON object for one file: the Answer's fields (answer.py), the ranking, any error.
    Every object has the same keys whatever happened."""
    answer = result.answer or empty_answer(len(class_names))
    fields = answer.to_json(class_names)
    fields["top"] = [{"digit": i, "label": class_names[i], "probability": round(prob, 6)} for i, prob in answer.top(top)]
    fields["has_ink"] = answer.has_ink
    if result.error is not None:  # nothing was seen, so nothing is claimed: not even "no ink" or zero confidence
        fields.update(dict.fromkeys(("verdict", "confidence", "probabilities", "preview_png", "has_ink")))
    return {"file": result.file, **fields, "error": result.error}


def _answers_digits(predictor: Predictor) -> bool:
    from .datasets import get_dataset_spec

    try:
        return get_dataset_spec(predictor.info.get("dataset", "mnist")).drawable
    except UserError:  # a dataset this version does not know
        return False


def run_predict(paths: list[str], checkpoint: str | Path, as_json: bool = False,
                top: int = DEFAULT_TOP, out: TextIO | None = None,
                err: TextIO | None = None, reject_threshold: float | None | str = "stored") -> int:
    """The whole command: 0 when every file was read, 1 when any was not ("not a digit" is
    an answer, not a failure).

    `reject_threshold`: "stored" (the checkpoint's), a digit score, or None (never refuse).
    A bad checkpoint or --top raises UserError (exit 2) before any file is read."""
    out, err = out or sys.stdout, err or sys.stderr
    predictor = load_predictor(checkpoint, warn=lambda line: print(line, file=err))
    if reject_threshold != "stored":
        predictor = predictor.with_reject_threshold(reject_threshold)
    names = predictor.class_names
    if not 1 <= top <= len(names):
        raise UserError(f"--top must be between 1 and {len(names)}, got {top}")
    answers = classify_files(paths, predictor)
    if as_json:
        json.dump([answer_dict(a, names, top) for a in answers], out, indent=2)
        out.write("\n")
    else:
        refusal = "not a digit" if _answers_digits(predictor) else "not recognised"
        for answer in answers:
            # Errors go to stderr so that stdout stays one answer per good file.
            print(answer_line(answer, names, top, refusal), file=err if answer.error else out)
    return 1 if any(a.error is not None for a in answers) else 0
