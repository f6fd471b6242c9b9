"""The two networks and the registry that builds them by name.

    >>> create_model("simple_cnn")       # the seed's network, 390,858 parameters
    >>> create_model("simple_cnn", options={"pool_first": True})   # the recipe's: ~1.4x faster to train
    >>> create_model("improved_cnn")     # residual CNN, 1.2M parameters

Adding a model: write an `nn.Module` whose constructor takes `num_classes`, then
decorate it with `@register_model("my_net")`. `train --model my_net` picks it up.
Its other constructor arguments are its options: a recipe's `model_options` sets them,
and the checkpoint records them, so that the file rebuilds the same network.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import UserError, shown_short, what_it_raised
from .plugins import PLUGIN_HINT

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


# A name becomes file and folder names (models/<name>_best.pth, runs/<name>_*): what would lead
# elsewhere (a separator, "..", a control character) or read as an option or a hidden file is refused.
_PATH_BREAKING = re.compile(r"[/\\\x00-\x1f\x7f]|\.\.|^[-.]|^\s|\s$")
# File names hold at most 255 bytes; checkpoints and run folders add a dataset, a date and more
MAX_NAME_BYTES = 100


def register_model(name: str):
    """Class decorator: make a model buildable by `create_model(name)`."""
    if not isinstance(name, str) or not name or _PATH_BREAKING.search(name) or len(name.encode()) > MAX_NAME_BYTES:
        raise UserError(f"model name {name!r} cannot be registered: it names files (models/<name>_best.pth), so it "
                        "may not hold '/', '\\', '..' or control characters, nor start with '-' or '.', nor start "
                        f"or end with a space, nor be longer than {MAX_NAME_BYTES} bytes")

    def add(factory):
        if name in MODEL_REGISTRY and MODEL_REGISTRY[name] is not factory:
            raise UserError(f"model name '{name}' is already registered (by {MODEL_REGISTRY[name].__module__}): "
                            "register yours under another name")
        MODEL_REGISTRY[name] = factory
        return factory

    return add


def create_model(name: str, num_classes: int = 10, options: Mapping[str, Any] | None = None) -> nn.Module:
    options = dict(options or {})
    check_model_options(name, options)
    try:
        model = MODEL_REGISTRY[name](num_classes=num_classes, **options)
    except Exception as error:  # noqa: BLE001 (a value the checks let through: width -1, a KeyError, an assert)
        shown = ", ".join(f"{key}={shown_short(value)}" for key, value in options.items())
        raise UserError(f"model '{name}' cannot be built with model_options {shown or '(none)'}: "
                        f"{what_it_raised(error)} (in {defined_in(MODEL_REGISTRY[name])})") from None
    if type(model) not in (SimpleCNN, ImprovedCNN):  # ours are known to answer right; one appended here is not
        check_answers_per_image(model, name, num_classes)
    return model


def check_answers_per_image(model: nn.Module, name: str, num_classes: int) -> None:
    """A model of the user's: one row of num_classes scores per 28x28 image, or a UserError naming
    its code (else training failed deep in the loss, and an export wrote a file nothing could load:
    helper-66; a forward that raised was a traceback: helper-79). A forward that needs a GPU is
    left to show itself where it runs."""
    was_training = model.training
    try:
        with torch.no_grad():  # not inference_mode: a lazy layer's first call makes its weights, which must train
            answer = model.eval()(torch.zeros(2, 1, 28, 28))
    except Exception as error:  # noqa: BLE001 (a plugin's forward may raise anything)
        if any(word in str(error) for word in ("CUDA", "cuda", "device")):
            return
        raise UserError(f"model '{name}' fails on a batch of 2 images of 28x28: {what_it_raised(error)} (in "
                        f"{defined_in(type(model))}); its forward must take (N, 1, 28, 28) and return (N, "
                        f"{num_classes}) scores") from None
    finally:
        model.train(was_training)
    shape = tuple(getattr(answer, "shape", ()))
    if shape != (2, num_classes):
        raise UserError(f"model '{name}' answers a batch of 2 images with shape {shape}, not (2, {num_classes}): its "
                        f"forward must return one row of {num_classes} scores per image (in {defined_in(type(model))})")


def defined_in(factory: Callable[..., Any]) -> str:
    """Where a model's code lives, for messages about it: its file, else its module."""
    try:
        return inspect.getsourcefile(factory) or factory.__module__
    except TypeError:  # built in C, or a lambda's module gone
        return getattr(factory, "__module__", "?")


# What a default's type says a value must be; bool before int (True is an int to Python).
_OPTION_TYPES = ((bool, (bool,), "true or false"), (int, (int,), "a whole number"),
                 (float, (int, float), "a number"), (str, (str,), "text"))


def check_model_options(name: str, options: Mapping[str, Any]) -> None:
    """A one-line UserError for an unknown model, an option its constructor does not take, or a
    value of another type than the option's default."""
    try:
        factory = MODEL_REGISTRY[name]
    except KeyError:
        choices = ", ".join(sorted(MODEL_REGISTRY))
        raise UserError(f"unknown model '{name}': choose one of {choices}; {PLUGIN_HINT}") from None
    known, open_ended = model_option_names(factory)
    for key, value in options.items():
        if not isinstance(key, str) or (key not in known and not open_ended):
            takes = f"its options are {', '.join(known)}" if known else "it takes none"
            raise UserError(f"model '{name}' has no option {shown_short(key)} in model_options: {takes}")
        default = known.get(key)
        for kind, allowed, words in _OPTION_TYPES:
            if isinstance(default, kind):
                if not isinstance(value, allowed) or (kind is not bool and isinstance(value, bool)):
                    raise UserError(f"model_options.{key} of model '{name}' must be {words}, got {shown_short(value)}")
                break


