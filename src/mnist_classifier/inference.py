"""Predictor: 28x28 uint8 images in, calibrated class probabilities and Answers out.

    predictor = load_predictor("models/simple_cnn_best.pth")   # reader.py: .pth or .onnx
    probabilities = predictor.predict(images)                   # (N, 28, 28) uint8 -> (N, C), calibrated
    answer = predictor.answer(to_mnist("digit.png"))            # verdict, digit, best_guess, ... (answer.py)

Owns: normalisation, the temperature and the refusal rule, applied once for every
backend. The backends (torch_backend.py, onnx_backend.py) only turn a normalised batch
into logits, so `predict`, both demos, the API and the Python API give the same answer
for the same drawing. Images are MNIST-like (white ink on black), as
`preprocess.to_mnist` makes them. Imports neither torch nor a backend: the ONNX path of
the Python API answers without loading PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from .answer import Answer, decide, empty_answer
from .calibration import Calibration, digit_scores, softmax
from .errors import CheckpointError, ImageError
from .preprocess import Preprocessed

def probe_images() -> np.ndarray:
    """Two fixed noise-like images (uint8). An export stores the model's logits for them and every
    load asks again (`Predictor.check_sound`): weights that changed answer them differently. Plain
    integer arithmetic, not a random generator, whose stream numpy does not promise to keep."""
    index = np.arange(2 * 28 * 28, dtype=np.uint64)
    return ((index * np.uint64(2654435761)) % np.uint64(4093) % np.uint64(256)).astype(np.uint8).reshape(2, 28, 28)


def _model_sized(images: Any) -> np.ndarray:
    """(N, 28, 28) uint8 (or integers within 0..255), or one (28, 28) as a batch of one; anything
    else is an ImageError: 0..1 floats would all read as black, and another shape fails deep
    inside the backend."""
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise ImageError(f"the model takes (N, 28, 28) or (28, 28) images, got shape {array.shape}; "
                         "for any other picture use reader.predict(picture), which prepares it")
    whole_bytes = np.issubdtype(array.dtype, np.integer) and (array.size == 0 or 0 <= array.min() <= array.max() <= 255)
    if array.dtype != np.uint8 and not whole_bytes:
        raise ImageError(f"the model takes uint8 images (0..255, white ink on black, as preprocess.to_mnist "
                         f"makes them), got {array.dtype}; 0..1 floats: (x * 255).round().astype(np.uint8)")
    return array.astype(np.uint8, copy=False)


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
        images = _model_sized(images).astype(np.float32)
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
        return [decide(*next(assessed), threshold, pre.image, pre.too_bold) if pre.has_ink
                else empty_answer(len(self.class_names)) for pre in inputs]

    def answer(self, pre: Preprocessed) -> Answer:
        return self.answers([pre])[0]

    def check_sound(self, source: object, expected: np.ndarray | None = None) -> None:
        """Refuse a model file that cannot answer honestly: outputs that do not match its class
        names, NaN or infinity (damaged weights or normalisation), or, given the logits its
        export stored for the probe images, other answers than those."""
        logits = self.logits(probe_images())
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise CheckpointError(f"{source} is damaged: the model gives {logits.shape[-1]} outputs for "
                                  f"{len(self.class_names)} class names; export or train it again")
        if not np.isfinite(logits).all():
            raise CheckpointError(f"{source} is damaged: the model answers with NaN or infinity "
                                  "(its weights or normalisation); export or train it again")
        if expected is not None and (expected.shape != logits.shape
                                     or not np.allclose(logits, expected, rtol=1e-4, atol=1e-3)):
            raise CheckpointError(f"{source} is damaged: its weights no longer give the answers stored "
                                  "when it was exported; export it again")

    def with_reject_threshold(self, threshold: float | None) -> "Predictor":
        """The same model refusing below another digit score (None: never refuse)."""
        return replace(self, calibration=self.calibration.with_threshold(threshold))
