"""The ONNX Runtime backend of `Predictor`: an exported `.onnx` file, answering without PyTorch.

    predictor = load_onnx_predictor("models/simple_cnn_best.onnx")

Owns: ONNX Runtime sessions and reading what export.py wrote into the model's metadata
(normalisation, class names, calibration). Imports neither torch nor onnx: the Python
API's bundled model loads and answers in a fraction of a second (`import torch` alone
takes ~1.7 s on 2 cores).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .calibration import UNCALIBRATED, Calibration
from .cores import usable_cores
from .errors import CheckpointError, UserError, first_line
from .files import not_a_file
from .inference import Predictor

# Big batches run in chunks: ~500 images of activations stay in cache, 10,000 do not.
CHUNK = 512
# Up to this many images take the single-thread session: waking a non-spinning pool
# thread costs more than it saves on a 0.15 ms job (measured p50 0.21 ms with 2 threads
# vs 0.16 ms with 1), and it leaves the other cores to the caller.
SMALL_BATCH = 8
METADATA_KEY = "mnist_classifier.metadata_version"
PROBE_KEY = "probe_logits"  # the model's logits for inference.probe_images(), stored by export.py
# SHA-256 of the whole file but this one metadata entry (graph, weights, class names, calibration):
# the probe misses weights that noise never reaches (811 of SimpleCNN's 1,152 fc1 inputs stay 0 for
# it), and metadata it never reads. ("model_sha256", from the morning of 7 Dec, left metadata out.)
DIGEST_KEY = "checksum_sha256"
METADATA_FIELD = 14  # ModelProto.metadata_props: one StringStringEntryProto (key = 1, value = 2) each


class OnnxBackend:
    """ONNX Runtime on the CPU: (N, 1, 28, 28) normalised float32 -> (N, C) logits.

    Two sessions over one model: one for a few images (the demos' case) and, built on
    first use, one with `threads` intra-op threads for large batches (evaluation,
    benchmarks). The model is held as bytes, so that later session never depends on
    the file still being there.

    The few-images session runs on one thread by default: the server and the demos
    share the CPU with other work. A caller that has the machine to itself can ask for
    `single_image_threads=2`: those threads spin between calls (ONNX Runtime's own
    default), which cuts a single image from ~0.18 to ~0.13 ms on two cores.
    """

    def __init__(self, model: bytes, threads: int | None = None, single_image_threads: int = 1):
        self.model = model
        self.threads = threads or usable_cores()
        self.single = _session(self.model, single_image_threads, spin=single_image_threads > 1)
        self.batched = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) <= SMALL_BATCH or self.threads == 1:
            return self.single.run(None, {"images": batch})[0]
        if self.batched is None:
            self.batched = _session(self.model, self.threads)
        parts = [self.batched.run(None, {"images": batch[i:i + CHUNK]})[0] for i in range(0, len(batch), CHUNK)]
        return np.concatenate(parts)


def _session(model: bytes, threads: int, spin: bool = False):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # a straight chain of nodes: nothing runs in parallel
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # NCHWc convs: ~1.6x faster
    # Idle pool threads spin only when asked: on a shared laptop CPU they would steal
    # the cores that the web server, the demo window or other work need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_onnx_predictor(path: str | Path, threads: int | None = None, single_image_threads: int = 1) -> Predictor:
    """A Predictor for an exported .onnx file; every way the file can be wrong is one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(not_a_file(path, "ONNX model", "make one with `mnist-classifier export`"))
    model = path.read_bytes()
    if names_external_data(model):
        raise CheckpointError(f"ONNX model {path} takes weights from other files (external data), which "
                              "`mnist-classifier export` never writes: export it again")
    try:
        backend = OnnxBackend(model, threads, single_image_threads)
    except UserError:  # onnxruntime missing: its own message says what to do
        raise
    except Exception as error:  # onnxruntime's errors derive from Exception only
        raise CheckpointError(
            f"ONNX model {path} is not readable ({first_line(error)}): export it again"
        ) from None
    meta = backend.single.get_modelmeta().custom_metadata_map
    inputs = backend.single.get_inputs()
    if METADATA_KEY not in meta or [node.name for node in inputs] != ["images"]:
        raise CheckpointError(f"ONNX model {path} was not exported by mnist-classifier: export it with `mnist-classifier export`")
    if inputs[0].type != "tensor(float)" or list(inputs[0].shape[1:]) != [1, 28, 28]:
        raise CheckpointError(f"ONNX model {path} takes {inputs[0].type} of shape {inputs[0].shape}, not float32 "
                              "(N, 1, 28, 28): it is damaged or edited; export it again with `mnist-classifier export`")
    try:
        predictor = _predictor_from_metadata(backend, meta, path)
        expected = _probe_in(meta)
    except (KeyError, ValueError, TypeError) as error:  # bad JSON, bad numbers, a list where a number was
        raise CheckpointError(f"ONNX model {path} has damaged metadata ({first_line(error)}): export it again") from None
    if DIGEST_KEY in meta and model_digest(model) != meta[DIGEST_KEY]:
        raise CheckpointError(f"ONNX model {path} is damaged: its weights, graph or metadata changed since it was exported; "
                              "export it again with `mnist-classifier export`")
    predictor.check_sound(f"ONNX model {path}", expected)
    return predictor


def model_digest(model: bytes) -> str | None:
    """SHA-256 over an ONNX file's top-level protobuf fields in file order, all but the metadata
    entry that holds it; None when the bytes are no protobuf message. (The onnx package would
    parse the whole model: importing it takes ~1 s, five times the bundled model's load.)"""
    digest = hashlib.sha256()
    fields = _fields(memoryview(model))
    if fields is None:
        return None
    for number, whole, payload in fields:
        if number != METADATA_FIELD or _entry_key(payload) != DIGEST_KEY.encode():
            digest.update(whole)
    return digest.hexdigest()


# Where ONNX's messages hold tensors: {message: {field number: the message it holds}} (onnx.proto).
_HOLDS_TENSORS = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_EXTERNAL_DATA, _DATA_LOCATION = 13, 14  # TensorProto's fields: data_location 1 is EXTERNAL


def names_external_data(model: bytes) -> bool:
    """Whether a tensor of the model keeps its values in another file. Given bytes, ONNX Runtime
    reads such a file relative to the current folder: an edited model could take its weights
    from any file there (helper-78)."""
    pending = [("model", memoryview(model))]
    while pending:  # a loop, not recursion: a hostile file may nest graphs deeply
        kind, view = pending.pop()
        fields = _fields(view)
        if fields is None:  # no protobuf: the file as a whole is ONNX Runtime's to refuse; a part of it, ours
            return kind != "model"
        for number, _, payload in fields:
            if kind == "tensor":
                if number == _EXTERNAL_DATA or (number == _DATA_LOCATION and _varint(payload, 0)[0] == 1):
                    return True
            elif number in _HOLDS_TENSORS[kind]:
                pending.append((_HOLDS_TENSORS[kind][number], payload))
    return False


def _entry_key(entry: memoryview) -> bytes | None:
    """The key of a metadata entry (a StringStringEntryProto's field 1)."""
    fields = _fields(entry) or []
    return next((bytes(payload) for number, _, payload in fields if number == 1), None)


def _fields(view: memoryview) -> list[tuple[int, memoryview, memoryview]] | None:
    """A protobuf message's fields, in order: (number, the field's bytes, its value's bytes); None
    when the bytes are not one."""
    fields, at = [], 0
    while at < len(view):
        start = at
        key, at = _varint(view, at)
        wire_type, value_at = key & 7, at
        if wire_type == 0:
            _, at = _varint(view, at)
        elif wire_type in (1, 5):
            at += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            length, value_at = _varint(view, at)
            at = value_at + length
        else:
            return None
        if at > len(view):
            return None
        fields.append((key >> 3, view[start:at], view[value_at:at]))
    return fields


def _varint(view: memoryview, at: int) -> tuple[int, int]:
    """Protobuf's base-128 integer starting at `at` -> (value, where the next field starts)."""
    value = shift = 0
    end = min(len(view), at + 10)  # protobuf's longest varint: longer ones are no protobuf (and cost quadratic time)
    while at < end:
        byte = view[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return value, len(view) + 1  # ran off the end: the caller sees it past the end


def _predictor_from_metadata(backend: OnnxBackend, meta: dict[str, str], path: Path) -> Predictor:
    return Predictor(
        backend=backend,
        model_name=meta["model_name"],
        mean=float(meta["normalization_mean"]),
        std=_positive(meta["normalization_std"]),
        class_names=_class_names(meta["class_names"]),
        info={
            "file": path.name, "backend": "onnxruntime", "opset": int(meta["opset"]),
            "parameters": int(meta["parameters"]), "dataset": meta["dataset"],
            "epoch": json.loads(meta["epoch"]),
            "validation_accuracy": json.loads(meta["validation_accuracy"]),
            "test_accuracy": json.loads(meta["test_accuracy"]),
            "source_sha256": meta.get("source_sha256"),
            "source_checkpoint": meta.get("source_checkpoint"),  # its file name
            # exports before 7 Dec do not say: finetune's file names do
            "fine_tuned": (meta["fine_tuned"] == "true" if "fine_tuned" in meta
                           else str(meta.get("source_checkpoint")).endswith("_user_best.pth")),
            "probed": PROBE_KEY in meta,  # older exports stored no probe: checked for NaN only
            "checksummed": DIGEST_KEY in meta,  # nor, until 7 Dec, a checksum
        },
        calibration=_calibration_from_metadata(meta, path),
    )


def stored_probe(predictor: Predictor) -> np.ndarray | None:
    """The logits an export stored for inference.probe_images() (None: an export from before them)."""
    return _probe_in(predictor.backend.single.get_modelmeta().custom_metadata_map)


def _probe_in(meta: dict[str, str]) -> np.ndarray | None:
    return np.array(json.loads(meta[PROBE_KEY]), np.float32) if PROBE_KEY in meta else None


def _positive(stored: str) -> float:
    value = float(stored)
    if not 0 < value < float("inf"):  # also false for NaN
        raise ValueError(f"normalization_std must be a positive number, not {stored[:30]}")
    return value


def _class_names(stored: str) -> list[str]:
    names = json.loads(stored)
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise ValueError(f"class_names is not a list of names: {stored[:60]}")
    return names


def _calibration_from_metadata(meta: dict[str, str], path: Path) -> Calibration:
    if "temperature" not in meta:
        return UNCALIBRATED
    return Calibration.stored(meta["temperature"], json.loads(meta.get("reject_threshold", "null")), path)


# ONNX Runtime 1.29+ writes a device id and a telemetry database into ~/.cache on Linux (and
# warns on every load where $HOME is read-only); answering a digit needs neither. A value the
# user set stays theirs.
TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"


def _onnxruntime():
    os.environ.setdefault(TELEMETRY_SWITCH, "1")  # read when the runtime starts: before the import
    try:
        import onnxruntime
    except ImportError:
        raise UserError("ONNX Runtime is not installed: `pip install onnxruntime`") from None
    return onnxruntime
