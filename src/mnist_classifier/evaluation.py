"""Model outputs and metrics on a split."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import Normalization, Split, eval_batches, to_model_input


@dataclass
class SplitScore:
    loss: float
    accuracy: float  # fraction in [0, 1]


@torch.no_grad()
def compute_logits(model: nn.Module, split: Split, norm: Normalization, batch_size: int = 1000) -> torch.Tensor:
    """Logits for every image of the split, in order, on the split's device."""
    was_training = model.training
    model.eval()
    outputs = [model(to_model_input(images, norm)) for images, _ in eval_batches(split, batch_size)]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 10)


def score_split(model: nn.Module, split: Split, norm: Normalization) -> SplitScore:
    logits = compute_logits(model, split, norm)
    loss = F.cross_entropy(logits, split.labels).item()
    accuracy = (logits.argmax(1) == split.labels).float().mean().item()
    return SplitScore(loss, accuracy)
