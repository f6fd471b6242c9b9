"""Registry of the datasets the project can train on.

Adding a dataset means adding one `DatasetSpec` entry below: its IDX files with
their SHA-256 (of the uncompressed bytes), where to fetch them, its class names and
its normalisation constants. Nothing else in the code changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class IdxFile:
    name: str  # file name without .gz, torchvision's layout
    sha256: str  # of the uncompressed bytes
    size: int  # uncompressed bytes


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

    @property
    def files(self) -> tuple[IdxFile, IdxFile, IdxFile, IdxFile]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


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
)

DATASETS: dict[str, DatasetSpec] = {MNIST.name: MNIST}


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        choices = ", ".join(sorted(DATASETS))
        raise UserError(f"unknown dataset '{name}': choose one of {choices}") from None
