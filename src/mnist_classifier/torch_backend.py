"""The PyTorch backend of `Predictor`: a checkpoint's model turning normalised batches into logits.

Owns: building a Predictor from a `.pth` checkpoint (or from a model already loaded
from one) and the model card facts every front end shows (`checkpoint_info`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import Calibration
from .checkpoint import load_model, stored_class_names, stored_normalization
from .inference import Predictor
from .models import count_parameters


class TorchBackend:
    # 10,000 images at once would hold ~1.5 GB of activations; 256 channels-last images
    # stay in cache (see evaluation.compute_logits for the measurement)
    CHUNK = 256

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval().to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(batch)
        return torch.cat([self.model(chunk.contiguous(memory_format=torch.channels_last))
                          for chunk in inputs.split(self.CHUNK)]).numpy()


def load_torch_predictor(path: str | Path) -> Predictor:
    """A Predictor for a `.pth` checkpoint (safe loading and its errors: checkpoint.py)."""
    return torch_predictor(*load_model(path), Path(path))


def torch_predictor(model: torch.nn.Module, payload: dict[str, Any], path: Path) -> Predictor:
    """A Predictor around a model already loaded from the checkpoint at `path` (no second read)."""
    norm = stored_normalization(payload, path)
    predictor = Predictor(
        backend=TorchBackend(model),
        model_name=payload["model_name"],
        mean=norm.mean,
        std=norm.std,
        class_names=stored_class_names(payload),
        info=checkpoint_info(payload, model, Path(path)),
        calibration=Calibration.from_payload(payload, path),
    )
    predictor.check_sound(path)
    return predictor


def checkpoint_info(payload: dict[str, Any], model: torch.nn.Module, path: Path) -> dict[str, Any]:
    return {
        "file": path.name,
        "parameters": count_parameters(model),
        "dataset": payload.get("dataset", "mnist"),
        "epoch": payload.get("epoch"),
        "validation_accuracy": payload.get("accuracy"),
        "test_accuracy": payload.get("test_accuracy"),
        "fine_tuned": payload.get("finetune") is not None,  # finetune made it from the user's drawings
    }
