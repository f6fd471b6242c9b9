"""'Not a digit' as an 11th class, measured against outlier exposure (what `train` does).

    python benchmarks/extra_class.py                 # the make-train recipe, seed 42 (~4 min on 2 cores)
    python benchmarks/extra_class.py --seed 1 --baseline models/seeds/simple_cnn_mnist_seed1/simple_cnn_best.pth

Issue 15 left the choice open: push generated non-digits towards a uniform prediction
(outlier exposure, exposure.py) or teach them as a class of their own. This trains the
second with everything else equal (the recipe, the seed, the batches, the same generated
non-digits with the same weight) and puts both through the tables `evaluate` prints
(honesty.verdict_report), each refusing by the product's rule: the threshold that lets
99.5% of validation digits through, as written and re-drawn with an even pen.

For the 11-class model the refusal score is the log-odds of "some digit" against "not a
digit": logsumexp(digit logits) - the not-a-digit logit. Handing the Predictor the digit
logits minus the not-a-digit logit gives exactly that as its digit score (at temperature
1; the fitted temperature scales it), and leaves the digits' probabilities as they were.
Nothing here changes the product: its checkpoints stay 10-class.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mnist_classifier import distributed
from mnist_classifier.calibration import calibrate_logits
from mnist_classifier.config import resolve_config
from mnist_classifier.data import load_data, to_model_input
from mnist_classifier.honesty import verdict_report
from mnist_classifier.inference import Predictor
from mnist_classifier.models import create_model
from mnist_classifier.reader import load_predictor
from mnist_classifier.strokes import random_pen_images
from mnist_classifier.training import Trainer, build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[1]
NOT_A_DIGIT = 10  # the extra class's index


class ExtraClassTrainer(Trainer):
    """The product's Trainer with an 11-output network whose last class is "not a digit"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        torch.manual_seed(self.config.seed)  # the same initial weights as the 10-class run, bar the last row
        model = create_model(self.config.model_name, num_classes=NOT_A_DIGIT + 1).to(self.ctx.device)
        self.model = self.net = model.to(memory_format=self.memory_format)
        self.optimizer = build_optimizer(self.config, model)
        self.scheduler = build_scheduler(self.config, self.optimizer, self.steps)

    def train_step(self, indices: torch.Tensor, augment: torch.Generator) -> torch.Tensor:
        """Trainer.train_step with one change: non-digits are taught class 10, not a uniform guess."""
        labels = self.train_split.labels[indices]
        images = self.exposure.digits(self.train_split, indices, augment)
        non_digits = self.exposure.non_digits(len(indices), augment)
        images = torch.cat((images, non_digits))
        inputs = to_model_input(images, self.norm, augment if self.config.augment else None, self.augmentation)
        all_logits = self.net(inputs.contiguous(memory_format=self.memory_format))
        logits = all_logits[:len(labels)]
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)
        not_digit = torch.full((len(non_digits),), NOT_A_DIGIT, device=labels.device)
        loss = loss + self.exposure.outlier_weight * F.cross_entropy(all_logits[len(labels):], not_digit)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        correct = (logits.detach().argmax(1) == labels).sum()
        return torch.stack((loss.detach().double() * len(labels), correct.double(),
                            torch.full((), float(len(labels)), dtype=torch.float64, device=labels.device)))


def train_extra_class(seed: int, scratch: Path, **overrides) -> tuple[torch.nn.Module, object, float]:
    """The make-train recipe with the extra class; returns (best model, data, seconds of training)."""
    config = resolve_config(None, dict(seed=seed, save_dir=str(scratch / "models"), log_dir=str(scratch / "runs"),
                                       data_dir=str(ROOT / "data"), device="cpu", **overrides))
    ctx = distributed.setup(config.device, config.num_threads)
    data = load_data(config.data_dir, config.dataset, config.val_size, config.limit_train, log=print)
    trainer = ExtraClassTrainer(config, ctx, data, print)
    trainer.open_run_log()
    trainer.fit()
    trainer.run_log.close()
    best = torch.load(scratch / "models" / "simple_cnn_best.pth", weights_only=True)
    trainer.model.load_state_dict(best["model_state_dict"])
    return trainer.model.eval(), data, sum(trainer.state.history["seconds"])


def extra_class_predictor(model: torch.nn.Module, data) -> Predictor:
    """A Predictor over the 11-class model, calibrated and thresholded by the product's rule."""

    @torch.no_grad()
    def backend(batch: np.ndarray) -> np.ndarray:
        logits = torch.cat([model(torch.from_numpy(part)) for part in np.array_split(batch, max(1, len(batch) // 500))])
        return (logits[:, :NOT_A_DIGIT] - logits[:, NOT_A_DIGIT:]).numpy()

    predictor = Predictor(backend, "simple_cnn, not-a-digit class", data.spec.mean, data.spec.std)
    val = data.val
    logits = torch.from_numpy(predictor.logits(val.images.numpy()))
    redrawn = torch.from_numpy(predictor.logits(random_pen_images(val.images).numpy()))
    predictor.calibration = calibrate_logits(logits, val.labels, refuse=True, redrawn_logits=redrawn)
    return predictor


def rows(report: dict) -> list[tuple[str, float]]:
    found = [(f"{row['set']}: answered digit", row["answered_digit"]) for row in report["digits"]]
    found.insert(1, ("MNIST test accuracy", report["digits"][0]["accuracy"]))
    found += [(f"{row['family']}: refused", row["answered_not_a_digit"]) for row in report["non_digits"]]
    found += [(f"{row['family']}, reviewed non-digits: refused", row["answered_not_a_digit"])
              for row in report["reviewed"]]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, help="override the recipe's (a quick look: --epochs 1)")
    parser.add_argument("--limit-train", type=int, help="train on the first N images only")
    parser.add_argument("--outlier-weight", type=float, help="the non-digits' loss weight (default: the recipe's)")
    parser.add_argument("--baseline", default=str(ROOT / "models" / "simple_cnn_best.pth"),
                        help="the outlier-exposure checkpoint of the same recipe and seed (default: make train's)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        overrides = {key: value for key, value in (("epochs", args.epochs), ("limit_train", args.limit_train),
                                                         ("outlier_weight", args.outlier_weight)) if value}
        model, data, seconds = train_extra_class(args.seed, Path(scratch), **overrides)
    extra = verdict_report(extra_class_predictor(model, data), data.test, ROOT / "data").table
    columns = [("not-a-digit class", rows(extra))]
    if Path(args.baseline).is_file():
        columns.insert(0, ("outlier exposure", rows(verdict_report(load_predictor(args.baseline), data.test,
                                                                    ROOT / "data").table)))
    weight = f", outlier weight {args.outlier_weight}" if args.outlier_weight else ""
    print(f"\nSimpleCNN, the make-train recipe, seed {args.seed}{weight}; the extra class trained in {seconds:.0f} s "
          f"({time.perf_counter() - started:.0f} s with evaluation); baseline: {args.baseline}")
    print(f"{'figure':<58}" + "".join(f"{name:>20}" for name, _ in columns))
    for index, (figure, _) in enumerate(columns[-1][1]):
        print(f"{figure:<58}" + "".join(f"{values[index][1]:>20.2%}" for _, values in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
