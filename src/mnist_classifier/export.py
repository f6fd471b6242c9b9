"""ONNX export that checks itself (onnx_backend.py loads what it writes).

    mnist-classifier export --checkpoint models/simple_cnn_best.pth   # -> models/simple_cnn_best.onnx
    mnist-classifier predict digit.png --checkpoint models/simple_cnn_best.onnx

The .onnx file is self-describing: input "images" is float32 (N, 1, 28, 28), already
normalised as (pixel / 255 - mean) / std; output "logits" is float32 (N, C); the batch
axis is dynamic. Everything `Predictor` needs (normalisation, class names, model name,
accuracies) rides in the model's metadata_props, so the .onnx alone is a deployable
model. Keeping normalisation outside the graph keeps the two backends bit-for-bit
comparable: both get the very same input array from `Predictor.predict`.

Before anything is written, ONNX Runtime's logits on 1,000 real test images must match
PyTorch's within 1e-4, else the export fails and leaves no file. SimpleCNN's exported
graph is 13 nodes (BatchNorm folded into the convolutions); single-image p50 measured
0.16 ms in ONNX Runtime vs 0.56 ms eager PyTorch (AMD EPYC, 2 busy shared cores;
`python benchmarks/inference.py`).
"""
from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .bundled import BUNDLED_CHECKPOINT, BUNDLED_DIR, BUNDLED_ONNX, sha256_of
from .calibration import Calibration
from .checkpoint import load_model, stored_class_names, stored_normalization
from .data import Normalization, load_data, to_model_input
from .errors import UserError, first_line, to_stderr
from .files import write_atomically, write_probe
from .inference import probe_images
from .onnx_backend import (DIGEST_KEY, METADATA_KEY, PROBE_KEY, OnnxBackend, load_onnx_predictor, model_digest,
                           stored_probe)
from .torch_backend import checkpoint_info

DEFAULT_OPSET = 18  # read by every ONNX Runtime since 1.14 and by most other runtimes
METADATA_VERSION = "1"
CHECK_IMAGES = 1000
TOLERANCE = 1e-4


def export_onnx(
    checkpoint_path: str | Path,
    out_path: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    data_dir: str | Path = "data",
    data_source: str = "auto",
    fix: str = "choose another --out",
    called: str = "--out",
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Export a checkpoint to ONNX, verify it against PyTorch, write it atomically. `announce`
    hears, once the checkpoint has loaded, that the export's seconds of checks begin."""
    checkpoint_path = Path(checkpoint_path)
    out_path = Path(out_path) if out_path else default_out(checkpoint_path)
    _check_writable(out_path, fix, called)
    shipped = _shipped_export(checkpoint_path, out_path, opset)
    if shipped is not None:
        return write_atomically(out_path, shipped)
    model, payload, source_sha256 = _load_unchanging(checkpoint_path)
    norm = stored_normalization(payload, checkpoint_path)
    Calibration.from_payload(payload, checkpoint_path)  # a damaged one refused now, naming the file
    images = load_data(data_dir, payload.get("dataset", "mnist"), source=data_source, log=lambda _line: None,
                       warn=to_stderr).test.images[:CHECK_IMAGES]
    if announce is not None:  # only once it can be made: a refused checkpoint's error stays the one line
        announce(f"exporting {checkpoint_path} to ONNX into {out_path}, checked against PyTorch on "
                 f"{len(images):,} test images (once per checkpoint; seconds)")
    proto = _to_onnx(model, opset)
    max_diff = _max_difference(model, proto.SerializeToString(), to_model_input(images, norm).numpy())
    if not max_diff <= TOLERANCE:  # also catches NaN
        raise UserError(
            f"ONNX export of {checkpoint_path} failed its check: ONNX Runtime differs from PyTorch by "
            f"{max_diff:.2e} (> {TOLERANCE:g}) on {len(images)} test images; no file written"
        )
    info = checkpoint_info(payload, model, checkpoint_path)
    probe = _probe_logits(model, norm)
    _set_metadata(proto, payload, norm, info, opset, max_diff, source_sha256, probe)
    # the digest leaves out its own entry, so writing it there does not change it
    proto.metadata_props.add(key=DIGEST_KEY, value=model_digest(proto.SerializeToString()))
    return write_atomically(out_path, proto.SerializeToString())


def _shipped_export(checkpoint_path: Path, out_path: Path, opset: int) -> bytes | None:
    """The package's own export of the bundled model, when that is what is asked for: checked against
    PyTorch when it was made, so exporting it needs no MNIST (in an empty folder `export` fetched all
    of it: helper-77). None for anything else, and for `make bundled-model` writing a new one."""
    try:
        if (checkpoint_path.resolve() != BUNDLED_CHECKPOINT or out_path.resolve() == BUNDLED_ONNX
                or opset != DEFAULT_OPSET or not BUNDLED_ONNX.is_file()):
            return None
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): load_model says so
        return None
    shipped = BUNDLED_ONNX.read_bytes()
    try:
        source = load_onnx_predictor(BUNDLED_ONNX).info.get("source_sha256")  # its checksum and probe checked
    except UserError:
        return None
    return shipped if source == sha256_of(checkpoint_path) else None


