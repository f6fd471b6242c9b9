"""`mnist-classifier evaluate` on a real (one-epoch) checkpoint and the real test set."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_classifier.cli import main
from mnist_classifier.datasets import MNIST
from mnist_classifier.errors import UserError
from mnist_classifier.evaluation import METRICS, evaluate_predictions, register_metric
from mnist_classifier.report import install_files, render_html
from mnist_classifier.sources import find_idx_file, read_idx

from .conftest import DATA_DIR

FIGURES = ("per_class_accuracy", "confusion_matrix", "error_analysis", "sample_predictions", "training_curves",
           "reliability", "fooled")


@pytest.fixture(scope="module")
def report(small_checkpoint, tmp_path_factory):
    """Run the command once, from a fresh folder, with the default --out.

    Returns (report dir, what it printed, the Evaluation it computed, the honesty.Verdicts it drew)."""
    import mnist_classifier.assessment as assessment

    workdir = tmp_path_factory.mktemp("evaluate")
    printed, results, verdicts = io.StringIO(), [], []

    def spy(real, seen):
        def call(*args, **kwargs):
            seen.append(real(*args, **kwargs))
            return seen[-1]
        return call

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(assessment, "evaluate_checkpoint", spy(assessment.evaluate_checkpoint, results))
        patch.setattr(assessment, "verdict_report", spy(assessment.verdict_report, verdicts))
        patch.chdir(workdir)
        status = main(["evaluate", "--checkpoint", str(small_checkpoint), "--data-dir", str(DATA_DIR)])
    assert status == 0 and len(results) == 1 and len(verdicts) == 1
    return workdir / "reports" / "simple_cnn", printed.getvalue(), results[0][0], verdicts[0]


@pytest.fixture(scope="module")
def metrics(report):
    return json.loads((report[0] / "metrics.json").read_text())


@pytest.fixture(scope="module")
def test_labels(mnist_raw_dir):
    """Straight from the IDX file, not through the package's data loading."""
    return read_idx(find_idx_file(mnist_raw_dir, MNIST.test_labels)).astype(np.int64)


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_is_a_real_png_of_sensible_size(report, name):
    path = report[0] / f"{name}.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert 700 <= width <= 2500 and 400 <= height <= 2000, image.size
    assert pixels.std() > 20  # drawn on, not a blank canvas
    assert path.stat().st_size > 15_000


def test_metrics_json_agrees_with_the_confusion_matrix(metrics, test_labels):
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == metrics["test_size"] == 10_000
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["metrics"]["accuracy"], abs=1e-12)
    assert confusion.sum(axis=1).tolist() == np.bincount(test_labels, minlength=10).tolist()
    assert list(metrics["class_counts"].values()) == np.bincount(test_labels, minlength=10).tolist()
    assert metrics["metrics"]["accuracy"] > 0.9  # a real model on the real test set


def test_per_class_numbers_match_an_independent_computation(small_checkpoint, report, metrics, test_labels):
    """The JSON's numbers against plain numpy formulas on the evaluation's own predictions."""
    evaluation = report[2]
    preds = evaluation.probs.argmax(1)
    assert evaluation.labels.tolist() == test_labels.tolist()
    # the predictions are the model's: training scored the same checkpoint on the same images
    recorded = torch.load(small_checkpoint, weights_only=True)["test_accuracy"]
    assert np.mean(preds == test_labels) == pytest.approx(recorded, abs=1e-6)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (test_labels, preds), 1)
    assert confusion.tolist() == metrics["confusion_matrix"]
    for c in range(10):
        name = str(c)
        true_positive = np.sum((preds == c) & (test_labels == c))
        precision = true_positive / np.sum(preds == c)
        recall = true_positive / np.sum(test_labels == c)
        assert metrics["metrics"]["precision"][name] == pytest.approx(precision, abs=1e-12)
        assert metrics["metrics"]["recall"][name] == pytest.approx(recall, abs=1e-12)
        assert metrics["metrics"]["per_class_accuracy"][name] == pytest.approx(recall, abs=1e-12)
        assert metrics["metrics"]["f1"][name] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-12)
    per_class_f1 = list(metrics["metrics"]["f1"].values())
    assert metrics["metrics"]["macro_f1"] == pytest.approx(np.mean(per_class_f1), abs=1e-12)
    top2 = np.argsort(-evaluation.probs, axis=1)[:, :2]
    top2_accuracy = np.mean((top2 == test_labels[:, None]).any(axis=1))
    assert metrics["metrics"]["top2_accuracy"] == pytest.approx(top2_accuracy, abs=1e-12)


