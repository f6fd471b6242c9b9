"""`mnist-classifier demo`: draw a digit with the mouse, see what the model thinks.

    mnist-classifier demo --checkpoint models/simple_cnn_best.pth
    xvfb-run -s "-screen 0 1280x800x24" mnist-classifier demo   # no desktop: a virtual one

Controls (the seed's): left-drag draws, releasing the button predicts, S predicts and
prints the probabilities, C clears, Esc (or closing the window) quits.

State (`DemoState`: the ink on a fixed 280x280 sheet) changes only through plain functions
(`pen_down`, `pen_move`, `pen_up`, `cleared`, `with_prediction`) and `render(state, layout)`
draws the whole window as an image, so all of it is tested without a display; the OpenCV
loop at the bottom only forwards events. Mouse release to new panel: ~2 ms p50 on a
2-core VM (`python benchmarks/drawn_digits.py`).
"""
from __future__ import annotations

import functools
import os
import socket
import sys
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from ..datasets import get_dataset_spec
from ..errors import UserError
from ..inference import Prediction, Predictor, load_predictor
from ..preprocess import NO_INK, Preprocessed, preview, to_mnist

WINDOW = "mnist-classifier demo"
START_SIZE = (960, 600)
MIN_SIZE = (240, 160)  # below this the layout is drawn at this size and scaled down
# The ink lives on a fixed sheet, shown scaled to the canvas: resizing the window keeps
# the drawing, and the brush is a fixed fraction of the sheet, so a digit drawn at a
# natural size comes out MNIST-thick (~2.5 px at 28x28) however big the window is.
SHEET = 280  # 10x MNIST
BRUSH_RADIUS = 10  # px on the sheet: 21-px strokes; a 170-px tall digit -> 2.5 px
# One image at a time gains nothing from intra-op threads, and on a busy 2-core laptop
# two threads made inference 8 ms instead of 0.8 ms (p50; benchmarks/drawn_digits.py).
TORCH_THREADS = 1
FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND, PAPER, INK = (38, 34, 32), 246, 24  # BGR, then the canvas grays
TEXT, MUTED, ACCENT = (236, 236, 236), (150, 146, 142), (60, 190, 255)
BAR, TRACK = (150, 128, 104), (62, 58, 55)
HINT = "drag: draw   release or S: predict   C: clear   Esc: quit"
_PAPER_LUT = np.linspace(PAPER, INK, 256).round().astype(np.uint8)  # ink 0..255 -> gray


# ---------------------------------------------------------------------- state


@dataclass(frozen=True)
class DemoState:
    ink: np.ndarray  # (SHEET, SHEET) uint8: 0 paper, 255 full ink
    pen: tuple[float, float] | None = None  # last point of the stroke being drawn
    model_input: Preprocessed = NO_INK  # what the model saw at the last prediction
    prediction: Prediction | None = None  # None: nothing predicted, or no ink found
    predicted: bool = False  # False until a prediction is asked for since the last clear


def new_state() -> DemoState:
    return DemoState(ink=np.zeros((SHEET, SHEET), np.uint8))


def pen_down(state: DemoState, point: tuple[float, float]) -> DemoState:
    return replace(state, ink=_stroke(state.ink, point, point), pen=point)


def pen_move(state: DemoState, point: tuple[float, float]) -> DemoState:
    if state.pen is None:  # moving without a button held draws nothing
        return state
    return replace(state, ink=_stroke(state.ink, state.pen, point), pen=point)


def pen_up(state: DemoState) -> DemoState:
    return replace(state, pen=None)


def cleared(_state: DemoState) -> DemoState:
    return new_state()


def with_prediction(state: DemoState, predictor: Predictor) -> DemoState:
    """Run the shared preprocessing and the model on the sheet; no ink -> no prediction."""
    pre = to_mnist(state.ink)
    prediction = predictor.predict_one(pre.image) if pre.has_ink else None
    return replace(state, model_input=pre, prediction=prediction, predicted=True)


def _stroke(ink: np.ndarray, start, end) -> np.ndarray:
    ink = ink.copy()
    # Sub-pixel coordinates (shift=4) keep slow strokes from looking jagged.
    a, b = (tuple(int(round(v * 16)) for v in p) for p in (start, end))
    cv2.line(ink, a, b, 255, 2 * BRUSH_RADIUS + 1, cv2.LINE_AA, shift=4)
    return ink


def report(state: DemoState, class_names: list[str]) -> str:
    """The terminal printout for S: the answer, then every class's probability."""
    if state.prediction is None:
        return "no digit: the canvas is empty"
    p = state.prediction
    spread = "  ".join(f"{name}: {prob:6.2%}" for name, prob in zip(class_names, p.probabilities))
    return f"prediction: {class_names[p.label]} ({p.confidence:.1%})\nprobabilities: {spread}"


