"""Teach it your handwriting: `finetune` on a generated writer whose style MNIST lacks.

    python benchmarks/user_writer.py                       # models/simple_cnn_best.pth, else the bundled model
    python benchmarks/user_writer.py --checkpoint PATH --fresh 500
    python benchmarks/user_writer.py --quick               # 200 fresh drawings, no honesty tables; --fresh N wins

The writer draws every digit its own way, with a thick felt pen of even width and a strong
backward slant (MNIST writers lean forward or stand upright): a slashed 0, a 1 with a long
flag and a foot, a Z-shaped 2, a flat-topped 3, a closed 4, a crossed 7 with a hook, an 8 of
two stacked rings, a 9 with a hooked tail. Each digit is drawn programmatically (strokes of
lines and arcs, every point jittered, seeded), dark on a white sheet, and goes through
`preprocess.to_mnist`, the preprocessing every front end uses, as a demo drawing would.

10 drawings per digit go into a temporary ExampleStore, as if labelled in the demos; the
real command `mnist-classifier finetune` runs on them (a process of its own, timed from
start to exit, so imports and loading count) and holds back its usual fifth to measure.
Then 500 fresh drawings of the same writer (other seeds) are read by the model before and
after. Targets (issue 17): fresh-digit accuracy >= 95% or +15 points, MNIST test accuracy
drop <= 0.2 point, finetune <= 30 s on 2 cores for 100 examples. Then both models are put
through `evaluate`'s honesty tables (benchmarks/honest_answers.py: digits answered `digit`,
held-out non-digits refused; issue 15's targets), so what fine-tuning costs there shows too.

`run()` returns the figures as a dict (benchmarks/run_all.py calls it); `main()` prints them.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "models" / "simple_cnn_best.pth"
PER_DIGIT = 10  # labelled drawings per digit handed to finetune
FRESH = 500  # drawings to measure on, never seen by finetune
QUICK_FRESH = 200  # with --quick, unless --fresh says otherwise
TRAIN_SEED, FRESH_SEED = 1, 2  # the two sets never share a drawing
TARGET_ACCURACY, TARGET_GAIN_POINTS = 0.95, 15.0
TARGET_MNIST_DROP_POINTS = 0.2
TARGET_SECONDS = 30.0
SHEET = 400  # px, the white sheet a drawing is made on
HEIGHT = 200  # px, a digit's height on the sheet (MNIST's 20 px, times 10)
PEN = (3.2, 4.2)  # px at MNIST's scale: thicker and far more even than MNIST's pens
SLANT = (0.30, 0.50)  # backward lean: x moves right by this much per unit of height downwards
WOBBLE = 0.035  # of the digit's height: a smooth random bend of the whole digit
JITTER = 0.006  # of the digit's height, per point: a hand is not a plotter


# ------------------------------------------------------------------ the writer's glyphs
# Strokes in a box 0..0.6 wide and 0..1 tall, y downwards; an arc's angles are in degrees
# with 0 pointing right and 90 pointing down.


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 24) -> list:
    angles = np.radians(np.linspace(start, end, points))
    return list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles)))


GLYPHS = {
    0: [arc(0.3, 0.5, 0.27, 0.48, 0, 360, 40), [(0.02, 0.9), (0.58, 0.1)]],  # slashed
    1: [[(0.02, 0.32), (0.36, 0.0), (0.36, 1.0)], [(0.1, 1.0), (0.6, 1.0)]],  # long flag, foot
    2: [[(0.04, 0.08), (0.55, 0.04), (0.05, 0.96), (0.6, 0.95)]],  # Z-shaped
    3: [[(0.05, 0.02), (0.55, 0.02), (0.2, 0.42)] + arc(0.3, 0.7, 0.28, 0.29, -110, 160)],  # flat top
    4: [[(0.45, 0.0), (0.02, 0.66), (0.6, 0.66)], [(0.45, 0.0), (0.45, 1.0)]],  # closed
    5: [[(0.56, 0.0), (0.1, 0.0), (0.07, 0.45)] + arc(0.3, 0.7, 0.28, 0.29, -140, 150)],
    6: [[(0.5, 0.0), (0.24, 0.28)] + arc(0.3, 0.74, 0.26, 0.25, 215, 575)],
    7: [[(0.0, 0.18), (0.04, 0.0), (0.6, 0.0), (0.2, 1.0)], [(0.12, 0.52), (0.55, 0.48)]],  # hook, crossed
    8: [arc(0.3, 0.24, 0.2, 0.22, 0, 360, 32), arc(0.3, 0.72, 0.27, 0.27, -90, 270, 32)],  # two rings
    9: [arc(0.28, 0.28, 0.24, 0.26, 0, 360, 32), [(0.52, 0.28), (0.5, 0.94), (0.36, 1.0), (0.18, 0.92)]],  # tail
}


def draw_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One drawing of `digit` by the writer: (SHEET, SHEET) uint8, dark ink on white."""
    slant = rng.uniform(*SLANT)
    width = rng.uniform(0.85, 1.2)
    angle = np.radians(rng.uniform(-6, 6))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    origin = rng.uniform(HEIGHT * 0.45, SHEET - HEIGHT * 1.45, size=2)  # slant, rotation and pen stay on the sheet
    pen = int(round(rng.uniform(*PEN) * HEIGHT / 20))
    sheet = np.full((SHEET, SHEET), 255, np.uint8)
    bend = rng.uniform(0, 2 * np.pi, size=2)
    for stroke in GLYPHS[digit]:
        points = np.array(stroke, np.float64) + rng.normal(0, JITTER, size=(len(stroke), 2))
        # Low-frequency: lines stay smooth and arcs round, yet no two drawings share a shape.
        points += WOBBLE * np.sin(2 * np.pi * points[:, ::-1] + bend)
        points[:, 0] = points[:, 0] * width + slant * (points[:, 1] - 0.5)
        points = (points - 0.5) @ rotation.T + 0.5
        pixels = np.round(points * HEIGHT + origin).astype(np.int32)
        cv2.polylines(sheet, [pixels], isClosed=False, color=0, thickness=pen, lineType=cv2.LINE_AA)
    return sheet


