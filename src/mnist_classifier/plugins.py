"""Models and metrics that live outside this package, imported by name before a command runs.

    PYTHONPATH=. MNIST_CLASSIFIER_PLUGINS=my_models mnist-classifier train --model tiny_mlp

A plugin is any importable module whose import registers something (`@register_model`,
`@register_metric`). Every command imports them first, so `evaluate`, `predict`, `export`
and the demos can rebuild a checkpoint of a plugin model as well as `train` can.
"""
from __future__ import annotations

import importlib
import os
import traceback

from .errors import UserError

PLUGINS_ENV = "MNIST_CLASSIFIER_PLUGINS"  # comma-separated module names
# Appended to "unknown model" errors: a checkpoint of a plugin model names a model this process never imported.
PLUGIN_HINT = (f"a model of your own is known once {PLUGINS_ENV} names the module that registers it "
               "(or once Python code imports that module)")


def import_plugins() -> list[str]:
    """Import every module named in $MNIST_CLASSIFIER_PLUGINS; returns their names."""
    names = [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            if _is_the_plugin(error, name):
                raise UserError(f"{PLUGINS_ENV} names '{name}', which cannot be imported ({error}): "
                                "put its folder on PYTHONPATH or fix the name") from None
            raise UserError(f"plugin '{name}' (from {PLUGINS_ENV}) was found but its import failed ({error}): "
                            "install what it imports") from None
        except UserError as error:  # e.g. it registers a name that is taken
            raise UserError(f"plugin '{name}' (from {PLUGINS_ENV}): {error}") from None
        except Exception as error:  # its own code failed: a syntax error, an exception at import
            raise UserError(f"plugin '{name}' (from {PLUGINS_ENV}) failed to import: {_where(error)}"
                            f"{type(error).__name__}: {error}; fix it, or drop it from {PLUGINS_ENV}") from None
    return names


def _where(error: Exception) -> str:
    """'file.py, line 3: ' of the plugin's own line that failed (a SyntaxError names it in its text)."""
    if isinstance(error, SyntaxError):
        return ""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{frames[-1].filename}, line {frames[-1].lineno}: " if frames else ""


def _is_the_plugin(error: ImportError, name: str) -> bool:
    """Whether the module named is what is missing (or a package above it), not one it imports."""
    missing = getattr(error, "name", None)
    return missing is None or missing == name or name.startswith(f"{missing}.")
