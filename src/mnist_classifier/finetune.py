"""`mnist-classifier finetune`: the user's labelled drawings -> `models/<model>_user_best.pth`.

    mnist-classifier finetune                         # models/simple_cnn_best.pth (else the bundled model) + data/user
    mnist-classifier finetune --checkpoint models/improved_cnn_best.pth --user-data ~/digits --out /tmp/mine.pth

Owns the arrow "labelled drawings -> finetune -> models/<model>_user_best.pth" of DESIGN.md:

1. Hold back a seeded fifth of each digit's examples to measure on, a drawing saved twice
   on one side only; fewer than 20 examples, or a digit with none, is refused, saying how
   many more are needed (user_split.py).
2. Train the whole network for ~100 short steps. Each batch holds up to 32 of the user's
   other examples and as many MNIST training images (replay: on the benchmark writer, 100
   steps without it cost 0.75 point of MNIST test accuracy, with it 0.02), both through
   training's light random affine, plus, when the base recipe used them, generated
   non-digits taught what the base taught them (exposure.py: a uniform guess, or the "not
   a digit" class for a base trained with it), so that "not a digit" still works afterwards.
3. Recalibrate the temperature and the refusal threshold (calibration.py) on the MNIST
   validation split, as training does, and say how often 1,000 held-out generated
   non-digits are refused before and after: learning a writer costs some refusals.
4. Write a new checkpoint (checkpoint.py: atomic), its provenance under "finetune"; the
   model it started from is never overwritten.

Measured with benchmarks/user_writer.py (100 drawings of a generated writer whose style
MNIST lacks) on a 2-core Intel Xeon with AMX (6 Dec, the bundled model of that day): 11.2 s
from start to exit (9.0 s inside the command), 500 fresh drawings 92.8% -> 100%, MNIST test
99.49% -> 99.44%, generated non-digits refused 96.8% -> 95.9%; on a 2-core AMD EPYC with
avx512_bf16 (5 Dec, the model bundled then) 8.3 s. On cores shared with other jobs it takes
several times longer.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .bundled import USER_CHECKPOINT, choose_model, sha256_of, tuned_from_current_model
from .calibration import UNCALIBRATED, Calibration, calibrate_logits, digit_scores
from .checkpoint import (load_checkpoint, model_from_checkpoint, remove_partial_writes, save_checkpoint,
                         stored_class_names, stored_normalization, weights_sha256)
from .config import TrainConfig, config_from_dict
from .cores import usable_cores
from .data import Normalization, Split, load_data, to_model_input
from .datasets import USER_DIGITS, get_dataset_spec
from .user_split import (LEARNT_KEY, check_enough, digests, distinct, hold_back, learnt_list, learnt_mask, pick,
                         read_examples)
from .errors import CheckpointError, UserError, to_stderr
from .evaluation import SplitScore, compute_logits, redrawn_validation_logits, score_split
from .exposure import Exposure
from .finetune_paths import base_checkpoint, describe_base, keep_the_answering_model, output_path
from .honesty import held_out_mix

USER_BATCH = 32  # of the user's examples per step; as many MNIST images join them
TARGET_STEPS = 100  # the default epochs give about this many steps (~5 s of SimpleCNN on 2 quiet cores)
MIN_EPOCHS = 3  # a large set still gets seen a few times
LEARNING_RATE = 1e-3  # peak of a one-cycle schedule: a sixth of training's, small moves from a good model
OUTLIER_POOL = 512  # generated non-digits (~0.7 s); every use goes through the random affine afresh
NON_DIGITS_MEASURED = 1_000  # held-out generated non-digits, refused before and after? (~1 s to make)
REFUSAL_DROP_NOTED = 0.01  # a smaller drop is within what one seed to the next changes
# A fine-tuned model is not a resume point for `train`, and these describe the base's making, not this one's
# ("provenance": the bundled model's build record, which `export` would copy into the ONNX file).
NOT_CARRIED = ("optimizer_state_dict", "scheduler_state_dict", "rank_weight_checksums", "best_accuracy", "provenance",
               "trained_state_dict", "weight_average")  # what resumes the base's training, not these weights


@dataclass(frozen=True)
class Scores:
    held_back: float | None  # share of the user's held-back examples answered with their digit; None: none held
    mnist_test: SplitScore
    refused: float | None  # share of held-out generated non-digits refused; None: the model never refuses


@dataclass
class FinetuneResult:
    path: Path
    base: Path
    bundled_base: bool
    examples: int
    trained_on: int
    held_back: int
    before: Scores
    after: Scores
    calibration: Calibration
    epochs: int
    steps: int
    seconds: float
    learnt: list[str] = field(default_factory=list)  # user_split.digests of every drawing the new model learnt
    learnt_before: int = 0  # of the user's drawings, those the base had learnt (never held back)


def run_finetune(checkpoint: str | Path | None = None, user_data: str | Path = "data/user",
                 data_dir: str | Path = "data", epochs: int | None = None, seed: int = 0,
                 out: str | Path | None = None) -> int:
    """The `finetune` command: fine-tune, print before/after, return the exit status."""
    result = finetune(checkpoint, user_data, data_dir, epochs, seed, out)
    print(summary_text(result))
    return 0


def finetune(checkpoint: str | Path | None = None, user_data: str | Path = "data/user",
             data_dir: str | Path = "data", epochs: int | None = None, seed: int = 0,
             out: str | Path | None = None, log: Callable[[str], None] = print) -> FinetuneResult:
    """Learn the user's examples on top of a checkpoint; write and describe the new one."""
    started = time.perf_counter()
    if epochs is not None and epochs <= 0:
        raise UserError(f"--epochs must be a positive whole number, got {epochs}")
    if seed < 0:  # numpy's and torch's generators take none
        raise UserError(f"--seed must be >= 0, got {seed}")
    base, bundled = base_checkpoint(checkpoint)
    payload = load_checkpoint(base)
    model = model_from_checkpoint(payload, base)
    check_digit_model(payload, base)
    target = output_path(out, payload, base)
    keep_the_answering_model(target, base, bundled)  # --out naming the default file included (helper-92)
    mine = read_examples(user_data)  # before MNIST is loaded: "too few" is said at once
    check_enough(mine.labels, user_data, len(stored_class_names(payload, base)))
    config = config_from_dict(payload.get("config") or {})  # no stored recipe: today's defaults
    learnt, listed = learnt_already(payload, base, mine, log)
    train_index, held_index = hold_back(mine.labels.numpy(), seed, images=mine.images.numpy(), learnt=learnt)
    train_set, held = pick(mine, train_index), pick(mine, distinct(held_index, mine.images.numpy()))
    epochs = epochs or default_epochs(len(train_set))
    log(f"fine-tuning {payload['model_name']} ({describe_base(base, bundled)}) on {len(train_set)} of your "
        f"{len(mine)} drawings in {user_data}, holding back {len(held)} to measure"
        + (f" (not one of the {learnt.sum()} it learnt before)" if learnt.any() else "") + "; "
        f"{epochs} epoch{'s' * (epochs != 1)}, MNIST replayed")
    with all_cores():
        data = load_data(data_dir, USER_DIGITS.scores, val_size=config.val_size, log=lambda _line: None,
                         warn=to_stderr)
        norm = stored_normalization(payload, base)
        # learning one writer's pen can teach the model that such ink is a digit: the user sees the cost
        non_digits = Split(torch.from_numpy(held_out_mix(data.test, NON_DIGITS_MEASURED)),
                           torch.zeros(NON_DIGITS_MEASURED, dtype=torch.long))
        before = measure(model, held, data.test, norm, non_digits, base_calibration(payload, base, log))
        steps = tune(model, train_set, data.train, norm, config, epochs, seed)
        calibration, validation = recalibrate(model, data.val, norm)
        after = measure(model, held, data.test, norm, non_digits, calibration)
    result = FinetuneResult(target, base, bundled, len(mine), len(train_set), len(held), before, after,
                            calibration, epochs, steps, time.perf_counter() - started,
                            learnt=sorted(set(listed) | set(digests(train_set.images.numpy()))),
                            learnt_before=int(learnt.sum()))
    remove_partial_writes(target.parent, target.name)  # what a finetune killed mid-save left (train removes its own)
    save_checkpoint(tuned_payload(payload, model, calibration, validation, result, user_data, seed), target)
    return result


