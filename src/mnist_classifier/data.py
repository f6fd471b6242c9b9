"""MNIST in memory: one uint8 tensor per split, and a batch iterator.

The whole training set is 47 MB as uint8, so it stays in memory (on the GPU when
training there). Batches are gathered by index, scaled, augmented and normalised as
whole tensors: no per-sample Python, no DataLoader workers. This is what makes
training ~3x faster than a per-sample `Dataset` + `DataLoader` on a laptop CPU.

The sets that exist only on this machine (datasets.LOCAL_DATASETS, e.g. the user's
labelled drawings) come in as one `Split` too: `load_local_split`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from .augment import AUGMENTATIONS
from .datasets import DatasetSpec, LocalDataset, get_dataset_spec
from .errors import UserError
from .sources import fetch_dataset, load_arrays


@dataclass
class Split:
    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, count: int) -> "Split":
        return Split(self.images[:count], self.labels[:count])


@dataclass
class DataSplits:
    train: Split
    val: Split  # the last `val_size` training images: model selection only
    test: Split  # touched once, after training
    spec: DatasetSpec
    train_available: int  # training images before --limit-train took its share


@dataclass(frozen=True)
class Normalization:
    mean: float
    std: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


def load_data(
    data_dir: str | Path = "data",
    dataset: str = "mnist",
    val_size: int = 5000,
    limit_train: int | None = None,
    source: str = "auto",
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> DataSplits:
    """Train/validation/test splits of a verified dataset; `log` and `warn` as in `sources.fetch_dataset`."""
    spec = get_dataset_spec(dataset)
    raw_dir = fetch_dataset(data_dir, source=source, dataset=dataset, log=log, warn=warn)
    train_x, train_y, test_x, test_y = load_arrays(raw_dir, spec)
    train = Split(torch.from_numpy(train_x), torch.from_numpy(train_y))
    if not 0 < val_size < len(train):
        raise UserError(f"val_size {val_size:,} leaves no room in {spec.name}'s {len(train):,} training images: "
                        f"choose between 1 and {len(train) - 1:,} (the recipes hold out 5,000)")
    cut = len(train) - val_size
    fit, val = train.head(cut), Split(train.images[cut:], train.labels[cut:])
    return DataSplits(fit.head(limit_train) if limit_train is not None else fit, val,
                      Split(torch.from_numpy(test_x), torch.from_numpy(test_y)), spec, train_available=len(fit))


def load_local_split(local: LocalDataset, folder: str | Path, warn: Callable[[str], None] = print) -> Split:
    """Every readable item of a LocalDataset kept in `folder` (possibly none), as one Split."""
    images, labels = local.read(Path(folder), warn)
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def to_model_input(images: torch.Tensor, norm: Normalization, generator: torch.Generator | None = None,
                   augmentation: str = "affine") -> torch.Tensor:
    """uint8 (B, 28, 28) -> normalised float (B, 1, 28, 28), augmented (augment.AUGMENTATIONS) if a generator is given."""
    batch = images.unsqueeze(1).float().div_(255.0)
    if generator is not None:
        batch = AUGMENTATIONS[augmentation].transform(batch, generator)
    return batch.sub_(norm.mean).div_(norm.std)


def epoch_order(size: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The shuffled order of one epoch: a function of (seed, epoch) only.

    Deriving it from the epoch number, not from a running RNG, is what lets a resumed
    run (or every rank of a torchrun job) see exactly the batches an unbroken run sees.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=generator).to(device)


def training_batches(
    order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[torch.Tensor]:
    """The indices of full global batches in `order`; each rank takes every world_size-th of each.

    The incomplete last batch is dropped (the next epoch reshuffles), so every step
    has the same global batch and every rank the same number of steps.
    """
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield order[start : start + batch_size][rank::world_size]


def eval_batches(split: Split, batch_size: int = 1000) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
