"""The optimiser and the learning-rate schedule a recipe names (`optimizer`, `scheduler`)."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params, lr, decay = model.parameters(), config.learning_rate, config.weight_decay
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    if config.optimizer == "adam":  # the seed's choice: L2 penalty folded into the gradient
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=decay)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    if config.scheduler == "onecycle":
        # OneCycleLR divides by its warm-up's length in steps, which 25% of exactly 4 steps makes zero
        warm_up = 0.25 if total >= 8 else 0.4
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=total,
                                                   pct_start=warm_up)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.scheduler == "plateau":  # the seed's schedule, stepped once per epoch on val loss
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)
    return None
