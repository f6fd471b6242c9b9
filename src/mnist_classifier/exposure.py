"""What a digit training batch holds besides the dataset's images, and the loss that uses it.

Two things MNIST alone never shows a model, added to every batch of a drawable dataset:

- **uniform-pen digits** (`pen_redraw` of the batch): MNIST digits re-drawn along their
  skeleton with a pen of constant width (strokes.py), the way people draw in the demos;
- **digits as the preprocessing returns them** (`paper_redraw` of the batch): MNIST
  digits enlarged 2x, dark on light paper, and brought back by `preprocess.to_mnist`, the
  path every user's drawing and every generated non-digit takes. Without them the model
  could tell a non-digit by the preprocessing's traces alone (crisp edges, ink renormalised
  to full strength), and refused real digits that carry them too. Measured 4 Dec
  (benchmarks/extra_class.py, `make train` recipe, seed 42): test digits enlarged 10x
  (soft, like an out-of-focus photo) and so brought back passed as digits 98.8% -> 99.2%
  (`uniform`) and 90.3% -> 99.1% (`class`);
- **non-digits** (`outlier_fraction` extra images per digit): generated scribbles, glyphs,
  doodles, digit fragments and digit pairs (outliers.py), with weight `outlier_weight`.

What the non-digits learn (`outlier_target`, see `Exposure.loss`):

- `uniform` (TrainConfig's default; the recipes' until 5 Dec): a uniform prediction
  (outlier exposure, Hendrycks et al. 2019).
- `class`: an 11th class, "not a digit", whose logit is fixed at 0. The network keeps its
  10 outputs (an 11-output layer is the same family of functions, shifted), and the digit
  score calibration.py refuses by becomes the log-odds of "some digit" against "not a
  digit". Both recipes in configs/ use it, lightly weighted (ImprovedCNN 0.03, SimpleCNN
  0.05 until 6 Dec): measured 5 Dec over 4-5 seeds each (benchmarks/extra_class.py,
  docs/benchmarks.md), as accurate as `uniform` at 0.5 or more (SimpleCNN 99.43% against
  99.42%, ImprovedCNN 99.62% against 99.56%) while refusing as many non-digits or more
  (SimpleCNN's clothes 94-98% against 89-93%). With equal shares of the families, heavier
  weights refuse more pieces of digits but cost accuracy (SimpleCNN at 0.25: 99.34%) or
  refuse pen-drawn digits; with 35% pieces (`fragment_share`) SimpleCNN takes 0.1 at no
  measurable cost (8 seeds, 6 Dec: reviewed pieces 90.7% refused, 99.42% test). SimpleCNN's
  also refuses a few more blurred digits brought back through the preprocessing (98.6-99.0%
  pass, against 98.9-99.2%).
- `energy`: squared hinges on the digit score itself (logsumexp of the logits, Liu et al.
  2020): a non-digit's at most ENERGY_MARGINS[0], a digit's at least ENERGY_MARGINS[1].
  Not the default, measured 4 Dec (`make train` recipe, seed 42, extra_class.py): margins
  (1, 3) at weight 0.3 refused more pieces (86.1%, reviewed 88.9%, against 81.5/84.4%) at
  lower test accuracy (99.21% against 99.39%); margins (1, 4) at weight 0.3 refused 88.9%
  (reviewed 91.3%) at 98.99%; weight 0.6 lost both.

All are prepared once per run (skeletons and paper digits of the training split, a pool of
non-digits; kept in `<data_dir>/prepared/` for the next run on the same digits, prepared.py)
and then cost one gather per step; the same seeded generator as the
augmentation drives every choice, so a resumed run sees the same batches as an unbroken one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import Split
from .hardware import to_device

# Non-digits generated per run at most (~1 ms each, so ~11 s on 2 cores); more steps reuse
# them, each time through the random affine augmentation afresh.
POOL_LIMIT = 10_000
LESSONS = {"uniform": "a uniform guess", "class": "a 'not a digit' class", "energy": "a low logsumexp"}
PREPARED_FOLDER = "prepared"  # in data_dir: what a run prepares, kept for the next (prepared.py)
# `energy`: logsumexp of a non-digit's logits at most the first, of a digit at least the second.
ENERGY_MARGINS = (1.0, 3.0)


@dataclass
class Exposure:
    pen_share: float = 0.0
    outlier_fraction: float = 0.0
    outlier_weight: float = 0.0
    target: str = "uniform"  # config.outlier_target
    distances: torch.Tensor | None = None  # skeleton distances of the training split (strokes.py)
    outliers: torch.Tensor | None = None  # (P, 28, 28) uint8 pool of non-digits
    paper_share: float = 0.0
    on_paper: torch.Tensor | None = None  # the training split through the preprocessing (preprocess.digits_on_paper)

    @classmethod
    def build(cls, config: TrainConfig, train: Split, drawable: bool, total_steps: int,
              log: Callable[[str], None]) -> "Exposure":
        """Nothing for datasets that are not drawings (clothes); else the skeletons and the pool."""
        if not drawable:
            return cls()
        exposure = cls(config.pen_redraw, config.outlier_fraction, config.outlier_weight, config.outlier_target,
                       paper_share=config.paper_redraw)
        extras = extras_to_prepare(config, train, total_steps)
        folder = Path(config.data_dir) / PREPARED_FOLDER
        made, reused = _prepare(folder, extras, train.images.device, log)
        exposure.on_paper, exposure.distances = made.get("paper digits"), made.get("skeletons")
        exposure.outliers = made.get("non-digits")
        if exposure.outliers is not None:
            log(f"outlier exposure: {len(exposure.outliers):,} generated non-digits "
                f"({config.fragment_share:.0%} of them pieces of digits), "
                f"{outliers_per_step(config.batch_size, config.outlier_fraction)} per batch of "
                f"{config.batch_size}, taught {LESSONS[config.outlier_target]} with weight {config.outlier_weight}; "
                f"{config.pen_redraw:.0%} of digits re-drawn with a uniform pen, {config.paper_redraw:.0%} brought "
                "back through the preprocessing")
        if reused:
            log(f"loaded {', '.join(reused)} as an earlier run on these digits prepared them ({folder})")
        return exposure

    def digits(self, split: Split, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch's digit images (uint8): a `paper_share` of them as the preprocessing returns
        them, then a `pen_share` re-drawn with a random pen (which may replace a paper one:
        ~19% of the digits end up on paper, 25% pen-drawn, with both shares at 0.25)."""
        images = split.images[indices]
        if self.on_paper is not None:
            positions = self._chosen(len(indices), self.paper_share, generator, indices.device)
            images = images.index_copy(0, positions, self.on_paper[indices[positions]])
        if self.distances is None:
            return images
        from .strokes import random_pen_widths, redraw

        positions = self._chosen(len(indices), self.pen_share, generator, indices.device)
        if len(positions) == 0:
            return images
        widths = random_pen_widths(len(positions), generator)
        redrawn = redraw(self.distances[indices[positions]], to_device(widths, self.distances.device))
        return images.index_copy(0, positions, (redrawn * 255).round_().to(torch.uint8))

    @staticmethod
    def _chosen(count: int, share: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Positions of about `share` of `count` images, drawn on the CPU (same on every device)."""
        # Positions, not a boolean mask, on the device: indexing by a mask there makes the
        # host wait for the GPU to count the chosen images.
        return to_device((torch.rand(count, generator=generator) < share).nonzero().squeeze(1), device)

    def non_digits(self, batch_size: int, generator: torch.Generator) -> torch.Tensor | None:
        """Non-digits to append to a batch of `batch_size` digits, or None when exposure is off."""
        if self.outliers is None:
            return None
        count = outliers_per_step(batch_size, self.outlier_fraction)
        picked = torch.randint(len(self.outliers), (count,), generator=generator)
        return self.outliers[to_device(picked, self.outliers.device)]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """The training loss of a batch: `logits` are its digits' (labelled `labels`), then
        the non-digits non_digits() appended, if any."""
        digits, non_digits = logits[:len(labels)].float(), logits[len(labels):].float()
        if len(non_digits) > 0 and self.target == "class":
            not_a_digit = torch.full((len(non_digits),), logits.shape[1], device=labels.device)
            return (F.cross_entropy(with_not_a_digit(digits), labels, label_smoothing=label_smoothing)
                    + self.outlier_weight * F.cross_entropy(with_not_a_digit(non_digits), not_a_digit))
        loss = F.cross_entropy(digits, labels, label_smoothing=label_smoothing)
        if len(non_digits) == 0:
            return loss
        if self.target == "energy":
            return loss + self.outlier_weight * energy_margin_loss(digits, non_digits)
        return loss + self.outlier_weight * uniformity_loss(non_digits)


def extras_to_prepare(config: TrainConfig, train: Split, total_steps: int) -> list:
    """What this run's recipe needs from its training split, before its first step (prepared.py)."""
    from . import outliers, preprocess, skeletons
    from .prepared import Extra

    # The makers live in modules free of torch: a worker process that makes them starts in ~0.3 s.
    images, labels = train.images.cpu().numpy(), train.labels.cpu().numpy()
    extras = []
    if config.paper_redraw > 0:
        extras.append(Extra("paper digits", preprocess.digits_on_paper, (images,), (), images.shape, per_image=True))
    if config.pen_redraw > 0:
        extras.append(Extra("skeletons", skeletons.skeleton_distances, (images,), (), images.shape,
                            per_image=True, threaded=True))
    per_step = outliers_per_step(config.batch_size, config.outlier_fraction)
    if config.outlier_weight > 0 and per_step > 0:
        count = min(POOL_LIMIT, max(per_step, total_steps * per_step))
        shares = outliers.training_shares(config.fragment_share)
        settings = (count, config.seed, sorted(shares.items()))
        make = partial(outliers.training_pool, count=count, seed=config.seed, shares=shares)
        extras.append(Extra("non-digits", make, (images, labels), settings, (count, 28, 28)))
    return extras


def _prepare(folder: Path, extras: list, device: torch.device,
             log: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """({name: tensor on `device`}, names of those that came from disk)."""
    from .prepared import prepare

    # As many processes as training has threads: the cores it was given (a rank of a multi-process run: its share)
    results = prepare(folder, extras, workers=torch.get_num_threads(), log=log)
    made = {extra.name: torch.from_numpy(array).to(device) for extra, (array, _) in zip(extras, results)}
    return made, [extra.name for extra, (_, loaded) in zip(extras, results) if loaded]


def with_not_a_digit(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) logits -> (N, C + 1): the "not a digit" class, its logit fixed at 0, appended."""
    return torch.cat((logits, logits.new_zeros(len(logits), 1)), dim=1)


def outliers_per_step(batch_size: int, fraction: float) -> int:
    return int(round(batch_size * fraction))


def energy_margin_loss(digits: torch.Tensor, non_digits: torch.Tensor) -> torch.Tensor:
    """Squared hinges on logsumexp, the digit score itself: digits above one margin, non-digits below another."""
    low = F.relu(ENERGY_MARGINS[1] - torch.logsumexp(digits, dim=1)).square().mean()
    high = F.relu(torch.logsumexp(non_digits, dim=1) - ENERGY_MARGINS[0]).square().mean()
    return low + high


def uniformity_loss(logits: torch.Tensor) -> torch.Tensor:
    """KL divergence from the uniform distribution: 0 when every class is equally likely.
    (Cross-entropy against uniform minus its floor log C, so logged losses stay readable.)"""
    log_probs = F.log_softmax(logits.float(), dim=1)
    return -log_probs.mean(dim=1).mean() - math.log(logits.shape[1])
