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


def test_a_checkpoint_in_the_seed_projects_format_loads_as_simple_cnn(small_checkpoint, tmp_path, mnist_data):
    import torch

    ours = torch.load(small_checkpoint, weights_only=True)
    seed_style = {key: ours[key] for key in ("model_state_dict", "optimizer_state_dict", "epoch", "accuracy", "loss")}
    torch.save(seed_style, tmp_path / "seed_simple_cnn_best.pth")
    predictor = load_predictor(tmp_path / "seed_simple_cnn_best.pth")
    assert predictor.model_name == "simple_cnn"
    assert (predictor.mean, predictor.std) == (0.1307, 0.3081)  # MNIST's, as the seed used
    images = mnist_data.test.images[:300].numpy()
    assert np.array_equal(predictor.predict(images), load_predictor(small_checkpoint).predict(images))