def _load_unchanging(checkpoint_path: Path) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """The model and the SHA-256 of the very bytes it was loaded from. A checkpoint replaced
    meanwhile (`train` saving a new best while `serve` exports) would otherwise leave a cache
    holding the old weights under the new file's hash, served as up to date for good."""
    try:
        before = sha256_of(checkpoint_path)
    except OSError:
        before = None  # missing, unreadable or no regular file: load_model says so, in the words every command uses
    model, payload = load_model(checkpoint_path)
    if before is None or sha256_of(checkpoint_path) != before:
        raise UserError(f"{checkpoint_path} changed while it was being read for export (a training run saving "
                        "it?); no file written: export again once it is saved")
    return model, payload, before


def default_out(checkpoint_path: Path) -> Path:
    """Beside the checkpoint (where `serve` caches it too); the bundled model's goes to models/."""
    with suppress(OSError, RuntimeError):  # a symlink loop: not the bundled model, and load_model says what it is
        if checkpoint_path.resolve().parent == BUNDLED_DIR:
            return Path("models") / f"{checkpoint_path.stem}.onnx"
    return checkpoint_path.with_suffix(".onnx")


def _check_writable(out_path: Path, fix: str = "choose another --out", called: str = "--out") -> None:
    """Before the export's seconds of work: a name `predict` reads as ONNX, in a folder we may write.
    `called`: what the user knows the path as (`export --out`, or `serve`'s cache)."""
    if out_path.is_dir():
        raise UserError(f"{called} {out_path} is a folder; " + (
            f"name the file, e.g. {out_path / 'model.onnx'}" if called == "--out" else f"move it away, or {fix}"))
    if out_path.suffix.lower() != ".onnx":
        raise UserError(f"{called} {out_path} must end in .onnx: predict, serve and load() tell an ONNX model "
                        "by its suffix (and a .pth there would be replaced)")
    if out_path.is_symlink() and not out_path.exists():  # a loop or a missing target: no file can be written there
        raise UserError(f"{called} {out_path} is a symbolic link to nothing (a missing file or a loop); {fix}")
    folder, error = write_probe(out_path.parent)
    if error is not None:
        raise UserError(f"cannot write {out_path}: {folder} is not a folder this user may write to "
                        f"({error.strerror}); {fix}") from None


def cached_export(checkpoint_path: str | Path, data_dir: str | Path = "data",
                  log: Callable[[str], None] | None = None) -> Path:
    """The checkpoint's ONNX export beside it (`x.pth` -> `x.onnx`), made or remade when it is
    missing, damaged, from a version that stored no probe or checksum, exported from other
    bytes than the checkpoint's today, or answering otherwise than the model's code does today
    (a plugin's forward edited since: the same weights, other answers). `log` hears when an
    export begins: serve's first start was silent for its ~45 s on a busy 2-core machine (helper-84)."""
    checkpoint_path = Path(checkpoint_path)
    cached = checkpoint_path.with_suffix(".onnx")
    older = False  # an export of these bytes from before the checks: renewed, or served if it cannot be
    if cached.is_file():
        try:
            predictor = load_onnx_predictor(cached)
            info, source = predictor.info, predictor.info.get("source_sha256")
        except UserError:
            predictor, info, source = None, {}, None  # damaged or foreign: export again
        if source == sha256_of(checkpoint_path):
            if info.get("probed") and info.get("checksummed"):
                if _answers_as_the_code_does(checkpoint_path, predictor):  # predictor: the export's
                    return cached
            else:
                older = True
    try:  # only test images already on disk check it: serving should not start with a download
        return export_onnx(checkpoint_path, cached, data_dir=data_dir, data_source="local",
                           fix="copy the checkpoint to a folder you may write to, or serve with --backend torch",
                           called="the ONNX cache", announce=log)
    except (UserError, OSError):
        if older:
            return cached
        raise


