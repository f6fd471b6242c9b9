"""One resolved training configuration: dataclass defaults < YAML file < CLI flags.

The YAML files under `configs/` (shipped in the package; `--config NAME` names one) are the
recipes; they use the seed's key names (`model_name`, `batch_size`, `learning_rate`,
`epochs`, `weight_decay`, `seed`, `save_dir`, `save_interval`). Every key is a field of
`TrainConfig`; an unknown key is an error, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .datasets import get_dataset_spec
from .errors import UserError, shown_short
from .models import check_model_options
from .hardware import DEVICES, PRECISIONS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the wheel; `configs/` in a clone links here

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("onecycle", "cosine", "plateau", "none")
OUTLIER_TARGETS = ("uniform", "class", "energy")  # exposure.py
FOLDER_KEYS = ("data_dir", "save_dir", "log_dir")  # a leading ~ is the user's home, as in a shell


@dataclass
class TrainConfig:
    # model and data
    model_name: str = "simple_cnn"
    model_options: dict = dataclasses.field(default_factory=dict)  # the model's constructor arguments (models.py)
    dataset: str = "mnist"
    data_dir: str = "data"
    val_size: int = 5000  # last N training images, used for model selection only
    limit_train: int | None = None  # train on the first N images (quick runs)
    augment: bool = True  # batched random affine: shift, rotate, scale
    # honest answers, for datasets of drawings (exposure.py): digits re-drawn with a uniform pen,
    # and generated non-digits pushed towards a uniform guess
    pen_redraw: float = 0.25  # share of each batch's digits re-drawn along their skeleton
    paper_redraw: float = 0.25  # share shown as the preprocessing returns them when drawn on paper
    outlier_fraction: float = 0.125  # non-digits added per digit in a batch (16 to a batch of 128)
    outlier_weight: float = 0.5  # weight of their loss; 0 turns outlier exposure off
    outlier_target: str = "uniform"  # what non-digits learn: a "uniform" guess, a "not a digit" class, or a low "energy"
    fragment_share: float = 0.2  # of the non-digits, the pieces of digits' share (outliers.training_shares)
    # optimisation
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 6e-3  # peak LR for onecycle, the LR otherwise
    weight_decay: float = 5e-4
    optimizer: str = "adamw"
    scheduler: str = "onecycle"
    label_smoothing: float = 0.1
    weight_average: float = 0.0  # decay of the moving average of the weights that is saved and served; 0: off
    seed: int = 42
    # output
    save_dir: str = "models"
    log_dir: str = "runs"
    save_interval: int = 5  # a timestamped full-state checkpoint every N epochs
    # hardware
    device: str = "auto"  # hardware.py: CUDA, then MPS, then XPU, else the CPU
    precision: str = "auto"  # hardware.py: bf16 autocast where the hardware computes bf16, else fp32
    num_threads: int | None = None  # None: torch's default, one per physical core (split across torchrun ranks)
    sync_batchnorm: bool = False  # only under torchrun, on GPUs

    def validate(self) -> "TrainConfig":
        """Raise a one-line UserError for any value that cannot work."""
        for field in dataclasses.fields(self):
            _check_type(field.name, field.type, getattr(self, field.name))
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "save_interval": self.save_interval}
        for key, value in positive.items():  # whole numbers already (_check_type)
            if value <= 0:
                raise UserError(f"{key} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise UserError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.weight_decay < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for key in ("limit_train", "num_threads"):  # None: no limit, torch's own thread count
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise UserError(f"{key} must be a positive integer (or left out), got {getattr(self, key)!r}")
        for key in ("pen_redraw", "paper_redraw", "outlier_fraction", "fragment_share"):
            if not 0 <= getattr(self, key) <= 1:
                raise UserError(f"{key} must be between 0 and 1, got {getattr(self, key)!r}")
        if self.outlier_weight < 0:
            raise UserError(f"outlier_weight must be >= 0 (0 turns outlier exposure off), got {self.outlier_weight!r}")
        if self.val_size < 1:  # it picks the best epoch and calibrates the model
            raise UserError(f"val_size must be at least 1 (the validation split picks the best epoch and "
                            f"calibrates the model), got {self.val_size!r}")
        for key in ("data_dir", "save_dir", "log_dir"):
            if not getattr(self, key).strip():
                raise UserError(f"{key} must name a folder, got an empty one (an unset shell variable?)")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed!r}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label_smoothing must be at least 0 and below 1, got {self.label_smoothing!r}")
        if not 0 <= self.weight_average < 1:
            raise UserError(f"weight_average must be at least 0 (off) and below 1, e.g. 0.99, "
                            f"got {self.weight_average!r}")
        check_model_options(self.model_name, self.model_options)
        get_dataset_spec(self.dataset)
        _check_choice("outlier_target", self.outlier_target, OUTLIER_TARGETS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The field types TrainConfig uses, as `from __future__ import annotations` leaves them: strings.
_FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,)}
_TYPE_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
               "dict": "a mapping (e.g. {pool_first: true})"}


def _check_type(key: str, annotation: str, value: Any) -> None:
    """A YAML `"0.01"` or `yes` in the wrong place: one line, not a TypeError deep in training."""
    kind, _, optional = annotation.partition(" | ")
    if value is None and optional == "None":
        return
    wanted = _FIELD_TYPES[kind]
    if isinstance(value, bool) != (kind == "bool") or not isinstance(value, wanted):
        hint = "; write numbers without quotes" if isinstance(value, str) and kind in ("int", "float") else ""
        raise UserError(f"{key} must be {_TYPE_WORDS[kind]}, got {shown_short(value)}{hint}")
    if kind == "float" and not math.isfinite(value):
        raise UserError(f"{key} must be a finite number, got {value!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def default_config_path(model_name: str, dataset: str = "mnist") -> Path | None:
    """configs/<model>_<dataset>.yaml when the dataset has its own recipe, else configs/<model>.yaml:
    the package's recipes first, then those in ./configs (where a model of your own keeps its recipe
    when the package is pip-installed)."""
    names = ([f"{model_name}_{dataset}.yaml"] if dataset != "mnist" else []) + [f"{model_name}.yaml"]
    candidates = [folder / name for folder in (CONFIG_DIR, Path("configs")) for name in names]
    return next((path for path in candidates if path.is_file()), None)


def shipped_recipes() -> list[str]:
    """The recipes the package carries, by name: what `--config NAME` accepts besides a file."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A YAML file as named, else the shipped recipe of that name (`seed_recipe` or `seed_recipe.yaml`)."""
    path = Path(name_or_path).expanduser()
    shipped = CONFIG_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.is_file() or len(path.parts) != 1 or not shipped.is_file():
        return path
    return shipped


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    path = recipe_path(path)
    if path.is_dir():
        raise UserError(f"config {path} is a folder: name a YAML file in it, or a recipe "
                        f"({', '.join(shipped_recipes())})")
    if not path.is_file():
        raise UserError(f"config file {path} not found: pass an existing YAML file to --config, "
                        f"or the name of a shipped recipe ({', '.join(shipped_recipes())})")
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Numbers) or {}
    except UnicodeDecodeError:
        hint = "; a .pth is continued with --resume" if path.suffix == ".pth" else ""
        raise UserError(f"config file {path} is not a YAML text file (not UTF-8){hint}") from None
    except _DuplicateKey as error:
        raise UserError(f"config file {path}: {error}: keep one") from None
    except yaml.constructor.ConstructorError as error:  # a !!python/object tag: valid YAML, refused on purpose
        raise UserError(f"config file {path}: {error.problem} (line {error.problem_mark.line + 1}): a recipe holds "
                        "plain values only (numbers, text, true/false, mappings)") from None
    except yaml.YAMLError as error:
        raise UserError(f"config file {path} is not valid YAML ({error.__class__.__name__}): fix its syntax") from None
    except (ValueError, OverflowError, KeyError, IndexError, AttributeError, TypeError) as error:
        # a tagged value PyYAML cannot build: !!int "abc", a 13th month, !!bool "x", !!set [1, 2] (helper-82, helper-83)
        raise UserError(f"config file {path} holds a value that cannot be read ({error}): fix it") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values")
    return values


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, first_line: int, second_line: int):
        super().__init__(f"{key} is set twice (lines {first_line} and {second_line})")


