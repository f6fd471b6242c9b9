"""Every figure the project draws: report PNGs, TensorBoard images, notebook plots.

Figures are `matplotlib.figure.Figure` objects on the Agg canvas, made without pyplot:
nothing opens a window or needs a display, no global figure list grows, and in a
notebook a returned figure still shows inline. Inputs are plain numpy arrays, so any
caller (evaluation, training, the notebook) can draw them.

    figure = confusion_matrix_figure(confusion, class_names)
    save_figure(figure, "reports/simple_cnn/confusion_matrix.png")
"""
from __future__ import annotations

import textwrap

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, MultipleLocator, PercentFormatter, StrMethodFormatter

from .answer import percent

DPI = 120
TITLE_POINTS = 12  # matplotlib's "large", the size of every title here
RIGHT, WRONG = "#1a7f37", "#cf222e"  # green and red that stay legible on white
BAR, WORST = "#4c78a8", "#e45756"


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def fitted(title: str, figure: Figure, share: float = 1.0) -> str:
    """`title` broken into lines that fit the `share` of the figure's width it sits over: constrained
    layout makes room for a title's height, never its width (a five-class confusion matrix cut its
    own: helper-79). 0.9 of it: an axes' title sits off the figure's centre."""
    per_line = max(20, int(0.9 * share * figure.get_figwidth() * 72 / (0.62 * TITLE_POINTS)))
    return textwrap.fill(title, per_line, break_on_hyphens=False)  # "user-digits" is one name


def save_figure(figure: Figure, path: str | Path) -> Path:
    figure.savefig(path, dpi=DPI, facecolor="white")
    return Path(path)


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


# --------------------------------------------------------------------- per class
def accuracy_floor(values_percent: np.ndarray) -> float:
    """Lowest y value shown: a little under the worst class, so 98% vs 100% is visible."""
    low, high = float(np.nanmin(values_percent)), float(np.nanmax(values_percent))
    margin = max(0.5, 0.4 * (high - low))
    return max(0.0, math.floor(low - margin))


def per_class_accuracy_figure(accuracies: Sequence[float], class_names: Sequence[str],
                              counts: Sequence[int] | None = None, overall: float | None = None,
                              title: str = "Per-class test accuracy") -> Figure:
    values = np.asarray(accuracies, dtype=float) * 100  # NaN: a class without images in the set
    floor = accuracy_floor(values)
    figure = new_figure(10, 4.8)
    ax = figure.add_subplot()
    worst = np.nanmin(values)
    colors = [WORST if v == worst else BAR for v in values]
    ticks = list(class_names)
    if counts is not None:  # "3\n9 wrong": the bar height in images, not just percent
        ticks = [f"{name}\n{round(n * (1 - v / 100))} wrong" if n else f"{name}\nno images"
                 for name, n, v in zip(class_names, counts, values)]
    bars = ax.bar(range(len(values)), np.nan_to_num(values - floor), bottom=floor, color=colors, width=0.7)
    ax.set_xticks(range(len(values)), ticks, fontsize=9 if counts is None else 8.5)
    ax.bar_label(bars, labels=[f"{v:.1f}%" if np.isfinite(v) else "" for v in values], padding=2, fontsize=9,
                 bbox=dict(facecolor="white", edgecolor="none", pad=0.6))
    if overall is not None:  # labelled at the right edge: a legend box would cover bars
        ax.axhline(overall * 100, color="0.25", linestyle="--", linewidth=1)
        ax.annotate(f"all\n{overall:.2%}", xy=(1, overall * 100), xycoords=("axes fraction", "data"),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=9, color="0.25")
    ax.set_ylim(floor, 100 + (100 - floor) * 0.08)
    span = 100 - floor
    ax.yaxis.set_major_locator(MultipleLocator(0.25 if span <= 2 else 0.5 if span <= 5 else 5 if span <= 40 else 10))
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=2 if span <= 2 else 1 if span <= 5 else 0))
    ax.set_ylabel(f"accuracy (axis starts at {floor:g}%)")
    ax.set_xlabel("class")
    ax.set_title(fitted(title, figure))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return figure