def _answers_as_the_code_does(checkpoint_path: Path, cached) -> bool:
    """The export's stored answers to the probe images (`cached`: its Predictor, whose ONNX Runtime
    session holds them) are the PyTorch model's answers today: a plugin's forward edited since
    gives other answers from the same weights."""
    try:
        model, payload = load_model(checkpoint_path)
    except UserError:  # the model's code is not here (a serving host without the plugin): the export needs none
        return True
    now, expected = _probe_logits(model, stored_normalization(payload)), stored_probe(cached)
    return expected is not None and expected.shape == now.shape and bool(np.allclose(now, expected, atol=TOLERANCE))


def _probe_logits(model: torch.nn.Module, norm: Normalization) -> np.ndarray:
    """The model's logits for inference.probe_images(): what an export stores, and a load compares."""
    return _logits(model, to_model_input(torch.from_numpy(probe_images()), norm).numpy())


def _to_onnx(model: torch.nn.Module, opset: int):
    """The graph as an onnx.ModelProto, batch axis dynamic.

    The torch.export-based exporter (dynamo=True, needs onnxscript) is PyTorch's default
    and the TorchScript one is deprecated; on SimpleCNN both give the same 13-node graph
    with BatchNorm folded. We take the ModelProto in memory rather than letting the
    exporter write: it would put the weights in a separate `.onnx.data` file.
    """
    example = torch.zeros(2, 1, 28, 28)  # batch 2: a batch of 1 could be specialised away
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # exporter deprecation chatter, not our concern
        try:
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, verbose=False,
                input_names=["images"], output_names=["logits"], dynamic_shapes=({0: batch},),
            )
        except Exception as error:  # torch.export's many errors: a model whose forward it cannot trace
            raise UserError(f"cannot export {type(model).__name__} to ONNX ({first_line(error)}): its forward "
                            "does something torch.export cannot trace (Python control flow on values?); "
                            "use it with --backend torch") from None
    return program.model_proto


def _max_difference(model: torch.nn.Module, onnx_bytes: bytes, batch: np.ndarray) -> float:
    actual = OnnxBackend(onnx_bytes)(batch)
    return float(np.abs(actual - _logits(model, batch)).max())


def _logits(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).numpy()


def _set_metadata(proto, payload: dict[str, Any], norm: Normalization, info: dict[str, Any],
                  opset: int, max_diff: float, source_sha256: str, probe: np.ndarray) -> None:
    """Everything `load_onnx_predictor` needs, as strings (metadata_props holds only strings)."""
    class_names = stored_class_names(payload)
    entries = {
        METADATA_KEY: METADATA_VERSION,
        "model_name": payload["model_name"],
        "dataset": str(info["dataset"]),
        "class_names": json.dumps(class_names),
        "normalization_mean": repr(norm.mean),
        "normalization_std": repr(norm.std),
        "input": "images: float32 (N, 1, 28, 28), (pixel / 255 - normalization_mean) / normalization_std",
        "output": f"logits: float32 (N, {len(class_names)})",
        "parameters": str(info["parameters"]),
        "epoch": json.dumps(info["epoch"]),
        "validation_accuracy": json.dumps(info["validation_accuracy"]),
        "test_accuracy": json.dumps(info["test_accuracy"]),
        "source_checkpoint": info["file"],
        "fine_tuned": json.dumps(info["fine_tuned"]),
        "source_sha256": source_sha256,  # lets a cached export tell it is stale
        "opset": str(opset),
        "max_abs_diff_vs_pytorch": f"{max_diff:.3e} on {CHECK_IMAGES} test images",
    }
    entries[PROBE_KEY] = json.dumps(probe.tolist())  # a load compares: damaged weights answer otherwise
    if payload.get("provenance"):  # the bundled model says where it comes from (bundled.py)
        entries["provenance"] = json.dumps(payload["provenance"], sort_keys=True)
    calibration = Calibration.from_payload(payload)
    if calibration.fitted:  # absent: the Predictor loads it uncalibrated, as it would the checkpoint
        entries.update(temperature=repr(calibration.temperature),
                       reject_threshold=json.dumps(calibration.reject_threshold),
                       # the threshold is no probability: whoever reads this file without us needs the rule
                       probabilities="softmax(logits / temperature)",
                       reject_rule="not a digit when temperature * logsumexp(logits / temperature) < reject_threshold "
                                   "(null: never refused)")
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"mnist-classifier {payload['model_name']}: {info['dataset']} images 28x28 -> logits"


@contextmanager
def _quiet_logger(name: str):
    """Errors only for a block: the exporter warns about torchvision ops we never use."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
