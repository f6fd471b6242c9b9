"""`mnist-classifier evaluate`: a checkpoint (or several) -> scores, calibration, refusals, report.

    mnist-classifier evaluate                                  # models/simple_cnn_best.pth
    mnist-classifier evaluate --checkpoint models/improved_cnn_best.pth --out /tmp/report

scores the test set once and writes `reports/<model_name>/`: metrics.json, report.html
and the figures of plots.py. For SimpleCNN that is 11 CPU-seconds (8.5 of them the
10,000 test images, 2 the five figures), measured on this project's 2-core VM; the
calibration and "not a digit" tables (honesty.py) add the generated non-digit families.

Owns the order of the command's steps only: scores come from evaluation.py, averaging
from combine.py, honesty tables from honesty.py, files from report.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .calibration import Calibration
from .checkpoint import load_model, stored_normalization
from .combine import ORIGINAL_ONLY, averaged_probabilities_at, check_members_agree, combined_payload, tta_views
from .data import load_data
from .datasets import get_dataset_spec
from .errors import UserError
from .evaluation import METRICS, Evaluation, evaluate_predictions
from .honesty import calibration_report, calibration_text, verdict_report, verdict_text
from .report import check_report_dir, default_report_dir, write_report
from .torch_backend import torch_predictor


def evaluate_checkpoint(
    checkpoint: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    data_dir: str | Path = "data",
    log: Callable[[str], None] = print,
    dataset: str | None = None,
    tta: bool = False,
) -> tuple[Evaluation, Path]:
    """Score a checkpoint (or an ensemble of them) on its test set and write the report.

    Returns the evaluation and the report folder. The test set is that of the
    checkpoints' dataset; asking for another one is an error. With several checkpoints
    or `tta`, the class probabilities are averaged (see combine.py). Everything is
    computed before the first file is written, and the folder appears complete or not
    at all (see report.write_report).
    """
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    loaded = [load_model(path) for path in checkpoints]
    payloads = [payload for _, payload in loaded]
    check_members_agree(payloads, checkpoints)
    trained_on = payloads[0].get("dataset", "mnist")  # checkpoints older than the registry are MNIST
    check_same_dataset(checkpoints[0], trained_on, dataset)
    views = tta_views(get_dataset_spec(trained_on)) if tta else ORIGINAL_ONLY
    payload = combined_payload(payloads, checkpoints, views)
    target = check_report_dir(Path(out_dir) if out_dir is not None else default_report_dir(payload["model_name"]))
    data = load_data(data_dir, trained_on, log=lambda _line: None)
    class_names = list(payloads[0].get("class_names") or data.spec.class_names)
    members = [(model, stored_normalization(member)) for model, member in loaded]
    calibrations = [Calibration.from_payload(member) for member in payloads]
    raw, probs = averaged_probabilities_at(members, data.test, views,
                                           [[1.0] * len(members), [c.temperature for c in calibrations]])
    labels = data.test.labels.numpy()
    evaluation = evaluate_predictions(labels, probs.numpy(), class_names)
    temperature = calibrations[0].temperature if len(members) == 1 and calibrations[0].fitted else None
    honesty = {"calibration": calibration_report(raw.numpy(), probs.numpy(), labels, temperature)}
    if data.spec.drawable and len(members) == 1 and not tta:  # refusal is one model's single-view rule
        predictor = torch_predictor(*loaded[0], Path(checkpoints[0]))
        honesty["verdicts"] = verdict_report(predictor, data.test, data_dir)
    written = write_report(evaluation, data.test.images.numpy(), payload, Path(checkpoints[0]), target, honesty)
    log(summary_text(evaluation, payload["model_name"], written))
    log(calibration_text(honesty["calibration"]))
    if "verdicts" in honesty:
        log(verdict_text(honesty["verdicts"]))
    return evaluation, written


def check_same_dataset(checkpoint: str | Path, trained_on: str, requested: str | None) -> None:
    if requested is not None and requested != trained_on:
        get_dataset_spec(requested)  # an unknown name gets the error that lists the choices
        raise UserError(f"{checkpoint} was trained on {trained_on}, not {requested}: its score on {requested} "
                        f"would be meaningless; drop --dataset, or evaluate a model trained on {requested}")


def summary_text(evaluation: Evaluation, model_name: str, report_dir: Path) -> str:
    """The short table printed at the end of `mnist-classifier evaluate`."""
    scalars = evaluation.scalar_metrics()
    shown = ", ".join(
        f"{name} {value:.2%}" if METRICS[name].percent else f"{name} {value:.4f}" for name, value in scalars.items()
    )
    per_class = {k: v for k, v in evaluation.per_class_metrics().items() if k in ("precision", "recall", "f1")}
    width = max(5, *map(len, evaluation.class_names))  # "T-shirt/top" as well as "7"
    lines = [f"{model_name} on {len(evaluation.labels):,} test images: {shown}",
             f"{'class':>{width}} {'images':>7} " + " ".join(f"{name:>9}" for name in per_class)]
    for c, name in enumerate(evaluation.class_names):
        cells = " ".join(f"{values[c]:>9.2%}" for values in per_class.values())
        lines.append(f"{name:>{width}} {int(evaluation.class_counts[c]):>7,} {cells}")
    names = evaluation.class_names
    pairs = ", ".join(f"{names[t]}->{names[p]} ({n})" for t, p, n in evaluation.confused_pairs(5))
    lines.append(f"most confused (true->predicted): {pairs or 'none'}")
    lines.append(f"report: {report_dir / 'report.html'} (+ metrics.json and figures in {report_dir})")
    return "\n".join(lines)
