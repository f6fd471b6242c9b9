"""The Answer: what every front end says about one drawing, and the rule that decides it.

    answer = predictor.answer(to_mnist("digit.png"))
    answer.verdict        # "digit", "not_a_digit" or "empty"
    answer.digit          # 7, or None unless the verdict is "digit"
    answer.best_guess     # the top class whenever there is ink, refused or not
    answer.confidence     # calibrated probability of best_guess
    answer.digit_score    # how digit-like the drawing is; below the model's threshold: "not a digit"
    answer.hint           # why a refusal that has a fix was made ("draw it larger"), else None
    answer.to_json(class_names)   # the same fields for `predict --json` and the HTTP API

`predict`, both demos and the API build their output from this one object, so a refusal
reads the same everywhere. A refusal is an answer, not an error.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

DIGIT, NOT_A_DIGIT, EMPTY = "digit", "not_a_digit", "empty"
VERDICTS = (DIGIT, NOT_A_DIGIT, EMPTY)
TOO_BOLD_HINT = "the strokes are too thick for the drawing's size: draw it larger or with a thinner pen"


@dataclass(frozen=True)
class Answer:
    """What the model says about one image.

    verdict: "digit", "not_a_digit" (refused: unlike any digit, or `hint` says why) or "empty"
    (no ink). best_guess: the top class whenever there is ink, refused or not; `digit` is it only
    when the verdict is "digit". confidence: the calibrated probability of best_guess (0 when
    empty); probabilities: one per class. digit_score: how digit-like the drawing is (the model's
    threshold refuses below it). preview: the 28x28 image the model saw. top(k): the k likeliest
    classes with their probabilities."""

    verdict: str
    best_guess: int | None  # None only when there is no ink
    confidence: float  # calibrated probability of best_guess; 0 when empty
    probabilities: tuple[float, ...]
    # the (28, 28) uint8 input the model saw; None when empty. Left out of ==, hash() and repr():
    # an array compares element by element, and its 784 numbers would bury the answer in a print.
    preview: np.ndarray | None = field(default=None, compare=False, repr=False)
    digit_score: float | None = None  # calibration.digit_scores; None when empty
    hint: str | None = None  # what to change when the refusal has a known cause (TOO_BOLD_HINT)

    @property
    def digit(self) -> int | None:
        """best_guess when the verdict is "digit", else None."""
        return self.best_guess if self.verdict == DIGIT else None

    @property
    def has_ink(self) -> bool:
        return self.verdict != EMPTY

    def top(self, k: int) -> list[tuple[int, float]]:
        """The k likeliest classes, likeliest first, as (class, probability); none for an empty image,
        whose probabilities are all 0 (helper-88: it listed 9, 8, 7)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"top(k) takes a whole number k >= 0, got {k!r}")
        if not self.has_ink:
            return []
        order = np.argsort(self.probabilities, kind="stable")[::-1][:k]
        return [(int(i), float(self.probabilities[i])) for i in order]

    def to_json(self, class_names: Sequence[str]) -> dict[str, Any]:
        """The Answer's JSON fields (DESIGN.md), plus the class name of best_guess as `label`."""
        guess = self.best_guess
        return {
            "verdict": self.verdict,
            "digit": self.digit,
            "best_guess": guess,
            "label": None if guess is None else class_names[guess],
            "confidence": round(self.confidence, 6),
            "probabilities": [round(p, 6) for p in self.probabilities],
            "digit_score": None if self.digit_score is None else round(self.digit_score, 4),
            "hint": self.hint,
            "preview_png": png_base64(self.preview if self.preview is not None else np.zeros((28, 28), np.uint8)),
        }


def decide(probabilities: np.ndarray, digit_score: float, reject_threshold: float | None,
           preview: np.ndarray | None = None, too_bold: bool = False) -> Answer:
    """The verdict for one inked image from its calibrated class probabilities and digit score.
    `too_bold` (preprocess.MAX_STROKE_SHARE): its shape is lost, so refused whatever the score;
    like every refusal, only where the model refuses at all (a threshold)."""
    best = int(np.argmax(probabilities))
    unlike_a_digit = reject_threshold is not None and digit_score < reject_threshold
    shape_lost = reject_threshold is not None and too_bold
    return Answer(NOT_A_DIGIT if unlike_a_digit or shape_lost else DIGIT, best, float(probabilities[best]),
                  tuple(float(p) for p in probabilities), preview, float(digit_score),
                  TOO_BOLD_HINT if shape_lost else None)


def empty_answer(num_classes: int) -> Answer:
    """No ink: nothing to classify, so no guess (never a made-up digit)."""
    return Answer(EMPTY, None, 0.0, (0.0,) * num_classes, None)


def png_base64(image: np.ndarray) -> str:
    _, encoded = cv2.imencode(".png", image)  # ~10 us for 28x28, a third of PIL's time
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def percent(probability: float, decimals: int = 0, wrong: bool = False) -> str:
    """A percent, but never "100%" short of certainty, nor for a wrong answer (float32 softmax
    saturates at 1.0): a wrong answer at 99.7% read as a certain one beside a model that says its
    confidences are calibrated (helper-89). Such a figure reads "≥99.5%" ("≥99.95%" to 1 decimal)."""
    text = f"{probability:.{decimals}%}"
    if text != f"{1:.{decimals}%}" or (probability >= 1 and not wrong):
        return text
    return f"≥{1 - 0.5 * 10 ** -(decimals + 2):.{decimals + 1}%}"
