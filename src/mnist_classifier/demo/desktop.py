"""`mnist-classifier demo`: draw a digit with the mouse, see what the model thinks.

    mnist-classifier demo --checkpoint models/simple_cnn_best.pth
    xvfb-run -s "-screen 0 1280x800x24" mnist-classifier demo   # no desktop: a virtual one

Controls (the seed's): left-drag draws, releasing the button predicts, S predicts and
prints the probabilities, C clears, Esc (or closing the window) quits.

State (state.py: the ink on a fixed 280x280 sheet) changes only through plain functions
(`pen_down`, `pen_move`, `pen_up`, `cleared`, `with_prediction`) and `panel.render`
draws the whole window as an image, so all of it is tested without a display; the OpenCV
loop at the bottom only forwards events. Mouse release to new panel: ~2 ms p50 on a
2-core VM (`python benchmarks/drawn_digits.py`).
"""
from __future__ import annotations

import os
import socket
import sys

import cv2
import torch

from ..datasets import get_dataset_spec
from ..errors import UserError
from ..inference import Predictor
from ..reader import load_predictor
from .panel import compute_layout, render, to_sheet
from .state import cleared, new_state, pen_down, pen_move, pen_up, report, with_prediction

WINDOW = "mnist-classifier demo"
START_SIZE = (960, 600)
# One image at a time gains nothing from intra-op threads, and on a busy 2-core laptop
# two threads made inference 8 ms instead of 0.8 ms (p50; benchmarks/drawn_digits.py).
TORCH_THREADS = 1



# ---------------------------------------------------------------------- the window


def run_demo(checkpoint: str, reject_threshold: float | None | str = "stored") -> int:
    """Open the window and run until Esc or the window is closed; 0 on a clean exit."""
    predictor = load_predictor(checkpoint)  # a missing checkpoint: one line, exit 2
    if reject_threshold != "stored":
        predictor = predictor.with_reject_threshold(reject_threshold)
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
