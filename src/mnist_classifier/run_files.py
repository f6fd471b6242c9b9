"""A training run's files: where its checkpoints and TensorBoard folder go, and how a stored
run is continued (`train --resume`).

    best, last = checkpoint_paths(config)       # models/simple_cnn_best.pth, models/simple_cnn_last.pth
    config, payload = resume_config("models/simple_cnn_last.pth", flags)

A resumed run continues beside the file it resumes from: a run copied, moved or resumed from
another folder writes its checkpoints next to that file, never into the folder the original
was started with, and opens a TensorBoard run folder of its own (in the stored log_dir unless
--log-dir says where). --save-dir moves the run's best and last checkpoints to that folder
first. Flags may move its folders or change the hardware it runs on (device, precision); a
flag that would change what is trained is refused.
"""
from __future__ import annotations

import errno
import os
import signal
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import distributed
from .checkpoint import check_writable, held_elsewhere, load_checkpoint, model_from_checkpoint, weights_sha256
from .config import TrainConfig, config_from_dict
from .errors import CheckpointError, PeerLost, UserError
from .files import shared_mode, write_atomically

FOLDERS = ("save_dir", "log_dir", "data_dir")  # where the run's files are: a flag moves them
HARDWARE = ("device", "precision")  # what it runs on: a resumed run may go to another machine


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    run_dir: Path | None  # None: a finished run resumed from a copy, which logged nothing
    best_val_accuracy: float
    test_accuracy: float
    epochs_done: int
    history: dict[str, list[float]] = field(default_factory=dict)


def checkpoint_stem(model_name: str, dataset: str) -> str:
    """`simple_cnn` for MNIST, `simple_cnn_fashion-mnist` for others: training on a second
    dataset must not overwrite the MNIST model (same pattern as configs/)."""
    return model_name if dataset == "mnist" else f"{model_name}_{dataset}"


def checkpoint_paths(config: TrainConfig) -> tuple[Path, Path]:
    save_dir, stem = Path(config.save_dir), checkpoint_stem(config.model_name, config.dataset)
    return save_dir / f"{stem}_best.pth", save_dir / f"{stem}_last.pth"


def resume_command(last: Path | str) -> str:
    """The command that continues a run from `last`: torchrun's own for a run of several processes
    (one process would not train on as the run did: helper-80)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return f"torchrun <the same options> -m mnist_classifier train --resume {last}"
    return f"mnist-classifier train --resume {last}"


@contextmanager
def interrupts_deferred():
    """Ctrl+C and SIGTERM wait for the block to end: a checkpoint written and the count of saved
    epochs that says so are one step. Interrupted between the two, a run whose last epoch was on
    disk said "nothing to resume, start again" (the CI, under load: torchrun's SIGTERM right after
    the file appeared). Python's own handlers are swapped, not the kernel's mask: any of torch's
    threads may receive a signal, and the main thread would act on it all the same."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread has handlers
        yield
        return
    caught: list[int] = []
    previous = {held: signal.signal(held, lambda number, _frame: caught.append(number))
                for held in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])  # handled now, as it would have been


def peer_lost(reason: str, epochs_saved: int, epochs: int, last: Path) -> PeerLost:
    """The one line every surviving rank may print when another process of the run ended."""
    return PeerLost(f"another process of this run ended ({reason}): " + (
        f"epoch {epochs_saved} of {epochs} is saved; resume with `{resume_command(last)}`"
        if epochs_saved else "no epoch had finished, start again"))


