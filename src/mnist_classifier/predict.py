"""`mnist-classifier predict IMAGE...`: classify image files, one answer per file.

    mnist-classifier predict digit.png photo.jpg --top 3
    mnist-classifier predict *.png --json > answers.json

Every file goes through the preprocessing of the checkpoint's dataset: for MNIST the same
as the demos (`preprocess.to_mnist`), for Fashion-MNIST `preprocess.fill_frame`; so a PNG
of any size and either polarity works. A file that cannot be read gets its own
error (a line on stderr, or an "error" field in JSON) and the others are still
classified; the exit status is 1 when any file failed. An image with no ink is
answered "no digit", never a made-up label.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from .datasets import get_dataset_spec
from .errors import ImageError, UserError
from .inference import Prediction, Predictor, load_predictor
from .preprocess import FRAMINGS, to_mnist

DEFAULT_TOP = 3


@dataclass
class FileAnswer:
    """What `predict` says about one file: a prediction, "no digit", or an error."""

    file: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def has_ink(self) -> bool:
        return self.prediction is not None


def classify_files(paths: list[str], predictor: Predictor) -> list[FileAnswer]:
    """Preprocess every file, then run the model once on all the inked ones."""
    answers = [FileAnswer(str(path)) for path in paths]
    images, inked = [], []
    prepare = framing_of(predictor)
    for answer in answers:
        try:
            pre = prepare(Path(answer.file))
        except ImageError as error:
            answer.error = str(error)
            continue
        if pre.has_ink:
            images.append(pre.image)
            inked.append(answer)
    if images:
        # One batch: a hundred files cost about as much as one forward pass.
        for answer, probabilities in zip(inked, predictor.predict(np.stack(images))):
            label = int(probabilities.argmax())
            answer.prediction = Prediction(label, float(probabilities[label]),
                                           [float(p) for p in probabilities])
    return answers


def framing_of(predictor: Predictor):
    """The preprocessing that makes a file look like the checkpoint's training images."""
    try:
        return FRAMINGS[get_dataset_spec(predictor.info.get("dataset", "mnist")).framing]
    except UserError:  # a dataset this version does not know: the digit recipe
        return to_mnist


def answer_line(answer: FileAnswer, class_names: list[str], top: int) -> str:
    """One human-readable line: `digit.png: 7 (98.5%)  top 3: 7 98.5%, 1 1.0%, 9 0.3%`."""
    if answer.error is not None:
        return f"{answer.file}: error: {answer.error}"
    if answer.prediction is None:
        return f"{answer.file}: no digit (the image has no visible ink)"
    p = answer.prediction
    ranked = ", ".join(f"{class_names[i]} {prob:.1%}" for i, prob in p.top(top))
    return f"{answer.file}: {class_names[p.label]} ({p.confidence:.1%})  top {top}: {ranked}"


def answer_dict(answer: FileAnswer, class_names: list[str], top: int) -> dict:
    """The JSON object for one file; every object has the same keys whatever happened."""
    p = answer.prediction
    return {
        "file": answer.file,
        "digit": None if p is None else p.label,
        "label": None if p is None else class_names[p.label],
        "confidence": None if p is None else round(p.confidence, 6),
        "top": [] if p is None else [{"digit": i, "label": class_names[i],
                                      "probability": round(prob, 6)} for i, prob in p.top(top)],
        "has_ink": answer.has_ink,
        "error": answer.error,
    }


def run_predict(paths: list[str], checkpoint: str | Path, as_json: bool = False,
                top: int = DEFAULT_TOP, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    """The whole command: 0 when every file was read, 1 when any was not.

    A bad checkpoint or --top raises UserError (exit 2) before any file is read."""
    out, err = out or sys.stdout, err or sys.stderr
    predictor = load_predictor(checkpoint)
    names = predictor.class_names
    if not 1 <= top <= len(names):
        raise UserError(f"--top must be between 1 and {len(names)}, got {top}")
    answers = classify_files(paths, predictor)
    if as_json:
        json.dump([answer_dict(a, names, top) for a in answers], out, indent=2)
        out.write("\n")
    else:
        for answer in answers:
            # Errors go to stderr so that stdout stays one answer per good file.
            print(answer_line(answer, names, top), file=err if answer.error else out)
    return 1 if any(a.error is not None for a in answers) else 0
