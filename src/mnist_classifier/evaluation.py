"""Model outputs and metrics on a split: logits, the metric registry, `Evaluation`.

Owns what a score is; assessment.py runs `mnist-classifier evaluate` on top of it,
combine.py averages members and views, report.py writes the results.

Adding a metric is one function and one registry entry; it then appears in
metrics.json, in report.html and in the terminal summary:

    @register_metric("balanced_accuracy")
    def balanced_accuracy(labels, preds, probs):
        '''Mean of the per-class recalls.'''
        return sklearn.metrics.balanced_accuracy_score(labels, preds)

A metric gets the true labels (N,), the predicted labels (N,) and the class
probabilities (N, C) as numpy arrays, and returns either one float for the whole
split or one float per class (a sequence of length C).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Normalization, Split, eval_batches, to_model_input
from .errors import UserError, what_it_raised


@dataclass
class SplitScore:
    loss: float
    accuracy: float  # fraction in [0, 1]
    logits: torch.Tensor | None = field(default=None, repr=False, compare=False)  # (N, C), for figures


@torch.no_grad()
def compute_logits(model: nn.Module, split: Split, norm: Normalization, batch_size: int = 256) -> torch.Tensor:
    """Logits for every image of the split, in order, on the split's device.

    Channels-last batches of 256: 3.4x the images/s of plain NCHW batches of 1,000 for
    SimpleCNN on 2 AVX2 cores (6,900 vs 2,000; oneDNN's convolutions and pooling want
    NHWC, and 256 images of activations stay in cache). Training keeps its model
    channels-last already, so converting it here is free."""
    was_training = model.training
    model.eval().to(memory_format=torch.channels_last)
    outputs = [model(to_model_input(images, norm).contiguous(memory_format=torch.channels_last))
               for images, _ in eval_batches(split, batch_size)]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 10)


def redrawn_validation_logits(model: nn.Module, val: Split, norm: Normalization) -> torch.Tensor:
    """Logits of the validation digits re-drawn with even pens (strokes.random_pen_images), on
    the split's device: calibration lets 99.5% of these through as well as of the originals."""
    from .strokes import random_pen_images

    return compute_logits(model, Split(random_pen_images(val.images).to(val.images.device), val.labels), norm)


def score_split(model: nn.Module, split: Split, norm: Normalization) -> SplitScore:
    logits = compute_logits(model, split, norm)
    loss = F.cross_entropy(logits, split.labels).item()
    correct = int((logits.argmax(1) == split.labels).sum())
    # An exact fraction: a float32 mean makes 9,920 of 10,000 0.99199998, short of 99.2%
    accuracy = correct / len(split) if len(split) else float("nan")
    return SplitScore(loss, accuracy, logits)


# ------------------------------------------------------------------ metric registry
MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], "float | Sequence[float]"]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    percent: bool  # shown as a percentage (accuracy-like) or as a plain number
    description: str  # the first line of the function's docstring


METRICS: dict[str, Metric] = {}


def register_metric(name: str, percent: bool = True):
    """Function decorator: compute `name` in every evaluation (see the module docstring)."""

    def add(fn: MetricFn) -> MetricFn:
        if name in METRICS and METRICS[name].fn is not fn:
            raise UserError(f"metric name '{name}' is already registered (by {METRICS[name].fn.__module__}): "
                            "register yours under another name")
        description = (fn.__doc__ or name).strip().splitlines()[0]
        METRICS[name] = Metric(name, fn, percent, description)
        return fn

    return add


def _class_ids(probs: np.ndarray) -> list[int]:
    return list(range(probs.shape[1]))


def _without_images(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-class values with NaN (shown as "-", null in JSON) for classes that have no image in the
    set: a user's drawings may lack some digits, and 0% there would read as "always wrong"."""
    counts = np.bincount(np.asarray(labels), minlength=len(values))[: len(values)]
    return np.where(counts > 0, np.asarray(values, dtype=float), np.nan)


class _LazySklearnMetrics:
    """`sklearn.metrics`, imported on first use: it costs ~2 s, which `train` need not pay upfront."""

    def __getattr__(self, name: str):
        from sklearn import metrics

        return getattr(metrics, name)


skm = _LazySklearnMetrics()


@register_metric("accuracy")
def accuracy(labels, preds, probs):
    """Fraction of test images classified correctly."""
    return skm.accuracy_score(labels, preds)


@register_metric("macro_f1")
def macro_f1(labels, preds, probs):
    """F1 score averaged over the classes present, each weighted equally."""
    return skm.f1_score(labels, preds, labels=sorted(set(np.asarray(labels).tolist())), average="macro",
                        zero_division=0)


@register_metric("top2_accuracy")
def top2_accuracy(labels, preds, probs):
    """Fraction of images whose true class is among the two most probable."""
    return skm.top_k_accuracy_score(labels, probs, k=2, labels=_class_ids(probs))


@register_metric("log_loss", percent=False)
def log_loss(labels, preds, probs):
    """Mean cross-entropy of the predicted probabilities (lower is better)."""
    return skm.log_loss(labels, probs, labels=_class_ids(probs))


@register_metric("per_class_accuracy")
def per_class_accuracy(labels, preds, probs):
    """Per class: share of its images classified correctly."""
    matrix = skm.confusion_matrix(labels, preds, labels=_class_ids(probs))
    return _without_images(labels, np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1))


@register_metric("precision")
def precision(labels, preds, probs):
    """Per class: share of the images predicted as it that really are it."""
    # no image and never predicted: nothing to score; predicted without an image: 0%, every one wrong
    values = skm.precision_score(labels, preds, labels=_class_ids(probs), average=None, zero_division=0)
    predicted = np.bincount(np.asarray(preds), minlength=len(values))[: len(values)]
    return np.where(predicted > 0, values, _without_images(labels, values))


