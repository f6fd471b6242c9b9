"""`mnist-classifier evaluate`: a checkpoint (or several) -> scores, calibration, refusals, report.

    mnist-classifier evaluate                                  # models/simple_cnn_best.pth
    mnist-classifier evaluate --checkpoint models/improved_cnn_best.pth --out /tmp/report
    mnist-classifier evaluate --dataset user-digits --checkpoint models/simple_cnn_user_best.pth

scores the test set once and writes `reports/<model_name>/`: metrics.json, report.html
and the figures of plots.py. For SimpleCNN that is 11 CPU-seconds (8.5 of them the
10,000 test images, 2 the five figures), measured on this project's 2-core VM; the
calibration and "not a digit" tables (honesty.py) add the generated non-digit families.

`--dataset user-digits` scores the drawings labelled in the demos instead
(`<data-dir>/user/`, so data/user by default: datasets.LOCAL_DATASETS) and writes
`reports/<model_name>_user-digits/` (`<model_name>_user_user-digits/` for a fine-tuned model,
whose reports never replace its base's). A model `finetune` made has learnt most of them:
its honest figure is the held-back one `finetune` prints.

Owns the order of the command's steps only: scores come from evaluation.py, averaging
from combine.py, honesty tables from honesty.py, files from report.py.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

from .bundled import BUNDLED_CHECKPOINT
from .calibration import Calibration
from .checkpoint import load_model, stored_normalization
from .combine import (ORIGINAL_ONLY, averaged_probabilities_at, check_members_agree, check_trained_on_the_views,
                      combined_payload, tta_views)
from .data import Split, load_data, load_local_split
from .datasets import DatasetSpec, get_dataset_spec, get_local_dataset
from .errors import UserError, to_stderr
from .evaluation import METRICS, Evaluation, evaluate_predictions
from .honesty import (answered_report, answered_text, calibration_report, calibration_text, verdict_report,
                      verdict_text)
from .report import check_report_dir, default_report_dir, report_source, write_report
from .torch_backend import torch_predictor
from .run_files import checkpoint_stem


def evaluate_checkpoint(
    checkpoint: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    data_dir: str | Path = "data",
    log: Callable[[str], None] = print,
    dataset: str | None = None,
    tta: bool = False,
    user_data: str | Path | None = None,
) -> tuple[Evaluation, Path]:
    """Score a checkpoint (or an ensemble of them) on its test set and write the report.

    Returns the evaluation and the report folder. The test set is that of the
    checkpoints' dataset; asking for another one is an error. With several checkpoints
    or `tta`, the class probabilities are averaged (see combine.py). Everything is
    computed before the first file is written, and the folder appears complete or not
    at all (see report.write_report). `user_data`: the folder of a local set (default
    <data_dir>/user), for `dataset="user-digits"`.
    """
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    loaded = [load_model(path) for path in checkpoints]
    payloads = [payload for _, payload in loaded]
    check_members_agree(payloads, checkpoints)
    trained_on = payloads[0].get("dataset", "mnist")  # checkpoints older than the registry are MNIST
    check_same_dataset(checkpoints[0], trained_on, dataset)
    local = get_local_dataset(dataset)
    if user_data is not None and local is None:
        raise UserError("--user-data names the folder of your labelled drawings: "
                        "add --dataset user-digits to score them")
    local_folder = None
    if local is not None:
        local_folder = Path(user_data) if user_data is not None else Path(data_dir) / local.folder
    if tta:
        check_trained_on_the_views(payloads, checkpoints)
    views = tta_views(get_dataset_spec(trained_on)) if tta else ORIGINAL_ONLY
    payload = combined_payload(payloads, checkpoints, views)
    if local is not None:  # the report names the set it scored, and does not replace the test set's report
        payload = {**payload, "dataset": local.name}
    # A fine-tuned model shares its base's model_name, and a model of another dataset or the
    # bundled one may too: none of their reports may replace the trained MNIST model's.
    tuned = "_user" if "finetune" in payloads[0] else ""
    alone = len(checkpoints) == 1  # an ensemble's folder does not depend on its members' order
    shipped = "_bundled" if alone and Path(checkpoints[0]).resolve() == BUNDLED_CHECKPOINT.resolve() else ""
    stem = checkpoint_stem(payload["model_name"] + tuned + shipped, trained_on)
    default_dir = default_report_dir(stem + (f"_{local.name}" if local is not None else ""))
    target = check_report_dir(Path(out_dir) if out_dir is not None else default_dir)
    made_from = report_source(target) if out_dir is None and alone else None
    if made_from is not None and Path(made_from).resolve() != Path(checkpoints[0]).resolve():
        log(f"note: this replaces {target}, the report of {made_from}; --out DIR keeps both")
    spec, test = scored_split(data_dir, trained_on, dataset, local_folder)
    honest_tables = spec.drawable and len(checkpoints) == 1 and not tta and local is None
    images_scored = "test images" if local is None else f"{local.name} images ({local_folder})"
    log(f"scoring {', '.join(map(str, checkpoints))} on {len(test):,} {images_scored}"  # the tables come at the end
        + (", then on them re-drawn and on paper, and on generated non-digits" if honest_tables else "")
        + f"{' with test-time views' if tta else ''}: the figures go to {target}")
    class_names = list(payloads[0].get("class_names") or spec.class_names)
    members = [(model, stored_normalization(member, path)) for (model, member), path in zip(loaded, checkpoints)]
    calibrations = [Calibration.from_payload(member, path) for member, path in zip(payloads, checkpoints)]
    raw, probs = averaged_probabilities_at(members, test, views,
                                           [[1.0] * len(members), [c.temperature for c in calibrations]])
    labels = test.labels.numpy()
    evaluation = evaluate_predictions(labels, probs.numpy(), class_names)
    honesty = {"calibration": calibration_report(raw.numpy(), probs.numpy(), labels, stored_temperatures(calibrations))}
    # Refusal is one model's single-view rule. Its tables read the MNIST test digits (and cut
    # non-digits from them): a local set has its own figures, not those.
    if honest_tables:
        predictor = torch_predictor(*loaded[0], Path(checkpoints[0]))
        verdicts = verdict_report(predictor, test, data_dir, spec.name)
        honesty["verdicts"], fooled = verdicts.table, verdicts.fooled
    else:
        fooled = None
    if local is not None and len(members) == 1 and not tta:  # accuracy counts a right guess under "not a digit?"
        honesty["answered"] = answered_report(torch_predictor(*loaded[0], Path(checkpoints[0])), test)
    written = write_report(evaluation, test.images.numpy(), payload, Path(checkpoints[0]), target, honesty, fooled)
    log(summary_text(evaluation, payload["model_name"], written, images_scored))
    log(calibration_text(honesty["calibration"]))
    uncalibrated = [path for path, calibration in zip(checkpoints, calibrations) if not calibration.fitted]
    if uncalibrated:  # in an ensemble, its raw softmax weighs in beside the others' calibrated ones
        log(f"note: {', '.join(map(str, uncalibrated))} {'has' if len(uncalibrated) == 1 else 'have'} no stored "
            f"calibration{', so nothing is refused' if len(members) == 1 else ''}; fix: "
            + "; ".join(f"mnist-classifier calibrate --checkpoint {path}" for path in uncalibrated))
    if "verdicts" in honesty:
        log(verdict_text(honesty["verdicts"]))
    if "answered" in honesty:
        log(answered_text(honesty["answered"]))
    return evaluation, written


def stored_temperatures(calibrations: list[Calibration]) -> float | list[float] | None:
    """What the calibrated column used: one model's temperature, an ensemble's members' own
    (their calibrated probabilities are averaged), or None when none has one."""
    if not any(calibration.fitted for calibration in calibrations):
        return None
    if len(calibrations) == 1:
        return calibrations[0].temperature
    return [calibration.temperature for calibration in calibrations]


def scored_split(data_dir: str | Path, trained_on: str, requested: str | None,
                 folder: Path | None = None) -> tuple[DatasetSpec, Split]:
    """The model's dataset spec, and the images to score: its test split, or the requested local set (in `folder`)."""
    local = get_local_dataset(requested)
    if local is None:
        data = load_data(data_dir, trained_on, log=lambda _line: None, warn=to_stderr)
        return data.spec, data.test
    folder = folder or Path(data_dir) / local.folder
    split = load_local_split(local, folder, warn=to_stderr)
    if len(split) == 0:
        raise UserError(f"no {local.name} in {folder} yet ({local.about} are saved there): label some drawings "
                        "first, or name their folder with --user-data")
    return get_dataset_spec(trained_on), split


