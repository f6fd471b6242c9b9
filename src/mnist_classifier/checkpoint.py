"""The one place that writes and reads checkpoints.

A checkpoint is a plain dict of tensors and primitives, so
`torch.load(path, weights_only=True)` reads it and nothing in it can run code:

    model_state_dict, optimizer_state_dict, scheduler_state_dict, epoch (completed),
    accuracy and loss (that epoch's validation scores), best_accuracy, model_name,
    dataset, class_names, config, history, normalization {mean, std}, run_dir,
    world_size, rank_weight_checksums, format_version; test_accuracy once measured.
    A run that averages its weights (`weight_average`) saves the average as model_state_dict
    (what every reader loads) and adds trained_state_dict and weight_average (resume only).

Writes are atomic (temporary file in the same folder, fsync, rename), so a crash or
a kill -9 leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import errno
import hashlib
import math
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

try:
    import fcntl  # POSIX: a write in progress is locked
except ImportError:  # Windows
    fcntl = None

import torch
from torch import nn

from .data import Normalization
from .datasets import get_dataset_spec
from .errors import CheckpointError, UserError, first_line
from .files import OUT_OF_ROOM, ROOM_FIX, nearest_existing, not_a_file, shared_mode, write_probe
from .models import MODEL_REGISTRY, create_model, defined_in
from .plugins import PLUGIN_HINT

FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL = b"\x80"  # the opcode a pickle of protocol 2 or later starts with
MAX_CLASSES = 1000  # a stored class list longer than this is damage (or an attempt to make us allocate)
SEED_MODEL = "simple_cnn"  # the original project's checkpoints name no model; its default was this one


def save_checkpoint(payload: dict[str, Any], path: str | Path, through_link: bool = False) -> Path:
    """Write atomically (temporary file + rename). A symlink at `path` is replaced by the file,
    unless `through_link` (calibrate, which has checked the file the link points at)."""
    named = path = Path(path)
    if through_link and path.is_symlink():  # the link stays a link; what it points at changes
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "format_version": FORMAT_VERSION}
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise CheckpointError(f"cannot write checkpoint {path} ({error.strerror}): fix the folder's permissions") from None
    try:
        _hold(handle)  # until the rename: another process's cleanup leaves a write in progress alone
        with os.fdopen(handle, "wb", closefd=False) as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, shared_mode(path))
        os.replace(temp_name, path)
    except (OSError, RuntimeError) as error:
        Path(temp_name).unlink(missing_ok=True)
        # On a full disk torch.save's zip writer raises RuntimeError("unexpected pos ...")
        # while unwinding from the OSError: the OSError is the one that explains it.
        cause = _os_error_in(error)
        if cause is None:
            raise
        fix = ROOM_FIX if cause.errno in OUT_OF_ROOM else "choose another path"
        raise CheckpointError(
            f"could not save checkpoint {path} ({cause.strerror or cause}): {fix}; "
            "the checkpoints already on disk are intact"
        ) from None
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    finally:
        os.close(handle)
    return named


def _unpacked_size(path: Path) -> int:
    """What a zip archive's entries add up to once unpacked (0 for one whose listing cannot be read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return 0


def _written_by_torch_save(path: Path) -> bool:
    """Whether a zip archive holds torch.save's record (a cut one, whose listing is lost, is given the benefit)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return True


def remove_partial_writes(directory: str | Path, name: str = "*.pth") -> list[Path]:
    """Delete temporary files left by a process killed mid-save of `name` (the real files are
    intact); not those of a write still going on, such as another run's saving into the same folder."""
    removed = []
    for leftover in Path(directory).glob(f".{name}.*.tmp"):
        try:
            handle = os.open(leftover, os.O_RDONLY)
        except OSError:  # gone already, or not ours to open
            continue
        try:
            if held_elsewhere(handle):
                continue
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
        finally:
            os.close(handle)
    return removed


def _hold(handle: int) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:  # a filesystem without locks (some network mounts): the write goes on unlocked
        pass


