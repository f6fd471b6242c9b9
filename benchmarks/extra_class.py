"""What generated non-digits should learn: a "not a digit" class, or a uniform guess.

    python benchmarks/extra_class.py                         # the make-train recipe, seed 42, both ways (~3 min)
    python benchmarks/extra_class.py --seed 1 --runs class:0.25 class:0.5 uniform:0.5
    python benchmarks/extra_class.py --epochs 1 --limit-train 3000     # a quick look
    python benchmarks/extra_class.py --runs class:0.1 --fragment-share 0.2   # another mix of non-digits

Each run is `train` with the recipe's everything (the seed, the batches, the same generated
non-digits) but `outlier_target` and `outlier_weight` (exposure.py), given as TARGET:WEIGHT,
and, if given, the mix of non-digits (`fragment_share`).
The default compares the recipe's own (read from configs/simple_cnn.yaml; class:0.1 since
6 Dec) with the uniform guess of the recipe before 5 Dec (uniform:0.5). Both models then go
through the tables `evaluate` prints (honesty.verdict_report), each refusing by its own
calibrated threshold, chosen by the same rule: 99.5% of validation digits pass, as written
and re-drawn with an even pen. The tables include the test digits drawn on paper with a
marker and brought back by `preprocess.to_mnist`, the path every user's drawing takes; one
more row takes that path blurred: the first 3,000 test digits enlarged bilinearly to 280 px
(~1 px of blur at 28 px, like an out-of-focus photo, which to_mnist keeps;
preprocess.digits_on_paper).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE_RUN = "uniform:0.5"  # the uniform guess of the recipe before 5 Dec
PAPER_DIGITS = 3000


def train_and_measure(run: str, seed: int, scratch: Path, overrides: dict, test,
                      blurred: np.ndarray) -> tuple[float, list[tuple[str, float]]]:
    """(seconds of training, the figures) of one TARGET:WEIGHT run; `blurred`: the first test digits on paper, blurred."""
    from mnist_classifier.config import resolve_config
    from mnist_classifier.honesty import verdict_report
    from mnist_classifier.reader import load_predictor
    from mnist_classifier.training import train

    target, _, weight = run.partition(":")
    folder = scratch / run.replace(":", "_")
    config = resolve_config(None, dict(seed=seed, outlier_target=target, outlier_weight=float(weight),
                                       save_dir=str(folder / "models"), log_dir=str(folder / "runs"),
                                       data_dir=str(ROOT / "data"), **overrides))
    result = train(config, log=print)
    predictor = load_predictor(result.best_path)
    report = verdict_report(predictor, test, ROOT / "data").table
    passed = float((predictor.assess(blurred)[1] >= predictor.calibration.reject_threshold).mean())
    blurred_row = (f"first {PAPER_DIGITS:,} on paper, blurred: answered digit", passed)
    return sum(result.history["seconds"]), figures(report) + [blurred_row]


def figures(report: dict) -> list[tuple[str, float]]:
    found = [(f"{row['set']}: answered digit", row["answered_digit"]) for row in report["digits"]]
    found.insert(1, ("MNIST test accuracy", report["digits"][0]["accuracy"]))
    found += [(f"{row['family']}: refused", row["answered_not_a_digit"]) for row in report["non_digits"]]
    found += [(f"{row['family']}, reviewed non-digits: refused", row["answered_not_a_digit"])
              for row in report["reviewed"]]
    return found


def default_runs() -> list[str]:
    """The recipe's own TARGET:WEIGHT (configs/simple_cnn.yaml), then the baseline."""
    from mnist_classifier.config import resolve_config

    recipe = resolve_config(None)
    return [f"{recipe.outlier_target}:{recipe.outlier_weight}", BASELINE_RUN]


def check_run(text: str) -> str:
    from mnist_classifier.config import OUTLIER_TARGETS

    target, colon, weight = text.partition(":")
    try:
        if target in OUTLIER_TARGETS and colon and float(weight) >= 0:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: give TARGET:WEIGHT, TARGET one of {', '.join(OUTLIER_TARGETS)}, "
                                     "e.g. class:0.25")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=check_run, default=default_runs(), metavar="TARGET:WEIGHT")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, help="override the recipe's")
    parser.add_argument("--limit-train", type=int, help="train on the first N images only")
    parser.add_argument("--fragment-share", type=float,
                        help="share of pieces of digits among the generated non-digits (the recipe's: 0.35)")
    args = parser.parse_args(argv)
    overrides = {key: value for key in ("epochs", "limit_train", "fragment_share")
                 if (value := getattr(args, key)) is not None}
    from mnist_classifier.config import resolve_config
    from mnist_classifier.errors import UserError

    try:  # a value train would refuse: said now, before MNIST is read and digits are drawn
        resolve_config(None, overrides)
    except UserError as error:
        parser.error(str(error))
    from mnist_classifier.data import load_data
    from mnist_classifier.preprocess import digits_on_paper

    test = load_data(ROOT / "data", log=lambda _line: None).test
    blurred = digits_on_paper(test.images[:PAPER_DIGITS].numpy(), side=280)
    with tempfile.TemporaryDirectory() as scratch:
        results = [(run, *train_and_measure(run, args.seed, Path(scratch), overrides, test, blurred))
                   for run in args.runs]
    print(f"\nSimpleCNN, the make-train recipe, seed {args.seed}" + "".join(f", {k} {v}" for k, v in overrides.items()))
    print(f"{'figure':<58}" + "".join(f"{run:>16}" for run, _, _ in results))
    print(f"{'seconds of training':<58}" + "".join(f"{seconds:>16.0f}" for _, seconds, _ in results))
    for index, (figure, _) in enumerate(results[0][2]):
        print(f"{figure:<58}" + "".join(f"{values[index][1]:>16.2%}" for _, _, values in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