def writer_digits(per_digit: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(drawings, their (N, 28, 28) model inputs, labels): `per_digit` of each digit, in digit order."""
    from mnist_classifier.preprocess import to_mnist

    drawings, inputs, labels = [], [], []
    for digit in range(10):
        for index in range(per_digit):
            drawing = draw_digit(digit, np.random.default_rng([seed, digit, index]))
            drawings.append(drawing)
            inputs.append(to_mnist(drawing).image)
            labels.append(digit)
    return drawings, np.stack(inputs), np.array(labels, np.int64)


def fill_store(folder: Path, per_digit: int = PER_DIGIT, seed: int = TRAIN_SEED) -> None:
    """The writer's labelled drawings, saved the way the demos save them."""
    from mnist_classifier.user_examples import ExampleStore

    store = ExampleStore(folder)
    drawings, inputs, labels = writer_digits(per_digit, seed)
    for drawing, model_input, label in zip(drawings, inputs, labels):
        store.add(drawing, model_input, int(label), model="benchmark writer")


# ------------------------------------------------------------------ the measurement


def base_checkpoint(named: str | Path | None) -> Path:
    """The named model, else `make train`'s, else the .pth bundled in the package."""
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT

    if named is not None:
        return Path(named)
    return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else BUNDLED_CHECKPOINT


def timed_finetune(checkpoint: Path, user_data: Path, out: Path) -> tuple[float, float, str]:
    """`mnist-classifier finetune` in a process of its own: (wall seconds from start to exit, the CPU
    seconds it used, its output). CPU time shows what other jobs on the same cores did to the wall time."""
    command = [sys.executable, "-m", "mnist_classifier", "finetune", "--checkpoint", str(checkpoint),
               "--user-data", str(user_data), "--data-dir", str(ROOT / "data"), "--out", str(out)]
    cpu_before = _children_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"finetune failed with status {process.returncode}:\n{process.stderr[-4000:]}")
    return seconds, _children_cpu_seconds() - cpu_before, process.stdout


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_accuracy(checkpoint: Path, images: np.ndarray, labels: np.ndarray) -> float:
    import torch

    from mnist_classifier.checkpoint import load_model, stored_normalization
    from mnist_classifier.data import Split
    from mnist_classifier.evaluation import compute_logits

    model, payload = load_model(checkpoint)
    logits = compute_logits(model, Split(torch.from_numpy(images), torch.from_numpy(labels)),
                            stored_normalization(payload))
    return float((logits.argmax(1).numpy() == labels).mean())


def fresh_count(fresh: int | None, quick: bool) -> int:
    """Drawings to measure on: the count asked for wins over --quick's smaller default."""
    if fresh is not None:
        return fresh
    return QUICK_FRESH if quick else FRESH


