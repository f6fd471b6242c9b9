"""The report folder: metrics.json, the figures, and report.html with everything in it.

The folder appears complete or not at all: files are written into a hidden staging
folder beside the target and moved in only once all of them exist. An existing
folder keeps any other files it holds; the report's own files are replaced.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from .augment import AUGMENTATIONS
from .checkpoint import check_writable
from .datasets import DATASETS, get_local_dataset
from .errors import UserError
from .files import shared_mode
from .evaluation import METRICS, Evaluation
from .honesty import reviewed_label, temperature_words
from .answer import percent
from .plots import NO_HISTORY, figure_png, fooled_figure, reliability_figure, report_figures

REPORTS_DIR = Path("reports")
# Figures only some reports have: a folder reused for another kind of report must not keep the old ones.
SOMETIMES_WRITTEN = ("reliability.png", "fooled.png")
FIGURE_TITLES = {
    "per_class_accuracy": "Per-class accuracy",
    "confusion_matrix": "Confusion matrix",
    "error_analysis": "Most confident mistakes",
    "sample_predictions": "Sample predictions",
    "training_curves": "Training curves",
    "reliability": "Reliability diagram: accuracy against confidence, before and after calibration",
    "fooled": "Where it can still be fooled: held-out non-digits it answered as digits, most convincing first",
}


def default_report_dir(model_name: str) -> Path:
    return REPORTS_DIR / model_name


def write_report(evaluation: Evaluation, images, payload: dict[str, Any], checkpoint: Path, out_dir: Path,
                 honesty: dict[str, Any] | None = None, fooled: dict | None = None) -> Path:
    """Write metrics.json, the PNGs and report.html into out_dir; returns out_dir.

    `honesty` (honesty.py: "calibration" and, for a single digit model, "verdicts") adds
    reliability.png and their tables; `fooled` (honesty.Verdicts.fooled) adds fooled.png."""
    model_name = payload["model_name"]
    honesty = honesty or {}
    scored = scored_set(payload)
    figures = report_figures(evaluation, images, payload.get("history"), model_name, training_note(payload),
                             no_history_text(payload), scored)
    if "calibration" in honesty:
        bins = honesty["calibration"]["reliability"]
        figures["reliability"] = reliability_figure(bins["before"], bins["after"], f"{model_name}: reliability, {scored} set",
                                                    calibrated=honesty["calibration"]["temperature"] is not None)
    if fooled is not None:
        figures["fooled"] = fooled_figure(fooled, f"{model_name}: held-out non-digits answered as digits")
    pngs = {name: figure_png(figure) for name, figure in figures.items()}
    summary = report_metadata(payload, checkpoint) | evaluation.to_dict() | honesty
    files = {f"{name}.png": data for name, data in pngs.items()}
    files["metrics.json"] = (json.dumps(summary, indent=2) + "\n").encode()
    files["report.html"] = render_html(evaluation, summary, pngs).encode()
    return install_files(files, out_dir)


def report_metadata(payload: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    return {
        "model_name": payload["model_name"],
        "dataset": payload.get("dataset", "mnist"),
        "checkpoint": " ".join(payload.get("members") or [str(checkpoint)]),
        "epochs_trained": payload.get("epoch"),
        "validation_accuracy": payload.get("accuracy"),
        "created": datetime.now().isoformat(timespec="seconds"),
        "ensemble_members": len(payload.get("members") or [checkpoint]),
        "tta_views": payload.get("tta_views", 1),
        "tta_mirrored": payload.get("tta_mirrored", False),
        "fine_tuned": _fine_tuning(payload),
    }


def _fine_tuning(payload: dict[str, Any]) -> dict[str, Any] | None:
    """What `finetune` recorded: the base it started from and the drawings it learnt (None: not tuned)."""
    record = payload.get("finetune")
    if not isinstance(record, dict):
        return None
    kept = ("base_checkpoint", "user_examples", "trained_on", "held_back", "held_back_accuracy_before",
            "held_back_accuracy_after", "steps", "date")
    return {key: record[key] for key in kept if key in record}


def training_note(payload: dict[str, Any]) -> str | None:
    """Why train accuracy can sit below validation accuracy: the train batches are harder."""
    config = payload.get("config") or {}
    parts = []
    if config.get("augment"):
        policy = DATASETS[payload["dataset"]].augmentation if payload.get("dataset") in DATASETS else "affine"
        parts.append(f"on augmented batches ({AUGMENTATIONS[policy].note})")
    if config.get("label_smoothing"):
        parts.append(f"with label smoothing {config['label_smoothing']:g}")
    spec = DATASETS.get(payload.get("dataset"))
    non_digits = (f" The train loss also counts the generated non-digits (weight {config['outlier_weight']:g})."
                  if config.get("outlier_weight") and spec is not None and spec.drawable else "")  # exposure.py
    tuned = " These curves are the base model's training, before it was fine-tuned on your drawings." \
        if isinstance(payload.get("finetune"), dict) else ""
    if not parts:
        return (non_digits + tuned).strip() or None
    return (f"Train loss and accuracy are measured {' '.join(parts)}; validation on the plain held-out images."
            f"{non_digits}{tuned}")


def no_history_text(payload: dict[str, Any]) -> str:
    """What the training-curves figure says when there are no curves to draw, and why."""
    members = payload.get("members") or []
    if len(members) > 1:  # each member trained on its own: no one history is the ensemble's
        return f"an ensemble of {len(members)} checkpoints: each member's training curves are in its own report"
    return NO_HISTORY


def report_source(out_dir: Path) -> str | None:
    """The checkpoint a report folder's metrics.json was made from, if it holds one."""
    try:
        made_from = json.loads((Path(out_dir) / "metrics.json").read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):  # no report there, or not one of ours
        return None
    return made_from if isinstance(made_from, str) else None