class CheckpointClaim:
    """This run's hold on its checkpoint names in save_dir, for the whole run: two runs saving the
    same files overwrote each other's models, and both said they had saved theirs (helper-80). A
    kernel lock (fcntl) on `.<stem>.lock`: a killed run holds nothing; removed when the run ends."""

    def __init__(self, config: TrainConfig):
        best, _ = checkpoint_paths(config)
        self.path, self.handle = best.parent / f".{best.name.removesuffix('_best.pth')}.lock", None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while self.handle is None:
                # Read-only: another user's lock file still takes our flock; no link followed (helper-83)
                handle = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, shared_mode(self.path))
                if held_elsewhere(handle):
                    os.close(handle)
                    raise UserError(f"another `train` is saving {best} and its _last.pth now: wait for it to end, "
                                    "or give this run another --save-dir")
                if _same_file(handle, self.path):
                    self.handle = handle
                else:  # the run that held it removed it as we opened it: take the new one
                    os.close(handle)
        except OSError as error:
            if error.errno not in UNGUARDED:
                raise UserError(f"cannot tell whether another `train` is saving {best} ({self.path}: {error.strerror}): "
                                "remove that file if no run is, or give this run another --save-dir") from None
            self.handle = None  # a full disk or a read-only folder: unguarded, as before

    def release(self) -> None:
        if self.handle is not None:
            with suppress(OSError):  # another user's folder may refuse it: a lock file left is no harm
                self.path.unlink(missing_ok=True)  # while still held: a run that opened it meanwhile finds it gone
            os.close(self.handle)
            self.handle = None


def claim_checkpoints(config: TrainConfig, ctx: distributed.Context) -> CheckpointClaim | None:
    """Rank 0's CheckpointClaim. A refusal stops every rank at once, rank 0 alone saying why,
    where the others used to stop later as if a peer had died (helper-80)."""
    claim, refusal = None, None
    if ctx.is_main:
        try:
            claim = CheckpointClaim(config)
        except UserError as error:
            refusal = error
    if not distributed.all_succeeded(refusal is None):
        raise refusal or UserError("rank 0 could not claim this run's checkpoints")
    return claim


# Why no lock file can be made that leaves the run to go on unguarded rather than be refused (a
# filesystem without locks: held_elsewhere says no one holds it).
UNGUARDED = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _same_file(handle: int, path: Path) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False


def snapshot_path(config: TrainConfig, epochs_done: int) -> Path:
    """`<stem>_<YYYYmmdd_HHMMSS>.pth`, the epoch added when another epoch ended in the same second."""
    stem = checkpoint_stem(config.model_name, config.dataset)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    snapshot = Path(config.save_dir) / f"{stem}_{stamp}.pth"
    return snapshot.with_name(f"{stem}_{stamp}_epoch{epochs_done}.pth") if snapshot.exists() else snapshot


def earlier_best_note(config: TrainConfig) -> str | None:
    """What a new run is about to replace: an earlier run's best model in its --save-dir."""
    best, _ = checkpoint_paths(config)
    if not best.is_file():
        return None
    try:
        earlier = load_checkpoint(best).get("test_accuracy")
    except UserError:  # damaged or foreign: nothing worth keeping is lost
        return None
    scored = f", {earlier:.2%} test" if isinstance(earlier, float) else ""
    return (f"note: {best} holds an earlier run's model{scored}; this run replaces it after its first epoch "
            "(copy it, or pass --save-dir, to keep it)")


