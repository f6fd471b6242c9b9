"""TensorBoard for one training run: what `train` writes under `runs/<model>_<time>/`.

    tensorboard --logdir runs

Train loss and accuracy every few batches and every epoch, validation loss and accuracy and
the learning rate every epoch, the config as text (and as `config.yaml` beside the events),
and after the last epoch the hyper-parameters with the test accuracy, plus the confusion
matrix and most confident mistakes that `evaluate` draws. Only rank 0 of a torchrun job
writes. A resumed run reopens its folder and drops any points past the resume point, so
its curves carry on where the saved epoch left them.
"""
from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import yaml

from .data import Split
from .errors import UserError
from .evaluation import log_test_figures
from .files import OUT_OF_ROOM, ROOM_FIX


class RunLog:
    def __init__(self, run_dir: Path, config: dict[str, Any], start_epoch: int, steps_per_epoch: int):
        from torch.utils.tensorboard import SummaryWriter  # slow import; only rank 0 needs it

        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        config_text = yaml.safe_dump(config, sort_keys=False)
        (run_dir / "config.yaml").write_text(config_text)
        self.config = config
        # A resume drops what the unfinished epoch wrote (its batch points): from its first step on.
        # With one step an epoch, that step's number is the last finished epoch's point, which must
        # stay (helper-56); such runs write no batch points, the epoch's say the same.
        self.batch_points = steps_per_epoch > 1
        purge_step = start_epoch * steps_per_epoch if self.batch_points else start_epoch + 1
        _quiet_writer_thread_failures()
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step if start_epoch else None)
        self.writer.add_text("config", f"```\n{config_text}```", start_epoch)

    def batch(self, global_step: int, batch_totals: torch.Tensor) -> None:
        """batch_totals: (loss sum, correct, seen) of one step, as the training step returns them."""
        if not self.batch_points:
            return
        loss_sum, correct, seen = batch_totals.tolist()
        with self._writing():
            self.writer.add_scalar("Train/Loss_batch", loss_sum / seen, global_step)
            self.writer.add_scalar("Train/Acc_batch", correct / seen, global_step)

    def epoch(self, epochs_done: int, train_loss: float, train_acc: float, val_loss: float, val_acc: float,
              lr: float) -> None:
        with self._writing():
            for tag, value in (("Train/Loss_epoch", train_loss), ("Train/Acc_epoch", train_acc),
                               ("Val/Loss_epoch", val_loss), ("Val/Acc_epoch", val_acc), ("LR", lr)):
                self.writer.add_scalar(tag, value, epochs_done)
            self.writer.flush()  # the curves show up while the next epoch trains

    def result(self, precision_used: str, test_accuracy: float, best_val_accuracy: float, test_logits: torch.Tensor,
               test: Split, class_names: Sequence[str], epochs_done: int) -> None:
        """The run's hyper-parameters next to its scores, and the test set's figures."""
        options = {f"model_options.{key}": value for key, value in self.config.get("model_options", {}).items()}
        hparams = {key: _hparam(value) for key, value in (self.config | options).items()
                   if isinstance(value, (int, float, str, bool))}
        hparams["precision_used"] = precision_used
        with self._writing():
            self.writer.add_hparams(hparams, {"hparam/test_accuracy": test_accuracy,
                                              "hparam/best_val_accuracy": best_val_accuracy}, run_name=".")
            log_test_figures(self.writer, test_logits, test, class_names, epochs_done)
            self.writer.flush()  # on disk before the checkpoint says the run is done (Trainer.test_best)

    def close(self) -> None:
        with suppress(OSError):  # a failed write was said when it happened (result() flushed everything that counts)
            self.writer.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (a full disk) as one line naming the folder; training adds what is saved."""
        try:
            yield
        except OSError as error:
            fix = ROOM_FIX if error.errno in OUT_OF_ROOM else "check that folder, or give this run another --log-dir"
            raise UserError(f"cannot write TensorBoard's log in {self.run_dir} "
                            f"({error.strerror or error}): {fix}") from None

    def discard(self) -> None:
        """Close and remove the folder: what it holds so far (the config, part of an epoch's batch
        scalars) would show a run that never was."""
        self.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _hparam(value: int | float | str | bool) -> int | float | str:
    """torch's add_hparams tests for numbers before booleans (a bool is an int), so `augment: true`
    would show as 1.0: on/off settings go in as the words the recipe uses."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _quiet_writer_thread_failures() -> None:
    """TensorBoard writes from a thread of its own, which prints a traceback of a failed write and
    then hands the error to this thread's next write, where `_writing` says it in one line."""
    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (type(args.thread).__module__.startswith("tensorboard.") and issubclass(args.exc_type, OSError)):
            previous(args)

    hook.quiets_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook
