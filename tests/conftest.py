"""Shared fixtures: the real MNIST files (fetched once per machine) and small slices."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"

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
