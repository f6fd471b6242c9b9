"""Predictor: 28x28 uint8 images in, class probabilities out, whatever the backend.

    predictor = load_predictor("models/simple_cnn_best.pth")   # PyTorch checkpoint
    probabilities = predictor.predict(images)                   # (N, 28, 28) uint8 -> (N, C), calibrated
    answer = predictor.answer(to_mnist("digit.png"))            # verdict, digit, best_guess, ... (answer.py)

`predict`, the desktop demo and the web demo all go through this, so they give the
same answer for the same drawing. Images are MNIST-like (white ink on black), as
`preprocess.to_mnist` makes them; normalisation and the temperature are applied here, once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import sys

import numpy as np
import torch

from .answer import Answer, decide, empty_answer
from .calibration import Calibration, digit_scores, softmax
from .checkpoint import load_model, stored_normalization
from .models import count_parameters
from .preprocess import Preprocessed


class Backend(Protocol):
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) normalised float32 -> (N, C) logits."""


@dataclass
class Predictor:
    backend: Backend
    model_name: str
    mean: float
    std: float
    class_names: list[str] = field(default_factory=lambda: [str(d) for d in range(10)])
    info: dict[str, Any] = field(default_factory=dict)  # parameters, accuracies, source file
    calibration: Calibration = field(default_factory=Calibration)  # temperature and refusal threshold

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) or (28, 28) uint8 -> (N, C) float32 raw logits (before the temperature)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        batch = ((images / 255.0 - self.mean) / self.std)[:, None].astype(np.float32)
        return self.backend(batch)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) or (28, 28) uint8 -> (N, C) float32 calibrated probabilities."""
        return self.assess(images)[0]

    def assess(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> calibrated probabilities (N, C) and digit scores (N,) (calibration.digit_scores)."""
        logits = self.logits(images)
        temperature = self.calibration.temperature
        return softmax(logits, temperature).astype(np.float32), digit_scores(logits, temperature)

    def answers(self, inputs: list[Preprocessed]) -> list[Answer]:
        """One Answer per preprocessed drawing; the inked ones go through the model in one batch."""
        inked = [pre.image for pre in inputs if pre.has_ink]
        assessed = iter(zip(*self.assess(np.stack(inked))) if inked else [])
        threshold = self.calibration.reject_threshold
        return [decide(*next(assessed), threshold, pre.image) if pre.has_ink
                else empty_answer(len(self.class_names)) for pre in inputs]

    def answer(self, pre: Preprocessed) -> Answer:
        return self.answers([pre])[0]

    def with_reject_threshold(self, threshold: float | None) -> "Predictor":
        """The same model refusing below another confidence (None: never refuse)."""
        return replace(self, calibration=self.calibration.with_threshold(threshold))


class TorchBackend:
    CHUNK = 512  # 10,000 images at once would hold ~1.5 GB of activations; the ONNX backend chunks alike

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(batch)
        return torch.cat([self.model(chunk) for chunk in inputs.split(self.CHUNK)]).numpy()


def load_predictor(path: str | Path, warn=None) -> Predictor:
    """A Predictor for a `.pth` checkpoint or an `.onnx` export.

    A file without stored calibration answers as before (temperature 1, nothing refused),
    and `warn` (default: a line on stderr) is told so once."""
    path = Path(path)
    if path.suffix == ".onnx":
        from .export import load_onnx_predictor  # optional backend: onnxruntime

        predictor = load_onnx_predictor(path)
    else:
        predictor = torch_predictor(*load_model(path), path)
    if not predictor.calibration.fitted:
        (warn or _to_stderr)(f"note: {path} has no stored calibration: confidences are the raw softmax and "
                             f"nothing is refused as 'not a digit'; fix: mnist-classifier calibrate --checkpoint {path}")
    return predictor


def torch_predictor(model: torch.nn.Module, payload: dict[str, Any], path: Path) -> Predictor:
    """A Predictor around a model already loaded from the checkpoint at `path` (no second read)."""
    norm = stored_normalization(payload)
    return Predictor(
        backend=TorchBackend(model),
        model_name=payload["model_name"],
        mean=norm.mean,
        std=norm.std,
        class_names=list(payload.get("class_names") or [str(d) for d in range(10)]),
        info=checkpoint_info(payload, model, Path(path)),
        calibration=Calibration.from_payload(payload),
    )


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def checkpoint_info(payload: dict[str, Any], model: torch.nn.Module, path: Path) -> dict[str, Any]:
    return {
        "file": path.name,
        "parameters": count_parameters(model),
        "dataset": payload.get("dataset", "mnist"),
        "epoch": payload.get("epoch"),
        "validation_accuracy": payload.get("accuracy"),
        "test_accuracy": payload.get("test_accuracy"),
    }
