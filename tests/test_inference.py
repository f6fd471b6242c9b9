import numpy as np
import pytest

from mnist_classifier.errors import CheckpointError
from mnist_classifier.reader import load_predictor


def test_predictor_classifies_real_test_digits(small_checkpoint, mnist_data):
    predictor = load_predictor(small_checkpoint)
    images = mnist_data.test.images[:500].numpy()
    probabilities = predictor.predict(images)
    assert probabilities.shape == (500, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (probabilities.argmax(1) == mnist_data.test.labels[:500].numpy()).mean()
    assert accuracy > 0.9
    from mnist_classifier.preprocess import Preprocessed

    one = predictor.answer(Preprocessed(images[0], True))
    assert one.best_guess == int(probabilities[0].argmax()) and one.top(3)[0][0] == one.best_guess
    assert one.confidence == pytest.approx(float(probabilities[0].max()))
    assert predictor.info["parameters"] == 390_858


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="mnist-classifier train"):
        load_predictor(tmp_path / "none.pth")


def test_a_checkpoint_in_the_seed_projects_format_loads_as_simple_cnn(small_checkpoint, tmp_path, mnist_data):
    import torch

    ours = torch.load(small_checkpoint, weights_only=True)
    seed_style = {key: ours[key] for key in ("model_state_dict", "optimizer_state_dict", "epoch", "accuracy", "loss")}
    torch.save(seed_style, tmp_path / "seed_simple_cnn_best.pth")
    said = []
    predictor = load_predictor(tmp_path / "seed_simple_cnn_best.pth", warn=said.append)
    assert predictor.model_name == "simple_cnn"
    assert (predictor.mean, predictor.std) == (0.1307, 0.3081)  # MNIST's, as the seed used
    images = mnist_data.test.images[:300].numpy()
    ours = load_predictor(small_checkpoint)
    assert np.array_equal(predictor.logits(images), ours.logits(images))
    # no stored calibration: the raw softmax, nothing refused, and a note that says how to fix it
    assert predictor.calibration.temperature == 1.0 and predictor.calibration.reject_threshold is None
    assert len(said) == 1 and "mnist-classifier calibrate --checkpoint" in said[0]
    logits = predictor.logits(images)
    raw = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(predictor.predict(images), raw / raw.sum(1, keepdims=True), atol=1e-6)
    assert ours.calibration.fitted and ours.calibration.reject_threshold is not None
