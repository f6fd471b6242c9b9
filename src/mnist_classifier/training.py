"""The training loop: batches in, checkpoints and TensorBoard events out.

    mnist-classifier train                                   # SimpleCNN, ~2.5 min on 2 cores
    mnist-classifier train --model improved_cnn              # residual CNN
    mnist-classifier train --resume models/simple_cnn_last.pth
    torchrun --nproc_per_node=2 -m mnist_classifier train    # data-parallel

Every epoch: train on shuffled full batches, score the validation split, save
`<model>_last.pth` (the resume point), `<model>_best.pth` when validation accuracy
improves, and a timestamped copy every `save_interval` epochs (other datasets than MNIST
add theirs: `<model>_fashion-mnist_best.pth`). Batches of digits also carry generated
non-digits and pen-redrawn digits (exposure.py). After the last epoch the best model is
calibrated on the validation split (calibration.py) and scored once on the test set.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from . import distributed
from .augment import require_augmentation
from .averaging import WeightAverage
from .calibration import calibrate_logits
from .checkpoint import (check_free_space, check_writable, checkpoint_bytes, load_checkpoint, remove_partial_writes,
                         save_checkpoint)
from .config import TrainConfig
from .data import DataSplits, Normalization, epoch_order, load_data, to_model_input, training_batches
from .errors import UserError
from .evaluation import compute_logits, redrawn_validation_logits, score_split
from .hardware import choose_precision
from .exposure import Exposure
from .models import create_model
from .optimization import build_optimizer, build_scheduler
from .run_files import (TrainResult, check_same_run, claim_checkpoints, checkpoint_paths, checkpoint_stem,
                        earlier_best_note, interrupts_deferred, new_run_folder, peer_lost, resume_changes,
                        resume_command, snapshot_path, stored_result)
from .run_log import RunLog

BATCH_LOG_EVERY = 50  # steps between Train/*_batch TensorBoard points
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
EpochHook = Callable[[int, nn.Module], None]  # (epochs done, the model that epoch saved)


class TrainingInterrupted(Exception):
    """Ctrl-C: the last completed epoch is saved; the CLI exits with status 130."""


@dataclass
class RunState:
    """Everything a resumed run needs besides the weights."""

    start_epoch: int = 0
    best_accuracy: float = -1.0
    history: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key in HISTORY_KEYS})
    run_dir: Path | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells this run's files from another's


def no_full_batch(images: int, available: int, config: TrainConfig) -> str:
    """Why `images` (of `available` before --limit-train) cannot train with this batch size, and what would."""
    more = config.batch_size <= available  # a higher --limit-train would make a batch
    return (f"{images:,} training image{'s' * (images != 1)} make no full batch of {config.batch_size}: "
            + (f"train on at least {config.batch_size} (--limit-train) or " if more else "")
            + f"lower --batch-size to at most {images:,}")


def steps_per_epoch(config: TrainConfig, train_size: int) -> int:
    return max(1, train_size // config.batch_size)


class Trainer:
    def __init__(self, config: TrainConfig, ctx: distributed.Context, data: DataSplits, log: Callable[[str], None]):
        self.config, self.ctx, self.log = config, ctx, log
        self.stem = checkpoint_stem(config.model_name, config.dataset)  # names checkpoints and runs
        self.norm = Normalization(data.spec.mean, data.spec.std)
        self.class_names = list(data.spec.class_names)
        self.augmentation = require_augmentation(data.spec.augmentation, data.spec.name)
        self.train_split, self.val_split = data.train.to(ctx.device), data.val.to(ctx.device)
        self.test_split = data.test
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        model = create_model(config.model_name, len(self.class_names), config.model_options).to(ctx.device)
        self.precision = choose_precision(config.precision, ctx.device)
        self.precisions_before: list[str] = []  # a resumed run's, in the order its epochs ran them
        self.memory_format = torch.channels_last  # ~10-20% faster convolutions on CPU and GPU
        model = model.to(memory_format=self.memory_format)
        if ctx.distributed and config.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.net = nn.parallel.DistributedDataParallel(model) if ctx.distributed else model
        self.average = WeightAverage(model, config.weight_average) if config.weight_average > 0 else None
        self.optimizer = build_optimizer(config, model)
        self.steps = steps_per_epoch(config, len(self.train_split))
        self.scheduler = build_scheduler(config, self.optimizer, self.steps)
        self.drawable = data.spec.drawable
        self.exposure = Exposure.build(config, self.train_split, self.drawable, self.steps * config.epochs, log)
        self.state = RunState()
        self.run_log: RunLog | None = None  # rank 0 only (open_run_log)
        # The last epoch in <model>_last.pth, as far as this rank knows (another rank's saves it after
        # the collective step it takes part in); a resumed run starts from its file's.
        self.epochs_saved = 0

    @property
    def saved_an_epoch(self) -> bool:
        """Whether this run saved an epoch: an interrupted run with none has nothing to resume."""
        return self.epochs_saved > self.state.start_epoch

    @property
    def kept_model(self) -> nn.Module:
        """What is validated, saved, calibrated and served: the average of the weights where the run keeps one."""
        return self.average.model if self.average is not None else self.model

    # ----------------------------------------------------------------- state
    def restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload.get("trained_state_dict", payload["model_state_dict"]))
        if self.average is not None:
            self.average.restore(payload["model_state_dict"], payload.get("weight_average"))
        self.optimizer.load_state_dict(payload["optimizer_state_dict"])
        if self.scheduler is not None and payload.get("scheduler_state_dict"):
            self.scheduler.load_state_dict(payload["scheduler_state_dict"])
        changed = resume_changes(payload, self.ctx.world_size, self.precision.name)
        stored = payload.get("precision") or {}
        used = stored.get("used") if isinstance(stored.get("used"), list) else [stored.get("name")]
        self.precisions_before = [name for name in used if isinstance(name, str)]
        if changed:
            self.log(f"note: this resume runs with {changed}, so its weights will differ slightly "
                     "from those of a run never interrupted")
        self.state = RunState(
            start_epoch=int(payload["epoch"]),
            best_accuracy=float(payload.get("best_accuracy", payload.get("accuracy", -1.0))),
            history={key: list(payload["history"].get(key, [])) for key in HISTORY_KEYS},
            run_dir=Path(payload["run_dir"]) if payload.get("run_dir") else None,
            run_id=str(payload.get("run_id") or ""),  # none in files saved before run ids: not checked
        )
        self.epochs_saved = self.state.start_epoch

    def payload(self, epoch: int, val_accuracy: float, val_loss: float) -> dict[str, Any]:
        averaged = {} if self.average is None else {  # the trained weights too: a resumed run goes on from them
            "trained_state_dict": self.model.state_dict(), "weight_average": self.average.state()}
        return averaged | {
            "model_state_dict": self.kept_model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": epoch,
            "accuracy": val_accuracy,
            "best_accuracy": self.state.best_accuracy,
            "loss": val_loss,
            "model_name": self.config.model_name,
            "model_options": dict(self.config.model_options),  # what rebuilds this network from the file
            "dataset": self.config.dataset,
            "class_names": self.class_names,
            "config": self.config.to_dict(),
            "history": self.state.history,
            "normalization": self.norm.to_dict(),
            # what was used and why (the config says what was asked); "used": each, a resume's too
            "precision": self.precision.to_dict() | {"used": self.precisions_used},
            "run_dir": str(self.state.run_dir),
            "run_id": self.state.run_id,
            "world_size": self.ctx.world_size,
            "rank_weight_checksums": self.rank_checksums(),
        }

    @property
    def precisions_used(self) -> list[str]:
        """["bf16"], or ["bf16", "fp32"] for a run resumed in fp32 after epochs in bf16."""
        earlier = self.precisions_before
        return earlier if earlier and earlier[-1] == self.precision.name else earlier + [self.precision.name]

    def rank_checksums(self) -> list[float]:
        """One number per rank that changes with any weight: proof that DDP kept ranks in step."""
        weights = torch.cat([p.detach().double().flatten().cpu() for p in self.model.parameters()])
        positions = torch.arange(1, len(weights) + 1, dtype=torch.float64)
        return distributed.gather_scalar(float((weights * positions.sqrt()).sum()))

    def calibrate(self) -> dict[str, Any]:
        """Temperature and refusal threshold from the validation split (calibration.py), as checkpoint keys."""
        logits = compute_logits(self.model, self.val_split, self.norm)
        redrawn = redrawn_validation_logits(self.model, self.val_split, self.norm) if self.drawable else None
        calibration = calibrate_logits(logits, self.val_split.labels, refuse=self.drawable, redrawn_logits=redrawn)
        refusal = (f"; 'not a digit' below digit score {calibration.reject_threshold:.2f} (lets 99.5% through "
                   "as written and re-drawn with an even pen)" if calibration.reject_threshold is not None else "")
        self.log(f"calibrated on {len(self.val_split):,} validation images: temperature "
                 f"{calibration.temperature:.3f}{refusal}")
        return calibration.to_payload()

    # ------------------------------------------------------------------ loop
    def train_one_epoch(self, epoch: int) -> tuple[float, float, float, float]:
        """Returns (mean loss, accuracy, images per second, seconds) over all ranks."""
        config, ctx = self.config, self.ctx
        torch.manual_seed(config.seed * 1_000 + epoch * 10 + ctx.rank)  # dropout masks
        augment = torch.Generator(device="cpu").manual_seed(config.seed * 7_919 + epoch * 31 + ctx.rank)
        order = epoch_order(len(self.train_split), config.seed, epoch, ctx.device)
        batches = training_batches(order, config.batch_size, ctx.rank, ctx.world_size)
        # Summed on the device: reading a GPU value every step would stall the pipeline.
        totals = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, seen
        self.net.train()
        started = time.perf_counter()
        progress = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                        disable=None if ctx.is_main else True, leave=False)
        for step, indices in enumerate(batches):
            batch_totals = self.train_step(indices, augment)
            totals += batch_totals
            if step % BATCH_LOG_EVERY == 0:
                self.log_batch(epoch * self.steps + step, batch_totals)
            progress.update()
            if step % 20 == 0 and not progress.disable:
                loss_sum, correct, seen = totals.tolist()
                rate = seen * ctx.world_size / (time.perf_counter() - started)
                progress.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}", img_s=f"{rate:,.0f}")
        progress.close()
        loss_sum, correct, seen = distributed.sum_across_ranks(totals.cpu()).tolist()
        seconds = time.perf_counter() - started
        return loss_sum / seen, correct / seen, seen / seconds, seconds

    def train_step(self, indices: torch.Tensor, augment: torch.Generator) -> torch.Tensor:
        """One optimiser step on these training images (plus exposure.py's non-digits);
        returns (loss sum, correct, seen) for the digits, on the device."""
        labels = self.train_split.labels[indices]
        images = self.exposure.digits(self.train_split, indices, augment)
        non_digits = self.exposure.non_digits(len(indices), augment)
        if non_digits is not None:
            images = torch.cat((images, non_digits))
        inputs = to_model_input(images, self.norm, augment if self.config.augment else None, self.augmentation)
        inputs = inputs.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.precision.autocast):
            all_logits = self.net(inputs)
            logits = all_logits[:len(labels)]
            loss = self.exposure.loss(all_logits, labels, self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model)
        if self.scheduler is not None and self.config.scheduler != "plateau":
            self.scheduler.step()
        correct = (logits.detach().argmax(1) == labels).sum()
        return torch.stack((loss.detach().double() * len(labels), correct.double(),
                            torch.full((), float(len(labels)), dtype=torch.float64, device=labels.device)))

    def log_batch(self, global_step: int, batch_totals: torch.Tensor) -> None:
        if self.run_log is not None:
            self.run_log.batch(global_step, batch_totals)

    def end_epoch(self, epoch: int, train_loss: float, train_acc: float, rate: float, seconds: float) -> None:
        val = score_split(self.kept_model, self.val_split, self.norm)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.config.scheduler == "plateau":
            self.scheduler.step(val.loss)
        for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, val.loss, val.accuracy, lr, seconds)):
            self.state.history[key].append(value)
        improved = val.accuracy > self.state.best_accuracy
        self.state.best_accuracy = max(self.state.best_accuracy, val.accuracy)
        payload = self.payload(epoch + 1, val.accuracy, val.loss)  # collective: every rank builds it

        def record() -> None:  # rank 0's account of the saved epoch: TensorBoard's points and the line
            self.run_log.epoch(epoch + 1, train_loss, train_acc, val.loss, val.accuracy, lr)
            self.log(f"epoch {epoch + 1:>2}/{self.config.epochs}  train loss {train_loss:.4f} acc {train_acc:.2%}  "
                     f"val loss {val.loss:.4f} acc {val.accuracy:.2%}  lr {lr:.2e}  {rate:,.0f} img/s  "
                     f"{seconds:.1f}s{'  *best' if improved else ''}")

        failure = self.save(payload, improved, record) if self.ctx.is_main else None
        if not distributed.all_succeeded(failure is None):  # rank 0 alone says why; every rank stops
            raise failure or UserError(f"rank 0 could not save epoch {epoch + 1}")
        if not self.ctx.is_main:
            self.epochs_saved = epoch + 1  # by rank 0: what a rank left alone when it dies says to resume from

    def save(self, payload: dict[str, Any], improved: bool, record: Callable[[], None]) -> UserError | None:
        """The epoch's checkpoints written and `record`ed; else the error that stopped them (a full disk)."""
        epochs_done = payload["epoch"]
        best_path, last_path = checkpoint_paths(self.config)
        try:
            if improved:
                save_checkpoint(payload, best_path)
            # The resume point, the count that says it is there, and what tells of the epoch, together: a
            # Ctrl+C as the file landed once left a hole in TensorBoard's curves after the resume (helper-94)
            with interrupts_deferred():
                save_checkpoint(payload, last_path)  # written last: the resume point always exists
                self.epochs_saved = epochs_done
                if epochs_done % self.config.save_interval == 0:
                    save_checkpoint(payload, snapshot_path(self.config, epochs_done))
                record()
        except UserError as error:
            return error
        return None

    def open_run_log(self) -> None:
        """TensorBoard (run_log.py): a new folder for a new run, the same one for a resumed run."""
        if self.state.run_dir is None:
            self.state.run_dir = new_run_folder(self.config.log_dir, self.stem)
        self.run_log = RunLog(self.state.run_dir, self.config.to_dict(), self.state.start_epoch, self.steps)

    def announce(self) -> None:
        """The run's first lines: what trains where, in which precision, with which settings."""
        config, ctx = self.config, self.ctx
        self.log(f"training {config.model_name} on {len(self.train_split):,} images ({ctx.device}, "
                 f"{ctx.world_size} process{'es' if ctx.world_size > 1 else ''}), validating on "
                 f"{len(self.val_split):,}; precision {self.precision.name} ({self.precision.reason})")
        self.log("config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items()))
        if self.state.start_epoch == 0 and (note := earlier_best_note(config)):
            self.log(note)
        if self.state.start_epoch >= config.epochs:
            self.log(f"this run already trained all {config.epochs} epochs: nothing left to train, so only its "
                     "closing calibration and test run again; start a new run without --resume to train afresh")

    def discard_run_log(self) -> None:
        """A new run stopped before its first epoch was saved: no TensorBoard folder for a run that never was."""
        if self.run_log is not None:
            self.run_log.discard()
            self.run_log = None

    def fit(self, stop_after_epochs: int | None = None, after_epoch: EpochHook | None = None) -> int:
        """Train the remaining epochs; returns the number of epochs completed overall."""
        last = self.config.epochs
        if stop_after_epochs is not None:
            last = min(last, self.state.start_epoch + stop_after_epochs)
        for epoch in range(self.state.start_epoch, last):
            train_loss, train_acc, rate, seconds = self.train_one_epoch(epoch)
            self.end_epoch(epoch, train_loss, train_acc, rate, seconds)
            if after_epoch is not None and self.ctx.is_main:
                after_epoch(epoch + 1, self.kept_model)
        return last

    def finish(self, epochs_done: int) -> "TrainResult":
        """Rank 0's closing work: test a finished run's best checkpoint, close the run's log."""
        done = epochs_done == self.config.epochs
        best_val, test_accuracy = self.test_best() if done else (self.state.best_accuracy, float("nan"))
        self.run_log.close()
        best_path, last_path = checkpoint_paths(self.config)
        return TrainResult(best_path, last_path, self.state.run_dir, best_val, test_accuracy, epochs_done,
                           self.state.history)

    def test_best(self) -> tuple[float, float]:
        """Calibrate the best checkpoint on validation, score it once on the test set, record both in that file."""
        best_path, last_path = checkpoint_paths(self.config)
        payload = load_checkpoint(best_path)
        check_same_run(payload, self.state.run_id, best_path, last_path)
        self.model.load_state_dict(payload["model_state_dict"])
        payload.update(self.calibrate())
        test = score_split(self.model, self.test_split.to(self.ctx.device), self.norm)
        payload["test_accuracy"] = test.accuracy
        payload["test_loss"] = test.loss
        # TensorBoard's test figures first: a file holding the test result marks the run done, and a
        # resume then writes nothing more (stopped between the two, a resume redraws the figures)
        if self.run_log is not None:  # the mistakes' confidences calibrated, as evaluate's report shows them (helper-81)
            self.run_log.result(" then ".join(self.precisions_used), test.accuracy, payload["accuracy"],
                                test.logits / payload["temperature"], self.test_split, self.class_names, payload["epoch"])
        save_checkpoint(payload, best_path)
        return payload["accuracy"], test.accuracy


def train(
    config: TrainConfig,
    resume_payload: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    stop_after_epochs: int | None = None,
    after_epoch: EpochHook | None = None,
) -> TrainResult | None:
    """Run (or continue) training; returns None on ranks other than 0.

    `after_epoch(epochs_done, model)` runs on rank 0 after each epoch's checkpoint is saved
    (benchmarks/seed_loop.py tests the model there, as the seed's loop did every epoch)."""
    config.validate()
    for directory in (config.save_dir, config.log_dir):
        check_writable(directory)
    ctx = distributed.setup(config.device, config.num_threads)
    if ctx.is_main:
        remove_partial_writes(config.save_dir)
    speak = log if ctx.is_main else (lambda _line: None)
    best_path, last_path = checkpoint_paths(config)
    claim = None
    try:
        if resume_payload is not None:  # every rank: all stop together
            check_same_run(None, str(resume_payload.get("run_id") or ""), best_path, last_path)
        finished = stored_result(config, resume_payload) if resume_payload is not None else None
        if finished is not None:  # before the data and the set-up: nothing will use them
            speak(f"this run already trained all {config.epochs} epochs and was calibrated and tested "
                  f"({finished.test_accuracy:.2%}): nothing to do; start a new run without --resume to train afresh")
            return finished if ctx.is_main else None
        if config.sync_batchnorm and ctx.distributed and ctx.device.type != "cuda":  # torch's SyncBatchNorm
            raise UserError(f"sync_batchnorm works across GPUs only, and these processes train on the "
                            f"{ctx.device.type}: leave it out of the recipe")
        if config.batch_size % ctx.world_size:
            raise UserError(f"batch_size {config.batch_size} is the global batch: it must divide evenly "
                            f"over {ctx.world_size} processes")
        if not ctx.is_main:
            distributed.barrier()  # rank 0 fetches the data first; the others then read it
        data = load_data(config.data_dir, config.dataset, config.val_size, config.limit_train, log=speak)
        if ctx.is_main:
            distributed.barrier()
        if len(data.train) < config.batch_size:  # every step takes a full batch: there would be none (every rank)
            raise UserError(no_full_batch(len(data.train), data.train_available, config))
        trainer = Trainer(config, ctx, data, speak)
        if resume_payload is not None:
            trainer.restore(resume_payload)
        # A new run keeps best + last and, while it replaces best, that file's temporary copy; a resumed
        # one replaces files that exist (one temporary at a time). Every rank checks, so that all stop
        # together rather than wait for rank 0 forever.
        weight_copies = 1 if trainer.average is None else 2
        check_free_space(config.save_dir, checkpoint_bytes(trainer.model, weight_copies) * (1 if resume_payload else 3))
        claim = claim_checkpoints(config, ctx)  # after every refusal that needs no folder: none is left behind
        try:
            if ctx.is_main:
                trainer.open_run_log()
                trainer.announce()
            epochs_done = trainer.fit(stop_after_epochs, after_epoch)
        except KeyboardInterrupt:
            if distributed.main_rank_gone(ctx):  # torchrun's SIGTERM after rank 0 died: no Ctrl+C, nobody else to say so
                raise peer_lost("rank 0 died", trainer.epochs_saved, config.epochs, last_path) from None
            if resume_payload is None and not trainer.saved_an_epoch:
                # The last-epoch file there, if any, is an earlier run's: not this one's to resume
                trainer.discard_run_log()
                raise TrainingInterrupted("") from None
            raise TrainingInterrupted(str(last_path)) from None
        except UserError as error:  # a save refused (a full disk): what was saved, and how to go on (helper-80)
            if resume_payload is None and not trainer.saved_an_epoch:
                trainer.discard_run_log()  # no TensorBoard run for a run that never saved one
                raise
            raise UserError(f"{error}; then resume with `{resume_command(last_path)}`") from None
        except RuntimeError as error:
            reason = distributed.lost_a_peer(error, ctx)
            if reason is None:
                raise
            raise peer_lost(reason, trainer.epochs_saved, config.epochs, last_path) from None
        distributed.barrier()
        result, failure = None, None
        try:
            result = trainer.finish(epochs_done) if ctx.is_main else None
        except KeyboardInterrupt:  # every epoch is saved: a resume runs only the closing calibration and test
            raise TrainingInterrupted(str(last_path)) from None
        except UserError as error:
            failure = error
        # Every rank leaves together (rank 0 alone saying why, if it failed): a gloo rank that tears
        # down while a peer still works sometimes aborts in native code as it exits (~1 in 15 loaded runs).
        if not distributed.all_succeeded(failure is None):
            raise UserError(f"{failure or 'rank 0 could not finish'}; then `{resume_command(last_path)}` runs "
                            "the closing calibration and test") from None
        return result
    finally:
        if claim is not None:
            claim.release()
        distributed.teardown()