def model_option_names(factory: Callable[..., nn.Module]) -> tuple[dict[str, Any], bool]:
    """The keyword arguments a model's constructor takes besides num_classes, with their defaults,
    and whether it takes any other (a `**kwargs`)."""
    parameters = inspect.signature(factory).parameters.values()
    named = {p.name: p.default for p in parameters
             if p.name != "num_classes" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


QUARTER_RATES = (0.25, 0.5, 0.75)
_LANE_BITS = {torch.bfloat16: 16, torch.float16: 16, torch.float32: 32}
_SAME_SIZE_INT = {16: torch.int16, 32: torch.int32}


class QuarterDropout(nn.Dropout):
    """`nn.Dropout` for rates of 0.25, 0.5 and 0.75, its masks ~15x cheaper to draw on a CPU.

    torch's CPU `bernoulli_` draws a random number per element (~10 ns each on 2 cores;
    pytorch/pytorch#138199): SimpleCNN's two dropout masks took ~10% of a bf16 training
    step on an AMX Xeon (docs/benchmarks.md, 6 Dec). For a rate of k/4, two random bits
    per element are enough: the element is dropped when they spell a number below k.
    `dropout_scales` does that for a whole int64 of bits at once and writes the mask's
    values, 0 or 1/(1-p), straight into the element type's bits. Other rates, other
    devices, float64 and evaluation go through `nn.Dropout` unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.inplace or x.device.type != "cpu" or \
                self.p not in QUARTER_RATES or x.dtype not in _LANE_BITS:
            return super().forward(x)
        return x * dropout_scales(x.numel(), self.p, x.dtype).view(x.shape)


def dropout_scales(count: int, p: float, dtype: torch.dtype) -> torch.Tensor:
    """`count` values of `dtype`, each 0 with probability p (a multiple of 1/4), else 1/(1-p).

    An int64 holds 64 // bits lanes, one per output value; each lane's bits give the
    2-bit fields of bits // 2 values in turn (field f of every lane holds bits 2f and 2f + 1),
    so each value uses its own two random bits; `kept` is 1 in a lane's bit 0 where the
    field spells at least 4p, and multiplying by the scale's bit pattern fills the lane.
    """
    if p not in QUARTER_RATES:
        raise ValueError(f"dropout_scales draws rates of {QUARTER_RATES}, not {p}: use nn.Dropout")
    bits = _LANE_BITS[dtype]
    lane_bases = sum(1 << shift for shift in range(0, 64, bits))  # bit 0 of every lane
    draws = torch.empty(-(-count // (64 // 2)), 1, dtype=torch.int64).random_(-2**63, None)
    fields = draws >> torch.arange(0, bits, 2)  # (draws, fields_per_lane): low bit of each field
    kept = fields >> 1  # the field's high bit: the field is >= 2
    if p == 0.25:
        kept |= fields  # >= 1
    elif p == 0.75:
        kept &= fields  # == 3
    kept &= lane_bases
    scale_bits = torch.tensor(1 / (1 - p), dtype=dtype).view(_SAME_SIZE_INT[bits]).item()
    return (kept * scale_bits).view(dtype).reshape(-1)[:count]


@register_model("simple_cnn")
class SimpleCNN(nn.Module):
    """The seed's network, layer for layer, so its checkpoints load here.

    Each block is conv3x3 -> BatchNorm -> max-pool -> ReLU. The seed applies ReLU
    before the pool; ReLU is monotonic, so both orders compute the same function,
    and pooling first runs ReLU on a quarter of the values (~25% faster on CPU).

    `pool_first=True` (the `make train` recipe's) pools before the BatchNorm too. That is
    another function, with the same weights: BatchNorm then normalises a quarter of the
    values, which makes a CPU training step ~1.4x faster (docs/benchmarks.md, 6 Dec).
    """

    def __init__(self, num_classes: int = 10, pool_first: bool = False):
        super().__init__()
        self.pool_first = pool_first
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = QuarterDropout(0.25)
        self.fc1 = nn.Linear(128 * 3 * 3, 256)
        self.dropout2 = QuarterDropout(0.5)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = bn(self.pool(conv(x))) if self.pool_first else self.pool(bn(conv(x)))  # 28 -> 14 -> 7 -> 3
            x = torch.relu(x)
        x = self.dropout1(torch.flatten(x, 1))
        x = self.dropout2(torch.relu(self.fc1(x)))
        return self.fc2(x)


class ResidualBlock(nn.Module):
    """Two conv3x3-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register_model("improved_cnn")
class ImprovedCNN(nn.Module):
    """Residual CNN, 1.2M parameters: stem, three residual stages, global pooling.

    Resolution falls 28 -> 14 -> 7 -> 3 while width grows 32 -> 64 -> 128 -> 256, so
    most parameters sit where the feature maps are small and cheap to compute.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.stage1 = ResidualBlock(32, 64)
        self.stage2 = ResidualBlock(64, 128)
        self.stage3 = ResidualBlock(128, 256)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.pool(self.stem(x)))  # 28 -> 14
        x = self.pool(self.stage1(x))  # 14 -> 7
        x = self.pool(self.stage2(x))  # 7 -> 3
        x = self.stage3(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))
