"""`make bundled-model`: train the `make train` recipe and ship its model inside the package.

    python scripts/build_bundled_model.py                      # train (~3 min on 2 cores), then bundle
    python scripts/build_bundled_model.py --from models/simple_cnn_best.pth   # bundle an existing run
    python scripts/build_bundled_model.py --from src/mnist_classifier/bundled/simple_cnn.pth  # export it again

Writes src/mnist_classifier/bundled/: `simple_cnn.pth` (weights, calibration and
provenance only: no optimizer state), `simple_cnn.onnx` (checked against it by export.py)
and `provenance.json` (recipe, seed, test accuracy, ECE, date, machine, SHA-256 and size of
each file). tests/test_library.py checks the shipped files against that record.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mnist_classifier.bundled import BUNDLED_CHECKPOINT, BUNDLED_ONNX, PROVENANCE_FILE, sha256_of
from mnist_classifier.calibration import expected_calibration_error
from mnist_classifier.checkpoint import load_checkpoint, save_checkpoint
from mnist_classifier.config import resolve_config
from mnist_classifier.data import load_data
from mnist_classifier.export import export_onnx
from mnist_classifier.hardware import read_cpu_model
from mnist_classifier.reader import load_predictor
from mnist_classifier.training import train

RECIPE = "mnist-classifier train --model simple_cnn (configs/simple_cnn.yaml)"
# What a deployed model needs; the optimizer state (2x the weights) only resumes training.
KEPT_KEYS = ("model_state_dict", "model_name", "model_options", "config", "normalization", "dataset", "class_names",
             "epoch", "accuracy", "loss", "test_accuracy", "temperature", "reject_threshold", "precision")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", help="bundle this checkpoint instead of training a new one")
    parser.add_argument("--data-dir", default="data", help="dataset folder (default: data)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bundled-model-") as work:
        source = Path(args.source) if args.source else trained_checkpoint(Path(work), args.data_dir)
        payload = load_checkpoint(source)
        if "temperature" not in payload:
            sys.exit(f"{source} is not calibrated: run `mnist-classifier calibrate --checkpoint {source}` first")
        slim = {key: payload[key] for key in KEPT_KEYS if key in payload}
        # A bundled file bundled again (a new export of it) keeps the record of where it came from.
        slim["provenance"] = payload.get("provenance") or measured_provenance(source, payload, args.data_dir)
        save_checkpoint(slim, BUNDLED_CHECKPOINT)
    export_onnx(BUNDLED_CHECKPOINT, BUNDLED_ONNX, data_dir=args.data_dir)
    record = {**slim["provenance"], "files": {path.name: {"sha256": sha256_of(path), "bytes": path.stat().st_size}
                                              for path in (BUNDLED_CHECKPOINT, BUNDLED_ONNX)}}
    BUNDLED_CHECKPOINT.chmod(0o644)  # shipped to everyone; the atomic writer makes it owner-only
    PROVENANCE_FILE.write_text(json.dumps(record, indent=2) + "\n")
    print(f"bundled {BUNDLED_CHECKPOINT.name} and {BUNDLED_ONNX.name}: test accuracy {record['test_accuracy']:.2%}, "
          f"ECE {record['ece']:.2%}; record in {PROVENANCE_FILE}")
    return 0


def trained_checkpoint(work: Path, data_dir: str) -> Path:
    config = resolve_config(None, {"save_dir": str(work / "models"), "log_dir": str(work / "runs"), "data_dir": data_dir})
    return train(config).best_path


def measured_provenance(source: Path, payload: dict, data_dir: str) -> dict:
    """Test accuracy and ECE measured here, on the full MNIST test set, plus where the model came from."""
    test = load_data(data_dir, "mnist", log=lambda _line: None).test
    probabilities = load_predictor(source).predict(test.images.numpy())
    labels = test.labels.numpy()
    config = payload.get("config") or {}
    return {
        "recipe": RECIPE,
        "seed": config.get("seed"),
        "epochs": payload.get("epoch"),
        "test_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "ece": expected_calibration_error(probabilities, labels),
        "temperature": payload["temperature"],
        "reject_threshold": payload.get("reject_threshold"),
        "date": datetime.date.today().isoformat(),
        "torch": str(torch.__version__),  # a str subclass that weights_only loading refuses
        "numpy": np.__version__,
        "machine": f"{read_cpu_model()}, {torch.get_num_threads()} threads",
        "precision": (payload.get("precision") or {}).get("name", "fp32"),  # hardware.choose_precision's pick
    }


if __name__ == "__main__":
    sys.exit(main())
