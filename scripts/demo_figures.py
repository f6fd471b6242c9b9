"""Redraw the README's two desktop-demo pictures: the frames the window shows, rendered by the
same functions (`panel.render` of the state that mouse strokes and key presses make), with the
bundled model. No window or display is needed.

    python scripts/demo_figures.py                 # writes docs/figures/desktop_demo.png and desktop_not_a_digit.png
    python scripts/demo_figures.py --out /tmp/figs

The first picture: three 7s saved with the 7 key (labelling on), then a 2 drawn and released;
the second: an X drawn and released, refused as "not a digit?".
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

import mnist_classifier
from mnist_classifier.answer import percent
from mnist_classifier.demo.desktop import START_SIZE, save_label
from mnist_classifier.demo.panel import compute_layout, hint_line, render
from mnist_classifier.demo.state import idle_line, new_state, pen_down, pen_move, pen_up, with_prediction
from mnist_classifier.user_examples import ExampleStore

ROOT = Path(__file__).resolve().parents[1]
# Strokes on the 280x280 sheet, as a mouse would draw them
SEVEN = [[(70, 60), (210, 60), (120, 230)]]
TWO = [[(90, 95), (110, 65), (150, 55), (185, 75), (190, 115), (160, 160), (95, 225), (200, 225)]]
CROSS = [[(70, 60), (210, 225)], [(210, 60), (70, 225)]]


def drawn(state, strokes: list[list[tuple[float, float]]], predictor):
    """The state after each stroke is drawn and the button released (which predicts)."""
    for stroke in strokes:
        state = pen_down(state, stroke[0])
        for start, end in zip(stroke, stroke[1:]):
            for step in np.linspace(0, 1, 12)[1:]:  # a mouse reports many points along a line
                state = pen_move(state, tuple(np.add(start, np.multiply(step, np.subtract(end, start)))))
        state = with_prediction(pen_up(state), predictor)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder for the two PNGs")
    args = parser.parse_args(argv)
    reader = mnist_classifier.load("bundled")
    predictor, model = reader.predictor, "simple_cnn.onnx"
    layout, names = compute_layout(*START_SIZE), reader.predictor.class_names
    idle, hint = idle_line(model, collecting=True), hint_line(collecting=True)
    with tempfile.TemporaryDirectory() as folder:
        store, state = ExampleStore(Path(folder)), new_state()
        for _ in range(3):
            state = save_label(drawn(state, SEVEN, predictor), store, 7, model)
        labelled = drawn(state, TWO, predictor)
    refused = drawn(new_state(), CROSS, predictor)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, shown in (("desktop_demo.png", labelled), ("desktop_not_a_digit.png", refused)):
        cv2.imwrite(str(out / name), render(shown, layout, names, idle, hint))
        answer = shown.answer
        print(f"wrote {out / name}: {answer.verdict}, best guess {answer.best_guess} "
              f"({percent(answer.confidence, 1)}); status: {shown.status or idle}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