@register_metric("recall")
def recall(labels, preds, probs):
    """Per class: share of its images that are found (equals per-class accuracy)."""
    return _without_images(labels, skm.recall_score(labels, preds, labels=_class_ids(probs), average=None,
                                                    zero_division=0))


@register_metric("f1")
def f1(labels, preds, probs):
    """Per class: harmonic mean of precision and recall."""
    return _without_images(labels, skm.f1_score(labels, preds, labels=_class_ids(probs), average=None,
                                                zero_division=0))


# ----------------------------------------------------------------- the evaluation
@dataclass
class Evaluation:
    """Every number the report shows, computed from labels and probabilities alone."""

    class_names: list[str]
    labels: np.ndarray  # (N,) int64
    probs: np.ndarray  # (N, C) float32
    metrics: dict[str, float | np.ndarray]  # registry name -> float, or (C,) per class
    confusion: np.ndarray  # (C, C): rows are true classes, columns predicted ones

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def class_counts(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    def scalar_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metrics.items() if np.ndim(v) == 0}

    def per_class_metrics(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=float) for k, v in self.metrics.items() if np.ndim(v) == 1}

    def confused_pairs(self, count: int = 10) -> list[tuple[int, int, int]]:
        """(true, predicted, images) of the largest off-diagonal cells, largest first."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:count]
        pairs = [(int(i // off.shape[1]), int(i % off.shape[1])) for i in order]
        return [(t, p, int(off[t, p])) for t, p in pairs if off[t, p] > 0]

    def confident_mistakes(self, count: int | None = 24) -> np.ndarray:
        """Indices of misclassified images, most confident (in the wrong class) first."""
        wrong = np.flatnonzero(self.preds != self.labels)
        confidence = self.probs[wrong, self.preds[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")][:count]

    def top_k(self, index: int, k: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(-self.probs[index], kind="stable")[:k]
        return [(int(c), float(self.probs[index, c])) for c in order]

    def to_dict(self, mistakes: int = 24) -> dict[str, Any]:
        """The JSON-ready numbers: metrics, confusion matrix, confused pairs, mistakes."""
        names = self.class_names
        metrics: dict[str, Any] = dict(self.scalar_metrics())
        for key, values in self.per_class_metrics().items():
            metrics[key] = {names[c]: float(v) if np.isfinite(v) else None for c, v in enumerate(values)}
        return {
            "test_size": int(len(self.labels)),
            "class_names": names,
            "class_counts": {names[c]: int(n) for c, n in enumerate(self.class_counts)},
            "metrics": metrics,
            "confusion_matrix": self.confusion.astype(int).tolist(),
            "most_confused_pairs": [
                {"true": names[t], "predicted": names[p], "count": n, "share_of_class": n / int(self.class_counts[t])}
                for t, p, n in self.confused_pairs()
            ],
            "most_confident_mistakes": [
                {"index": int(i), "true": names[self.labels[i]], "predicted": names[self.preds[i]],
                 "confidence": float(self.probs[i, self.preds[i]]),
                 "top3": [{"class": names[c], "probability": p} for c, p in self.top_k(int(i))]}
                for i in self.confident_mistakes(mistakes)
            ],
        }


def metric_value(metric: "Metric", labels: np.ndarray, preds: np.ndarray, probs: np.ndarray) -> float | np.ndarray:
    """One number, or one per class: what the report, metrics.json and the summary can show. A
    metric (a plugin's, say) that fails or gives anything else is one line naming it (helper-66)."""
    where = f"metric '{metric.name}' (in {getattr(metric.fn, '__module__', '?')})"
    try:
        value = metric.fn(labels, preds, probs)
    except Exception as error:  # noqa: BLE001 (a plugin's code may raise anything)
        raise UserError(f"{where} failed: {what_it_raised(error)}") from None
    try:
        if value is None or isinstance(value, (str, bytes)):  # numpy would read None as NaN
            raise TypeError
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise UserError(f"{where} gave {type(value).__name__}: return one number, or one per class") from None
    classes = probs.shape[1]
    if array.ndim == 0:
        return float(array)
    if array.shape != (classes,):
        raise UserError(f"{where} gave an array of shape {array.shape}: return one number, or one per class "
                        f"({classes})")
    return array


def evaluate_predictions(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> Evaluation:
    """Run every registered metric on true labels (N,) and class probabilities (N, C)."""
    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float32)
    preds = probs.argmax(axis=1)
    computed = {metric.name: metric_value(metric, labels, preds, probs) for metric in METRICS.values()}
    confusion = skm.confusion_matrix(labels, preds, labels=list(range(probs.shape[1])))
    return Evaluation(list(class_names), labels, probs, computed, confusion)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> Evaluation:
    probs = torch.softmax(logits.detach().float(), dim=1)
    return evaluate_predictions(labels.cpu().numpy(), probs.cpu().numpy(), class_names)


def evaluate_model(model: nn.Module, split: Split, norm: Normalization, class_names: Sequence[str]) -> Evaluation:
    return evaluate_logits(compute_logits(model, split, norm), split.labels, class_names)


def log_test_figures(writer, logits: torch.Tensor, split: Split, class_names: Sequence[str],
                     step: int = 0) -> Evaluation:
    """Put the confusion matrix and the most confident mistakes (from the logits of `split`) into TensorBoard."""
    from .plots import tensorboard_figures

    evaluation = evaluate_logits(logits, split.labels, class_names)
    for tag, figure in tensorboard_figures(evaluation, split.images.cpu().numpy()).items():
        writer.add_figure(tag, figure, step, close=False)
    return evaluation