def test_confused_pairs_and_mistakes_are_ranked_and_consistent(metrics):
    confusion = np.array(metrics["confusion_matrix"])
    pairs = metrics["most_confused_pairs"]
    counts = [pair["count"] for pair in pairs]
    assert counts and counts == sorted(counts, reverse=True)
    off_diagonal = confusion - np.diag(np.diag(confusion))
    assert counts[0] == off_diagonal.max()
    for pair in pairs:
        assert confusion[int(pair["true"]), int(pair["predicted"])] == pair["count"]
    mistakes = metrics["most_confident_mistakes"]
    confidences = [m["confidence"] for m in mistakes]
    assert len(mistakes) == min(24, off_diagonal.sum()) and confidences == sorted(confidences, reverse=True)
    for mistake in mistakes:
        assert mistake["true"] != mistake["predicted"] == mistake["top3"][0]["class"]


def test_report_html_is_self_contained_with_every_figure(report, metrics):
    page = (report[0] / "report.html").read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == len(FIGURES)
    for data in embedded:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert image.format == "PNG"
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    for name in METRICS:
        assert name in page
    assert f"{metrics['metrics']['accuracy']:.2%}" in page


def test_summary_table_is_printed(report, metrics):
    printed = report[1]
    assert f"accuracy {metrics['metrics']['accuracy']:.2%}" in printed
    assert len(re.findall(r"^\s+\d\s+[\d,]+\s", printed, re.MULTILINE)) == 10  # one row per digit
    assert "report.html" in printed
    assert "calibration (temperature" in printed and "answered not_a_digit" in printed
    assert len(printed.splitlines()) < 36
    # the verdict tables line up: every row's count ends in the same column, however long its label
    verdicts = printed[printed.index("verdicts ("):].splitlines()[1:]
    ends = {len(line) - len(line.lstrip()) + re.search(r"\s(images|[\d,]+)\s", line.strip()).end(1) for line in verdicts
            if line.startswith("  ") and not line.startswith("  (")}
    assert len(ends) == 1, verdicts



def test_a_digit_dataset_a_user_added_names_its_own_test_digits(report, small_checkpoint, mnist_data):
    """helper-66: evaluate's verdict table called an added digit dataset's test split "MNIST test digits"."""
    from mnist_classifier.honesty import verdict_report
    from mnist_classifier.reader import load_predictor

    table = verdict_report(load_predictor(small_checkpoint), mnist_data.test, DATA_DIR, "mine").table
    rows = table["digits"]
    assert rows[0]["set"] == "mine test digits" and "MNIST" not in " ".join(row["set"] for row in rows)
    assert table["reviewed"] == []  # helper-73: the reviewers read MNIST's pieces, not this dataset's



def test_one_epochs_curves_have_whole_epoch_ticks_and_points_clear_of_the_frame():
    """helper-71: a one-epoch run's curves were ticked 0.72 ... 1.28, its train accuracy on the frame's edge."""
    from mnist_classifier.plots import training_curves_figure

    history = {"train_loss": [0.62], "val_loss": [0.11], "train_acc": [0.8141], "val_acc": [0.9702],
               "lr": [1e-4]}
    figure = training_curves_figure(history, "simple_cnn: training history")
    for ax in figure.axes:
        assert list(ax.get_xticks()) == [1.0]
    accuracy = figure.axes[1]
    low, high = accuracy.get_ylim()
    assert low < 81.41 - 0.1 * (97.02 - 81.41) and high > 97.02 + 0.1 * (97.02 - 81.41)