# ------------------------------------------------------------------ inputs


def learnt_already(payload: dict[str, Any], base: Path, mine: Split,
                   log: Callable[[str], None]) -> tuple[np.ndarray, list[str]]:
    """(bool per drawing: learnt by the base, never held back; the digests its record lists)."""
    listed, problem = learnt_list(payload.get("finetune"))
    if problem == "missing":
        log(f"note: {base} was fine-tuned by an earlier version, which did not record the drawings it learnt: "
            "some held back to measure on may be among them, and flatter the figures")
    elif problem == "damaged":
        log(f"note: {base}'s record of the drawings it learnt is damaged; {len(listed)} readable entries are used: "
            "some held back to measure on may be among the rest, and flatter the figures")
    return learnt_mask(listed, mine.images.numpy()), listed


def check_digit_model(payload: dict[str, Any], base: Path) -> None:
    trained_on = payload.get("dataset", "mnist")
    get_dataset_spec(trained_on)  # an unknown dataset name: the error that lists the choices
    if trained_on != USER_DIGITS.scores:
        raise UserError(f"{base} was trained on {trained_on}: finetune teaches a digit model your handwriting; "
                        f"name a model trained on {USER_DIGITS.scores}")


def base_calibration(payload: dict[str, Any], base: Path, log: Callable[[str], None]) -> Calibration:
    """The base's stored calibration, for the figures before; a damaged one is left out (the tuned
    model is calibrated afresh, so finetune is one way to mend it)."""
    try:
        return Calibration.from_payload(payload, base)
    except CheckpointError:
        log(f"note: {base}'s stored calibration is damaged: the figures before fine-tuning are uncalibrated; "
            "the tuned model is calibrated afresh")
        return UNCALIBRATED


