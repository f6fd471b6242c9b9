"""The demo window's picture: where each element goes, and drawing it as one image.

`compute_layout(width, height)` places the canvas, the answer, the 28x28 preview, the
bar chart, the status line (labelling) and the key hint for any window size; `render(state, layout, class_names)`
draws the whole frame as a BGR numpy image. No display is needed, so all of it is
tested headlessly; desktop.py shows the frames in an OpenCV window.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..answer import percent
from ..preprocess import Preprocessed, preview
from .state import SHEET, DemoState


MIN_SIZE = (240, 160)  # below this the layout is drawn at this size and scaled down
FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND, PAPER, INK = (38, 34, 32), 246, 24  # BGR, then the canvas grays
TEXT, MUTED, ACCENT = (236, 236, 236), (150, 146, 142), (60, 190, 255)
BAR, TRACK, REFUSED = (150, 128, 104), (62, 58, 55), (105, 105, 105)
ALERT = (96, 96, 236)  # a status line that reports a refusal or an error
HINT = "drag: draw   release or S: predict   C: clear   Esc: quit"
LABEL_KEYS = "0-9: save as that digit   U: undo"
MIN_TEXT_PX = 10  # capitals smaller than this are hard to read: a line that long says less instead
_PAPER_LUT = np.linspace(PAPER, INK, 256).round().astype(np.uint8)  # ink 0..255 -> gray


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
    status: Rect  # one line: the last label or undo ("saved as 7: ..."), or how to label
    hint: Rect  # the key reminder
    caption: int  # height of the small captions above answer and preview


def compute_layout(width: int, height: int) -> Layout:
    """Place every element for a window of this size; all sizes scale with it."""
    width, height = max(width, MIN_SIZE[0]), max(height, MIN_SIZE[1])
    unit = min(width, height)
    gap, hint_h = max(4, unit // 30), max(10, unit // 22)
    # Two full-width lines at the bottom: the status gets the whole width, since it carries
    # counts and error messages that a panel column would shrink to an unreadable size.
    status_h = hint_h * 5 // 4
    footer_h = status_h + gap // 2 + hint_h
    body = Rect(gap, gap, width - 2 * gap, height - 3 * gap - footer_h)
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
    status = Rect(gap, height - gap - footer_h, width - 2 * gap, status_h)
    hint = Rect(gap, height - gap - hint_h, width - 2 * gap, hint_h)
    return Layout(width, height, canvas, answer, preview_rect, chart, status, hint, caption)


def to_sheet(layout: Layout, x: float, y: float) -> tuple[float, float]:
    """Window pixel -> sheet coordinates, clamped to the sheet."""
    sx, sy = _unclamped(layout, x, y)
    top = SHEET - 1.0
    return min(max(sx, 0.0), top), min(max(sy, 0.0), top)


def stroke_end(layout: Layout, pen: tuple[float, float], x: float, y: float) -> tuple[tuple[float, float], bool]:
    """Where a stroke from `pen` (on the sheet) towards window pixel (x, y) ends, and whether the
    pointer is still on the sheet: a stroke leaving the canvas ends where it crosses the edge,
    rather than sliding along the edge while the pointer wanders outside."""
    if layout.canvas.contains(x, y):  # the test pen-down uses: the canvas's outermost pixels are on it
        return to_sheet(layout, x, y), True
    end = _unclamped(layout, x, y)
    top = SHEET - 1.0
    reach = 1.0  # the share of the way to `end` that stays on the sheet
    for start, stop in zip(pen, end):
        if stop != start:
            bound = 0.0 if stop < 0.0 else top
            if not 0.0 <= stop <= top:
                reach = min(reach, (bound - start) / (stop - start))
    reach = max(reach, 0.0)
    return (pen[0] + reach * (end[0] - pen[0]), pen[1] + reach * (end[1] - pen[1])), False


def _unclamped(layout: Layout, x: float, y: float) -> tuple[float, float]:
    c = layout.canvas
    sx, sy = ((v - o + 0.5) * SHEET / c.w - 0.5 for v, o in ((x, c.x), (y, c.y)))
    return sx, sy


# ---------------------------------------------------------------------- rendering


def hint_line(collecting: bool) -> str:
    """The key hint at the bottom: the label keys too while labelling is on."""
    return HINT.replace("   Esc", f"   {LABEL_KEYS}   Esc") if collecting else HINT


def short_hint(hint: str) -> str:
    """The hint for a narrow window: the keys alone (drawing and releasing go without saying)."""
    return hint.replace("drag: draw   release or ", "").replace("save as that digit", "save")


def render(state: DemoState, layout: Layout, class_names: list[str], idle: str = "", hint: str = HINT) -> np.ndarray:
    """The whole window as a (height, width, 3) BGR image; `idle` fills the status line,
    muted, until the state has a status of its own; `hint` is the key hint below it."""
    frame = np.empty((layout.height, layout.width, 3), np.uint8)
    # cv2 fills and copies ~30x faster than numpy's 3-channel broadcasts (5 ms a frame).
    cv2.rectangle(frame, (0, 0), (layout.width, layout.height), BACKGROUND, -1)
    _draw_canvas(frame, layout.canvas, state.ink)
    _draw_answer(frame, layout, state, class_names)
    _draw_preview(frame, layout, state.model_input)
    answer = state.answer
    probabilities = answer.probabilities if answer else None
    _draw_chart(frame, layout.chart, probabilities, class_names, refused=answer is not None and answer.digit is None)
    if state.status:
        _text(frame, state.status, layout.status, ALERT if state.alert else TEXT, align="center")
    else:
        _text(frame, idle, layout.status, MUTED, align="center")
    _text(frame, hint, layout.hint, MUTED, align="center", shorter=short_hint(hint))
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
    answer = state.answer
    if answer is not None and answer.digit is not None:
        big, line, color = names[answer.digit], f"{percent(answer.confidence, 1)} sure", ACCENT
    elif answer is not None:  # refused: say so instead of a big number, and show the guess small
        big, line, color = "not a digit?", f"best guess {names[answer.best_guess]}, {percent(answer.confidence, 1)}", MUTED
        if answer.hint:  # the whole hint is in the S printout; the window has room for its gist
            line = "strokes too thick: draw it larger"
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


def _draw_chart(frame: np.ndarray, rect: Rect, probabilities, names: list[str], refused: bool = False) -> None:
    """One horizontal bar per class with its percentage; the winner in the accent colour
    (grey, like every bar, when the answer is "not a digit")."""
    row = rect.h / len(names)
    label_w = max(8, int(row * 1.1))
    pct_w, gap = max(20, int(row * 3.3)), max(2, int(row * 0.25))  # room for "≥99.95%" at the size of "0.0%"
    bar_x, bar_w = rect.x + label_w, max(1, rect.w - label_w - pct_w - gap)
    best = int(np.argmax(probabilities)) if probabilities is not None else -1
    for i, name in enumerate(names):
        top, bar_h = rect.y + int(i * row), max(1, int(row * 0.62))
        bar_top = top + (int(row) - bar_h) // 2
        p = probabilities[i] if probabilities is not None else 0.0
        color = REFUSED if refused else ACCENT if i == best else BAR
        _text(frame, name, Rect(rect.x, bar_top, label_w * 2 // 3, bar_h), TEXT if i == best else MUTED)
        cv2.rectangle(frame, (bar_x, bar_top), (bar_x + bar_w - 1, bar_top + bar_h - 1), TRACK, -1)
        if p * bar_w >= 1:
            cv2.rectangle(frame, (bar_x, bar_top), (bar_x + int(p * bar_w) - 1, bar_top + bar_h - 1), color, -1)
        pct = "-" if probabilities is None else percent(p, 1)
        box = Rect(bar_x + bar_w + gap, bar_top + bar_h // 8, pct_w, bar_h * 3 // 4)
        _text(frame, pct, box, TEXT if i == best else MUTED, align="right")


def _text(frame, text: str, box: Rect, color, align: str = "left", bold: bool = False,
          shorter: str | None = None) -> None:
    """Write `text` as large as fits in `box`, capitals centred: the font scales with the window.
    `shorter`: written instead where `text` would come out under MIN_TEXT_PX tall."""
    if not text:
        return
    scale = _fitting_scale(text, box)
    if shorter and _cap_px(text, scale) < MIN_TEXT_PX:
        shorter_scale = _fitting_scale(shorter, box)
        if shorter_scale > scale * 1.05:  # the width shrank it; in a low window the height does, for both
            text, scale = shorter, shorter_scale
    thickness = _thickness(scale, bold)
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    x = {"left": box.x, "center": box.x + (box.w - w) // 2, "right": box.x + box.w - w}[align]
    y = box.y + int(round((box.h + h * _cap_ratio()) / 2))
    cv2.putText(frame, text, (x, y), FONT, scale, color, thickness, cv2.LINE_AA)


def _fitting_scale(text: str, box: Rect) -> float:
    (w, h), base = cv2.getTextSize(text, FONT, 1.0, 1)
    cap = h * _cap_ratio()  # what the eye sees as the text's height
    return max(0.1, min(box.w / (w * 1.06), box.h / (cap + base * 0.5)))


def _cap_px(text: str, scale: float) -> float:
    return cv2.getTextSize(text, FONT, scale, 1)[0][1] * _cap_ratio()


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