@pytest.mark.parametrize("classes", [2, 5, 10])
def test_a_title_fits_a_figure_sized_for_few_classes(classes):
    """helper-79: a five-class dataset's confusion matrix read "ple_cnn: confusion matrix, test set (64 of 5,139 w"."""
    from mnist_classifier.plots import _image_grid, confusion_matrix_figure

    title = "simple_cnn: confusion matrix, test set (64 of 5,139 wrong)"
    confusion = np.diag(np.full(classes, 1000)) + 3
    for figure in (confusion_matrix_figure(confusion, [str(n) for n in range(classes)], title),
                   _image_grid(classes, classes, 1.6, title)[0]):
        figure.canvas.draw()
        shown = (figure.axes[0].title if figure.axes[0].get_title() else figure._suptitle)
        box = shown.get_window_extent()
        assert box.x0 >= 0 and box.x1 <= figure.bbox.width, (classes, box, figure.bbox.width)
        assert shown.get_text().replace("\n", " ") == title
    from mnist_classifier.plots import fitted

    assert "user-\n" not in fitted("simple_cnn: confusion matrix, user-digits set (249 of 500 wrong)",
                                     confusion_matrix_figure(np.eye(2, dtype=int), ["0", "1"]))  # helper-82


def test_the_reliability_figure_of_a_model_without_calibration_draws_no_calibrated_series(metrics):
    """helper-89: its "calibrated" curve lay on the raw one, where the report said there was none."""
    from mnist_classifier.plots import reliability_figure

    bins = metrics["calibration"]["reliability"]
    for calibrated, names in ((True, ["perfect calibration", "raw softmax", "calibrated"]),
                              (False, ["perfect calibration", "raw softmax"])):
        curve, counts = reliability_figure(bins["before"], bins["after"], "m: reliability", calibrated).axes
        assert [line.get_label() for line in curve.get_lines()] == names
        assert [text.get_text() for text in counts.get_legend().get_texts()] == ["raw", "calibrated"][:len(names) - 1]
        assert curve.get_title().endswith("(no stored calibration)") != calibrated


def test_a_wrong_answer_short_of_certainty_is_never_labelled_100_percent():
    from mnist_classifier.answer import percent

    assert [percent(p) for p in (0.9972, 0.995, 0.994, 1.0, 0.5, np.float32(0.99999))] == \
        ["≥99.5%", "≥99.5%", "99%", "100%", "50%", "≥99.5%"]
    # helper-91: float32 softmax saturates at 1.0 for a wrong answer too; the report's table has one decimal
    assert percent(1.0, wrong=True) == "≥99.5%" and percent(np.float32(1.0), 1, wrong=True) == "≥99.95%"
    assert [percent(p, 1) for p in (0.99999964, 0.9994, 1.0)] == ["≥99.95%", "99.9%", "100.0%"]


def test_calibration_and_verdicts_are_measured_and_reported(report, metrics, small_checkpoint):
    import torch

    from mnist_classifier.honesty import PAPER_SET

    calibration = metrics["calibration"]
    assert calibration["temperature"] == torch.load(small_checkpoint, weights_only=True)["temperature"]
    assert calibration["after"]["ece"] < calibration["before"]["ece"] and calibration["after"]["ece"] < 0.03
    assert calibration["after"]["nll"] < calibration["before"]["nll"]
    for curve in calibration["reliability"].values():
        assert sum(curve["counts"]) == 10_000 and len(curve["edges"]) == 16
    verdicts = metrics["verdicts"]
    assert [row["set"] for row in verdicts["digits"]][0] == "MNIST test digits" and len(verdicts["digits"]) == 5
    assert verdicts["digits"][0]["answered_digit"] >= 0.98  # the threshold lets 99.5% of validation digits by
    on_paper = verdicts["digits"][-1]  # the users' path: drawn large, brought back by to_mnist
    assert on_paper["set"] == PAPER_SET and on_paper["images"] == 10_000 and on_paper["accuracy"] > 0.95
    families = {row["family"] for row in verdicts["non_digits"]}
    assert {"scribble", "glyph", "shape", "fragment", "pair"} <= families
    assert all(0 <= row["answered_not_a_digit"] <= 1 and row["images"] == 1000 for row in verdicts["non_digits"])
    assert max(row["answered_not_a_digit"] for row in verdicts["non_digits"]) > 0.5  # it does refuse
    page = (report[0] / "report.html").read_text()
    assert "<h2>Calibration</h2>" in page and "<h2>Digit or not</h2>" in page