def default_epochs(train_size: int) -> int:
    """About TARGET_STEPS steps whatever the count, and at least MIN_EPOCHS passes over the examples."""
    steps_per_epoch = math.ceil(train_size / min(USER_BATCH, train_size))
    return max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch))


@contextmanager
def all_cores() -> Iterator[None]:
    """Torch on every core this process may use (its CPU affinity: a container or taskset may allow fewer
    than the machine has); the caller's setting is restored (the demos run torch on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(usable_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ training


def learning_rate_schedule(optimizer: torch.optim.Optimizer, total: int):
    """One cycle warming up over a tenth of the steps, at least two of them: OneCycleLR divides by
    the warm-up's length less one step (10 steps at 10% crashed it). A cycle averages about half
    its peak rate, so under 8 steps the rate stays at half the peak: more epochs never teach less
    (one cycle of 1 step ran at 1/25 of it, of 4 steps a total of 1.5 steps' worth)."""
    if total < 8:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 0.5)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=total,
                                               pct_start=max(0.1, 2 / total))


def tune(model: nn.Module, mine: Split, replay: Split, norm: Normalization, config: TrainConfig,
         epochs: int, seed: int) -> int:
    """Train `model` in place on the user's examples mixed with MNIST replay; returns the steps taken."""
    torch.manual_seed(seed)  # dropout masks
    generator = torch.Generator().manual_seed(seed)  # order, replay picks, augmentation, non-digits
    exposure = non_digit_exposure(config, replay)
    batch = min(USER_BATCH, len(mine))
    total = epochs * math.ceil(len(mine) / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=config.weight_decay)
    schedule = learning_rate_schedule(optimizer, total)
    model.to(memory_format=torch.channels_last).train()
    freeze_batchnorm(model)
    for _ in range(epochs):
        order = torch.randperm(len(mine), generator=generator)
        for start in range(0, len(mine), batch):
            picked = order[start:start + batch]
            replayed = torch.randint(len(replay), (len(picked),), generator=generator)
            digits = torch.cat((mine.images[picked], replay.images[replayed]))
            labels = torch.cat((mine.labels[picked], replay.labels[replayed]))
            train_step(model, optimizer, digits, labels, exposure, norm, config, generator)
            schedule.step()
    model.eval()
    return total


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm keeps the statistics of 55,000 MNIST images rather than drift towards batches of a few
    dozen, half of them one person's drawings; its scale and shift still learn. (On the benchmark writer
    it made no measurable difference, MNIST test 99.31% frozen vs 99.30% not: cheap insurance.)"""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def non_digit_exposure(config: TrainConfig, replay: Split) -> Exposure:
    """The base recipe's non-digits and their weight, or nothing when it trained without them."""
    if config.outlier_weight <= 0 or config.outlier_fraction <= 0:
        return Exposure()
    from .outliers import generate_outliers, training_shares

    # Training's own family generators and mix; seeded apart from training's pool and from evaluate's held-out seeds.
    pool = generate_outliers(OUTLIER_POOL, seed=config.seed + 1, digits=(replay.images.numpy(), replay.labels.numpy()),
                             shares=training_shares(config.fragment_share))
    return Exposure(outlier_fraction=config.outlier_fraction, outlier_weight=config.outlier_weight,
                    target=config.outlier_target, outliers=torch.from_numpy(pool))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, digits: torch.Tensor, labels: torch.Tensor,
               exposure: Exposure, norm: Normalization, config: TrainConfig, generator: torch.Generator) -> None:
    """One step on these digits (+ non-digits): the loss `train` uses, label smoothing included."""
    non_digits = exposure.non_digits(len(labels), generator)
    images = digits if non_digits is None else torch.cat((digits, non_digits))
    augment = generator if config.augment else None
    inputs = to_model_input(images, norm, augment).contiguous(memory_format=torch.channels_last)
    loss = exposure.loss(model(inputs), labels, config.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------ measuring and saving


def measure(model: nn.Module, held: Split, test: Split, norm: Normalization, non_digits: Split,
            calibration: Calibration) -> Scores:
    held_logits = compute_logits(model, held, norm)
    # Right means answered with the right digit: a right best guess under "not a digit?" is not what the user sees
    right = (held_logits.argmax(1) == held.labels).numpy()
    refused = None
    if calibration.reject_threshold is not None:
        right &= digit_scores(held_logits.numpy(), calibration.temperature) >= calibration.reject_threshold
        scores = digit_scores(compute_logits(model, non_digits, norm).numpy(), calibration.temperature)
        refused = float((scores < calibration.reject_threshold).mean())
    return Scores(float(right.mean()) if len(right) else None, score_split(model, test, norm), refused)


def recalibrate(model: nn.Module, val: Split, norm: Normalization) -> tuple[Calibration, SplitScore]:
    """Temperature and refusal threshold from the MNIST validation split, as `train` fits them.

    Not from the user's examples: the ones trained on now get inflated confidences (they
    would pull the temperature down, making every answer over-confident), the held-back
    ones are the measurement (fitting on them grades our own homework), and a hundred
    drawings cannot pin a threshold that must let 99.5% of digits through. The
    validation split (5,000 by default) is digits this model has never trained on; as in
    `train`, the threshold also lets 99.5% of them through re-drawn with an even pen."""
    validation = score_split(model, val, norm)
    redrawn = redrawn_validation_logits(model, val, norm)
    return calibrate_logits(validation.logits, val.labels, refuse=True, redrawn_logits=redrawn), validation


def tuned_payload(base: dict[str, Any], model: nn.Module, calibration: Calibration, validation: SplitScore,
                  result: FinetuneResult, user_data: str | Path, seed: int) -> dict[str, Any]:
    """The base checkpoint's keys with the new weights, scores and calibration, and where they came from."""
    payload = {key: value for key, value in base.items() if key not in NOT_CARRIED}
    payload.update(calibration.to_payload())
    payload.update(model_state_dict=model.state_dict(), accuracy=validation.accuracy, loss=validation.loss,
                   test_accuracy=result.after.mnist_test.accuracy, test_loss=result.after.mnist_test.loss,
                   finetune=provenance(result, base, user_data, seed))
    return payload


def provenance(result: FinetuneResult, base: dict[str, Any], user_data: str | Path, seed: int) -> dict[str, Any]:
    """Plain numbers and strings (weights_only loading reads them)."""
    return {
        "base_checkpoint": str(result.base), "base_sha256": sha256_of(result.base), "bundled_base": result.bundled_base,
        "base_weights_sha256": weights_sha256(base),  # calibrating the base again keeps its weights
        "user_data": str(user_data), "user_examples": result.examples, "trained_on": result.trained_on,
        "held_back": result.held_back, "held_back_accuracy_before": result.before.held_back,
        "held_back_accuracy_after": result.after.held_back,
        "mnist_test_accuracy_before": result.before.mnist_test.accuracy,
        "mnist_test_accuracy_after": result.after.mnist_test.accuracy,
        "non_digits_refused_before": result.before.refused, "non_digits_refused_after": result.after.refused,
        "epochs": result.epochs, "steps": result.steps, "learning_rate": LEARNING_RATE, "seed": seed,
        LEARNT_KEY: result.learnt,
        "seconds": round(result.seconds, 2), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def summary_text(result: FinetuneResult) -> str:
    """The before/after table `finetune` prints."""
    before, after, calibration = result.before, result.after, result.calibration
    held = f"your {result.held_back} held-back drawings, right digit"
    mnist = f"MNIST test ({len(after.mnist_test.logits):,} images)"
    refused = f"generated non-digits refused ({NON_DIGITS_MEASURED:,})"
    width = max(len(held), len(mnist), len(refused))
    refusal = (f", 'not a digit' below digit score {calibration.reject_threshold:.2f}"
               if calibration.reject_threshold is not None else "")
    lines = [f"  {'':<{width}}  {'before':>7}  {'after':>7}",
             f"  {held:<{width}}  {_share(before.held_back, 2):>7}  {_share(after.held_back, 2):>7}",
             f"  {mnist:<{width}}  {before.mnist_test.accuracy:>7.2%}  {after.mnist_test.accuracy:>7.2%}",
             f"  {refused:<{width}}  {_share(before.refused):>7}  {_share(after.refused):>7}",
             f"recalibrated on the MNIST validation split: temperature {calibration.temperature:.3f}{refusal}",
             f"wrote {result.path} in {result.seconds:.1f} s ({result.steps} steps); {result.base} is unchanged"]
    if result.held_back == 0 and result.learnt_before:
        lines.append(f"note: nothing was held back to measure on: {result.learnt_before} of your drawings were learnt "
                     "by the model it started from, and no digit has two new ones; label a few of each digit anew "
                     "to see before and after")
    elif result.held_back == 0:
        lines.append("note: nothing was held back to measure on: no digit has two different drawings (a drawing "
                     "saved twice is one); label a few digits again, drawn anew, to see before and after")
    measured = before.refused is not None and after.refused is not None
    if measured and after.refused <= before.refused - REFUSAL_DROP_NOTED:
        points = 100 * (before.refused - after.refused)
        lines.append(f"note: it refuses {points:.1f} points fewer generated non-digits than the model it started "
                     "from: expect \"not a digit\" less often")
    if result.path.resolve() == USER_CHECKPOINT.resolve():
        lines.append(_who_answers(result.path))
    else:  # only the default SimpleCNN's fine-tune is picked up by itself
        lines.append(f"predict, demo, serve and load() answer with it when named: --checkpoint {result.path}")
    return "\n".join(lines)


def _who_answers(path: Path) -> str:
    if tuned_from_current_model(path):
        return ("predict, demo, serve and load() answer with it from now on (restart a serve that is running; "
                "name another model with --checkpoint)")
    # tuned from --checkpoint bundled or another file while models/ has a trained model: that one still answers
    return (f"predict, demo, serve and load() go on answering with {choose_model(None, tuned=False).path}, which "
            f"it was not tuned from: name it with --checkpoint {path}")


def _share(value: float | None, places: int = 1) -> str:
    return "-" if value is None else f"{value:.{places}%}"