# ------------------------------------------------------------------- confusion
def confusion_matrix_figure(confusion: np.ndarray, class_names: Sequence[str],
                            title: str = "Confusion matrix") -> Figure:
    """Counts in every cell; correct (diagonal) in blue, mistakes in red on a log scale."""
    confusion = np.asarray(confusion)
    size = len(class_names)
    figure = new_figure(max(4.5, 1.0 + 0.62 * size), max(3.4, 0.6 + 0.58 * size))  # room for the title and colour bar
    ax = figure.add_subplot()
    diagonal = np.eye(size, dtype=bool)
    ax.imshow(np.ma.masked_where(~diagonal, np.ones_like(confusion, dtype=float)), cmap="Blues",
              vmin=0, vmax=1.6)
    errors = np.ma.masked_where(diagonal | (confusion == 0), confusion.astype(float))
    top = max(2.0, float(errors.max()) if errors.count() else 2.0)
    image = ax.imshow(errors, cmap="Reds", norm=LogNorm(vmin=1, vmax=top))
    bar = figure.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
    bar.set_label("misclassified images (log scale)")
    bar.ax.yaxis.set_major_locator(FixedLocator([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= top]))
    bar.ax.yaxis.set_major_formatter(StrMethodFormatter("{x:.0f}"))
    bar.ax.yaxis.set_minor_locator(FixedLocator([]))
    for (row, col), count in np.ndenumerate(confusion):
        if count == 0:
            continue
        dark = row == col or math.log(count) >= 0.55 * math.log(top)  # white text on the darker reds
        ax.text(col, row, f"{count:d}", ha="center", va="center", fontsize=9 if count < 1000 else 8,
                color="white" if dark else "black", fontweight="bold" if row == col else "normal")
    slanted = max(map(len, class_names)) > 3  # "T-shirt/top" and "Trouser" would overlap
    ax.set_xticks(range(size), class_names, rotation=35 if slanted else 0,
                  ha="right" if slanted else "center", rotation_mode="anchor")
    ax.set_yticks(range(size), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(fitted(title, figure))
    ax.set_xticks(np.arange(size + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(size + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    return figure


# ---------------------------------------------------------------------- images
def _image_grid(count: int, columns: int, cell_height: float, title: str,
                cell_width: float = 1.45) -> tuple[Figure, list]:
    rows = max(1, math.ceil(count / columns))
    figure = new_figure(cell_width * columns, cell_height * rows + 0.5)
    figure.suptitle(fitted(title, figure))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_axis_off()
    return figure, list(axes)


def _show_digit(ax, image: np.ndarray, edge: str | None = None) -> None:
    ax.set_axis_on()
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(edge is not None)
        if edge is not None:
            spine.set_color(edge)
            spine.set_linewidth(2.5)


def mistakes_figure(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, indices: Sequence[int],
                    class_names: Sequence[str], title: str | None = None, columns: int = 6) -> Figure:
    """Misclassified images in the given order, each with true/predicted and top-3 probabilities."""
    indices = list(indices)
    title = title or f"Most confident mistakes ({len(indices)} shown)"
    wide = max(map(len, class_names)) > 3  # clothing names: fewer, wider cells so titles fit
    columns = min(columns, 4) if wide else columns
    figure, axes = _image_grid(len(indices), columns, 2.2 if wide else 2.0, title, 2.9 if wide else 1.45)
    if not indices:
        axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    for ax, index in zip(axes, indices):
        order = np.argsort(-probs[index], kind="stable")[:3]
        _show_digit(ax, images[index], WRONG)
        top3 = "  ".join(f"{class_names[c]}:{percent(probs[index, c], wrong=True)}" for c in order)
        ax.set_title(f"true {class_names[labels[index]]} → pred {class_names[order[0]]}\n{top3}",
                     fontsize=8.5, color=WRONG)
    return figure


def sample_indices(labels: np.ndarray, preds: np.ndarray, random_count: int = 30, wrong_count: int = 10,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random sample of the test set, and a fixed random sample of its mistakes."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(labels), size=min(random_count, len(labels)), replace=False)
    wrong = np.flatnonzero(labels != preds)
    mistakes = rng.choice(wrong, size=min(wrong_count, len(wrong)), replace=False) if len(wrong) else wrong
    return np.sort(picked), np.sort(mistakes)


def sample_predictions_figure(images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                              indices: Sequence[int], class_names: Sequence[str],
                              title: str = "Sample predictions", columns: int = 10) -> Figure:
    """Test images with prediction and confidence: green frame right, red frame wrong."""
    indices = list(indices)
    figure, axes = _image_grid(len(indices), columns, 1.75, title)
    for ax, index in zip(axes, indices):
        pred = int(np.argmax(probs[index]))
        right = pred == labels[index]
        _show_digit(ax, images[index], RIGHT if right else WRONG)
        text = f"{class_names[pred]} ({percent(probs[index, pred], wrong=not right)})"
        text += "" if right else f"\ntrue {class_names[labels[index]]}"
        ax.set_title(text, fontsize=9, color=RIGHT if right else WRONG,
                     fontweight="normal" if right else "bold")
    return figure


# ------------------------------------------------------------------- history
NO_HISTORY = "this checkpoint stores no training history"


def training_curves_figure(history: Mapping[str, Sequence[float]] | None,
                           title: str = "Training curves", note: str | None = None,
                           no_history: str = NO_HISTORY) -> Figure:
    """Loss, accuracy and learning rate per epoch, from a checkpoint's `history` (else `no_history`, said why)."""
    figure = new_figure(13, 4.2)
    figure.suptitle(fitted(title, figure))
    history = history or {}
    epochs = len(history.get("val_acc") or history.get("train_loss") or [])
    if not epochs:
        ax = figure.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, no_history, ha="center", va="center", fontsize=13, wrap=True)
        return figure
    x = np.arange(1, epochs + 1)
    loss_ax, acc_ax, lr_ax = figure.subplots(1, 3)
    for key, label, style in (("train_loss", "train", "-o"), ("val_loss", "validation", "-s")):
        if history.get(key):
            loss_ax.plot(x, history[key], style, label=label, markersize=4)
    for key, label, style in (("train_acc", "train", "-o"), ("val_acc", "validation", "-s")):
        if history.get(key):
            values = np.asarray(history[key]) * 100
            if key == "val_acc":
                best = int(np.argmax(values))
                label += f" (best {values[best]:.2f}%, epoch {best + 1})"
            acc_ax.plot(x, values, style, label=label, markersize=4)
    if history.get("lr"):
        lr_ax.plot(x, history["lr"], "-o", color="tab:purple", markersize=4)
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy (%)"), (lr_ax, "learning rate (end of epoch)")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        # whole epochs only (one epoch leaves the locator a single integer: it falls back to fractions)
        ax.xaxis.set_major_locator(FixedLocator([1]) if epochs == 1 else MaxNLocator(integer=True))
        ax.set_xlim(0.7, epochs + 0.3)
        ax.margins(y=0.15)  # a lone epoch's points clear the frame and the legend
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=9)
    acc_ax.legend(fontsize=9, loc="best")  # "lower right" hid a short run's low train accuracy
    if note:
        figure.supxlabel(textwrap.fill(note, 150), fontsize=9, color="0.35")  # a fine-tune's note is two lines
    return figure


# ---------------------------------------------------------------- collections
def report_figures(evaluation: Any, images: np.ndarray, history: Mapping | None = None,
                   model_name: str = "model", note: str | None = None, no_history: str = NO_HISTORY,
                   scored: str = "test") -> dict[str, Figure]:
    """The five report figures, by file stem, for an `evaluation.Evaluation` of the `scored` set
    ("test", or "user-digits": a local set, named as such)."""
    ev, names = evaluation, evaluation.class_names
    accuracy = ev.scalar_metrics().get("accuracy", float(np.mean(ev.preds == ev.labels)))
    wrong = int(np.sum(ev.preds != ev.labels))
    random_part, wrong_part = sample_indices(ev.labels, ev.preds)
    samples = sample_predictions_figure(
        images, ev.labels, ev.probs, [*random_part, *wrong_part], names,
        f"{model_name}: {len(random_part)} random {scored} images, then {len(wrong_part)} random mistakes "
        "(green = right, red = wrong; confidence in brackets)")
    return {
        "per_class_accuracy": per_class_accuracy_figure(
            ev.metrics["per_class_accuracy"], names, ev.class_counts, accuracy,
            f"{model_name}: per-class {scored} accuracy ({len(ev.labels):,} images)"),
        "confusion_matrix": confusion_matrix_figure(
            ev.confusion, names, f"{model_name}: confusion matrix, {scored} set ({wrong} of {len(ev.labels):,} wrong)"),
        "error_analysis": mistakes_figure(
            images, ev.labels, ev.probs, ev.confident_mistakes(24), names,
            f"{model_name}: most confident mistakes, {min(wrong, 24)} of {wrong} "
            "(true → predicted; top-3 probabilities)"),
        "sample_predictions": samples,
        "training_curves": training_curves_figure(history, f"{model_name}: training history", note, no_history),
    }


def tensorboard_figures(evaluation: Any, images: np.ndarray) -> dict[str, Figure]:
    """Figures for `SummaryWriter.add_figure`, by tag."""
    ev = evaluation
    return {
        "Test/confusion_matrix": confusion_matrix_figure(ev.confusion, ev.class_names, "Confusion matrix (test set)"),
        "Test/misclassified": mistakes_figure(images, ev.labels, ev.probs, ev.confident_mistakes(24),
                                              ev.class_names, "Most confident mistakes (test set)"),
    }


# ------------------------------------------------------------------- calibration
def reliability_figure(before: Mapping[str, Any], after: Mapping[str, Any], title: str = "Reliability",
                       calibrated: bool = True) -> Figure:
    """Accuracy against confidence per bin (calibration.ReliabilityBins.to_dict()), raw and calibrated.

    A calibrated model's points lie on the diagonal; the bars show how many images each
    bin holds (log scale: nearly all sit in the top bin). `calibrated` False (no stored
    temperature): `after` is the raw softmax again, so only the raw series is drawn."""
    figure = new_figure(9, 4.4)
    curve, counts = figure.subplots(1, 2, width_ratios=(1.3, 1))
    curve.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect calibration")
    series = ((before, "raw softmax", WORST), (after, "calibrated", BAR))[:2 if calibrated else 1]
    if not calibrated:
        title = f"{title} (no stored calibration)"
    for bins, name, color in series:
        points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
        if points:
            xs, ys = zip(*points)
            curve.plot(xs, ys, marker="o", color=color, label=name)
    curve.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (top-class probability)", ylabel="accuracy",
              title=fitted(title, figure, share=0.5))  # the left of two plots
    curve.legend(loc="upper left")
    edges = np.asarray(after["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    bars = ((before, "raw", WORST, -0.25), (after, "calibrated", BAR, 0.25)) if calibrated else ((before, "raw", WORST, 0),)
    for bins, name, color, shift in bars:
        counts.bar(centres + shift * width, np.maximum(bins["counts"], 0), width=width / len(bars), color=color,
                   label=name, log=True)
    counts.set(xlim=(0, 1), xlabel="confidence bin", ylabel="images (log scale)", title="images per bin")
    counts.legend(loc="upper left")
    return figure


def fooled_figure(fooled: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """One row per non-digit family: the images answered as digits (honesty.Verdicts.fooled),
    each with the digit and calibrated confidence the model gave it; an empty row says none."""
    columns = max([len(images) for images, _ in fooled.values()] + [1])
    figure = new_figure(1.3 * columns + 2.2, 1.45 * max(1, len(fooled)) + 0.5)
    figure.suptitle(fitted(title, figure))
    grid = figure.subplots(max(1, len(fooled)), columns + 1, squeeze=False,
                           width_ratios=[2.2] + [1.3] * columns)
    for ax in grid.ravel():
        ax.set_axis_off()
    for row, (family, (images, probs)) in zip(grid, fooled.items()):
        name, _, detail = family.partition(" (")  # "clothes (Fashion-MNIST, ...)" is too long for the margin
        label = f"{name}\n(reviewed)" if detail == "reviewed)" else name
        row[0].text(1.0, 0.5, label, ha="right", va="center", fontsize=10)
        if len(images) == 0:
            row[1].text(0.0, 0.5, "none: every one refused", ha="left", va="center", fontsize=9, color="#555")
        for ax, image, prob in zip(row[1:], images, probs):
            _show_digit(ax, image)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{int(prob.argmax())} ({percent(prob.max(), wrong=True)})", fontsize=8.5, color=WRONG)
    return figure