def check_report_dir(out_dir: Path) -> Path:
    """Refuse an --out that cannot be a folder, or cannot be written, before any work is done."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"report folder {out_dir} is a file: choose another --out")
    in_the_way = next((folder for folder in out_dir.parents if folder.exists() and not folder.is_dir()), None)
    if in_the_way is not None:
        raise UserError(f"report folder {out_dir} cannot be made: {in_the_way} is a file; choose another --out")
    written_in = _folder_written_in(out_dir)
    try:
        check_writable(written_in)
    except UserError:
        raise UserError(f"cannot write the report to {out_dir}: {written_in} is not writable; "
                        "choose another --out") from None
    return out_dir


def _folder_written_in(out_dir: Path) -> Path:
    """A report folder that exists has its files staged inside it (it may be a mount point, which
    no rename from its parent can reach); a new one is staged whole beside it, then renamed."""
    return out_dir if out_dir.is_dir() else out_dir.parent


def install_files(files: dict[str, bytes], out_dir: Path) -> Path:
    """Stage every file, then move them into out_dir together; on failure leave nothing."""
    out_dir = check_report_dir(out_dir)
    # An earlier report is replaced file by file: anything that would stop one part-way is refused first.
    in_the_way = sorted(name for name in files if (out_dir / name).exists() and not (out_dir / name).is_file())
    if in_the_way:
        raise UserError(f"cannot write the report to {out_dir}: {out_dir / in_the_way[0]} is a folder, not a file; "
                        "move it, or choose another --out")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=_folder_written_in(out_dir)))
    except OSError as error:
        raise UserError(f"cannot write the report to {out_dir} ({error.strerror}): choose another --out") from None
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if out_dir.is_dir():
            for name in files:
                os.replace(staging / name, out_dir / name)
            staging.rmdir()
            for name in set(SOMETIMES_WRITTEN) - set(files):  # an earlier report's, not this one's
                (out_dir / name).unlink(missing_ok=True)
        else:
            staging.chmod(shared_mode(out_dir, directory=True))  # mkdtemp makes it private; a report is shared
            os.replace(staging, out_dir)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"cannot write the report to {out_dir} ({error.strerror}): choose another --out") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


# ------------------------------------------------------------------------ html
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f3f4f6; } td.name, th.name { text-align: left; }
td.diag { background: #dbeafe; font-weight: bold; } td.err { background: #fee2e2; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-weight: bold; margin-bottom: 0.3rem; }
.cols { display: flex; gap: 2.5rem; flex-wrap: wrap; align-items: flex-start; }
"""


def _value(name: str, value: float) -> str:
    if not math.isfinite(value):  # a class without images: nothing to score
        return "&ndash;"
    metric = METRICS.get(name)
    return f"{value:.4f}" if metric is not None and not metric.percent else f"{value:.2%}"