def run(checkpoint: str | Path | None = None, quick: bool = False, fresh: int | None = None) -> dict:
    """Fine-tune on the writer's 100 drawings; measure on `fresh` others (default FRESH, QUICK_FRESH with `quick`)."""
    import honest_answers
    from seed_loop import cpu_info  # the machine line the other benchmarks print (CPU model, flags)

    from mnist_classifier.checkpoint import load_checkpoint

    base = base_checkpoint(checkpoint)
    machine = cpu_info()  # before the run: the load average then
    _, images, labels = writer_digits(-(-fresh_count(fresh, quick) // 10), FRESH_SEED)
    with tempfile.TemporaryDirectory() as scratch:
        fill_store(Path(scratch) / "user")
        tuned = Path(scratch) / "tuned.pth"
        seconds, cpu_seconds, output = timed_finetune(base, Path(scratch) / "user", tuned)
        record = load_checkpoint(tuned)["finetune"]
        load_after = os.getloadavg()[0]
        before, after = fresh_accuracy(base, images, labels), fresh_accuracy(tuned, images, labels)
        # ~50 s of CPU a model: the quick smoke run leaves it to the full one
        honesty = None if quick else [honest_answers.measure(path)["verdicts"] for path in (base, tuned)]
    gain = 100 * (after - before)
    drop = 100 * (record["mnist_test_accuracy_before"] - record["mnist_test_accuracy_after"])
    return {"machine": machine, "load_after": load_after, "checkpoint": str(base), "fresh": len(labels),
            "fresh_before": before, "fresh_after": after, "gain_points": gain, "finetune": record,
            "mnist_drop_points": drop, "honesty": honesty, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "output": output,
            "fresh_met": after >= TARGET_ACCURACY or gain >= TARGET_GAIN_POINTS,
            "mnist_met": drop <= TARGET_MNIST_DROP_POINTS, "seconds_met": seconds <= TARGET_SECONDS}


def table(result: dict) -> str:
    """The figures beside their targets, fixed width."""
    record, machine = result["finetune"], result["machine"]

    def verdict(met: bool) -> str:
        return "met" if met else "MISSED"

    rows = [
        (f"writer's fresh digits ({result['fresh']})", f"{result['fresh_before']:.2%}", f"{result['fresh_after']:.2%}",
         f">= {TARGET_ACCURACY:.0%} or +{TARGET_GAIN_POINTS:g} pts", verdict(result["fresh_met"])),
        (f"held back by finetune ({record['held_back']})", f"{record['held_back_accuracy_before']:.2%}",
         f"{record['held_back_accuracy_after']:.2%}", "", ""),
        ("MNIST test (10,000)", f"{record['mnist_test_accuracy_before']:.2%}",
         f"{record['mnist_test_accuracy_after']:.2%}", f"drop <= {TARGET_MNIST_DROP_POINTS:g} pts",
         verdict(result["mnist_met"])),
        (f"finetune, {record['user_examples']} examples, start to exit", "", f"{result['seconds']:.1f} s",
         f"<= {TARGET_SECONDS:g} s", verdict(result["seconds_met"])),
        ("  its CPU time (both cores together)", "", f"{result['cpu_seconds']:.1f} s", "", ""),
    ]
    if result["honesty"] is not None:
        rows += honesty_rows(*result["honesty"])
    width = max(len(row[0]) for row in rows)
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in machine["flags"].items())
    lines = [f"{machine['cpu']}, {machine['cores']} cores ({flags}); load average "
             f"{machine['load_average']:.2f} before, {result['load_after']:.2f} after finetune",
             f"base model: {result['checkpoint']}; finetune: {record['epochs']} epochs, {record['steps']} steps, "
             f"{record['trained_on']} drawings trained on (seconds inside the command: {record['seconds']:.1f})",
             f"{'':<{width}} {'before':>8} {'after':>8}  {'target':<24} verdict"]
    lines += [f"{name:<{width}} {old:>8} {new:>8}  {target:<24} {met}" for name, old, new, target, met in rows]
    if result["honesty"] is None:
        lines.append("honest answers before and after: measured by the full run (not --quick)")
    return "\n".join(lines)


def honesty_rows(before: dict, after: dict) -> list[tuple[str, str, str, str, str]]:
    """Does the tuned model still answer honestly? evaluate's verdict tables, before and after."""
    rows = []
    for old, new in zip(before["digits"], after["digits"]):
        rows.append((f"{old['set']}: answered digit", f"{old['answered_digit']:.2%}", f"{new['answered_digit']:.2%}",
                     ">= 99%", "met" if new["answered_digit"] >= 0.99 else "MISSED"))
    for old, new in zip(before["non_digits"] + before["reviewed"], after["non_digits"] + after["reviewed"]):
        name = old["family"] + (f", less {old['read_as_digit']} read as digits" if "read_as_digit" in old else "")
        rows.append((f"{name}: refused", f"{old['answered_not_a_digit']:.1%}", f"{new['answered_not_a_digit']:.1%}",
                     ">= 90%", "met" if new["answered_not_a_digit"] >= 0.90 else "MISSED"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="model to fine-tune (default: models/simple_cnn_best.pth, "
                        "else the model bundled in the package)")
    parser.add_argument("--fresh", type=int, help=f"fresh drawings to measure on, rounded up to a multiple of 10 "
                        f"(default: {FRESH}, or {QUICK_FRESH} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_FRESH} fresh drawings unless --fresh is given (default: off)")
    args = parser.parse_args(argv)
    if args.fresh is not None and args.fresh < 1:
        parser.error(f"--fresh must be at least 1, not {args.fresh}")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        # found now, not as finetune's traceback after the drawings are made
        print(f"error: checkpoint {args.checkpoint} not found: name an existing .pth file, or leave --checkpoint "
              "out to use models/simple_cnn_best.pth (else the bundled model)", file=sys.stderr)
        return 2
    result = run(args.checkpoint, args.quick, args.fresh)
    print(result["output"].rstrip())
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