def held_elsewhere(handle: int) -> bool:
    """Whether another process holds this file's lock (save_checkpoint's, a training run's claim): a
    dead one's lock is gone; a filesystem without locks holds none. Otherwise this process now holds it."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a filesystem without locks: as before, the leftover goes
        return False
    return False


# torch.save stores a checkpoint's entries uncompressed: one that would unpack to many times its
# size is a zip bomb, which torch.load would inflate in memory (1.5 MB to 1.5 GB: helper-78).
INFLATION_LIMIT = 4


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; every way it can be wrong is one CheckpointError."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint: name the .pth file in it")
    if not path.is_file():
        raise CheckpointError(not_a_file(path))
    with open(path, "rb") as file:
        start = file.read(4)
    if start[:1] == PICKLE_PROTOCOL:  # torch.save before torch 1.6, or pickle itself: not read, even weights-only
        raise CheckpointError(
            f"{path} is a pickle, not a zip archive: torch's old checkpoint format, which is not read here; "
            "re-save it with a current torch (torch.save(torch.load(path, weights_only=True), path)) or retrain"
        )
    if start != ZIP_MAGIC and path.suffix.lower() == ".onnx":  # predict, demo and serve read it; this command not
        raise CheckpointError(f"{path} is an ONNX export, and this needs the PyTorch checkpoint it was made from: "
                              f"pass that .pth ({path.with_suffix('.pth').name} beside it, if it is there)")
    if start != ZIP_MAGIC:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive): "
            "pass a .pth file saved by `mnist-classifier train`"
        )
    unpacked = _unpacked_size(path)
    if unpacked > INFLATION_LIMIT * path.stat().st_size + 2**20:
        raise CheckpointError(f"{path} would unpack to {unpacked / 2**20:,.0f} MB from {path.stat().st_size / 2**20:,.1f} "
                              "MB (torch.save stores its entries unpacked): it was not made by mnist-classifier; "
                              "pass a .pth file saved by `mnist-classifier train`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error) or "Unsupported" in str(error):
            raise CheckpointError(
                f"checkpoint {path} refused: it holds Python objects that could run code "
                "(only plain tensors and numbers are loaded); use a checkpoint made by this project"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt ({first_line(error)}): retrain or restore it") from None
    except Exception as error:  # torch raises many types for foreign or cut files; all mean the same
        if not _written_by_torch_save(path):
            raise CheckpointError(f"{path} is a zip archive, but not one torch.save wrote (it holds no data.pkl): "
                                  "pass a .pth file saved by `mnist-classifier train`") from None
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file ({first_line(error)}): "
            "it may be truncated; retrain or restore it"
        ) from None
    if not isinstance(payload, dict) or "model_state_dict" not in payload:
        raise CheckpointError(f"checkpoint {path} is not an mnist-classifier checkpoint (needs model_state_dict)")
    try:
        dataset = payload.get("dataset", "mnist")
        get_dataset_spec(dataset if isinstance(dataset, str) else repr(dataset))
    except UserError:  # the file's own record, not the user's --dataset
        raise CheckpointError(f"{path} was trained on dataset {payload.get('dataset')!r}, which this version does not "
                              "know: load it with the version (or the plugin) that trained it") from None
    payload.setdefault("model_name", SEED_MODEL)
    return payload


def weights_sha256(payload: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's weights alone (names, shapes, types, values): the same after
    `calibrate` or a re-save, which change the file's bytes but not the model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(payload["model_state_dict"].items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())  # as bytes: numpy has no bfloat16
    return digest.hexdigest()


def stored_normalization(payload: dict[str, Any], source: str | Path = "the checkpoint") -> Normalization:
    """The constants the model was trained with; the dataset's own when the file predates them."""
    spec = get_dataset_spec(payload.get("dataset", "mnist"))
    stored = payload.get("normalization") or {}
    try:
        mean, std = float(stored.get("mean", spec.mean)), float(stored.get("std", spec.std))
    except (TypeError, ValueError, AttributeError):  # a string, a list, a normalization that is no mapping
        mean = std = math.nan
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise CheckpointError(f"{source}: its stored normalization ({stored!r:.80}) is not a finite mean and a positive "
                              "std: the file is damaged or was not made by mnist-classifier; retrain or restore it")
    return Normalization(mean, std)