def test_refusal_is_also_measured_on_what_reviewers_read_as_no_digit(report, metrics, small_checkpoint):
    from mnist_classifier.honesty import REVIEWED_DIR
    from mnist_classifier.reader import load_predictor

    predictor, threshold = load_predictor(small_checkpoint), metrics["verdicts"]["reject_threshold"]
    rows = {row["family"]: row for row in metrics["verdicts"]["reviewed"]}
    stored = sorted(REVIEWED_DIR.glob("*.npz"))
    assert {"fragment", "scribble"} <= {path.stem for path in stored} == set(rows)
    for path in stored:
        with np.load(path) as review:
            images, votes, reviewers = review["images"], review["votes"], review["reviewers"]
        assert images.shape == (1000, 28, 28) and images.dtype == np.uint8
        assert votes.shape == (1000, 3) and len(set(reviewers)) == 3
        reads_as_digit = (votes >= 0).sum(axis=1) >= 2  # most of three reviewers
        assert 0 < reads_as_digit.sum() < 500
        row = rows[path.stem]
        assert row["images"] == (~reads_as_digit).sum() and row["read_as_digit"] == reads_as_digit.sum()
        refused = predictor.assess(images[~reads_as_digit])[1] < threshold
        assert row["answered_not_a_digit"] == pytest.approx(refused.mean())
    assert "less what reviewers read as a digit" in report[1]
    assert "less what reviewers read as a digit" in (report[0] / "report.html").read_text()


def test_the_fooled_figure_shows_the_most_convincing_non_digits_that_passed(report, small_checkpoint):
    from mnist_classifier.honesty import FOOLED_SHOWN
    from mnist_classifier.reader import load_predictor

    predictor, verdicts = load_predictor(small_checkpoint), report[3]
    threshold = verdicts.table["reject_threshold"]
    reviewed = {row["family"]: row for row in verdicts.table["reviewed"]}
    # a reviewed family shows what fooled it among the images reviewers read as no digit
    shown_rows = {(f"{row['family']} (reviewed)" if row["family"] in reviewed else row["family"]):
                  reviewed.get(row["family"], row) for row in verdicts.table["non_digits"]}
    assert list(verdicts.fooled) == list(shown_rows) and "fragment (reviewed)" in shown_rows
    for name, row in shown_rows.items():
        images, probs = verdicts.fooled[name]
        passed = round(row["images"] * (1 - row["answered_not_a_digit"]))
        assert len(images) == len(probs) == min(FOOLED_SHOWN, passed)
        if len(images):
            scores = predictor.assess(images)[1]
            assert (scores >= threshold - 1e-4).all() and (np.diff(scores) <= 1e-4).all()  # most convincing first
            assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_a_registered_metric_reaches_json_and_html():
    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 3, 60), rng.dirichlet(np.ones(3), 60)

    @register_metric("wrong_count", percent=False)
    def wrong_count(labels, preds, probs):
        """Number of misclassified images."""
        return float(np.sum(labels != preds))

    try:
        evaluation = evaluate_predictions(labels, probs, ["a", "b", "c"])
        summary = evaluation.to_dict()
        page = render_html(evaluation, {"model_name": "m", "dataset": "d", "checkpoint": "c", "epochs_trained": 1,
                                        "created": "now", **summary}, {})
    finally:
        METRICS.pop("wrong_count")
    assert summary["metrics"]["wrong_count"] == np.sum(labels != probs.argmax(1))
    assert "wrong_count" in page and "Number of misclassified images." in page


