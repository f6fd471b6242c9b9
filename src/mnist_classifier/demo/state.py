"""The demo window's state: the ink on a fixed sheet, and what the model said about it.

State changes only through plain functions (`pen_down`, `pen_move`, `pen_up`, `cleared`,
`with_prediction`, `with_status`), each returning a new `DemoState`; panel.py draws it and
desktop.py feeds it the window's events. The status line says what became of the last
label or undo (`saved_line`, `removed_line`); the saving itself is desktop.py's
`save_label`. Everything here runs without a display.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..answer import DIGIT, Answer, percent
from ..inference import Predictor
from ..preprocess import NO_INK, Preprocessed, to_mnist
from ..user_examples import Saved

# The ink lives on a fixed sheet, shown scaled to the canvas: resizing the window keeps
# the drawing, and the brush is a fixed fraction of the sheet, so a digit drawn at a
# natural size comes out MNIST-thick (~2.5 px at 28x28) however big the window is.
SHEET = 280  # 10x MNIST
BRUSH_RADIUS = 10  # px on the sheet: 21-px strokes; a 170-px tall digit -> 2.5 px

COLLECTION_OFF = "labelling is off (--no-collect)"
NOTHING_TO_SAVE = "nothing to save: draw a digit first"


@dataclass(frozen=True)
class DemoState:
    ink: np.ndarray  # (SHEET, SHEET) uint8: 0 paper, 255 full ink
    pen: tuple[float, float] | None = None  # last point of the stroke being drawn
    model_input: Preprocessed = NO_INK  # what the model saw at the last prediction
    answer: Answer | None = None  # None: nothing predicted, or no ink found
    predicted: bool = False  # False until a prediction is asked for since the last clear
    status: str = ""  # one line: what became of the last label or undo, or how to label
    alert: bool = False  # the status is a refusal or an error, drawn in its own colour


def new_state() -> DemoState:
    return DemoState(ink=np.zeros((SHEET, SHEET), np.uint8))


def pen_down(state: DemoState, point: tuple[float, float]) -> DemoState:
    """Start a stroke. A refusal or error in the status line is about what came before: it goes
    (the counts of a save stay in view while the next digit is drawn)."""
    status = "" if state.alert else state.status
    return replace(state, ink=_stroke(state.ink, point, point), pen=point, status=status, alert=False)


def pen_move(state: DemoState, point: tuple[float, float]) -> DemoState:
    if state.pen is None:  # moving without a button held draws nothing
        return state
    return replace(state, ink=_stroke(state.ink, state.pen, point), pen=point)


def pen_up(state: DemoState) -> DemoState:
    return replace(state, pen=None)


def cleared(state: DemoState) -> DemoState:
    """A blank sheet; the status line stays, so the counts remain in view while drawing the next."""
    return replace(new_state(), status=state.status, alert=state.alert)


def with_status(state: DemoState, line: str, alert: bool = False) -> DemoState:
    return replace(state, status=line, alert=alert)


def idle_line(model: str, collecting: bool) -> str:
    """The status line before any label: which model answers, and whether labelling is off
    (the label keys themselves are in the key hint, `panel.hint_line`, always in view)."""
    return f"model {model}" + ("" if collecting else f"   {COLLECTION_OFF}")


def saved_line(saved: Saved) -> str:
    """'saved as 7: 23 examples, 4 of 7'."""
    label = saved.example.label
    return f"saved as {label}: {_examples(saved.total)}, {saved.counts[label]} of {label}"


def removed_line(removed: Saved | None) -> str:
    """'removed the last example (a 7): 22 left'; None (nothing stored) says so."""
    if removed is None:
        return "nothing to undo: no examples saved"
    return f"removed the last example (a {removed.example.label}): {removed.total} left"


def _examples(count: int) -> str:
    return f"{count:,} example" + ("" if count == 1 else "s")


def with_prediction(state: DemoState, predictor: Predictor) -> DemoState:
    """Run the shared preprocessing and the model on the sheet; no ink -> no answer."""
    pre = to_mnist(state.ink)
    answer = predictor.answer(pre) if pre.has_ink else None
    return replace(state, model_input=pre, answer=answer, predicted=True)


def _stroke(ink: np.ndarray, start, end) -> np.ndarray:
    ink = ink.copy()
    # Sub-pixel coordinates (shift=4) keep slow strokes from looking jagged.
    a, b = (tuple(int(round(v * 16)) for v in p) for p in (start, end))
    cv2.line(ink, a, b, 255, 2 * BRUSH_RADIUS + 1, cv2.LINE_AA, shift=4)
    return ink


def report(state: DemoState, class_names: list[str]) -> str:
    """The terminal printout for S: the answer, then every class's probability."""
    if state.answer is None:
        return "no digit: the canvas is empty"
    answer = state.answer
    spread = "  ".join(f"{name}: {percent(prob, 2):>6}" for name, prob in zip(class_names, answer.probabilities))
    name, confidence = class_names[answer.best_guess], percent(answer.confidence, 1)
    said = f"prediction: {name} ({confidence})" if answer.verdict == DIGIT else \
        f"not a digit (best guess {name}, {confidence})" + (f": {answer.hint}" if answer.hint else "")
    return f"{said}\nprobabilities: {spread}"
