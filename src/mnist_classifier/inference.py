"""Predictor: 28x28 uint8 images in, class probabilities out, whatever the backend.

    predictor = load_predictor("models/simple_cnn_best.pth")   # PyTorch checkpoint
    probabilities = predictor.predict(images)                   # (N, 28, 28) uint8 -> (N, C)

`predict`, the desktop demo and the web demo all go through this, so they give the
same answer for the same drawing. Images are MNIST-like (white ink on black), as
`preprocess.to_mnist` makes them; normalisation happens here, once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .checkpoint import load_model, stored_normalization
from .models import count_parameters


class Backend(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) normalised float32 -> (N, C) logits."""


@dataclass
class Prediction:
    label: int
    confidence: float
    probabilities: list[float]

    def top(self, k: int) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(i), float(self.probabilities[i])) for i in order]


@dataclass
class Predictor:
    backend: Backend
    model_name: str
    mean: float
    std: float
    class_names: list[str] = field(default_factory=lambda: [str(d) for d in range(10)])
    info: dict[str, Any] = field(default_factory=dict)  # parameters, accuracies, source file

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) or (28, 28) uint8 -> (N, C) float32 probabilities."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        batch = ((images / 255.0 - self.mean) / self.std)[:, None].astype(np.float32)
        logits = self.backend(batch)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict_one(self, image: np.ndarray) -> Prediction:
        probabilities = self.predict(image)[0]
        label = int(probabilities.argmax())
        return Prediction(label, float(probabilities[label]), [float(p) for p in probabilities])


class TorchBackend:
    CHUNK = 512  # 10,000 images at once would hold ~1.5 GB of activations; the ONNX backend chunks alike

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(batch)
        return torch.cat([self.model(chunk) for chunk in inputs.split(self.CHUNK)]).numpy()


def load_predictor(path: str | Path) -> Predictor:
    """A Predictor for a `.pth` checkpoint (or an `.onnx` export, when supported)."""
    path = Path(path)
    if path.suffix == ".onnx":
        from .export import load_onnx_predictor  # optional backend: onnxruntime

        return load_onnx_predictor(path)
    model, payload = load_model(path)
    norm = stored_normalization(payload)
    return Predictor(
        backend=TorchBackend(model),
        model_name=payload["model_name"],
        mean=norm.mean,
        std=norm.std,
        class_names=list(payload.get("class_names") or [str(d) for d in range(10)]),
        info=checkpoint_info(payload, model, path),
    )


def checkpoint_info(payload: dict[str, Any], model: torch.nn.Module, path: Path) -> dict[str, Any]:
    return {
        "file": path.name,
        "parameters": count_parameters(model),
        "dataset": payload.get("dataset", "mnist"),
        "epoch": payload.get("epoch"),
        "validation_accuracy": payload.get("accuracy"),
        "test_accuracy": payload.get("test_accuracy"),
    }