def _description(name: str) -> str:
    return METRICS[name].description if name in METRICS else ""


def _training_facts(summary: dict[str, Any]) -> str:
    facts = []
    if summary.get("ensemble_members", 1) > 1:
        facts.append(f"ensemble of {summary['ensemble_members']} checkpoints, probabilities averaged")
    if summary.get("tta_views", 1) > 1:
        kinds = "1-pixel shifts, each also mirrored" if summary.get("tta_mirrored") else "1-pixel shifts"
        facts.append(f"test-time augmentation: {summary['tta_views']} views per image ({kinds})")
    tuned = summary.get("fine_tuned")
    if tuned:
        facts.append(f"fine-tuned from {html.escape(str(tuned.get('base_checkpoint')))} on "
                     f"{tuned.get('trained_on')} of your drawings ({tuned.get('steps')} steps)")
    if summary.get("epochs_trained") is not None:
        epochs = summary["epochs_trained"]
        facts.append(f"{epochs} epoch{'' if epochs == 1 else 's'}" + (" of the base's training" if tuned else ""))
    if summary.get("validation_accuracy") is not None:
        facts.append(f"validation accuracy {summary['validation_accuracy']:.2%}")
    return "".join(f"{fact} &middot; " for fact in facts)


def scored_set(payload: dict[str, Any]) -> str:
    """What a report scored: "test" (the dataset's test set), or the local set's name (user-digits)."""
    dataset = payload.get("dataset", "mnist")
    return dataset if get_local_dataset(dataset) is not None else "test"


def _set_heading(scored: str, dataset: str) -> str:
    return f"the {html.escape(dataset)} test set" if scored == "test" else f"your labelled drawings ({scored})"


