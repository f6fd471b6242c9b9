"""The model that ships inside the package, and which model answers when none is named.

    choose_model(None)      # models/simple_cnn_user_best.pth (if made from the model below), else
                            # models/simple_cnn_best.pth, else the bundled ONNX
    choose_model("bundled")  # the bundled one, whatever models/ holds
    provenance()            # recipe, seed, test accuracy, ECE, date, SHA-256 of each shipped file

Owns: where the bundled files live, their recorded provenance (`bundled/provenance.json`,
written by `make bundled-model`, i.e. scripts/build_bundled_model.py), and the rule shared
by `predict`, `demo`, `serve` and `mnist_classifier.load()`: a model named by the user,
else the one `finetune` made from the user's drawings (while the model it tuned is still the
one below: a model trained since wins), else the `make train` checkpoint in models/, else the
bundled one (`evaluate`, `export` and `finetune` skip the fine-tuned one). Torch-free to
import; reading a fine-tuned checkpoint's record imports torch.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UserError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_CHECKPOINT = BUNDLED_DIR / "simple_cnn.pth"
BUNDLED_ONNX = BUNDLED_DIR / "simple_cnn.onnx"
PROVENANCE_FILE = BUNDLED_DIR / "provenance.json"
TRAINED_CHECKPOINT = Path("models") / "simple_cnn_best.pth"  # what `make train` writes
USER_CHECKPOINT = Path("models") / "simple_cnn_user_best.pth"  # what `finetune` makes of it
BUNDLED_NAME = "bundled"  # `--checkpoint bundled`, `load("bundled")`: the shipped model by name
TRAIN_COMMAND = "`mnist-classifier train` (`make train` in a clone)"


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    bundled: bool
    tuned: bool = False  # fine-tuned on the user's own drawings, chosen over the original
    named: bool = False  # the user named it (a file, or BUNDLED_NAME)
    outdated: bool = False  # a fine-tuned model exists, but tuned from another model: this one answers instead

    @property
    def worth_saying(self) -> bool:
        """Whether the choice could surprise: the user named no model, and not the usual one answers."""
        return not self.named and (self.bundled or self.tuned or self.outdated)

    def describe(self) -> str:
        """One line for stderr saying which model answers, and why."""
        if self.tuned:
            original = TRAINED_CHECKPOINT if TRAINED_CHECKPOINT.is_file() else BUNDLED_NAME
            return f"model: {self.path}, fine-tuned on your drawings; --checkpoint {original} answers with the original"
        if self.outdated:
            return (f"model: {self.path}; {USER_CHECKPOINT} was fine-tuned from another model, so it answers only "
                    f"when named (--checkpoint {USER_CHECKPOINT}); `mnist-classifier finetune` fine-tunes this one")
        if not self.bundled:
            return f"model: {self.path}"
        facts = provenance()
        said = (f"model: the bundled SimpleCNN ({facts['test_accuracy']:.2%} on MNIST test, built "
                f"{facts['date']}); no checkpoint named and no {TRAINED_CHECKPOINT}")
        others = other_digit_models()
        if others:
            return f"{said}: --checkpoint {others[0]} answers with yours"
        return f"{said}: {TRAIN_COMMAND} makes your own"


def other_digit_models() -> list[Path]:
    """Digit models trained in models/ under another name (an ImprovedCNN, say): not the
    fine-tuned ones, not those of another dataset (`<model>_<dataset>_best.pth`)."""
    from .datasets import DATASETS

    suffixes = tuple(f"_{name}_best.pth" for name in DATASETS if name != "mnist") + ("_user_best.pth",)
    return sorted(path for path in TRAINED_CHECKPOINT.parent.glob("*_best.pth")
                  if path.is_file() and not path.name.endswith(suffixes))


def choose_model(named: str | Path | None, prefer_onnx: bool = True, tuned: bool = True) -> ModelChoice:
    """The named file (BUNDLED_NAME names the bundled model), else the user's fine-tuned model
    (unless `tuned` is False: `evaluate`, `export` and `finetune` work on the trained one), else
    models/simple_cnn_best.pth, else the bundled model (ONNX unless asked otherwise)."""
    if named is not None and str(named) != BUNDLED_NAME:
        return ModelChoice(Path(named), bundled=False, named=True)
    outdated = False
    if named is None and tuned and USER_CHECKPOINT.is_file():
        if tuned_from_current_model(USER_CHECKPOINT, refuse_damaged=True):
            return ModelChoice(USER_CHECKPOINT, bundled=False, tuned=True)
        outdated = True  # trained again since, or tuned from another base: not the tuning of what answers
    if named is None and TRAINED_CHECKPOINT.is_file():
        return ModelChoice(TRAINED_CHECKPOINT, bundled=False, outdated=outdated)
    shipped = BUNDLED_ONNX if prefer_onnx else BUNDLED_CHECKPOINT
    if not shipped.is_file():
        raise CheckpointError(f"no model to answer: {TRAINED_CHECKPOINT} not found and this install lacks the "
                              f"bundled {shipped.name}; train one with {TRAIN_COMMAND} or name one with --checkpoint")
    return ModelChoice(shipped, bundled=True, named=named is not None, outdated=outdated)


def tuned_from_current_model(tuned: Path, refuse_damaged: bool = False) -> bool:
    """Whether `finetune` made `tuned` from the model that would answer without it: the trained
    checkpoint it recorded (by SHA-256 of the file, or of its weights: `calibrate` rewrites the
    file), or the bundled one when models/ has none. A file without that record (made
    otherwise) is taken as it is; a damaged one answers nothing (`refuse_damaged`: it is an
    error, naming the command that makes it again)."""
    from .checkpoint import load_checkpoint, weights_sha256  # imports torch; a .pth is about to be loaded anyway

    try:
        record = load_checkpoint(tuned).get("finetune")
    except UserError:
        if refuse_damaged:  # "retrain or restore it", as for any checkpoint, sent users to `train`, which left it there
            raise CheckpointError(f"{tuned}, the model `finetune` made from your drawings, cannot be loaded (damaged, "
                                  "or not a checkpoint): run `mnist-classifier finetune` to make it again, or delete "
                                  "it to answer with the model it was tuned from") from None
        return False
    if not isinstance(record, dict) or "base_sha256" not in record:
        return True
    if not TRAINED_CHECKPOINT.is_file():
        return bool(record.get("bundled_base"))
    if record.get("bundled_base"):
        return False
    if record["base_sha256"] == sha256_of(TRAINED_CHECKPOINT):
        return True
    try:
        return record.get("base_weights_sha256") == weights_sha256(load_checkpoint(TRAINED_CHECKPOINT))
    except UserError:
        return False  # a damaged trained model: loading it says so


def provenance() -> dict[str, Any]:
    """What `make bundled-model` recorded about the shipped files."""
    try:
        return json.loads(PROVENANCE_FILE.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"the bundled model's record {PROVENANCE_FILE} is unreadable ({error}); "
                              "reinstall the package or run `make bundled-model`") from None


def sha256_of(path: Path) -> str:
    if not stat.S_ISREG(os.stat(path).st_mode):  # /dev/zero would never end, a pipe's open would block (helper-78)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_for_dataset(dataset: str | None) -> str | None:
    """`evaluate --dataset fashion-mnist` without a checkpoint: the model `train --dataset
    fashion-mnist` saved (models/simple_cnn_fashion-mnist_best.pth); None: the digit model's turn."""
    from .datasets import DATASETS, LOCAL_DATASETS, get_local_dataset
    from .run_files import checkpoint_stem

    if dataset is None or dataset == "mnist" or get_local_dataset(dataset) is not None:
        return None  # a local set of digits (user-digits) scores the digit model
    if dataset not in DATASETS:  # said now, before a model is picked for it
        raise UserError(f"unknown dataset {dataset!r}: choose one of {', '.join(sorted([*DATASETS, *LOCAL_DATASETS]))}")
    saved = Path("models") / f"{checkpoint_stem('simple_cnn', dataset)}_best.pth"
    if saved.is_file():
        return str(saved)
    others = [path for path in sorted(Path("models").glob(f"*_{dataset}_best.pth")) if _trained_on(path) == dataset]
    raise UserError(f"no model trained on {dataset} to evaluate: {saved} not found; "  # the digit model would be refused
                    + (f"--checkpoint {others[0]} evaluates yours" if others else
                       f"`mnist-classifier train --dataset {dataset}` makes it, or name one with --checkpoint"))


def _trained_on(path: Path) -> str | None:
    from .checkpoint import load_checkpoint  # imports torch: only when a file is offered

    try:
        return load_checkpoint(path).get("dataset", "mnist")
    except UserError:  # damaged: not one to offer
        return None
