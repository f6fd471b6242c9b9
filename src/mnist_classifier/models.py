"""The two networks and the registry that builds them by name.

    >>> create_model("simple_cnn")       # the seed's network, 390,858 parameters
    >>> create_model("improved_cnn")     # residual CNN, 1.2M parameters

Adding a model: write an `nn.Module` whose constructor takes `num_classes`, then
decorate it with `@register_model("my_net")`. `train --model my_net` picks it up.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .errors import UserError

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Class decorator: make a model buildable by `create_model(name)`."""

    def add(factory):
        if name in MODEL_REGISTRY and MODEL_REGISTRY[name] is not factory:
            raise ValueError(f"model name '{name}' is already registered")
        MODEL_REGISTRY[name] = factory
        return factory

    return add


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    try:
        factory = MODEL_REGISTRY[name]
    except KeyError:
        choices = ", ".join(sorted(MODEL_REGISTRY))
        raise UserError(f"unknown model '{name}': choose one of {choices}") from None
    return factory(num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_model("simple_cnn")
class SimpleCNN(nn.Module):
    """The seed's network, layer for layer, so its checkpoints load here.

    Each block is conv3x3 -> BatchNorm -> max-pool -> ReLU. The seed applies ReLU
    before the pool; ReLU is monotonic, so both orders compute the same function,
    and pooling first runs ReLU on a quarter of the values (~25% faster on CPU).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(128 * 3 * 3, 256)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = torch.relu(self.pool(bn(conv(x))))  # 28 -> 14 -> 7 -> 3
        x = self.dropout1(torch.flatten(x, 1))
        x = self.dropout2(torch.relu(self.fc1(x)))
        return self.fc2(x)


class ResidualBlock(nn.Module):
    """Two conv3x3-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register_model("improved_cnn")
class ImprovedCNN(nn.Module):
    """Residual CNN, 1.2M parameters: stem, three residual stages, global pooling.

    Resolution falls 28 -> 14 -> 7 -> 3 while width grows 32 -> 64 -> 128 -> 256, so
    most parameters sit where the feature maps are small and cheap to compute.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.stage1 = ResidualBlock(32, 64)
        self.stage2 = ResidualBlock(64, 128)
        self.stage3 = ResidualBlock(128, 256)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.pool(self.stem(x)))  # 28 -> 14
        x = self.pool(self.stage1(x))  # 14 -> 7
        x = self.pool(self.stage2(x))  # 7 -> 3
        x = self.stage3(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))
