import pytest
import torch

from mnist_classifier.checkpoint import model_from_checkpoint
from mnist_classifier.errors import CheckpointError, UserError
from mnist_classifier.models import MODEL_REGISTRY, QuarterDropout, count_parameters, create_model, dropout_scales


def test_simple_cnn_matches_the_seed_layer_for_layer():
    model = create_model("simple_cnn")
    assert count_parameters(model) == 390_858
    names = [name for name, _ in model.named_children()]
    for layer in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "fc1", "fc2"):
        assert layer in names
    assert model.fc1.in_features == 1152 and model.fc1.out_features == 256


def test_improved_cnn_is_residual_and_about_1_2m_parameters():
    model = create_model("improved_cnn")
    assert 1_100_000 <= count_parameters(model) <= 1_300_000
    assert any("shortcut" in name for name, _ in model.named_modules())


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_model_maps_a_batch_to_ten_logits(name):
    model = create_model(name).eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_pool_before_relu_computes_the_seed_order():
    model = create_model("simple_cnn").eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        seed_order = x
        for conv, bn in ((model.conv1, model.bn1), (model.conv2, model.bn2), (model.conv3, model.bn3)):
            seed_order = model.pool(torch.relu(bn(conv(seed_order))))
        seed_logits = model.fc2(torch.relu(model.fc1(torch.flatten(seed_order, 1))))
        assert torch.allclose(model(x), seed_logits, atol=1e-5)


def test_pool_first_is_another_network_on_the_same_weights():
    seed_order = create_model("simple_cnn")
    pool_first = create_model("simple_cnn", options={"pool_first": True})
    pool_first.load_state_dict(seed_order.state_dict())
    x = torch.randn(16, 1, 28, 28)
    outputs = []
    for model in (seed_order, pool_first):
        torch.manual_seed(0)  # the same dropout masks
        outputs.append(model.train()(x))
    # BatchNorm's batch statistics come from four times as many values in the seed's order
    assert not torch.allclose(*outputs, atol=1e-3)
    with torch.no_grad():  # pool_first: the convolution's output pooled, then normalised
        torch.manual_seed(0)
        by_hand = x
        for conv, bn in ((pool_first.conv1, pool_first.bn1), (pool_first.conv2, pool_first.bn2),
                         (pool_first.conv3, pool_first.bn3)):
            by_hand = torch.relu(bn(pool_first.pool(conv(by_hand))))
        by_hand = pool_first.dropout2(torch.relu(pool_first.fc1(pool_first.dropout1(torch.flatten(by_hand, 1)))))
        assert torch.allclose(pool_first.fc2(by_hand), outputs[1], atol=1e-5)


def test_a_checkpoint_rebuilds_the_network_its_options_name():
    trained = create_model("simple_cnn", options={"pool_first": True})
    with torch.no_grad():
        trained.bn1.weight[::2] *= -1  # negative scales: there the two orders differ even in eval mode
    payload = {"model_name": "simple_cnn", "model_state_dict": trained.state_dict(),
               "model_options": {"pool_first": True}}
    x = torch.randn(4, 1, 28, 28)
    rebuilt = model_from_checkpoint(payload)
    assert rebuilt.pool_first and torch.equal(rebuilt(x), trained.eval()(x))
    older = model_from_checkpoint({key: value for key, value in payload.items() if key != "model_options"})
    assert not older.pool_first  # a file without options is the seed's network, as it was trained
    assert not torch.allclose(older(x), rebuilt(x), atol=1e-3)


@pytest.mark.parametrize("options, problem", [
    ({"pool_frist": True}, "model 'simple_cnn' has no option 'pool_frist' in model_options: its options are pool_first"),
    ({"pool_first": "yes"}, "model_options.pool_first of model 'simple_cnn' must be true or false, got 'yes'"),
    ("pool_first", "its model_options are str, not a mapping"),
])
def test_a_checkpoint_with_options_the_model_cannot_take_is_one_line(options, problem):
    payload = {"model_name": "simple_cnn", "model_state_dict": create_model("simple_cnn").state_dict(),
               "model_options": options}
    with pytest.raises(CheckpointError) as error:
        model_from_checkpoint(payload, "x.pth")
    assert str(error.value) == (f"x.pth: its model_options do not fit model 'simple_cnn' ({problem}): the file is "
                                "damaged or mislabelled, or made by a newer mnist-classifier; retrain, restore it "
                                "or upgrade")