@pytest.mark.parametrize("gives, says", [
    (lambda labels, preds, probs: None, "gave NoneType: return one number, or one per class"),
    (lambda labels, preds, probs: "high", "gave str: return one number"),
    (lambda labels, preds, probs: 1 / 0, "failed: ZeroDivisionError: division by zero"),
    (lambda labels, preds, probs: [1.0, 2.0], r"gave an array of shape \(2,\): return one number, or one per class \(3\)"),
    (lambda labels, preds, probs: probs, r"gave an array of shape \(60, 3\)"),
])
def test_a_metric_that_fails_or_gives_the_wrong_shape_is_one_line_naming_it(gives, says):
    """helper-66: these were tracebacks after all the scoring, or silently left out of metrics.json."""
    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 3, 60), rng.dirichlet(np.ones(3), 60)
    register_metric("odd_metric")(gives)
    try:
        with pytest.raises(UserError, match=rf"^metric 'odd_metric' \(in {__name__}\) {says}"):
            evaluate_predictions(labels, probs, ["a", "b", "c"])
    finally:
        METRICS.pop("odd_metric")


def test_training_puts_the_figures_into_tensorboard(small_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = torch.load(small_checkpoint, weights_only=True)["run_dir"]
    events = EventAccumulator(run_dir)
    events.Reload()
    assert {"Test/confusion_matrix", "Test/misclassified"} <= set(events.Tags()["images"])


# ------------------------------------------------------------------ bad input
def run_evaluate(tmp_path, capsys, checkpoint) -> tuple[int, str, Path]:
    out = tmp_path / "reports" / "x"
    status = main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--data-dir", str(DATA_DIR)])
    return status, capsys.readouterr().err.strip(), out


def test_missing_checkpoint_says_how_to_make_one(tmp_path, capsys):
    status, err, out = run_evaluate(tmp_path, capsys, tmp_path / "models" / "simple_cnn_best.pth")
    assert status == 2
    assert len(err.splitlines()) == 1 and "not found" in err and "mnist-classifier train" in err
    assert not (tmp_path / "reports").exists()


def test_truncated_checkpoint_is_refused_without_a_report(tmp_path, capsys, small_checkpoint):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(small_checkpoint.read_bytes()[:200_000])
    status, err, out = run_evaluate(tmp_path, capsys, broken)
    assert status != 0 and len(err.splitlines()) == 1 and "broken.pth" in err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("content", [
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, id="png-bytes"),
    pytest.param(b"this is not a checkpoint, just notes\n", id="text"),
])
def test_foreign_file_is_refused_without_a_report(tmp_path, capsys, content):
    foreign = tmp_path / "notes.pth"
    foreign.write_bytes(content)
    status, err, out = run_evaluate(tmp_path, capsys, foreign)
    assert status != 0 and len(err.splitlines()) == 1 and "notes.pth" in err
    assert not (tmp_path / "reports").exists()


def test_weights_that_do_not_fit_model_name_are_refused(tmp_path, capsys, small_checkpoint):
    payload = torch.load(small_checkpoint, weights_only=True)
    payload["model_name"] = "improved_cnn"
    mislabelled = tmp_path / "mislabelled.pth"
    torch.save(payload, mislabelled)
    status, err, out = run_evaluate(tmp_path, capsys, mislabelled)
    assert status != 0 and len(err.splitlines()) == 1
    assert "do not fit model 'improved_cnn'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mislabelled.pth"]