def check_same_dataset(checkpoint: str | Path, trained_on: str, requested: str | None) -> None:
    local = get_local_dataset(requested)
    if local is not None and local.scores != trained_on:
        raise UserError(f"{checkpoint} was trained on {trained_on}, and {requested} are {local.scores} images: "
                        f"evaluate a model trained on {local.scores}")
    if requested is not None and requested != trained_on and local is None:
        get_dataset_spec(requested)  # an unknown name gets the error that lists the choices
        raise UserError(f"{checkpoint} was trained on {trained_on}, not {requested}: its score on {requested} "
                        f"would be meaningless; drop --dataset, or evaluate a model trained on {requested}")


def summary_text(evaluation: Evaluation, model_name: str, report_dir: Path, scored: str = "test images") -> str:
    """The short table printed at the end of `mnist-classifier evaluate`; `scored` names the images."""
    scalars = evaluation.scalar_metrics()
    shown = ", ".join(
        f"{name} {value:.2%}" if METRICS[name].percent else f"{name} {value:.4f}" for name, value in scalars.items()
    )
    per_class = {k: v for k, v in evaluation.per_class_metrics().items() if k in ("precision", "recall", "f1")}
    width = max(5, *map(len, evaluation.class_names))  # "T-shirt/top" as well as "7"
    lines = [f"{model_name} on {len(evaluation.labels):,} {scored}: {shown}",
             f"{'class':>{width}} {'images':>7} " + " ".join(f"{name:>9}" for name in per_class)]
    for c, name in enumerate(evaluation.class_names):
        cells = " ".join(f"{values[c]:>9.2%}" if math.isfinite(values[c]) else f"{'-':>9}"  # no images
                         for values in per_class.values())
        lines.append(f"{name:>{width}} {int(evaluation.class_counts[c]):>7,} {cells}")
    names = evaluation.class_names
    pairs = ", ".join(f"{names[t]}->{names[p]} ({n})" for t, p, n in evaluation.confused_pairs(5))
    lines.append(f"most confused (true->predicted): {pairs or 'none'}")
    lines.append(f"report: {report_dir / 'report.html'} (+ metrics.json and figures in {report_dir})")
    return "\n".join(lines)