def render_html(evaluation: Evaluation, summary: dict[str, Any], pngs: dict[str, bytes]) -> str:
    """One self-contained page: every number and table, every figure embedded as base64."""
    esc, names, ev = html.escape, evaluation.class_names, evaluation
    scored = scored_set(summary)
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>{esc(summary['model_name'])} evaluation</title><style>{STYLE}</style></head><body>",
           f"<h1>{esc(summary['model_name'])} on {_set_heading(scored, summary['dataset'])}</h1>",
           f"<p class='meta'>{summary['test_size']:,} {esc(scored)} images &middot; checkpoint "
           f"<code>{esc(summary['checkpoint'])}</code> &middot; {_training_facts(summary)}"
           f"created {esc(summary['created'])}</p>", "<h2>Summary</h2><table>",
           "<tr><th class='name'>metric</th><th>value</th><th class='name'>meaning</th></tr>"]
    for name, value in ev.scalar_metrics().items():
        out.append(f"<tr><td class='name'>{esc(name)}</td><td>{_value(name, value)}</td>"
                   f"<td class='name'>{esc(_description(name))}</td></tr>")
    out.append("</table><div class='cols'><div><h2>Per class</h2><table>")
    per_class = ev.per_class_metrics()
    out.append("<tr><th class='name'>class</th><th>images</th>"
               + "".join(f"<th title='{esc(_description(k))}'>{esc(k)}</th>" for k in per_class) + "</tr>")
    for c, name in enumerate(names):
        cells = "".join(f"<td>{_value(k, v[c])}</td>" for k, v in per_class.items())
        out.append(f"<tr><td class='name'>{esc(name)}</td><td>{int(ev.class_counts[c]):,}</td>{cells}</tr>")
    out.append("</table></div><div><h2>Most confused pairs</h2><table>"
               "<tr><th class='name'>true</th><th class='name'>predicted</th><th>images</th><th>of the class</th></tr>")
    for pair in summary["most_confused_pairs"]:
        out.append(f"<tr><td class='name'>{esc(pair['true'])}</td><td class='name'>{esc(pair['predicted'])}</td>"
                   f"<td>{pair['count']}</td><td>{pair['share_of_class']:.2%}</td></tr>")
    out.append("</table></div></div><h2>Confusion matrix</h2><p>Rows: true class; columns: predicted.</p><table>")
    out.append("<tr><th class='name'>true \\ pred</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>")
    for row, name in enumerate(names):
        cells = "".join(
            f"<td class='{'diag' if row == col else 'err' if count else ''}'>{count}</td>"
            for col, count in enumerate(ev.confusion[row]))
        out.append(f"<tr><th class='name'>{esc(name)}</th>{cells}</tr>")
    out.append(f"</table><h2>Most confident mistakes</h2><table><tr><th>{esc(scored)} index</th>"
               "<th class='name'>true</th><th class='name'>predicted</th><th>confidence</th>"
               "<th class='name'>top 3</th></tr>")
    for mistake in summary["most_confident_mistakes"][:12]:
        top3 = ", ".join(f"{esc(t['class'])}: {percent(t['probability'], 1, wrong=True)}" for t in mistake["top3"])
        out.append(f"<tr><td>{mistake['index']}</td><td class='name'>{esc(mistake['true'])}</td>"
                   f"<td class='name'>{esc(mistake['predicted'])}</td><td>{percent(mistake['confidence'], 1, wrong=True)}</td>"
                   f"<td class='name'>{top3}</td></tr>")
    out.append("</table>")
    out.extend(_honesty_html(summary))
    out.append("<h2>Figures</h2>")
    for name, data in pngs.items():
        encoded = base64.b64encode(data).decode("ascii")
        out.append(f"<figure><figcaption>{esc(_caption(name, summary))}</figcaption>"
                   f"<img alt='{esc(name)}' src='data:image/png;base64,{encoded}'></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def _caption(figure: str, summary: dict[str, Any]) -> str:
    if figure == "reliability" and (summary.get("calibration") or {}).get("temperature") is None:
        return "Reliability diagram: accuracy against confidence of the raw softmax (no stored calibration)"
    return FIGURE_TITLES.get(figure, figure)


def _honesty_html(summary: dict[str, Any]) -> list[str]:
    """Calibration before/after and the verdict tables, when evaluate measured them."""
    out = []
    calibration = summary.get("calibration")
    if calibration:
        temperature = calibration["temperature"]
        out.append("<h2>Calibration</h2><p>" + (
                   "No stored temperature: both columns are the raw softmax." if temperature is None else
                   f"Calibrated: {html.escape(temperature_words(temperature))}, fitted on the validation split.")
                   + " ECE: 15 equal-width bins.</p><table><tr><th class='name'>score</th><th>raw softmax</th>"
                   "<th>calibrated</th></tr>")
        for key, name in (("ece", "expected calibration error"), ("nll", "negative log-likelihood"),
                          ("brier", "Brier score")):
            before, after = calibration["before"][key], calibration["after"][key]
            shown = (f"{before:.2%}", f"{after:.2%}") if key == "ece" else (f"{before:.4f}", f"{after:.4f}")
            out.append(f"<tr><td class='name'>{name}</td><td>{shown[0]}</td><td>{shown[1]}</td></tr>")
        out.append("</table>")
    verdicts = summary.get("verdicts")
    if verdicts:
        threshold = verdicts["reject_threshold"]
        rule = ("never refuses" if threshold is None else
                f"answers 'not a digit' when its digit score (T &middot; logsumexp(logits / T)) is below {threshold:.2f}")
        out.append(f"<h2>Digit or not</h2><p>The model {rule}.</p><table><tr><th class='name'>digits</th>"
                   "<th>images</th><th>answered digit</th><th>accuracy</th></tr>")
        out += [f"<tr><td class='name'>{html.escape(row['set'])}</td><td>{row['images']:,}</td>"
                f"<td>{row['answered_digit']:.2%}</td><td>{row['accuracy']:.2%}</td></tr>" for row in verdicts["digits"]]
        out.append("</table><table><tr><th class='name'>non-digits (seeds training never used)</th><th>images</th>"
                   "<th>answered not a digit</th></tr>")
        out += [f"<tr><td class='name'>{html.escape(row['family'])}</td><td>{row['images']:,}</td>"
                f"<td>{row['answered_not_a_digit']:.2%}</td></tr>" for row in verdicts["non_digits"]]
        if verdicts.get("reviewed"):
            out.append("<tr><th class='name'>the same, less what reviewers read as a digit</th><th>images</th>"
                       "<th>answered not a digit</th></tr>")
            out += [f"<tr><td class='name'>{html.escape(reviewed_label(row))}</td>"
                    f"<td>{row['images']:,}</td><td>{row['answered_not_a_digit']:.2%}</td></tr>"
                    for row in verdicts["reviewed"]]
        out.append("</table>")
    return out