class _Yaml12Numbers(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-3` (an exponent without a dot) is text; YAML 1.2, and
    everyone writing a learning rate, means the number. A key set twice is refused: PyYAML would
    keep the last value without a word, and a recipe's first value would be silently ignored."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[str, int] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":  # merges may override
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_lines:
                raise _DuplicateKey(key_node.value, first_lines[key_node.value], line)
            first_lines[key_node.value] = line
        return super().construct_mapping(node, deep)


_Yaml12Numbers.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                     list("-+.0123456789"))


def resolve_config(
    config_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Merge defaults, the YAML recipe and the flags that were actually given.

    Without --config, the recipe is configs/<model_name>.yaml for the model named by
    the flags (or the default model).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if config_path is None:
        config_path = default_config_path(overrides.get("model_name", TrainConfig.model_name),
                                          overrides.get("dataset", TrainConfig.dataset))
    values = read_yaml_config(config_path) if config_path else {}
    recipe_model = values.get("model_name", TrainConfig.model_name)
    if overrides.get("model_name", recipe_model) != recipe_model:
        values.pop("model_options", None)  # --model names another network: the recipe's options are its model's
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(map(str, set(values) - known))  # YAML reads `yes:` or `1:` as a bool or a number
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(unknown)}: valid keys are {', '.join(sorted(known))}")
    for key in FOLDER_KEYS:  # `save_dir: ~/models` in a YAML file made a folder named "~" here (helper-94)
        if isinstance(values.get(key), str) and values[key].startswith("~"):
            values[key] = str(Path(values[key]).expanduser())
    return TrainConfig(**values).validate()


def left_to_defaults(config_path: str | Path, config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (the default used, the model's recipe's value)} for what a --config file does not set
    and the recipe sets otherwise: a file holding `epochs: 1` replaces the recipe, it does not amend it."""
    recipe, named = default_config_path(config.model_name, config.dataset), Path(recipe_path(config_path)).resolve()
    if recipe is None or named == recipe.resolve() or named.parent == CONFIG_DIR.resolve():
        return {}  # the model's recipe itself, or another shipped one (seed_recipe differs on purpose)
    given = read_yaml_config(config_path)
    return {key: (getattr(config, key), value) for key, value in read_yaml_config(recipe).items()
            if key not in given and key != "model_name" and getattr(config, key) != value}


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild the config stored in a checkpoint, ignoring keys a newer version added."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in values.items() if k in known}
    if "outlier_weight" in values:  # trained before outlier_target existed: non-digits learnt a uniform guess
        values.setdefault("outlier_target", "uniform")
    if "pen_redraw" in values:  # trained before paper_redraw existed: no digit came through the preprocessing
        values.setdefault("paper_redraw", 0.0)
    return TrainConfig(**values)
