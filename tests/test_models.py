import pytest
import torch

from mnist_classifier.errors import UserError
from mnist_classifier.models import MODEL_REGISTRY, create_model, count_parameters


def test_simple_cnn_matches_the_seed_layer_for_layer():
    model = create_model("simple_cnn")
    assert count_parameters(model) == 390_858
    names = [name for name, _ in model.named_children()]
    for layer in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "fc1", "fc2"):
        assert layer in names
    assert model.fc1.in_features == 1152 and model.fc1.out_features == 256


def test_improved_cnn_is_residual_and_about_1_2m_parameters():
    model = create_model("improved_cnn")
    assert 1_100_000 <= count_parameters(model) <= 1_300_000
    assert any("shortcut" in name for name, _ in model.named_modules())


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_model_maps_a_batch_to_ten_logits(name):
    model = create_model(name).eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_pool_before_relu_computes_the_seed_order():
    model = create_model("simple_cnn").eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        seed_order = x
        for conv, bn in ((model.conv1, model.bn1), (model.conv2, model.bn2), (model.conv3, model.bn3)):
            seed_order = model.pool(torch.relu(bn(conv(seed_order))))
        seed_logits = model.fc2(torch.relu(model.fc1(torch.flatten(seed_order, 1))))
        assert torch.allclose(model(x), seed_logits, atol=1e-5)


def test_unknown_model_lists_the_choices():
    with pytest.raises(UserError, match="simple_cnn") as error:
        create_model("resnet9000")
    assert "improved_cnn" in str(error.value)