# ---------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    def contains(self, px: float, py: float) -> bool:
        return self.x <= px < self.x + self.w and self.y <= py < self.y + self.h

    def slice(self) -> tuple[slice, slice]:  # frame[rect.slice()] is the rect's pixels
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    canvas: Rect  # the drawing area (square)
    answer: Rect  # the top prediction, large
    preview: Rect  # the 28x28 the model sees (square)
    chart: Rect  # one bar per class
    hint: Rect  # the key reminder
    caption: int  # height of the small captions above answer and preview


def compute_layout(width: int, height: int) -> Layout:
    """Place every element for a window of this size; all sizes scale with it."""
    width, height = max(width, MIN_SIZE[0]), max(height, MIN_SIZE[1])
    unit = min(width, height)
    gap, hint_h = max(4, unit // 30), max(10, unit // 22)
    body = Rect(gap, gap, width - 2 * gap, height - 3 * gap - hint_h)
    if body.w >= body.h:  # landscape: canvas left, panel right
        side = min(body.h, body.w * 11 // 20)
        canvas = Rect(body.x, body.y + (body.h - side) // 2, side, side)
        panel = Rect(canvas.x + side + gap, body.y, body.w - side - gap, body.h)
    else:  # portrait: canvas on top, panel below
        side = min(body.w, body.h * 11 // 20)
        canvas = Rect(body.x + (body.w - side) // 2, body.y, side, side)
        panel = Rect(body.x, body.y + side + gap, body.w, body.h - side - gap)
    caption = max(8, min(panel.h // 14, unit // 26))
    if panel.w >= panel.h * 13 // 10:  # wide panel: answer over preview, chart beside
        pside = max(1, min((panel.h - gap) // 2 - caption, panel.w // 3))
        answer = Rect(panel.x, panel.y + caption, pside, pside)
        preview_rect = Rect(panel.x, answer.y + pside + gap + caption, pside, pside)
        chart = Rect(panel.x + pside + 2 * gap, panel.y, panel.w - pside - 2 * gap, panel.h)
    else:  # tall panel: answer beside preview, chart below
        pside = max(1, min(panel.h * 2 // 5 - caption, panel.w * 2 // 5))
        answer = Rect(panel.x, panel.y + caption, panel.w - pside - gap, pside)
        preview_rect = Rect(panel.x + panel.w - pside, panel.y + caption, pside, pside)
        chart_y = preview_rect.y + pside + gap
        chart = Rect(panel.x, chart_y, panel.w, max(10, panel.y + panel.h - chart_y))
    hint = Rect(gap, height - gap - hint_h, width - 2 * gap, hint_h)
    return Layout(width, height, canvas, answer, preview_rect, chart, hint, caption)


def to_sheet(layout: Layout, x: float, y: float) -> tuple[float, float]:
    """Window pixel -> sheet coordinates, clamped so a stroke leaving the canvas ends at its edge."""
    c, top = layout.canvas, SHEET - 1.0
    sx, sy = ((v - o + 0.5) * SHEET / c.w - 0.5 for v, o in ((x, c.x), (y, c.y)))
    return min(max(sx, 0.0), top), min(max(sy, 0.0), top)


# ---------------------------------------------------------------------- rendering


def render(state: DemoState, layout: Layout, class_names: list[str]) -> np.ndarray:
    """The whole window as a (height, width, 3) BGR image."""
    frame = np.empty((layout.height, layout.width, 3), np.uint8)
    # cv2 fills and copies ~30x faster than numpy's 3-channel broadcasts (5 ms a frame).
    cv2.rectangle(frame, (0, 0), (layout.width, layout.height), BACKGROUND, -1)
    _draw_canvas(frame, layout.canvas, state.ink)
    _draw_answer(frame, layout, state, class_names)
    _draw_preview(frame, layout, state.model_input)
    probabilities = state.prediction.probabilities if state.prediction else None
    _draw_chart(frame, layout.chart, probabilities, class_names)
    _text(frame, HINT, layout.hint, MUTED, align="center")
    return frame


def _draw_canvas(frame: np.ndarray, rect: Rect, ink: np.ndarray) -> None:
    shown = cv2.resize(ink, (rect.w, rect.h), interpolation=cv2.INTER_LINEAR)
    frame[rect.slice()] = cv2.cvtColor(cv2.LUT(shown, _PAPER_LUT), cv2.COLOR_GRAY2BGR)
    if not ink.any():
        box = Rect(rect.x + rect.w // 5, rect.y + rect.h * 9 // 20, rect.w * 3 // 5, rect.h // 10)
        _text(frame, "draw a digit here", box, (170, 170, 170), align="center")


def _draw_answer(frame: np.ndarray, layout: Layout, state: DemoState, names: list[str]) -> None:
    r, cap = layout.answer, layout.caption
    _text(frame, "prediction", Rect(r.x, r.y - cap, r.w, cap * 4 // 5), MUTED)
    if state.prediction is not None:
        big, line, color = names[state.prediction.label], f"{state.prediction.confidence:.1%} sure", ACCENT
    elif state.predicted:
        big, line, color = "?", "no digit", MUTED
    else:
        big, line, color = "", "nothing drawn yet", MUTED
    _text(frame, big, Rect(r.x, r.y + r.h // 12, r.w, r.h * 3 // 5), color, align="center", bold=True)
    _text(frame, line, Rect(r.x, r.y + r.h * 4 // 5, r.w, r.h // 7), TEXT, align="center")


def _draw_preview(frame: np.ndarray, layout: Layout, pre: Preprocessed) -> None:
    r, cap = layout.preview, layout.caption
    _text(frame, "model input 28x28", Rect(r.x, r.y - cap, r.w, cap * 4 // 5), MUTED)
    frame[r.slice()] = cv2.cvtColor(preview(pre, r.w), cv2.COLOR_GRAY2BGR)
    cv2.rectangle(frame, (r.x - 1, r.y - 1), (r.x + r.w, r.y + r.h), MUTED, 1)


def _draw_chart(frame: np.ndarray, rect: Rect, probabilities, names: list[str]) -> None:
    """One horizontal bar per class with its percentage; the winner in the accent colour."""
    row = rect.h / len(names)
    label_w = max(8, int(row * 1.1))
    pct_w = max(20, int(row * 2.6))
    bar_x, bar_w = rect.x + label_w, max(1, rect.w - label_w - pct_w)
    best = int(np.argmax(probabilities)) if probabilities is not None else -1
    for i, name in enumerate(names):
        top, bar_h = rect.y + int(i * row), max(1, int(row * 0.62))
        bar_top = top + (int(row) - bar_h) // 2
        p = probabilities[i] if probabilities is not None else 0.0
        color = ACCENT if i == best else BAR
        _text(frame, name, Rect(rect.x, bar_top, label_w * 2 // 3, bar_h), TEXT if i == best else MUTED)
        cv2.rectangle(frame, (bar_x, bar_top), (bar_x + bar_w - 1, bar_top + bar_h - 1), TRACK, -1)
        if p * bar_w >= 1:
            cv2.rectangle(frame, (bar_x, bar_top), (bar_x + int(p * bar_w) - 1, bar_top + bar_h - 1), color, -1)
        pct = "-" if probabilities is None else f"{p:.1%}"
        box = Rect(bar_x + bar_w, bar_top + bar_h // 8, pct_w, bar_h * 3 // 4)
        _text(frame, pct, box, TEXT if i == best else MUTED, align="right")


def _text(frame, text: str, box: Rect, color, align: str = "left", bold: bool = False) -> None:
    """Write `text` as large as fits in `box`, capitals centred: the font scales with the window."""
    if not text:
        return
    (w, h), base = cv2.getTextSize(text, FONT, 1.0, 1)
    cap = h * _cap_ratio()  # what the eye sees as the text's height
    scale = max(0.1, min(box.w / (w * 1.06), box.h / (cap + base * 0.5)))
    thickness = _thickness(scale, bold)
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    x = {"left": box.x, "center": box.x + (box.w - w) // 2, "right": box.x + box.w - w}[align]
    y = box.y + int(round((box.h + h * _cap_ratio()) / 2))
    cv2.putText(frame, text, (x, y), FONT, scale, color, thickness, cv2.LINE_AA)


def _thickness(scale: float, bold: bool) -> int:
    if _cap_ratio() < 0.95:  # OpenCV 5's outline fonts: thickness 1 is regular, 2+ is bold
        return 2 if bold else 1
    return max(1, round(scale * (2.2 if bold else 1.1)))  # Hershey strokes scale by hand


@functools.cache
def _cap_ratio() -> float:
    """Height of a digit's ink / getTextSize's height. Hershey fonts report the cap height
    (1.0); OpenCV 5's outline fonts report the full ascent (~0.75): measure, don't guess."""
    (_w, h), _base = cv2.getTextSize("8", FONT, 2.0, 2)
    probe = np.zeros((h * 3, h * 3), np.uint8)
    cv2.putText(probe, "8", (h, 2 * h), FONT, 2.0, 255, 2)
    rows = np.flatnonzero(probe.any(axis=1))
    return (rows[-1] - rows[0] + 1) / h if rows.size else 1.0


# ---------------------------------------------------------------------- the window


def run_demo(checkpoint: str) -> int:
    """Open the window and run until Esc or the window is closed; 0 on a clean exit."""
    predictor = load_predictor(checkpoint)  # a missing checkpoint: one line, exit 2
    _require_drawable(predictor)
    _require_display()
    torch.set_num_threads(TORCH_THREADS)
    return _Window(predictor).run()


def _require_drawable(predictor: Predictor) -> None:
    dataset = predictor.info.get("dataset", "mnist")
    if not get_dataset_spec(dataset).drawable:
        raise UserError(f"the drawing demo is digit-only; {predictor.info.get('file')} was trained "
                        f"on {dataset}: use an MNIST checkpoint")


def _require_display() -> None:
    """Qt aborts the process (no exception, a core dump) when it cannot reach a display: check first."""
    if not sys.platform.startswith("linux") or os.environ.get("WAYLAND_DISPLAY"):
        return
    display = os.environ.get("DISPLAY", "")
    problem = "DISPLAY is not set" if not display else f"no X server answers on DISPLAY={display}"
    if not display or not _x_server_answers(display):
        raise UserError(f"the demo needs a display and {problem}; on a headless machine run it "
                        "under a virtual one: xvfb-run mnist-classifier demo")


def _x_server_answers(display: str) -> bool:
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]
    if not number.isdigit():
        return True  # a form we do not parse: let Qt judge
    if host not in ("", "unix"):  # e.g. ssh forwarding, localhost:10.0 -> TCP 6010
        addresses = [(socket.AF_INET, (host, 6000 + int(number)))]
    else:  # the filesystem socket, or Linux's abstract one
        path = f"/tmp/.X11-unix/X{number}"
        addresses = [(socket.AF_UNIX, path), (socket.AF_UNIX, "\0" + path)]
    for family, address in addresses:
        try:
            with socket.socket(family) as connection:
                connection.settimeout(2)
                connection.connect(address)
                return True
        except OSError:
            continue
    return False


class _Window:
    """The thin OpenCV shell: events in, pure functions called, frames out."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.names = predictor, predictor.class_names
        self.state, self.layout, self.size = new_state(), compute_layout(*START_SIZE), START_SIZE
        self.dirty = True

    def on_mouse(self, event: int, x: int, y: int, _flags: int, _param) -> None:
        if event == cv2.EVENT_LBUTTONDOWN and self.layout.canvas.contains(x, y):
            self.state = pen_down(self.state, to_sheet(self.layout, x, y))
        elif event == cv2.EVENT_MOUSEMOVE and self.state.pen is not None:
            self.state = pen_move(self.state, to_sheet(self.layout, x, y))
        elif event == cv2.EVENT_LBUTTONUP and self.state.pen is not None:
            self.state = with_prediction(pen_up(self.state), self.predictor)
        else:
            return
        self.dirty = True

    def run(self) -> int:
        # GUI_NORMAL: no Qt toolbar (its zoom would shift the mouse coordinates);
        # FREERATIO: the frame is re-rendered at the window's size, never letterboxed.
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_GUI_NORMAL | cv2.WINDOW_FREERATIO)
        cv2.resizeWindow(WINDOW, *START_SIZE)
        cv2.setMouseCallback(WINDOW, self.on_mouse)
        try:
            while self.step():
                pass
        except KeyboardInterrupt:  # Ctrl+C in the terminal: the same clean exit as Esc
            pass
        cv2.destroyAllWindows()
        return 0

    def step(self) -> bool:
        """One frame: re-layout on resize, redraw if anything changed, handle a key."""
        self._follow_window_size()
        if self.dirty:
            cv2.imshow(WINDOW, render(self.state, self.layout, self.names))
            self.dirty = False
        key = cv2.waitKey(15) & 0xFF
        if key == 27 or not _window_open():
            return False
        if key in (ord("s"), ord("S")):
            self.state = with_prediction(self.state, self.predictor)
            print(report(self.state, self.names), flush=True)
            self.dirty = True
        elif key in (ord("c"), ord("C")):
            self.state, self.dirty = cleared(self.state), True
        return True

    def _follow_window_size(self) -> None:
        _x, _y, width, height = cv2.getWindowImageRect(WINDOW)
        if width > 0 and height > 0 and (width, height) != self.size:
            self.size, self.layout, self.dirty = (width, height), compute_layout(width, height), True


def _window_open() -> bool:
    """False once the user closed the window (Qt then raises instead of answering 0)."""
    try:
        return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1
    except cv2.error:
        return False
