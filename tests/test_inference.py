import numpy as np
import pytest

from mnist_classifier.errors import CheckpointError
from mnist_classifier.inference import load_predictor


def test_predictor_classifies_real_test_digits(small_checkpoint, mnist_data):
    predictor = load_predictor(small_checkpoint)
    images = mnist_data.test.images[:500].numpy()
    probabilities = predictor.predict(images)
    assert probabilities.shape == (500, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = (probabilities.argmax(1) == mnist_data.test.labels[:500].numpy()).mean()
    assert accuracy > 0.9
    one = predictor.predict_one(images[0])
    assert one.label == int(probabilities[0].argmax()) and one.top(3)[0][0] == one.label
    assert predictor.info["parameters"] == 390_858


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="mnist-classifier train"):
        load_predictor(tmp_path / "none.pth")
