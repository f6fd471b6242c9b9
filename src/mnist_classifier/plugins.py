"""Models and metrics that live outside this package, imported by name before a command runs.

    PYTHONPATH=. MNIST_CLASSIFIER_PLUGINS=my_models mnist-classifier train --model tiny_mlp

A plugin is any importable module whose import registers something (`@register_model`,
`@register_metric`). Every command imports them first, so `evaluate`, `predict`, `export`
and the demos can rebuild a checkpoint of a plugin model as well as `train` can.
"""
from __future__ import annotations

import importlib
import os

from .errors import UserError

PLUGINS_ENV = "MNIST_CLASSIFIER_PLUGINS"  # comma-separated module names


def import_plugins() -> list[str]:
    """Import every module named in $MNIST_CLASSIFIER_PLUGINS; returns their names."""
    names = [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise UserError(f"{PLUGINS_ENV} names '{name}', which cannot be imported ({error}): "
                            "put its folder on PYTHONPATH or fix the name") from None
    return names