def test_out_that_is_a_file_is_refused(tmp_path, capsys, small_checkpoint):
    blocker = tmp_path / "report.txt"
    blocker.write_text("keep me")
    status = main(["evaluate", "--checkpoint", str(small_checkpoint), "--out", str(blocker)])
    assert status == 2 and "is a file" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"
    # under a file, or in a folder nobody may write: refused before the model is scored, not after
    status = main(["evaluate", "--checkpoint", str(small_checkpoint), "--out", str(blocker / "sub")])
    assert status == 2 and capsys.readouterr().err == (f"error: report folder {blocker / 'sub'} cannot be made: "
                                                       f"{blocker} is a file; choose another --out\n")
    status = main(["evaluate", "--checkpoint", str(small_checkpoint), "--out", "/proc/report"])
    assert status == 2 and "/proc is not writable" in capsys.readouterr().err


def test_a_failed_write_leaves_no_partial_report(tmp_path, monkeypatch):
    files = {"metrics.json": b"{}", "a.png": b"png", "report.html": b"<html>"}
    written = []
    original = Path.write_bytes

    def fail_on_third(self, data):
        written.append(self.name)
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_third)
    with pytest.raises(UserError, match="No space left"):
        install_files(files, tmp_path / "reports" / "m")
    assert list((tmp_path / "reports").iterdir()) == []


