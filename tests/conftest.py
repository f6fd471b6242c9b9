"""Shared fixtures: the real MNIST and Fashion-MNIST files (fetched once per machine) and small slices."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
# Accuracy recomputed independently (other batch sizes, other summation order) can tip
# an image whose top two classes are almost tied: allow two images of 10,000.
NEAR_TIES = 2.5e-4

# Headless everywhere: figures go to files, and Qt must not look for a display.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def mnist_raw_dir() -> Path:
    from mnist_classifier.sources import fetch_dataset

    return fetch_dataset(DATA_DIR, source="auto", log=lambda _line: None)


@pytest.fixture(scope="session")
def mnist_data(mnist_raw_dir):
    from mnist_classifier.data import load_data

    return load_data(DATA_DIR, log=lambda _line: None)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, mnist_raw_dir) -> Path:
    """A real SimpleCNN trained for one epoch on 8,000 real images (~98% accurate)."""
    from mnist_classifier.config import resolve_config
    from mnist_classifier.training import train

    folder = tmp_path_factory.mktemp("small_checkpoint")
    config = resolve_config(None, dict(limit_train=8000, epochs=1, batch_size=100, seed=3, data_dir=str(DATA_DIR),
                                       save_dir=str(folder / "models"), log_dir=str(folder / "runs")))
    return train(config, log=lambda _line: None).best_path


@pytest.fixture(scope="session")
def honest_checkpoint(tmp_path_factory, mnist_raw_dir) -> Path:
    """A real SimpleCNN that has learnt what a digit is not: the default recipe (uniform-pen
    digits, generated non-digits, calibration) for 2 epochs on 20,000 real images."""
    from mnist_classifier.config import resolve_config
    from mnist_classifier.training import train

    folder = tmp_path_factory.mktemp("honest_checkpoint")
    config = resolve_config(None, dict(limit_train=20_000, epochs=2, data_dir=str(DATA_DIR),
                                       save_dir=str(folder / "models"), log_dir=str(folder / "runs")))
    return train(config, log=lambda _line: None).best_path


@pytest.fixture(scope="session")
def debian_files() -> Path:
    """Debian's copy of the four original Fashion-MNIST .gz files, installed if missing and allowed."""
    from mnist_classifier.datasets import FASHION_MNIST
    from mnist_classifier.sources import debian

    package, folder = FASHION_MNIST.debian.name, Path(FASHION_MNIST.debian.directory)
    if not all((folder / f"{f.name}.gz").is_file() for f in FASHION_MNIST.files):
        if shutil.which("apt-get") is None or not debian._is_root():
            pytest.skip(f"needs Debian's {package}: run `sudo apt-get install -y {package}`")
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, capture_output=True, timeout=900)
    return folder


@pytest.fixture(scope="session")
def fashion_raw(debian_files) -> Path:
    """data/FashionMNIST/raw, verified (copied from the Debian package the first time)."""
    from mnist_classifier.sources import fetch_dataset

    return fetch_dataset(DATA_DIR, "auto", dataset="fashion-mnist", log=lambda _line: None)
