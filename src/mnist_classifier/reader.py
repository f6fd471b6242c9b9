"""The Python API: load a model, hand it images, get Answers.

    import mnist_classifier
    reader = mnist_classifier.load()                  # bundled model (or load("models/x.pth" / "x.onnx"))
    answer = reader.predict("digit.png")              # path, bytes, file object, PIL image, numpy array, torch tensor
    answer.verdict, answer.digit, answer.confidence   # see answer.py
    reader.predict_batch(["a.png", "b.png"])          # one Answer each, one forward pass

Owns: turning a model file into a Predictor (`load_predictor`, by suffix: `.onnx` through
ONNX Runtime, anything else as a PyTorch checkpoint) and turning a user's object into the
28x28 input the checkpoint's dataset expects. `predict`, both demos and the web API build
their Answers through the same Predictor and preprocessing. With an ONNX file (the bundled
model's default) PyTorch is never imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .answer import Answer
from .bundled import ModelChoice, choose_model
from .datasets import get_dataset_spec
from .errors import ImageError, UserError, to_stderr
from .inference import Predictor
from .preprocess import FRAMINGS, Preprocessed, to_mnist


def load_predictor(path: str | Path, warn: Callable[[str], None] | None = None) -> Predictor:
    """A Predictor for a `.pth` checkpoint or an `.onnx` export.

    A file without stored calibration answers as before (temperature 1, nothing refused),
    and `warn` (default: a line on stderr) is told so once."""
    path = Path(path)
    if path.suffix == ".onnx":
        from .onnx_backend import load_onnx_predictor

        predictor = load_onnx_predictor(path)
    else:
        from .torch_backend import load_torch_predictor  # imports torch (~1.7 s): only when asked for

        predictor = load_torch_predictor(path)
    if not predictor.calibration.fitted:
        (warn or to_stderr)(f"note: {path} has no stored calibration: confidences are the raw softmax and "
                             f"nothing is refused as 'not a digit'; fix: mnist-classifier calibrate --checkpoint {path}")
    return predictor


def framing_of(predictor: Predictor) -> Callable[[Any], Preprocessed]:
    """The preprocessing that makes an image look like the checkpoint's training images."""
    try:
        return FRAMINGS[get_dataset_spec(predictor.info.get("dataset", "mnist")).framing]
    except UserError:  # a dataset this version does not know: the digit recipe
        return to_mnist


class Reader:
    """A loaded model that reads images: `predict(image)` -> Answer, `predict_batch(images)` -> Answers."""

    def __init__(self, predictor: Predictor, choice: ModelChoice):
        self.predictor = predictor
        self.path = choice.path
        self.bundled = choice.bundled
        self._prepare = framing_of(predictor)

    @property
    def model_name(self) -> str:
        return self.predictor.model_name

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    def predict(self, image: Any) -> Answer:
        """One image (see the module docstring for what counts as one) -> its Answer."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[Any]) -> list[Answer]:
        """Several images -> one Answer each, in order; the inked ones go through the model together."""
        return self.predictor.answers([self._prepare(as_image_source(image)) for image in images])

    def __repr__(self) -> str:
        origin = "bundled" if self.bundled else str(self.path)
        return f"Reader({self.model_name}, {origin}, {len(self.class_names)} classes)"


def load(model: str | Path | None = None, reject_threshold: float | None | str = "stored") -> Reader:
    """A Reader for `model` (a `.pth` checkpoint or an `.onnx` export).

    With no model named: models/simple_cnn_best.pth when it exists (what `make train`
    writes), else the calibrated SimpleCNN bundled in the package, through ONNX Runtime.
    `reject_threshold`: "stored" (the model's own), a digit score, or None (never refuse)."""
    choice = choose_model(model)
    predictor = load_predictor(choice.path)
    if reject_threshold != "stored":
        predictor = predictor.with_reject_threshold(reject_threshold)
    return Reader(predictor, choice)


def as_image_source(image: Any) -> Any:
    """What preprocess.load_image reads: file objects are read, torch tensors become numpy arrays."""
    if hasattr(image, "read") and not isinstance(image, (str, bytes, Path)):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"the file object gave {type(data).__name__}, not bytes; open it in binary mode ('rb')")
        return bytes(data)
    if type(image).__module__.split(".")[0] == "torch":  # checked by name: no torch import for the others
        return _tensor_to_array(image)
    return image


def _tensor_to_array(tensor: Any) -> np.ndarray:
    """A (28, 28), (1, 28, 28), (1, 1, 28, 28) or (3, H, W) tensor -> an (H, W[, C]) array."""
    array = tensor.detach().cpu().float().numpy() if tensor.is_floating_point() else tensor.detach().cpu().numpy()
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (3, 4):  # channels first, as torch keeps images
        array = np.moveaxis(array, 0, -1)
    return array