def test_an_existing_report_folder_keeps_other_files(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "metrics.json").write_text("old")
    install_files({"metrics.json": b"new", "report.html": b"<html>"}, out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt", "report.html"]
    assert (out / "metrics.json").read_text() == "new" and (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging folder left
    # a figure only the earlier report had (an MNIST model's fooled.png) does not outlive it
    install_files({"metrics.json": b"a", "fooled.png": b"png"}, out)
    install_files({"metrics.json": b"b"}, out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt", "report.html"]


def test_a_folder_where_a_report_file_goes_stops_the_report_before_any_file_is_replaced(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").write_text("earlier")
    (out / "metrics.json").mkdir()  # in the way of the new metrics.json
    with pytest.raises(UserError, match=f"^cannot write the report to {out}: {out / 'metrics.json'} is a folder"):
        install_files({"report.html": b"<html>", "metrics.json": b"{}"}, out)
    assert (out / "report.html").read_text() == "earlier"  # the earlier report is whole, not half replaced
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_the_measured_sets_are_built_once_per_test_split_and_kept_read_only(mnist_data):
    from mnist_classifier import honesty
    from mnist_classifier.data import Split, load_data
    from mnist_classifier.outliers import TRAINING_FAMILIES
    from mnist_classifier.strokes import PEN_WIDTHS_BENCHMARK, uniform_pen_images

    test = mnist_data.test
    sets = honesty.measured_sets(test)
    assert honesty.measured_sets(load_data(DATA_DIR, log=lambda _line: None).test) is sets  # same split, loaded again
    digit_sets, families = sets
    assert [name for name, _ in families] == list(TRAINING_FAMILIES)
    assert all(not images.flags.writeable for _, images in digit_sets + families)
    for (_, redrawn), width in zip(digit_sets[1:], PEN_WIDTHS_BENCHMARK):  # the skeletons found once serve each pen
        assert np.array_equal(redrawn[:40], uniform_pen_images(test.images[:40], width).numpy())
    one_pixel_off = test.images.clone()
    one_pixel_off[0, 0, 0] += 1
    relabelled = test.labels.clone()
    relabelled[0] = (relabelled[0] + 1) % 10
    digests = {honesty.split_digest(split) for split in (test, Split(one_pixel_off, test.labels), Split(test.images, relabelled))}
    assert len(digests) == 3  # any other split gets sets of its own


def test_split_accuracy_is_the_exact_fraction_of_right_answers(small_checkpoint, mnist_data):
    from mnist_classifier.checkpoint import load_model, stored_normalization
    from mnist_classifier.evaluation import score_split

    model, payload = load_model(small_checkpoint)
    split = mnist_data.test.head(1000)
    score = score_split(model, split, stored_normalization(payload))
    correct = int((score.logits.argmax(1) == split.labels).sum())
    # targets like ">= 99.2%" compare against it: a float32 mean would miss 9,920 of 10,000 by 2e-8
    assert score.accuracy == correct / 1000 and 0.5 < score.accuracy < 1.0


def test_a_new_report_folder_gets_the_usual_permissions_not_owner_only(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    out = install_files({"metrics.json": b"{}"}, tmp_path / "report")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # mkdtemp's 0700 would hide it from others


def test_classes_without_images_are_unscored_not_zero(tmp_path):
    """A user's drawings often cover a few digits only: 0% for the rest would read as 'always wrong'."""
    from sklearn.metrics import f1_score

    from mnist_classifier.assessment import summary_text
    from mnist_classifier.plots import per_class_accuracy_figure

    labels = np.array([0, 0, 1, 2, 2, 7])
    preds = np.array([0, 0, 1, 2, 7, 7])
    probs = np.eye(10, dtype=np.float32)[preds] * 0.9 + 0.01
    evaluation = evaluate_predictions(labels, probs, [str(d) for d in range(10)])
    accuracy = evaluation.metrics["per_class_accuracy"]
    assert accuracy[[0, 1, 7]].tolist() == [1.0, 1.0, 1.0] and accuracy[2] == 0.5
    assert np.isnan(accuracy[[3, 4, 5, 6, 8, 9]]).all()
    assert np.isnan(evaluation.metrics["precision"][3]) and np.isnan(evaluation.metrics["f1"][9])
    assert evaluation.metrics["macro_f1"] == pytest.approx(f1_score(labels, preds, labels=[0, 1, 2, 7], average="macro"))
    saved = json.loads(json.dumps(evaluation.to_dict(), allow_nan=False))  # valid JSON: null, not NaN
    assert saved["metrics"]["recall"]["3"] is None and saved["metrics"]["recall"]["7"] == 1.0
    row = next(line for line in summary_text(evaluation, "m", tmp_path).splitlines() if line.split()[0] == "3")
    assert row.split() == ["3", "0", "-", "-", "-"]
    figure = per_class_accuracy_figure(accuracy, [str(d) for d in range(10)], evaluation.class_counts, 5 / 6)
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert ticks[3] == "3\nno images" and ticks[2] == "2\n1 wrong"


def test_figures_of_a_local_set_are_titled_with_its_name_not_test(mnist_data):
    from mnist_classifier.plots import report_figures

    labels = mnist_data.test.labels[:40].numpy()
    probs = np.full((40, 10), 0.01)
    probs[np.arange(40), (labels + (np.arange(40) % 8 == 0)) % 10] = 0.91  # 5 of 40 wrong
    evaluation = evaluate_predictions(labels, probs, [str(d) for d in range(10)])
    figures = report_figures(evaluation, mnist_data.test.images[:40].numpy(), model_name="m", scored="user-digits")
    titles = {name: " ".join([figure.get_suptitle()]
                             + [ax.get_title() for ax in figure.axes]) for name, figure in figures.items()}
    assert "per-class user-digits accuracy (40 images)" in titles["per_class_accuracy"]
    assert "confusion matrix, user-digits set (5 of 40 wrong)" in titles["confusion_matrix"]
    assert "random user-digits images" in titles["sample_predictions"]
    assert not any(" test " in title for title in titles.values())


def test_the_training_note_names_every_term_of_the_train_loss():
    """helper-81: train loss 1.37 against validation 0.17 was put down to augmentation and label
    smoothing alone; the generated non-digits' term is in it too, for digit datasets."""
    from mnist_classifier.report import training_note

    config = {"augment": True, "label_smoothing": 0.1, "outlier_weight": 0.1}
    digits = training_note({"dataset": "mnist", "config": config})
    assert digits.endswith("held-out images. The train loss also counts the generated non-digits (weight 0.1).")
    plain = training_note({"dataset": "mnist", "config": {"outlier_weight": 0.1}})  # helper-83: no "measured the loss"
    assert plain == "The train loss also counts the generated non-digits (weight 0.1)."
    clothes = training_note({"dataset": "fashion-mnist", "config": config})
    assert "non-digits" not in clothes and "with label smoothing 0.1" in clothes