def test_unknown_model_lists_the_choices():
    with pytest.raises(UserError, match="simple_cnn") as error:
        create_model("resnet9000")
    assert "improved_cnn" in str(error.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_quarter_dropout_masks_are_bernoulli_with_independent_positions(p, dtype):
    torch.manual_seed(0)
    count = 32 * 40_000  # each draw of 64 bits makes the masks of 32 values
    scales = dropout_scales(count, p, dtype)
    assert scales.dtype == dtype and scales.shape == (count,)
    keep_value = torch.tensor(1 / (1 - p), dtype=dtype)  # what nn.Dropout multiplies by
    assert torch.all((scales == 0) | (scales == keep_value))
    dropped = (scales == 0).view(-1, 32).double()
    # Every position within a draw drops at rate p, and every pair of positions drops
    # together at rate p * p: a lane or field read twice, or a sign bit read as data, would not.
    sigma = (p * (1 - p) / dropped.shape[0]) ** 0.5
    assert torch.all((dropped.mean(0) - p).abs() < 5 * sigma)
    together = dropped.T @ dropped / dropped.shape[0]
    off_diagonal = ~torch.eye(32, dtype=torch.bool)
    pair_sigma = (p * p * (1 - p * p) / dropped.shape[0]) ** 0.5
    assert torch.all((together[off_diagonal] - p * p).abs() < 5 * pair_sigma)


def test_quarter_dropout_scales_forward_and_gradient_by_the_same_mask():
    layer = QuarterDropout(0.25)
    x = (torch.rand(64, 300) + 0.5).requires_grad_()
    torch.manual_seed(3)
    y = layer(x)
    dropped = y == 0
    scale = torch.tensor(4 / 3)
    assert 0.2 < dropped.float().mean() < 0.3
    assert torch.equal(y[~dropped], x[~dropped] * scale)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.where(dropped, 0.0, scale))
    torch.manual_seed(3)
    assert torch.equal(layer(x), y), "the masks follow torch's seed"
    layer.eval()
    assert torch.equal(layer(x), x)


def test_quarter_dropout_leaves_other_rates_to_torch():
    x = torch.randn(32, 100)
    torch.manual_seed(5)
    ours = QuarterDropout(0.2)(x)
    torch.manual_seed(5)
    assert torch.equal(ours, torch.nn.Dropout(0.2)(x))
    with pytest.raises(ValueError, match="0.2"):  # never a 0.5 mask in its place
        dropout_scales(100, 0.2, torch.float32)


def test_the_recipes_network_is_recorded_in_its_checkpoint_and_rebuilt_from_it(small_checkpoint):
    from mnist_classifier.checkpoint import load_checkpoint, load_model

    payload = load_checkpoint(small_checkpoint)
    assert payload["model_options"] == {"pool_first": True} == payload["config"]["model_options"]
    model, _ = load_model(small_checkpoint)
    assert model.pool_first


class _WidthOption(torch.nn.Module):
    """A model whose option is a whole number, as a plugin's might be."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, width),
                                       torch.nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


class _AnyOption(torch.nn.Module):
    def __init__(self, num_classes: int = 10, **options):
        super().__init__()
        self.options = options
        self.fc = torch.nn.Linear(784, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture
def option_models(monkeypatch):
    monkeypatch.setitem(MODEL_REGISTRY, "width_option", _WidthOption)
    monkeypatch.setitem(MODEL_REGISTRY, "any_option", _AnyOption)


@pytest.mark.parametrize("width, problem", [
    ("abc", "model_options.width of model 'width_option' must be a whole number, got 'abc'"),
    (True, "model_options.width of model 'width_option' must be a whole number, got True"),
    (16.5, "model_options.width of model 'width_option' must be a whole number, got 16.5"),
    (-1, "model 'width_option' cannot be built with model_options width=-1: "),
])
def test_an_option_value_the_constructor_cannot_take_is_one_line(option_models, width, problem):
    with pytest.raises(UserError) as error:
        create_model("width_option", options={"width": width})
    assert str(error.value).startswith(problem) and "\n" not in str(error.value)
    assert create_model("width_option", options={"width": 16}).net[1].out_features == 16


def test_a_constructor_taking_any_keyword_takes_any_option(option_models):
    assert create_model("any_option", options={"width": 32}).options == {"width": 32}


class _SevenAnswers(torch.nn.Module):
    """A plugin's slip: seven scores per image for a ten-class dataset."""

    def __init__(self, num_classes: int = 10, act: str = "relu"):
        super().__init__()
        self.act = {"relu": torch.nn.ReLU(), "gelu": torch.nn.GELU()}[act]
        self.fc = torch.nn.Linear(784, 7)

    def forward(self, x):
        return self.act(self.fc(x.flatten(1)))


