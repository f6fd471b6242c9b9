"""The moving average of the weights that a run validates, saves and serves (averaging.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_classifier.averaging import WeightAverage


def set_weight(model: nn.Module, weight: float) -> None:
    with torch.no_grad():
        model[0].weight.fill_(weight)


def tiny_model(weight: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    set_weight(model, weight)
    return model


def test_the_average_warms_up_then_keeps_its_decay():
    model = tiny_model(1.0)
    average = WeightAverage(model, decay=0.99)
    average.update(model)  # the first update copies the weights
    assert average.model[0].weight.item() == 1.0
    set_weight(model, 3.0)
    average.update(model)  # one update done: decay (1 + 1) / (10 + 1) = 2/11
    assert average.model[0].weight.item() == pytest.approx(1.0 * 2 / 11 + 3.0 * 9 / 11)
    average.averaged.n_averaged.fill_(5_000)  # long past the warm-up: the decay itself
    before = average.model[0].weight.item()
    average.update(model)
    assert average.model[0].weight.item() == pytest.approx(0.99 * before + 0.01 * 3.0)


def test_batchnorm_statistics_are_averaged_and_its_batch_count_is_the_models():
    model = tiny_model(1.0)
    average = WeightAverage(model, decay=0.5)
    model.train()
    model(torch.tensor([[1.0], [3.0]]))  # running mean 0.9 * 0 + 0.1 * 2 = 0.2
    average.update(model)
    model(torch.tensor([[5.0], [7.0]]))  # 0.9 * 0.2 + 0.1 * 6 = 0.78
    average.update(model)  # decay min(0.5, 2/11)
    assert average.model[1].running_mean.item() == pytest.approx(0.2 * 2 / 11 + 0.78 * 9 / 11)
    assert average.model[1].num_batches_tracked.item() == 2


def test_a_restored_average_goes_on_from_the_stored_count():
    model = tiny_model(2.0)
    average = WeightAverage(model, decay=0.9)
    stored = tiny_model(4.0).state_dict()
    average.restore(stored, {"updates": 500})
    assert average.model[0].weight.item() == 4.0
    average.update(model)  # not a fresh copy: 500 updates already, past the warm-up
    assert average.model[0].weight.item() == pytest.approx(0.9 * 4.0 + 0.1 * 2.0)
    average.restore(stored, None)  # a checkpoint of a run that kept no average
    average.update(model)
    assert average.model[0].weight.item() == 2.0