def stored_class_names(payload: dict[str, Any], source: str | Path = "checkpoint") -> list[str]:
    """The checkpoint's class names (the digits when it stores none), checked before anything is sized by them."""
    names = payload.get("class_names")
    if names is None or (isinstance(names, (list, tuple)) and not names):  # files before class names were kept
        return [str(digit) for digit in range(10)]
    if not isinstance(names, (list, tuple)) or len(names) > MAX_CLASSES \
            or not all(isinstance(name, str) for name in names):
        raise CheckpointError(f"{source}: its class_names are not a list of at most {MAX_CLASSES} names: the file is "
                              "damaged or was not made by mnist-classifier; retrain or restore it")
    return list(names)


def model_from_checkpoint(payload: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """Build the architecture the checkpoint names and load its weights (eval mode)."""
    name = payload["model_name"]
    if not isinstance(name, str):
        raise CheckpointError(f"{source}: its model_name is {type(name).__name__}, not a name: the file is damaged or "
                              "was not made by mnist-classifier; retrain or restore it")
    if name not in MODEL_REGISTRY:
        raise CheckpointError(
            f"{source} was made by unknown model '{name}': known models are {', '.join(sorted(MODEL_REGISTRY))}; "
            f"{PLUGIN_HINT}"
        )
    num_classes = len(stored_class_names(payload, source))
    options = payload.get("model_options") or {}  # none stored: the network as the seed built it
    try:
        if not isinstance(options, dict):
            raise UserError(f"its model_options are {type(options).__name__}, not a mapping")
        model = create_model(name, num_classes, options)
    except UserError as error:
        raise CheckpointError(f"{source}: its model_options do not fit model '{name}' ({error}): the file is "
                              "damaged or mislabelled, or made by a newer mnist-classifier; retrain, restore it "
                              "or upgrade") from None
    try:
        model.load_state_dict(payload["model_state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{source}: its weights do not fit model '{name}' as {defined_in(MODEL_REGISTRY[name])} defines it now "
            f"({first_line(error)}): if that code changed since the file was trained, restore it or retrain; "
            "else the file is damaged or mislabelled"
        ) from None
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    payload = load_checkpoint(path, map_location)
    return model_from_checkpoint(payload, path), payload


def _os_error_in(error: BaseException | None) -> OSError | None:
    """The first OSError in an exception's chain of causes, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# ---------------------------------------------------------------- before a run writes any
def check_writable(directory: str | Path) -> None:
    """Fail before training, not after an hour of it, if results cannot be saved. Creates nothing:
    a command refused later (no data, a bad flag) leaves no empty folder behind; a folder still
    to be made is checked through the nearest one that exists."""
    directory = Path(directory)
    existing, error = write_probe(directory)
    if error is not None:
        # /proc exists, yet a new file there fails with "No such file or directory": say what that means
        reason = "it takes no new files" if existing.is_dir() and error.errno == errno.ENOENT else error.strerror
        if existing.exists() and not existing.is_dir():
            reason = "it is a file, not a folder" if existing == directory else f"{existing} is a file, not a folder"
        fix = ("" if error.errno == errno.EROFS else f" or {ROOM_FIX}" if error.errno in OUT_OF_ROOM
               else " or fix its permissions")
        raise UserError(f"cannot write to {directory} ({reason}): choose another folder{fix}") from None


def checkpoint_bytes(model: nn.Module, weight_copies: int = 1) -> int:
    """About what one checkpoint of this model takes: the weights (twice where a run also keeps
    their average), two Adam moments, buffers."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return (2 + weight_copies) * params + weight_copies * sum(b.numel() * b.element_size() for b in model.buffers())


def check_free_space(directory: str | Path, needed: int) -> None:
    """A disk too full for the first checkpoints is an error now, not after the first epoch."""
    free = shutil.disk_usage(nearest_existing(Path(directory))).free  # the disk it will be made on
    if free < needed:
        raise UserError(f"only {free / 1e6:.1f} MB free in {directory}, and this run's checkpoints need about "
                        f"{needed / 1e6:.1f} MB: free some space or choose another --save-dir")
