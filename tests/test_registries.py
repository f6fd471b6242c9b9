"""The registries: datasets, models (and sources per dataset); a model from outside the package.

The custom-metric path (one function, one entry, in metrics.json and report.html) is
tested in test_evaluation.py::test_a_registered_metric_reaches_json_and_html.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap

import pytest
import torch

import mnist_classifier
from mnist_classifier import models
from mnist_classifier.augment import AUGMENTATIONS
from mnist_classifier.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mnist_classifier.cli import main
from mnist_classifier.config import resolve_config
from mnist_classifier.datasets import DATASETS, SOURCE_NAMES, get_dataset_spec
from mnist_classifier.demo import server
from mnist_classifier.errors import UserError
from mnist_classifier.plugins import PLUGINS_ENV
from mnist_classifier.preprocess import FRAMINGS
from mnist_classifier.sources import fetch_dataset

from .conftest import DATA_DIR

# ------------------------------------------------------------------ lookups and errors


def test_unknown_dataset_lists_the_choices(capsys):
    with pytest.raises(UserError, match="^unknown dataset 'cifar10': choose one of fashion-mnist, mnist$"):
        get_dataset_spec("cifar10")
    assert main(["data", "--dataset", "cifar10"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown dataset 'cifar10': choose one of fashion-mnist, mnist"


def test_unknown_model_lists_the_choices(tmp_path, capsys):
    with pytest.raises(UserError, match="^unknown model 'resnet9': choose one of improved_cnn, simple_cnn"):
        models.create_model("resnet9")
    assert main(["train", "--model", "resnet9", "--save-dir", str(tmp_path / "m"), "--log-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet9': choose one of improved_cnn, simple_cnn" in err
    assert not (tmp_path / "r").exists()  # refused before any work


def test_a_model_name_cannot_be_registered_twice():
    with pytest.raises(UserError, match="^model name 'simple_cnn' is already registered "
                                        r"\(by mnist_classifier.models\): register yours under another name$"):
        models.register_model("simple_cnn")(torch.nn.Identity)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_entry_is_complete(name):
    spec = get_dataset_spec(name)
    assert spec.sources[0] == "local" and set(spec.sources) <= set(SOURCE_NAMES)
    assert ("pypi" in spec.sources) == (spec.pypi is not None)
    assert ("debian" in spec.sources) == (spec.debian is not None)
    assert len(spec.class_names) == len(set(spec.class_names)) == 10
    assert 0 < spec.mean < 1 and 0 < spec.std < 1
    assert len({f.sha256 for f in spec.files}) == 4 and all(len(f.sha256) == 64 for f in spec.files)
    assert all(url.startswith("https://") for url in spec.mirrors)
    assert spec.augmentation in AUGMENTATIONS and spec.framing in FRAMINGS


def test_an_unknown_augmentation_stops_training_before_it_starts(monkeypatch, tmp_path, mnist_raw_dir, capsys):
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], augmentation="swirl"))
    status = main(["train", "--epochs", "1", "--limit-train", "500", "--data-dir", str(DATA_DIR),
                   "--save-dir", str(tmp_path / "models"), "--log-dir", str(tmp_path / "runs")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status != 0 and "augmentation 'swirl'" in error and "affine, crop_flip" in error
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_source_the_dataset_does_not_have_is_refused(tmp_path, capsys):
    with pytest.raises(UserError, match="fashion-mnist cannot come from 'pypi': choose one of auto, local, mirror, debian"):
        fetch_dataset(tmp_path, "pypi", dataset="fashion-mnist")
    assert main(["data", "--data-dir", str(tmp_path), "--dataset", "mnist", "--source", "debian"]) == 2
    assert "mnist cannot come from 'debian'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ a model from outside

PLUGIN = '''
"""A model that lives outside mnist_classifier: one class, one registry entry."""
from torch import nn

from mnist_classifier.models import register_model


@register_model("tiny_mlp_plugin")
class TinyMLP(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.net(x)
'''


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    """The module above written to a folder on sys.path and named in $MNIST_CLASSIFIER_PLUGINS."""
    (tmp_path / "my_models_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(PLUGINS_ENV, "my_models_plugin")
    yield "tiny_mlp_plugin"
    models.MODEL_REGISTRY.pop("tiny_mlp_plugin", None)
    sys.modules.pop("my_models_plugin", None)


def test_a_model_from_outside_the_package_trains_and_evaluates_by_the_cli(plugin, tmp_path, mnist_raw_dir, capsys,
                                                                          monkeypatch):
    assert plugin not in models.MODEL_REGISTRY  # only the CLI's plugin import registers it
    status = main(["train", "--model", plugin, "--epochs", "1", "--limit-train", "2000", "--batch-size", "100",
                   "--data-dir", str(DATA_DIR), "--save-dir", str(tmp_path / "models"),
                   "--log-dir", str(tmp_path / "runs")])
    assert status == 0, capsys.readouterr().err
    best = load_checkpoint(tmp_path / "models" / f"{plugin}_best.pth")
    # no configs/tiny_mlp_plugin.yaml: the defaults of config.py, with the flags on top
    assert best["model_name"] == plugin and best["config"]["epochs"] == 1
    assert best["config"]["learning_rate"] == resolve_config(None, {}).learning_rate
    # a 50k-parameter MLP after 20 steps, some of each spent on non-digits; chance is 0.10
    assert best["test_accuracy"] > 0.6
    assert f"note: no recipe configs/{plugin}.yaml: config.py's defaults and your flags" in capsys.readouterr().out
    best_path = tmp_path / "models" / f"{plugin}_best.pth"
    status = main(["evaluate", "--checkpoint", str(best_path), "--out", str(tmp_path / "report"),
                   "--data-dir", str(DATA_DIR)])
    assert status == 0 and (tmp_path / "report" / "metrics.json").is_file()
    # A fresh process (load() in a script, a spawned serve worker) has not imported the plugin yet
    monkeypatch.setenv(server.CHECKPOINT_ENV, str(best_path))
    monkeypatch.setattr(server, "tune_process", lambda: None)  # its process-wide settings would slow this one
    for fresh_start in (lambda: mnist_classifier.load(best_path), server.app_from_environment):
        models.MODEL_REGISTRY.pop(plugin)
        sys.modules.pop("my_models_plugin")
        assert fresh_start() is not None and plugin in models.MODEL_REGISTRY


def test_without_its_plugin_a_models_checkpoint_says_how_to_make_it_known(plugin, tmp_path, capsys):
    importlib.import_module("my_models_plugin")

    model = models.create_model(plugin)
    path = save_checkpoint({"model_state_dict": model.state_dict(), "model_name": plugin}, tmp_path / "mine.pth")
    models.MODEL_REGISTRY.pop(plugin)
    with pytest.raises(UserError, match=f"unknown model '{plugin}': known models are improved_cnn, simple_cnn; "
                                        f"a model of your own is known once {PLUGINS_ENV} names the module"):
        model_from_checkpoint(load_checkpoint(path), path)


def test_a_plugin_model_takes_its_own_config_file(plugin, tmp_path):
    importlib.import_module("my_models_plugin")  # what the CLI does before every command

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"model_name: {plugin}\nepochs: 4\nlearning_rate: 0.002\naugment: false\n")
    config = resolve_config(recipe, {})
    assert (config.model_name, config.epochs, config.learning_rate, config.augment) == (plugin, 4, 0.002, False)


def test_a_plugin_that_cannot_be_imported_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv(PLUGINS_ENV, "no_such_module_here")
    assert main(["train", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {PLUGINS_ENV} names 'no_such_module_here', which cannot be imported")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("source, expected", [
    ("import no_such_dependency_xyz\n", "error: plugin 'broken_plugin' (from MNIST_CLASSIFIER_PLUGINS) was found but "
     "its import failed (No module named 'no_such_dependency_xyz'): install what it imports"),
    ("from mnist_classifier.models import register_model\nregister_model('simple_cnn')(object)\n",
     "error: plugin 'broken_plugin' (from MNIST_CLASSIFIER_PLUGINS): model name 'simple_cnn' is already registered "
     "(by mnist_classifier.models): register yours under another name"),
])
def test_a_plugin_that_fails_inside_says_what_to_fix(tmp_path, monkeypatch, capsys, source, expected):
    assert train_with_plugin(source, tmp_path, monkeypatch) == 2
    assert capsys.readouterr().err.strip() == expected


def train_with_plugin(source: str, folder, monkeypatch) -> int:
    """`train` with $MNIST_CLASSIFIER_PLUGINS naming a module of this source; its exit status."""
    (folder / "broken_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(PLUGINS_ENV, "broken_plugin")
    try:
        return main(["train", "--epochs", "1"])
    finally:
        sys.modules.pop("broken_plugin", None)


def test_a_recipe_in_the_working_folder_is_read_for_a_model_of_your_own(plugin, tmp_path, monkeypatch):
    importlib.import_module("my_models_plugin")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{plugin}.yaml").write_text(f"model_name: {plugin}\nepochs: 5\nlearning_rate: 0.002\n")
    config = resolve_config(None, {"model_name": plugin})
    assert (config.epochs, config.learning_rate) == (5, 0.002)
    assert resolve_config(None, {}).epochs == 4  # the shipped simple_cnn recipe still comes from the package


@pytest.mark.parametrize("source, said", [
    ("def f(:\n", "failed to import: SyntaxError: "),
    ("raise RuntimeError('boom')\n", "broken_plugin.py, line 1: RuntimeError: boom; fix it, or drop it from"),
])
def test_a_plugin_whose_own_code_fails_is_one_line_naming_where(tmp_path, monkeypatch, capsys, source, said):
    assert train_with_plugin(source, tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: plugin 'broken_plugin' (from {PLUGINS_ENV}) failed to import: ") and said in err
    assert len(err.splitlines()) == 1
