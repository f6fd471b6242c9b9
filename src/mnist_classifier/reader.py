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

import os
import shlex
import sys
import warnings
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from .answer import Answer
from .bundled import BUNDLED_NAME, ModelChoice, choose_model, sha256_of
from .plugins import import_plugins
from .calibration import reject_threshold_setting
from .datasets import get_dataset_spec
from .errors import CheckpointError, ImageError, UserError, first_line, to_stderr
from .images import MAX_FILE_BYTES, MAX_SIDE
from .inference import Predictor
from .preprocess import CANVAS, FRAMINGS, Preprocessed, to_mnist


def load_predictor(path: str | Path, warn: Callable[[str], None] | None = None) -> Predictor:
    """A Predictor for a `.pth` checkpoint or an `.onnx` export.

    A file without stored calibration answers as before (temperature 1, nothing refused),
    and `warn` (default: a line on stderr) is told so once."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from .onnx_backend import load_onnx_predictor

        predictor = load_onnx_predictor(path)
        _note_a_newer_checkpoint(path, predictor, warn or to_stderr)
    else:
        from .torch_backend import load_torch_predictor  # imports torch (~1.7 s): only when asked for

        predictor = load_torch_predictor(path)
    if not predictor.calibration.fitted:
        fix = (f"mnist-classifier calibrate --checkpoint {path}" if path.suffix.lower() != ".onnx" else
               "calibrate the .pth it was exported from (mnist-classifier calibrate --checkpoint FILE.pth), "
               "then export that again")
        (warn or to_stderr)(f"note: {path} has no stored calibration: confidences are the raw softmax and nothing "
                             f"is refused as 'not a digit'; fix: {fix}")
    return predictor


def _note_a_newer_checkpoint(path: Path, predictor: Predictor, warn: Callable[[str], None]) -> None:
    """An export answers for the checkpoint it came from; the .pth beside it may have been trained
    or calibrated again since (each export records its source's SHA-256)."""
    source, checkpoint = predictor.info.get("source_sha256"), path.with_suffix(".pth")
    if predictor.info.get("source_checkpoint") != checkpoint.name:
        return  # exported from another file (export --out): the .pth beside it is not its source
    with suppress(OSError):  # no such checkpoint, or not ours to read: nothing to compare
        if source and checkpoint.is_file() and sha256_of(checkpoint) != source:
            warn(f"note: {path} was exported from an earlier {checkpoint.name}, which has changed since; "
                 f"`mnist-classifier export --checkpoint {shlex.quote(str(checkpoint))}` brings it up to date")


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
        self._absolute_path = choice.path.absolute()  # what a pickled copy loads, from whatever folder (helper-91)
        self.bundled = choice.bundled
        # the model `finetune` made from your drawings, picked by default or named
        self.tuned = choice.tuned or bool(predictor.info.get("fine_tuned"))
        self._prepare = framing_of(predictor)

    @property
    def model_name(self) -> str:
        return self.predictor.model_name

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    def predict(self, image: Any) -> Answer:
        """One image (see the module docstring for what counts as one) -> its Answer."""
        return self.predictor.answers([self._read(image)])[0]

    def predict_batch(self, images: Iterable[Any]) -> list[Answer]:
        """Several images (a list, tuple or generator) -> one Answer each, in order; the inked ones go
        through the model together. An image that cannot be read is an ImageError naming its index."""
        _refuse_one_image_as_a_batch(images)
        return self.predictor.answers([self._read_item(index, image) for index, image in enumerate(images)])

    def _read(self, image: Any) -> Preprocessed:
        return self._prepare(as_image_source(image))

    def _read_item(self, index: int, image: Any) -> Preprocessed:
        try:
            return self._read(image)
        except ImageError as error:  # in a batch of 500, "image contains NaN" alone does not say which one
            raise ImageError(f"item {index}: {error}") from None

    def __reduce__(self):
        """Pickled as what to load: an ONNX Runtime session cannot be sent to another process
        (helper-88: ProcessPoolExecutor failed inside onnxruntime). The same file, the same threshold."""
        model = BUNDLED_NAME if self.bundled else str(self._absolute_path)
        return load, (model, self.predictor.calibration.reject_threshold)

    def __repr__(self) -> str:
        origin = "bundled" if self.bundled else str(self.path)
        if self.tuned:
            origin += ", fine-tuned on your drawings"
        return f"Reader({self.model_name}, {origin}, {len(self.class_names)} classes)"


def load(model: str | Path | None = None, reject_threshold: float | None | str = "stored") -> Reader:
    """A Reader for `model` (a `.pth` checkpoint or an `.onnx` export; `~` is expanded).

    With no model named: the one `finetune` made from your drawings, else models/simple_cnn_best.pth
    when it exists (what `train` writes), else the calibrated SimpleCNN bundled in the package,
    through ONNX Runtime; `load("bundled")` names that one whatever models/ holds.
    `reject_threshold`: "stored" (the model's own), a finite number (a digit score; not a bool),
    or None or "none" (never refuse); a number as text ("-3.5") is read as the CLI reads it.
    Anything else is a UserError here, before the model is loaded."""
    reject_threshold = reject_threshold_setting(reject_threshold, name="reject_threshold")
    import_plugins()  # as every command does: a checkpoint of your own model loads the same way
    choice = choose_model(_model_path(model))
    try:
        predictor = load_predictor(choice.path, warn=_library_note)
    except CheckpointError as error:
        if choice.named or choice.bundled:
            raise
        # helper-88: a folder holding another project's models/simple_cnn_best.pth (the seed's name)
        raise CheckpointError(f"{error} (no model was named, so load() took it from this folder's models/; "
                              "load('bundled') answers with the model shipped in the package)") from None
    if reject_threshold != "stored":
        predictor = predictor.with_reject_threshold(reject_threshold)
    return Reader(predictor, choice)


def _library_note(line: str) -> None:
    """A library's notes are warnings, which a caller can filter or record; the commands print theirs.
    Each is attributed to the caller's line, the first frame outside this package, however deep
    the note was raised (helper-91: a fixed stack level named reader.py for one of them)."""
    package, frame, level = os.path.dirname(__file__) + os.sep, sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(line, UserWarning, stacklevel=level)


def _model_path(model: str | Path | None) -> Path | None:
    """The user's model name as a path: None stays None (the default model), `~` is expanded."""
    if model is None:
        return None
    if not isinstance(model, (str, os.PathLike)):
        raise CheckpointError(f"load() takes a model file path, got {type(model).__name__}; "
                              "pass a .pth or .onnx path, or nothing for the default model")
    if not os.fspath(model).strip():  # Path("") is ".", which would read as "a folder"
        raise CheckpointError("load() got an empty model path; name a .pth or .onnx file, "
                              "or pass nothing for the default model")
    return Path(model).expanduser()


def as_image_source(image: Any) -> Any:
    """What images.load_image reads: file objects are read, torch tensors become numpy arrays."""
    if hasattr(image, "read") and not isinstance(image, (str, bytes, Path)):
        data = _read_file_object(image)
        if len(data) > MAX_FILE_BYTES:
            raise ImageError(f"the file object holds more than {MAX_FILE_BYTES // 2**20} MiB, more than an uncompressed "
                             f"picture of {MAX_SIDE}x{MAX_SIDE} pixels; pass an image file")
        if not data:
            raise ImageError("the file object gave no bytes: it is empty or already read to its end "
                             "(seek(0) to read it again)")
        return bytes(data)
    if _is_torch(image):
        return _tensor_to_array(image)
    if isinstance(image, np.ndarray):
        # np.matrix stays 2-D under indexing (numpy aborts on what images.py then does to it); a
        # masked array's mask means nothing to a picture: the plain array of its values
        image = np.asarray(image)
        # A batch of one, (1, 28, 28) or (1, 1, 28, 28) as a tensor gives it: the one image, as for torch
        while image.ndim > 2 and image.shape[0] == 1:
            image = image[0]
        _refuse_a_stack_of_digits(image, channels_last="np.moveaxis(x, 0, -1)")
    return image


def _read_file_object(file: Any) -> bytes:
    """Its bytes to the end, or to one past MAX_FILE_BYTES: an unbuffered stream (a pipe, a socket)
    returns what has arrived, so it is read until it says it has no more."""
    chunks, total = [], 0
    try:
        while total <= MAX_FILE_BYTES:
            try:
                chunk = file.read(MAX_FILE_BYTES + 1 - total)
            except TypeError:  # a read() that takes no size: all of it at once
                chunk, total = file.read(), MAX_FILE_BYTES + 1
            if not isinstance(chunk, (bytes, bytearray)):
                raise ImageError(f"the file object gave {type(chunk).__name__}, not bytes; "
                                 "open it in binary mode ('rb')")
            if not chunk:
                break
            chunks.append(bytes(chunk))
            total += len(chunk)
    except (ValueError, OSError) as error:  # a closed file, a socket gone
        raise ImageError(f"cannot read the file object ({first_line(error)}); pass it open, "
                         "in binary mode ('rb')") from None
    return b"".join(chunks)


def _tensor_to_array(tensor: Any) -> np.ndarray:
    """A (28, 28), (1, 28, 28), (1, 1, 28, 28) or (3, H, W) tensor -> an (H, W[, C]) array."""
    import torch  # already imported by whoever made the tensor

    if tensor.numel() > 4 * MAX_SIDE * MAX_SIDE:  # before any copy: refused below anyway, after gigabytes
        raise ImageError(f"the tensor of shape {tuple(tensor.shape)} holds more values than a {MAX_SIDE}x{MAX_SIDE} "
                         "colour picture; resize it first")
    try:
        dense = tensor.to_dense() if tensor.layout != torch.strided else tensor  # sparse: its pixels, zeros filled in
        array = dense.detach().cpu().float().numpy() if dense.is_floating_point() else dense.detach().cpu().numpy()
    except (RuntimeError, NotImplementedError, TypeError) as error:  # a meta tensor has no values to read
        raise ImageError(f"cannot read pixels from this {tensor.device.type} tensor ({first_line(error)}); "
                         "pass a tensor that holds its pixel values") from None
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    _refuse_a_stack_of_digits(array, channels_last="x.permute(1, 2, 0)")
    if array.ndim == 3 and array.shape[0] in (3, 4):  # channels first, as torch keeps images
        array = np.moveaxis(array, 0, -1)
    return array


def _refuse_a_stack_of_digits(array: np.ndarray, channels_last: str) -> None:
    """Arrays that hold several digits, or one flattened, are refused rather than read as one odd image.

    (N, 28, 28) is N digits far more often than one 28x28 colour image stored channels first,
    and (N, 1, 28, 28) and (N, 28, 28, 1) are a batch (PyTorch's, Keras's): answering either as
    one image would silently drop N - 1 digits. (N, 784) and (784, 1) are flattened digits
    (scikit-learn's MNIST, x.view(N, -1)): read as a strip 784 px long they got a confident
    wrong answer. A picture 784 px wide is still read: its rows do not frame a digit."""
    shape, side = array.shape, CANVAS * CANVAS
    batch = f"use predict_batch(list(x.reshape(-1, {CANVAS}, {CANVAS})))"
    if shape == (side,):
        raise ImageError(f"an image of shape {shape} looks like one flattened {CANVAS}x{CANVAS} digit: "
                         f"use predict(x.reshape({CANVAS}, {CANVAS}))")
    if len(shape) == 2 and (shape[1] == side or shape == (side, 1)) and _rows_frame_digits(array.reshape(-1, side)):
        count = array.size // side
        raise ImageError(f"an image of shape {tuple(shape)} looks like {count:,} flattened {CANVAS}x{CANVAS} "
                         f"digit{'s' if count > 1 else ''}: {batch}, or predict(x.reshape({CANVAS}, {CANVAS})) for one")
    stacked = len(shape) == 4 and shape[0] >= 2 and (CANVAS, CANVAS) in (shape[2:], shape[1:3]) \
        and 1 in (shape[1], shape[3])
    if stacked:
        raise ImageError(f"an image of shape {tuple(shape)} looks like a batch of {shape[0]} digits: {batch}")
    if len(shape) != 3 or shape[0] < 2 or shape[1:] != (CANVAS, CANVAS):
        return
    colour = f", or if it is one colour image pass it channels-last ({channels_last})" if shape[0] in (3, 4) else ""
    raise ImageError(f"an image of shape {tuple(shape)} looks like a batch of {shape[0]} digits: {batch}{colour}")


def _rows_frame_digits(rows: np.ndarray) -> bool:
    """Whether 784-long rows, each folded to 28x28, frame a digit as MNIST does: edges at the
    background level (its lowest value, whatever the scaling or normalisation), ink inside.
    A photo's row folded so has paper, ink and shading all over its edges."""
    folded = rows[:min(len(rows), 100)].reshape(-1, CANVAS, CANVAS)
    edges = np.concatenate([folded[:, 0], folded[:, -1], folded[:, :, 0], folded[:, :, -1]], axis=1)
    background = folded.min()
    return bool(np.mean(edges == background) >= 0.9 and np.any(folded > background))


def _refuse_one_image_as_a_batch(images: Any) -> None:
    """predict_batch iterates its argument: a path would become its characters, bytes their
    values, an array its rows. Those are one image (or, for an array, ambiguous): refused."""
    one_image = (isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray))
                 or isinstance(images, Image.Image) or _is_torch(images) or hasattr(images, "read"))
    if one_image:
        stack = " (for a stack of images in one array: predict_batch(list(x)))" if hasattr(images, "shape") else ""
        raise ImageError(f"predict_batch takes a list of images; use predict() for one{stack}")
    if not hasattr(images, "__iter__"):
        raise ImageError(f"predict_batch takes a list of images, got {type(images).__name__}")


def _is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"  # checked by name: no torch import for the others
