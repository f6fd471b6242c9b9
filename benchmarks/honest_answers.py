"""Honest answers: calibration and "not a digit", for each trained MNIST model, against its targets.

    python benchmarks/honest_answers.py                       # models/simple_cnn_best.pth, improved_cnn_best.pth
    python benchmarks/honest_answers.py --checkpoint PATH ...

For every checkpoint that exists: test accuracy; ECE (15 bins) of the raw softmax and of
the calibrated probabilities; the share of MNIST test digits and of the same digits
re-drawn with uniform pens answered `digit`; the share of each non-digit family (seeds
training never used; clothes never trained on) answered `not_a_digit`, and of the reviewed
families less what most reviewers read as a digit. The figures come
from the very functions `evaluate` uses (honesty.py). Targets (issue "Honest answers"):
ECE <= 1%, >= 99% of digits and re-drawn digits answered digit, >= 90% of each non-digit
family refused, re-drawn accuracy within 1 point of the originals.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINTS = (ROOT / "models" / "simple_cnn_best.pth", ROOT / "models" / "improved_cnn_best.pth")
FASHION_NOTE = ("clothes row missing: Fashion-MNIST is not in data/; "
                "`mnist-classifier data --dataset fashion-mnist` adds it")


def measure(checkpoint: Path) -> dict:
    from mnist_classifier.calibration import softmax
    from mnist_classifier.data import load_data
    from mnist_classifier.honesty import calibration_report, verdict_report
    from mnist_classifier.reader import load_predictor

    predictor = load_predictor(checkpoint)
    test = load_data(ROOT / "data", log=lambda _line: None).test
    logits, labels = predictor.logits(test.images.numpy()), test.labels.numpy()
    temperature = predictor.calibration.temperature
    calibration = calibration_report(softmax(logits), softmax(logits, temperature), labels, temperature)
    verdicts = verdict_report(predictor, test, ROOT / "data").table
    return {"checkpoint": checkpoint.name, "accuracy": float((logits.argmax(1) == labels).mean()),
            "calibration": calibration, "verdicts": verdicts}


def run(checkpoints=DEFAULT_CHECKPOINTS) -> list[dict]:
    """Figures for each checkpoint that exists: the defaults are whichever models `make train` made
    (main() refuses a missing checkpoint the user named)."""
    return [measure(Path(path)) for path in run_checkpoints(checkpoints)]


def run_checkpoints(checkpoints=DEFAULT_CHECKPOINTS) -> list[str]:
    return [path for path in checkpoints if Path(path).is_file()]


def missing_checkpoints(paths: list[str]) -> list[str]:
    return [path for path in paths if not Path(path).is_file()]


def table(results: list[dict]) -> str:
    """One column per model, one row per figure, with the target and whether it is met."""
    if not results:
        return "no trained MNIST checkpoint in models/: run `make train` first"
    rows = [("test accuracy", [r["accuracy"] for r in results], "", None)]
    rows.append(("ECE, raw softmax", [r["calibration"]["before"]["ece"] for r in results], "", None))
    rows.append(("ECE, calibrated", [r["calibration"]["after"]["ece"] for r in results], "<= 1%",
                 lambda v: v <= 0.01))
    for index, row in enumerate(results[0]["verdicts"]["digits"]):
        shares = [r["verdicts"]["digits"][index]["answered_digit"] for r in results]
        rows.append((f"{row['set']}: answered digit", shares, ">= 99%", lambda v: v >= 0.99))
        if index:
            accuracy = [r["verdicts"]["digits"][index]["accuracy"] for r in results]
            # within 1 point of that model's own test accuracy
            rows.append((f"{row['set']}: accuracy", accuracy, "within 1 pt",
                         [value >= r["accuracy"] - 0.01 for value, r in zip(accuracy, results)]))
    for index, row in enumerate(results[0]["verdicts"]["non_digits"]):
        shares = [r["verdicts"]["non_digits"][index]["answered_not_a_digit"] for r in results]
        rows.append((f"{row['family']}: refused", shares, ">= 90%", lambda v: v >= 0.90))
    for index, row in enumerate(results[0]["verdicts"].get("reviewed", [])):
        shares = [r["verdicts"]["reviewed"][index]["answered_not_a_digit"] for r in results]
        name = f"{row['family']}, less {row['read_as_digit']} read as digits: refused"
        rows.append((name, shares, ">= 90%", lambda v: v >= 0.90))
    width = max(len(name) for name, *_ in rows) + 2
    lines = [f"{'figure':<{width}}" + "".join(f"{r['checkpoint']:>26}" for r in results) + "  target"]
    for name, values, target, met in rows:
        verdicts = met if isinstance(met, list) else [None if met is None else met(v) for v in values]
        cells = "".join(f"{_cell(v, ok):>26}" for v, ok in zip(values, verdicts))
        lines.append(f"{name:<{width}}{cells}  {target}")
    thresholds = ", ".join(f"{r['checkpoint']} {_threshold(r)}" for r in results)
    lines.append(f"refusal threshold (digit score): {thresholds}")
    if any(r["verdicts"].get("fashion_mnist_missing") for r in results):  # else the row's absence says nothing
        lines.append(FASHION_NOTE)
    return "\n".join(lines)


def _cell(value: float, met: bool | None) -> str:
    mark = "" if met is None else (" ok" if met else " MISSED")
    return f"{value:.2%}{mark}"


def _threshold(result: dict) -> str:
    threshold = result["verdicts"]["reject_threshold"]
    return "none" if threshold is None else f"{threshold:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+",
                        help="checkpoints to measure (default: the two MNIST models in models/, those that exist)")
    args = parser.parse_args(argv)
    missing = missing_checkpoints(args.checkpoint or [])
    if missing:  # named on purpose: skipping it would report on fewer models than asked for
        named = "checkpoint" + ("s" if len(missing) > 1 else "")
        print(f"error: {named} {', '.join(missing)} not found: name existing .pth files, "
              "or train the MNIST models with `make train`", file=sys.stderr)
        return 2
    from mnist_classifier.errors import UserError

    if not args.checkpoint and not run_checkpoints(DEFAULT_CHECKPOINTS):
        print("error: no trained MNIST checkpoint in models/: run `make train` first, or name one with --checkpoint",
              file=sys.stderr)
        return 2
    try:
        print(table(run(args.checkpoint or DEFAULT_CHECKPOINTS)))
    except UserError as error:  # a corrupt or foreign checkpoint: its one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
