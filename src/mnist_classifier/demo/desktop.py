"""`mnist-classifier demo`: draw a digit with the mouse, see what the model thinks.

    mnist-classifier demo --checkpoint models/simple_cnn_best.pth
    mnist-classifier demo --user-data data/user    # where labelled drawings go (the default)
    mnist-classifier demo --no-collect             # labelling off: nothing is saved
    xvfb-run -s "-screen 0 1280x800x24" mnist-classifier demo   # no desktop: a virtual one

Controls (the seed's): left-drag draws, releasing the button predicts, S predicts and
prints the probabilities, C clears, Esc (or closing the window) quits.
Labelling (for `mnist-classifier finetune`): 0-9 saves the drawing as that digit
("saved as 7: 23 examples, 4 of 7", in the window and on the terminal), U removes the
example saved last. The window title names the model that answers.

State (state.py: the ink on a fixed 280x280 sheet) changes only through plain functions
(`pen_down`, `pen_move`, `pen_up`, `cleared`, `with_prediction`, `with_status`),
`save_label` and `undo_label` below do the store's file work and return the new state,
and `panel.render` draws the whole window as an image, so all of it is tested without a
display; the OpenCV loop at the bottom only forwards events. Mouse release to new panel:
~2 ms p50 on a 2-core VM (`python benchmarks/drawn_digits.py`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import torch

from ..datasets import get_dataset_spec
from ..errors import INTERRUPTED_EXIT, UserError, to_stderr
from ..inference import Predictor
from ..reader import load_predictor
from ..user_examples import ExampleStore
from .panel import compute_layout, hint_line, render, stroke_end, to_sheet
from .state import (COLLECTION_OFF, NOTHING_TO_SAVE, DemoState, cleared, idle_line, new_state, pen_down,
                    pen_move, pen_up, removed_line, report, saved_line, with_prediction, with_status)

WINDOW = "mnist-classifier demo"
START_SIZE = (960, 600)
# One image at a time gains nothing from intra-op threads, and on a busy 2-core laptop
# two threads made inference 8 ms instead of 0.8 ms (p50; benchmarks/drawn_digits.py).
TORCH_THREADS = 1
DIGIT_KEYS = {ord(str(digit)): digit for digit in range(10)}
UNDO_KEYS = (ord("u"), ord("U"))


# ---------------------------------------------------------------------- labelling


def save_label(state: DemoState, store: ExampleStore | None, label: int, model: str) -> DemoState:
    """Save the drawing as an example of `label`; the new state's status line says how it went.

    Never raises for the store's refusals (limits, a full disk, permissions): the window
    shows them and carries on."""
    if store is None:
        return with_status(state, COLLECTION_OFF, alert=True)
    if state.model_input.image is None:  # nothing drawn, or no prediction asked for yet
        return with_status(state, NOTHING_TO_SAVE, alert=True)
    try:
        saved = store.add(state.ink, state.model_input.image, label, model, state.answer)
    except (UserError, OSError) as error:
        return with_status(state, f"not saved: {error}", alert=True)
    # A fresh sheet, as the browser's pad: a second key press cannot save the same drawing twice
    # (a duplicate could land on both sides of finetune's held-back split); U takes it back.
    return with_status(cleared(state), saved_line(saved))


def undo_label(state: DemoState, store: ExampleStore | None) -> DemoState:
    """Remove the example saved last (by this window or anyone sharing the folder)."""
    if store is None:
        return with_status(state, COLLECTION_OFF, alert=True)
    try:
        removed = store.undo()
    except (UserError, OSError) as error:
        return with_status(state, f"not undone: {error}", alert=True)
    return with_status(state, removed_line(removed), alert=removed is None)


# ---------------------------------------------------------------------- the window


def run_demo(checkpoint: str, reject_threshold: float | None | str = "stored",
             user_data: str | Path | None = None) -> int:
    """Open the window and run until Esc or the window is closed; 0 on a clean exit.
    `user_data`: the folder labelled drawings are saved in; None turns labelling off."""
    notes: list[str] = []  # about calibration: said once the model is known to be one the demo can use
    predictor = load_predictor(checkpoint, warn=notes.append)  # a missing checkpoint: one line, exit 2
    if reject_threshold != "stored":
        predictor = predictor.with_reject_threshold(reject_threshold)
    _require_drawable(predictor)
    for note in notes:
        to_stderr(note)
    _require_display()
    torch.set_num_threads(TORCH_THREADS)
    # warnings on stderr, as serve's: stdout carries what S prints
    store = None if user_data is None else ExampleStore(user_data, num_classes=len(predictor.class_names),
                                                        warn=to_stderr)
    if store is not None:
        store.check_usable()  # refused now, not at the first label
        # relative to where the demo started: said, so that `finetune` is run from there (helper-95)
        print(f"drawings you label are saved in {store.folder.absolute()} (for `mnist-classifier finetune`; "
              "--no-collect: never)", file=sys.stderr)
    return _Window(predictor, store, model=Path(checkpoint).name).run()


def _require_drawable(predictor: Predictor) -> None:
    dataset = predictor.info.get("dataset", "mnist")
    if not get_dataset_spec(dataset).drawable:
        raise UserError(f"the drawing demo is digit-only; {predictor.info.get('file')} was trained "
                        f"on {dataset}: use an MNIST checkpoint")


def _require_display() -> None:
    """Qt aborts the process (no exception, a core dump) when it cannot reach a display: check first."""
    if not sys.platform.startswith("linux"):
        return
    _fall_back_to_a_platform_qt_has()
    if os.environ.get("WAYLAND_DISPLAY") and _qt_speaks_wayland():
        return
    display = os.environ.get("DISPLAY", "")
    problem = "DISPLAY is not set" if not display else f"no X server answers on DISPLAY={display}"
    if os.environ.get("WAYLAND_DISPLAY") and not display:
        problem = ("this Wayland desktop offers no X11 display (DISPLAY is not set), which OpenCV's window needs: "
                   "enable XWayland")
    if not display or not _x_server_answers(display):
        # xvfb-run alone would open the window on a screen nobody sees (helper-95)
        raise UserError(f"the demo needs a display: {problem}; or draw in the browser demo instead: "
                        "`mnist-classifier serve` (from another machine: `ssh -L 8000:127.0.0.1:8000 HOST`, then "
                        "open http://127.0.0.1:8000)")
    refusal = _x_connection_error(display)
    if refusal == XCB_PARSE_ERROR:
        raise UserError(f"DISPLAY={display} is not an X display name: set it as your desktop does (like :0, "
                        "or localhost:10.0 under `ssh -X`), or unset it to be told about the browser demo")
    if refusal == XCB_INVALID_SCREEN:
        whole, _, screen = display.rpartition(".")
        raise UserError(f"the X server on DISPLAY={display} has no screen {screen}: "
                        f"use DISPLAY={whole} (its first screen)")
    if refusal:  # sudo, a container, `ssh -X` without xauth
        raise UserError(f"the X server on DISPLAY={display} refused this process (no authorisation): run the "
                        "demo as the desktop's own user, or pass its cookie (XAUTHORITY, `xauth`)")


def _fall_back_to_a_platform_qt_has() -> None:
    """Qt aborts when QT_QPA_PLATFORM names only platforms it lacks, and Wayland desktops set it to
    "wayland" for their own Qt: then use X11's (xcb), which opencv-python's wheels ship, and say so."""
    asked = os.environ.get("QT_QPA_PLATFORM", "")
    wanted = [name.split(":")[0].strip() for name in asked.split(";") if name.strip()]
    available = _qt_platforms()
    if not wanted or available is None or any(name in available for name in wanted):
        return
    if "xcb" not in available:
        raise UserError(f"QT_QPA_PLATFORM={asked} names no platform OpenCV's Qt has "
                        f"({', '.join(sorted(available)) or 'none'}): unset it")
    print(f"note: QT_QPA_PLATFORM={asked} names no platform OpenCV's Qt has; using X11's (xcb)", file=sys.stderr)
    os.environ["QT_QPA_PLATFORM"] = "xcb"


def _qt_platforms() -> set[str] | None:
    """The platform plugins of the Qt inside OpenCV ({"xcb"} for opencv-python's wheels); None for
    an OpenCV built against the system's Qt, which has no such folder and judges for itself."""
    plugins = Path(cv2.__file__).parent / "qt" / "plugins" / "platforms"
    if not plugins.is_dir():
        return None
    return {path.name.removeprefix("libq").split(".")[0] for path in plugins.glob("libq*.so*")}


def _qt_speaks_wayland() -> bool:
    """Whether the Qt inside OpenCV may draw on Wayland: opencv-python's wheels have X11's plugin
    alone, so a Wayland session still needs DISPLAY (XWayland)."""
    available = _qt_platforms()
    return available is None or any(name.startswith("wayland") for name in available)


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


# libxcb's xcb_connection_has_error codes for a display name it cannot read and a screen the
# server lacks (Qt aborts on both, as on a refusal)
XCB_PARSE_ERROR, XCB_INVALID_SCREEN = 5, 6


def _x_connection_error(display: str) -> int:
    """libxcb's error code for an X connection made as Qt's own will be, authorisation and screen
    included: 0 when it is accepted, or where libxcb (what Qt's xcb plugin uses) cannot be found."""
    path = ctypes.util.find_library("xcb")
    if path is None:
        return 0
    xcb = ctypes.CDLL(path)
    xcb.xcb_connect.restype, xcb.xcb_connect.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    with _stderr_silenced():  # libxcb prints the server's refusal itself; ours says what to do
        # Never NULL: a failed one carries its error. Asked for the screen number, libxcb also checks
        # that the server has that screen, as Qt's connection does.
        connection = xcb.xcb_connect(display.encode(), ctypes.byref(ctypes.c_int()))
    try:
        return xcb.xcb_connection_has_error(connection)
    finally:
        xcb.xcb_disconnect(connection)


@contextmanager
def _stderr_silenced():
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _Window:
    """The thin OpenCV shell: events in, pure functions called, frames out."""

    def __init__(self, predictor: Predictor, store: ExampleStore | None = None, model: str = ""):
        self.predictor, self.names = predictor, predictor.class_names
        self.store, self.model = store, model or predictor.info.get("file") or predictor.model_name
        self.idle = idle_line(self.model, collecting=store is not None)
        self.hint = hint_line(collecting=store is not None)
        self.state, self.layout, self.size = new_state(), compute_layout(*START_SIZE), START_SIZE
        self.held = False  # the mouse button, pressed on the canvas; the pen is up while outside it
        self.dirty = True

    def on_mouse(self, event: int, x: int, y: int, _flags: int, _param) -> None:
        if event == cv2.EVENT_LBUTTONDOWN and self.layout.canvas.contains(x, y):
            self.held = True
            self.state = pen_down(self.state, to_sheet(self.layout, x, y))
        elif event == cv2.EVENT_MOUSEMOVE and self.held:
            self._drag_to(x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.held:
            self.held = False
            self._end_stroke()
        else:
            return
        self.dirty = True

    def _drag_to(self, x: int, y: int) -> None:
        """Draw while on the canvas; leaving it lifts the pen at the edge, coming back puts it down."""
        if self.state.pen is None:
            if self.layout.canvas.contains(x, y):
                self.state = pen_down(self.state, to_sheet(self.layout, x, y))
            return
        end, on_sheet = stroke_end(self.layout, self.state.pen, x, y)
        self.state = pen_move(self.state, end)
        if not on_sheet:  # the stroke ends at the edge: answered as at a release, so that a
            self._end_stroke()  # digit key pressed before the button comes up labels this drawing

    def _end_stroke(self) -> None:
        """The pen lifted (released, or dragged off the canvas): the drawing answered."""
        self.state = with_prediction(pen_up(self.state), self.predictor)

    def run(self) -> int:
        # GUI_NORMAL: no Qt toolbar (its zoom would shift the mouse coordinates);
        # FREERATIO: the frame is re-rendered at the window's size, never letterboxed.
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_GUI_NORMAL | cv2.WINDOW_FREERATIO)
        cv2.resizeWindow(WINDOW, *START_SIZE)
        cv2.setWindowTitle(WINDOW, f"{WINDOW}: {self.model}")  # which model answers, e.g. a *_user_best.pth
        cv2.setMouseCallback(WINDOW, self.on_mouse)
        try:
            while self.step():
                pass
        except KeyboardInterrupt:  # Ctrl+C in the terminal: quietly, but `demo && next` must not go on
            cv2.destroyAllWindows()
            return INTERRUPTED_EXIT
        cv2.destroyAllWindows()
        return 0

    def step(self) -> bool:
        """One frame: re-layout on resize, redraw if anything changed, handle a key."""
        self._follow_window_size()
        if self.dirty:
            cv2.imshow(WINDOW, render(self.state, self.layout, self.names, self.idle, self.hint))
            self.dirty = False
        key = _read_key()
        if key == 27 or not _window_open():
            return False
        if key in (ord("s"), ord("S")):
            self.state = with_prediction(self.state, self.predictor)
            print(report(self.state, self.names), flush=True)
            self.dirty = True
        elif key in (ord("c"), ord("C")):
            self.state, self.dirty = cleared(self.state), True
        elif key in DIGIT_KEYS:
            if self.state.pen is not None:  # a key mid-stroke: label what is drawn so far, not the last answer
                self.state = with_prediction(self.state, self.predictor)
                self.held = False  # the rest of that drag must not start a drawing on the fresh sheet
            self._say(save_label(self.state, self.store, DIGIT_KEYS[key], self.model))
        elif key in UNDO_KEYS:
            self._say(undo_label(self.state, self.store))
        return True

    def _say(self, state: DemoState) -> None:
        """Show the new state, and print its status line on the terminal too."""
        self.state, self.dirty = state, True
        print(state.status, flush=True)

    def _follow_window_size(self) -> None:
        _x, _y, width, height = cv2.getWindowImageRect(WINDOW)
        if width > 0 and height > 0 and (width, height) != self.size:
            self.size, self.layout, self.dirty = (width, height), compute_layout(width, height), True


def _read_key() -> int:
    """The pressed key's character code, or -1 for none. Keys without a character (Page Up, Insert,
    arrows, media keys) come as X key codes above 0xFF: `waitKey(...) & 0xFF` folded them onto
    letters and digits, and Page Up undid a label, Play/Pause saved the drawing as a 1."""
    key = cv2.waitKeyEx(15)
    return key if 0 <= key <= 0xFF else -1


def _window_open() -> bool:
    """False once the user closed the window (Qt then raises instead of answering 0)."""
    try:
        return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1
    except cv2.error:
        return False
