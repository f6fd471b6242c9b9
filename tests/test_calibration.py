"""Calibration: the temperature makes confidences honest, the threshold lets digits through,
and the metrics agree with cases worked by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_classifier.calibration import (
    Calibration, brier_score, calibrate_logits, choose_threshold, digit_scores, expected_calibration_error,
    fit_temperature, negative_log_likelihood, reliability_bins, softmax,
)
from mnist_classifier.cli import main
from mnist_classifier.reader import load_predictor
from mnist_classifier.strokes import random_pen_images

from .conftest import DATA_DIR, REPO_ROOT


def test_ece_matches_a_case_worked_by_hand():
    # Four images, two classes, 15 bins of width 1/15 (0-based index i holds [i/15, (i+1)/15)).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.38, 0.62], [0.59, 0.41]])
    labels = np.array([0, 1, 1, 1])
    # bin 13: 0.9 right, 0.9 wrong -> |0.9 - 0.5| * 2/4 = 0.2
    # bin 9:  0.62 right           -> |0.62 - 1| * 1/4 = 0.095
    # bin 8:  0.59 wrong           -> |0.59 - 0| * 1/4 = 0.1475
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.4425, abs=1e-6)
    bins = reliability_bins(probs, labels, bins=15)
    assert bins.counts.tolist() == [0] * 8 + [1, 1, 0, 0, 0, 2, 0]
    assert bins.accuracy[13] == 0.5 and bins.confidence[9] == pytest.approx(0.62) and bins.accuracy[8] == 0
    # helper-81: on an edge the diagram put 0.6 (= 9/15) one bin below where the ECE counts it
    edge = np.array([[0.6, 0.4], [0.6, 0.4]])
    assert expected_calibration_error(edge, np.array([0, 1]), bins=15) == pytest.approx(0.1, abs=1e-6)
    assert reliability_bins(edge, np.array([0, 1]), bins=15).counts[9] == 2


def test_nll_and_brier_match_hand_computed_values():
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    labels = np.array([0, 0])
    assert negative_log_likelihood(probs, labels) == pytest.approx((-np.log(0.8) - np.log(0.3)) / 2)
    assert brier_score(probs, labels) == pytest.approx(((0.2**2 + 0.2**2) + (0.7**2 + 0.7**2)) / 2)


def test_fitted_temperature_recovers_the_one_that_made_the_data():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20_000, 10, generator=generator) * 3
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    # a model that reports logits 2.5x too small is under-confident by exactly T = 1/2.5
    assert fit_temperature(true_logits / 2.5, labels) == pytest.approx(0.4, rel=0.05)


def test_threshold_lets_the_promised_share_of_digits_through():
    confidences = np.random.default_rng(1).uniform(0.2, 1.0, 5_000)
    threshold = choose_threshold(confidences, pass_rate=0.995)
    assert (confidences >= threshold).mean() >= 0.995
    assert (confidences >= np.nextafter(threshold, 1)).mean() < 0.995  # and no lower than needed


def test_threshold_lets_the_promised_share_through_of_each_digit_set():
    rng = np.random.default_rng(2)
    written = torch.from_numpy(rng.normal(0, 1, (2_000, 10)))
    written[:, 0] += 8.0
    redrawn = written.clone()
    redrawn[:, 0] -= 1.5  # pen-drawn digits: less evidence for any digit
    labels = torch.zeros(2_000, dtype=torch.long)
    alone = calibrate_logits(written, labels)
    both = calibrate_logits(written, labels, redrawn_logits=redrawn)
    assert both.temperature == alone.temperature  # the temperature comes from the originals only
    scores = [digit_scores(each.numpy(), both.temperature) for each in (written, redrawn)]
    assert both.reject_threshold < alone.reject_threshold
    assert all((each >= both.reject_threshold).mean() >= 0.995 for each in scores)
    assert (scores[1] >= np.nextafter(both.reject_threshold, np.inf)).mean() < 0.995  # no lower than needed


def test_a_trained_model_lets_validation_digits_through_as_written_and_pen_drawn(small_checkpoint, mnist_data):
    predictor = load_predictor(small_checkpoint)
    calibration = predictor.calibration
    for images in (mnist_data.val.images, random_pen_images(mnist_data.val.images)):
        scores = digit_scores(predictor.logits(images.numpy()), calibration.temperature)
        assert (scores >= calibration.reject_threshold).mean() >= 0.995 - 1e-3  # float order: ONNX/torch


def test_calibration_on_a_real_model_lowers_ece_on_the_test_set(small_checkpoint, mnist_data):
    predictor = load_predictor(small_checkpoint)
    val_logits = predictor.logits(mnist_data.val.images.numpy())
    calibration = calibrate_logits(torch.from_numpy(val_logits), mnist_data.val.labels)
    test_logits, labels = predictor.logits(mnist_data.test.images.numpy()), mnist_data.test.labels.numpy()
    raw, calibrated = softmax(test_logits), softmax(test_logits, calibration.temperature)
    assert (raw.argmax(1) == calibrated.argmax(1)).all()  # a temperature never changes the answer
    before, after = expected_calibration_error(raw, labels), expected_calibration_error(calibrated, labels)
    assert after < before / 2 and after < 0.02, (before, after)
    assert negative_log_likelihood(calibrated, labels) < negative_log_likelihood(raw, labels)
    # training stored the same calibration in the checkpoint
    assert predictor.calibration.temperature == pytest.approx(calibration.temperature, rel=1e-4)


def test_calibrate_command_gives_an_old_checkpoint_a_temperature_and_a_threshold(small_checkpoint, tmp_path, capsys):
    stored = torch.load(small_checkpoint, weights_only=True)
    old = {key: value for key, value in stored.items() if key not in ("temperature", "reject_threshold")}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    assert load_predictor(path, warn=lambda _line: None).calibration == Calibration()
    assert main(["calibrate", "--checkpoint", str(path), "--data-dir", str(DATA_DIR)]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "ECE" in out and "not a digit" in out
    said = []
    calibrated = load_predictor(path, warn=said.append).calibration
    assert said == [] and calibrated.fitted
    assert calibrated.temperature == pytest.approx(stored["temperature"], rel=1e-4)
    assert calibrated.reject_threshold == pytest.approx(stored["reject_threshold"], rel=1e-4)
    assert set(old) <= set(torch.load(path, weights_only=True))  # nothing else lost


@pytest.mark.parametrize("damage", [{"temperature": float("nan")}, {"temperature": "hot"},
                                    {"reject_threshold": float("inf")}])
def test_calibrate_mends_the_damaged_calibration_every_other_command_sends_it(damage, small_checkpoint, tmp_path,
                                                                               capsys):
    """helper-63's sweep: `calibrate` refused the very files whose error message named it as the fix."""
    path = tmp_path / "damaged.pth"
    torch.save({**torch.load(small_checkpoint, weights_only=True), **damage}, path)
    assert main(["predict", str(REPO_ROOT / "examples" / "seven.png"), "--checkpoint", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: the model's stored calibration is damaged")
    assert main(["calibrate", "--checkpoint", str(path), "--data-dir", str(DATA_DIR)]) == 0
    capsys.readouterr()
    assert load_predictor(path, warn=lambda _line: None).calibration.fitted


def test_a_checkpoint_whose_normalization_is_no_number_is_one_line_naming_it(small_checkpoint, tmp_path, capsys):
    for name, normalization in [("text", {"mean": "a", "std": "b"}), ("zero", {"mean": 0.1, "std": 0.0}),
                                ("list", [0.1, 0.3])]:
        path = tmp_path / f"{name}.pth"
        torch.save({**torch.load(small_checkpoint, weights_only=True), "normalization": normalization}, path)
        assert main(["predict", str(REPO_ROOT / "examples" / "seven.png"), "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: its stored normalization") and err.count("\n") == 1


def test_calibrate_of_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["calibrate", "--checkpoint", str(tmp_path / "none.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_calibrate_leaves_read_only_files_and_the_shipped_model_alone(small_checkpoint, tmp_path, capsys):
    import hashlib
    import shutil

    from mnist_classifier.bundled import BUNDLED_CHECKPOINT

    kept = tmp_path / "kept.pth"
    shutil.copy(small_checkpoint, kept)
    kept.chmod(0o444)  # its folder stays writable: a rename could still replace it
    for path, says in ((kept, f"{kept} is read-only: calibrate a copy"),
                       (BUNDLED_CHECKPOINT, f"{BUNDLED_CHECKPOINT} is the model shipped in the package")):
        before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        assert main(["calibrate", "--checkpoint", str(path), "--data-dir", str(DATA_DIR)]) == 2
        assert capsys.readouterr().err.startswith(f"error: {says}")
        assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def test_calibrate_of_the_shipped_onnx_suggests_copying_the_checkpoint(capsys):
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT, BUNDLED_ONNX

    assert main(["calibrate", "--checkpoint", str(BUNDLED_ONNX)]) == 2
    assert f"(cp {BUNDLED_CHECKPOINT} models/mine.pth)" in capsys.readouterr().err  # a copied .onnx is no checkpoint


def test_calibrate_bundled_says_it_is_calibrated_already(capsys):
    assert main(["calibrate", "--checkpoint", "bundled"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: the bundled model is calibrated already, and a package's files are not rewritten: calibrate a "
        "checkpoint of your own (--checkpoint models/simple_cnn_best.pth)")