def test_a_plugins_slips_are_one_line_naming_its_code(monkeypatch):
    """helper-66: a forward of the wrong shape failed deep in training's loss (and `export` wrote an
    ONNX file nothing could load); a KeyError in a constructor was a traceback."""
    monkeypatch.setitem(MODEL_REGISTRY, "seven", _SevenAnswers)
    with pytest.raises(UserError, match=r"^model 'seven' answers a batch of 2 images with shape \(2, 7\), not "
                                        r"\(2, 10\): .*\(in .*test_models\.py\)$"):
        create_model("seven")
    with pytest.raises(UserError, match=r"^model 'seven' cannot be built with model_options act='swish': "
                                        r"KeyError: 'swish' \(in .*test_models\.py\)$"):
        create_model("seven", options={"act": "swish"})


@pytest.mark.parametrize("name", ["../escaped", "nets/mlp", "a\\b", "", "-x", ".hidden", " padded ", "m" * 101])
def test_a_model_name_that_would_make_odd_paths_is_refused(name):
    """It names files and folders (models/<name>_best.pth, runs/<name>_*): `../escaped` wrote outside --save-dir."""
    from mnist_classifier.models import register_model

    with pytest.raises(UserError, match="cannot be registered: it names files"):
        register_model(name)


@pytest.mark.parametrize("name", ["mlp+bn", "réseau", "_private", "my net", "m" * 100])
def test_names_that_make_fine_file_names_still_register(name, monkeypatch):
    """helper-67: a stricter rule locked out models, and their checkpoints, that had trained fine."""
    from mnist_classifier.models import register_model

    register_model(name)(_AnyOption)
    try:
        assert create_model(name).fc.out_features == 10
    finally:
        MODEL_REGISTRY.pop(name)


class _CudaOnly(torch.nn.Module):
    """A forward with kernels that run on a GPU only: it cannot be tried on the CPU."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = torch.nn.Linear(784, num_classes)

    def forward(self, x):
        if not x.is_cuda:
            raise RuntimeError("this kernel runs on CUDA only")
        return self.fc(x.flatten(1))


def test_a_model_whose_forward_cannot_run_here_is_still_built(monkeypatch):
    monkeypatch.setitem(MODEL_REGISTRY, "cuda_only", _CudaOnly)
    assert isinstance(create_model("cuda_only"), _CudaOnly)


class _Lazy(torch.nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.net(x)


def test_a_lazy_layer_made_by_the_probe_still_trains(monkeypatch):
    """The probe's call is the lazy layer's first: weights made under inference_mode could not train."""
    monkeypatch.setitem(MODEL_REGISTRY, "lazy", _Lazy)
    model = create_model("lazy").train()
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    assert model.net[1].weight.grad.shape == (10, 784)


class _WrongWidth(torch.nn.Module):
    """helper-79: a forward whose layers do not fit a 28x28 image raised on every command."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = torch.nn.Linear(700, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class _AppendedToModels(_SevenAnswers):
    """As if appended to src/mnist_classifier/models.py, as the README offers: checked all the same."""


_AppendedToModels.__module__ = "mnist_classifier.models"


def test_a_forward_that_raises_is_one_line_and_one_appended_to_models_py_is_checked(monkeypatch):
    monkeypatch.setitem(MODEL_REGISTRY, "wrong_width", _WrongWidth)
    with pytest.raises(UserError, match=r"^model 'wrong_width' fails on a batch of 2 images of 28x28: RuntimeError: "
                                        r"mat1 and mat2 shapes cannot be multiplied .*\(in .*test_models\.py\); "
                                        r"its forward must take \(N, 1, 28, 28\) and return \(N, 10\) scores$"):
        create_model("wrong_width")
    monkeypatch.setitem(MODEL_REGISTRY, "appended", _AppendedToModels)
    with pytest.raises(UserError, match=r"^model 'appended' answers a batch of 2 images with shape \(2, 7\)"):
        create_model("appended")