def new_run_folder(log_dir: str, stem: str) -> Path:
    """A TensorBoard folder of its own, even for runs started in the same second (a sweep)."""
    base = Path(log_dir) / f"{stem}_{datetime.now().strftime('%Y%m%d_%H%M%S')}"
    for attempt in range(1, 1000):
        folder = base if attempt == 1 else base.with_name(f"{base.name}_{attempt}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise UserError(f"no free run folder name left beside {base}: tidy {log_dir}")


def resume_config(path: str | Path, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The stored run's config, continued beside `path`; a flag that contradicts what it
    trains is an error, not a silent change."""
    path = Path(path)
    payload = load_checkpoint(path)
    model_from_checkpoint(payload, path)  # wrong architecture or shapes: one line now, not after loading data
    if "optimizer_state_dict" not in payload:
        if path.name.endswith("_last.pth"):  # replaced since train wrote it (copied over, or saved by other code)
            raise CheckpointError(f"{path} holds weights only, without the training state train saves there, so it "
                                  "cannot resume: start a new run without --resume")
        raise CheckpointError(f"{path} holds weights only, not a resume point: resume from a <model>_last.pth file")
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{path} stores no config (made by the original project?), so what it trained is "
                              "unknown: start a new run without --resume")
    _check_resume_state(payload, path)
    config = config_from_dict(payload["config"])
    if config.model_name != payload["model_name"]:
        raise CheckpointError(f"{path} is inconsistent: its weights are a {payload['model_name']} but its config "
                              f"says {config.model_name}; the file is damaged or edited, resume from another one")
    for key, value in overrides.items():
        if value is not None and key not in FOLDERS + HARDWARE and getattr(config, key) != value:
            raise UserError(
                f"--resume continues the run stored in {path}, whose {key} is {getattr(config, key)!r}, "
                f"not {value!r}: drop that flag or start a new run without --resume"
            )
    stored_save_dir = config.save_dir
    config.save_dir = str(path.parent)  # where its _last.pth is: the run's folder, wherever it was started
    project = _started_in(stored_save_dir, path.parent)
    if project is not None:
        payload = _follow_project(config, payload, project)
        stored_save_dir = str(project / stored_save_dir)
    best, _ = checkpoint_paths(config)
    if not best.is_file():
        raise UserError(f"{best} is missing: --resume needs the run's best checkpoint beside the one it resumes "
                        "from; copy it there")
    check_same_run(None, str(payload.get("run_id") or ""), best, path)  # before any file is copied
    for key in FOLDERS + HARDWARE:
        if overrides.get(key) is not None:
            setattr(config, key, overrides[key])
    config.validate()  # before any file is copied
    if not _same_folder(config.save_dir, str(path.parent)):
        _move_run_files(path, best, config, str(payload.get("run_id") or ""))
    stored_run = payload.get("run_dir")
    redirected = overrides.get("log_dir") is not None and not (  # the same --log-dir again is no redirection
        isinstance(stored_run, str) and _same_folder(overrides["log_dir"], str(Path(stored_run).parent)))
    if not _same_folder(config.save_dir, stored_save_dir) or redirected:
        # Copied, moved or redirected: its own TensorBoard folder, not the original run's.
        payload = {**payload, "run_dir": None}
    return config, payload


def stored_result(config: TrainConfig, payload: dict[str, Any]) -> TrainResult | None:
    """What a resumed run stored when it finished all its epochs and its closing calibration and
    test; None while anything is left to do."""
    best, last = checkpoint_paths(config)
    if int(payload["epoch"]) < config.epochs or not best.is_file():
        return None
    stored = load_checkpoint(best)
    if "temperature" not in stored or not isinstance(stored.get("test_accuracy"), float):
        return None  # the closing step was interrupted: it runs again
    run_dir = Path(payload["run_dir"]) if payload.get("run_dir") else None
    return TrainResult(best, last, run_dir, stored["accuracy"], stored["test_accuracy"], config.epochs,
                       dict(payload.get("history") or {}))


def resume_changes(payload: dict[str, Any], processes: int, precision: str) -> str:
    """What a resume runs on that the stored run did not ("processes 1 -> 2"), "" when the same:
    the run goes on, but its weights will not be an uninterrupted run's to the bit."""
    stored = {"processes": payload.get("world_size"), "precision": (payload.get("precision") or {}).get("name")}
    now = {"processes": processes, "precision": precision}
    return ", ".join(f"{key} {stored[key]} -> {now[key]}" for key in now if stored[key] not in (None, now[key]))


def _check_resume_state(payload: dict[str, Any], path: Path) -> None:
    """What a resumed run reads besides the weights (Trainer.restore), checked before any of it is used."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    optimizer, history = payload.get("optimizer_state_dict"), payload.get("history")
    wrong = [key for key, fine in (
        ("epoch", isinstance(payload.get("epoch"), int) and number(payload["epoch"]) and payload["epoch"] >= 0),
        ("optimizer_state_dict", isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list)),
        ("history", isinstance(history, dict) and all(
            isinstance(values, list) and all(map(number, values)) for values in history.values())),
        ("best_accuracy", number(payload.get("best_accuracy", payload.get("accuracy", -1.0)))),
        ("precision", isinstance(payload.get("precision", {}), dict)),
        ("run_dir", isinstance(payload.get("run_dir"), (str, type(None)))),
        ("run_id", isinstance(payload.get("run_id"), (str, type(None)))),
    ) if not fine]
    if wrong:
        raise CheckpointError(f"{path} is no usable resume point (its {', '.join(wrong)} missing or damaged): "
                              "resume from another copy, or start a new run without --resume")


def check_same_run(best: dict[str, Any] | None, run_id: str, best_path: Path, last_path: Path) -> None:
    """A run started in a folder that holds another's files replaces its best checkpoint first; stopped
    before its last one, the two files are two runs': refuse to test or report one as the other."""
    if best is None and best_path.is_file():
        best = load_checkpoint(best_path)
    if best is not None and run_id and best.get("run_id") and best["run_id"] != run_id:
        raise UserError(f"{best_path} and {last_path} come from two different runs (one was stopped between "
                        "its two saves): neither can be resumed; start a new run without --resume")


def _started_in(stored_save_dir: str, run_folder: Path) -> Path | None:
    """The project folder a run was started in, when it is resumed from another working folder
    (`train --resume ~/proj/models/simple_cnn_last.pth`): the run's folder ends with its relative
    stored --save-dir. None when resumed from that project itself, or moved where nothing says."""
    stored, folder = Path(stored_save_dir), run_folder.resolve()
    if stored.is_absolute() or not stored.parts or folder.parts[-len(stored.parts):] != stored.parts:
        return None
    project = Path(*folder.parts[:-len(stored.parts)])
    return None if _same_folder(str(project), ".") else project


def _follow_project(config: TrainConfig, payload: dict[str, Any], project: Path) -> dict[str, Any]:
    """Its relative data and log folders are the project's, not the new working folder's: MNIST is
    not fetched again, and the TensorBoard run goes on where it was."""
    for key in ("data_dir", "log_dir"):
        value = Path(getattr(config, key))
        if not value.is_absolute() and (project / value).is_dir():
            setattr(config, key, str(project / value))
    run_dir = payload.get("run_dir")
    if isinstance(run_dir, str) and not Path(run_dir).is_absolute():
        payload = {**payload, "run_dir": str(project / run_dir)}
    return payload


def _move_run_files(last: Path, best: Path, config: TrainConfig, run_id: str) -> None:
    """--save-dir elsewhere: the run's best and last checkpoints go there first, so that it
    continues (and can be resumed again) from that folder alone. Another run's models there are
    not replaced; each copy is whole or absent (a kill -9 mid-copy leaves no half file)."""
    new_best, new_last = checkpoint_paths(config)
    check_writable(config.save_dir)
    for source, target in ((best, new_best), (last, new_last)):
        _refuse_to_replace(target, run_id, source, new_last)
    for source, target in ((best, new_best), (last, new_last)):
        write_atomically(target, source.read_bytes())


def _refuse_to_replace(target: Path, run_id: str, source: Path, resume_there: Path) -> None:
    """A UserError when `target` is a model another run saved, or this run further on than `source`
    (a later epoch, or the same one tested: the same command run again from the shell's history
    silently rewound it, helper-94). A copy of this run as far on may be replaced. Files saved
    before run ids: another run's when its weights differ from `source`'s."""
    try:
        there = load_checkpoint(target) if target.is_file() else None
    except UserError:  # damaged or foreign: no run's model to lose
        return
    if there is None:
        return
    here = load_checkpoint(source)
    scored = f", {there['test_accuracy']:.2%} test" if isinstance(there.get("test_accuracy"), float) else ""
    theirs = str(there.get("run_id") or "")
    if theirs and run_id:
        another = theirs != run_id
    else:  # helper-60: the bundled model's files, and any from before run ids, have none
        another = weights_sha256(there) != weights_sha256(here)
    if another:
        raise UserError(f"{target} holds another run's model{scored}: --resume --save-dir would replace it; "
                        "name an empty folder, or move that file away first")
    epoch_there, epoch_here = there.get("epoch"), here.get("epoch")
    if not (isinstance(epoch_there, int) and isinstance(epoch_here, int)):
        return
    tested = bool(scored) and not isinstance(here.get("test_accuracy"), float)
    if epoch_there > epoch_here or (epoch_there == epoch_here and tested):
        raise UserError(f"{target} holds this run further on (epoch {epoch_there}{scored}) than {source} (epoch "
                        f"{epoch_here}): --resume --save-dir would take it back; resume with --resume {resume_there}")


def _same_folder(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them is not there (yet)
        return Path(first).resolve() == Path(second).resolve()
