import re

import pytest

from mnist_classifier.config import config_from_dict, read_yaml_config, resolve_config
from mnist_classifier.errors import UserError


def test_recipe_keeps_the_seed_key_names_and_flags_override_it():
    config = resolve_config(None, {"epochs": 1, "batch_size": None})
    assert config.model_name == "simple_cnn"
    assert config.epochs == 1
    assert config.batch_size == 128  # from configs/simple_cnn.yaml, flag not given


def test_model_flag_picks_that_models_recipe():
    assert resolve_config(None, {"model_name": "improved_cnn"}).epochs >= 6


@pytest.mark.parametrize("key,value", [("epochs", 0), ("batch_size", -4), ("learning_rate", 0.0), ("device", "tpu"),
                                       ("outlier_target", "zero"), ("paper_redraw", 1.5),
                                       ("fragment_share", -0.1), ("seed", -1), ("label_smoothing", 1.5),
                                       ("val_size", 0), ("weight_decay", float("nan")), ("epochs", True),
                                       ("num_threads", -3), ("num_threads", 0), ("save_dir", ""),
                                       ("log_dir", " "), ("data_dir", ""), ("weight_average", 1.0),
                                       ("weight_average", -0.5)])
def test_impossible_values_are_one_line_errors(key, value):
    with pytest.raises(UserError, match=key):
        resolve_config(None, {key: value})


def test_a_key_set_twice_in_the_recipe_is_refused_not_overwritten(tmp_path):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("model_name: simple_cnn\nweight_average: 0.9\nepochs: 2\nweight_average: 0.5\n")
    with pytest.raises(UserError) as error:
        resolve_config(recipe, {})
    assert str(error.value) == f"config file {recipe}: weight_average is set twice (lines 2 and 4): keep one"
    recipe.write_text("model_options: {pool_first: true, pool_first: false}\n")  # inside a mapping too
    with pytest.raises(UserError, match="pool_first is set twice"):
        resolve_config(recipe, {})
    recipe.write_text("base: &base {epochs: 2}\nrun:\n  <<: *base\n  epochs: 3\n")  # a merge may be overridden
    assert read_yaml_config(recipe)["run"] == {"epochs": 3}


def test_a_quoted_number_in_the_recipe_says_so(tmp_path):
    recipe = tmp_path / "quoted.yaml"
    recipe.write_text('model_name: simple_cnn\nlearning_rate: "0.01"\naugment: yes\n')
    with pytest.raises(UserError) as error:
        resolve_config(recipe, {})
    assert str(error.value) == "learning_rate must be a number, got '0.01'; write numbers without quotes"
    recipe.write_text("model_name: simple_cnn\naugment: 1\n")
    with pytest.raises(UserError, match="augment must be true or false, got 1"):
        resolve_config(recipe, {})


def test_exponents_without_a_dot_are_numbers_as_yaml_1_2_reads_them(tmp_path):
    recipe = tmp_path / "exponents.yaml"
    recipe.write_text("learning_rate: 1e-3\nweight_decay: 5E-4\nlabel_smoothing: .5e-1\n")
    config = resolve_config(recipe, {})
    assert (config.learning_rate, config.weight_decay, config.label_smoothing) == (0.001, 0.0005, 0.05)
    recipe.write_text("epochs: 1e1\n")  # a number now, and a whole number is asked for
    with pytest.raises(UserError, match="^epochs must be a whole number, got 10.0$"):
        resolve_config(recipe, {})


def test_a_binary_file_as_config_is_one_line(tmp_path):
    checkpoint = tmp_path / "simple_cnn_last.pth"
    checkpoint.write_bytes(b"PK\x03\x04\x80\x81 not text")
    with pytest.raises(UserError, match="^config file .* is not a YAML text file .not UTF-8.; a .pth is continued "
                                        "with --resume$"):
        resolve_config(checkpoint, {})


def test_unknown_yaml_key_is_an_error_not_a_silent_default(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("model_name: simple_cnn\nlearnig_rate: 0.1\n")
    with pytest.raises(UserError, match="learnig_rate"):
        resolve_config(recipe, {})
    # keys YAML reads as a bool, a number or null (`yes:`, `1:`, `~:`): one line, not a TypeError
    recipe.write_text("model_name: simple_cnn\nyes: 2\n~: 4\n2: 3\n")
    with pytest.raises(UserError, match=r"^unknown config key\(s\) 2, None, True: valid keys are"):
        resolve_config(recipe, {})


def test_missing_config_file_names_it(tmp_path):
    with pytest.raises(UserError, match="not found"):
        resolve_config(tmp_path / "nope.yaml", {})
    with pytest.raises(UserError, match=f"^config {tmp_path} is a folder: name a YAML file in it"):
        resolve_config(tmp_path, {})


def test_a_shipped_recipe_is_named_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here, as for a pip-installed user
    seed = resolve_config("seed_recipe", {})
    assert (seed.batch_size, seed.optimizer, seed.scheduler) == (64, "adam", "plateau")
    assert (seed.augment, seed.pen_redraw, seed.paper_redraw, seed.outlier_weight) == (False, 0, 0, 0)  # as the seed ran
    assert resolve_config("seed_recipe.yaml", {}) == seed
    assert resolve_config(None, {}).outlier_target == "class"  # the recipe, not the dataclass default
    with pytest.raises(UserError) as error:
        resolve_config("seed_recipie", {})
    assert "or the name of a shipped recipe (" in str(error.value) and "seed_recipe," in str(error.value)
    (tmp_path / "seed_recipe.yaml").write_text("model_name: simple_cnn\nepochs: 1\n")
    assert resolve_config("seed_recipe.yaml", {}).epochs == 1  # a file of that name here wins


def test_a_dataset_with_its_own_recipe_gets_it_and_others_fall_back():
    fashion = resolve_config(None, {"dataset": "fashion-mnist"})
    assert fashion.dataset == "fashion-mnist" and fashion.epochs == 12 and not fashion.augment
    assert resolve_config(None, {"dataset": "mnist"}).epochs == 4


def test_a_checkpoint_keeps_the_outlier_target_it_trained_with_and_older_ones_uniform():
    before = resolve_config(None, {}).to_dict()
    del before["outlier_target"]
    assert config_from_dict(before).outlier_target == "uniform"
    trained_with_the_class = resolve_config(None, {"outlier_target": "class"}).to_dict()
    assert config_from_dict(trained_with_the_class).outlier_target == "class"


def test_checkpoints_from_before_paper_redraw_keep_training_without_it():
    before = resolve_config(None, {}).to_dict()
    assert before["paper_redraw"] == 0.25  # today's recipe
    del before["paper_redraw"]
    assert config_from_dict(before).paper_redraw == 0.0  # a resumed old run keeps its batches
    assert config_from_dict({}).paper_redraw == 0.25  # no stored recipe: today's


def test_model_options_are_checked_against_the_models_constructor(tmp_path):
    recipe = tmp_path / "options.yaml"
    recipe.write_text("model_name: simple_cnn\nmodel_options: {pool_first: false}\n")
    assert resolve_config(recipe, {}).model_options == {"pool_first": False}
    for text, problem in (("model_options: {pool_frist: true}", "model 'simple_cnn' has no option 'pool_frist'"),
                          ("model_options: yes", "model_options must be a mapping (e.g. {pool_first: true}), got True"),
                          ("model_name: improved_cnn\nmodel_options: {pool_first: true}",
                           "model 'improved_cnn' has no option 'pool_first' in model_options: it takes none")):
        recipe.write_text(text + "\n")
        with pytest.raises(UserError, match=re.escape(problem)):
            resolve_config(recipe, {})


def test_a_run_stored_without_model_options_resumes_as_the_seeds_network():
    before = resolve_config(None, {}).to_dict()
    del before["model_options"]
    assert config_from_dict(before).model_options == {}


def test_a_recipe_used_for_another_model_leaves_its_models_options_behind():
    config = resolve_config("simple_cnn", {"model_name": "improved_cnn"})
    assert config.model_name == "improved_cnn" and config.model_options == {}
    assert resolve_config("simple_cnn", {"model_name": "simple_cnn"}).model_options == {"pool_first": True}


def test_a_partial_config_file_says_which_recipe_settings_fall_back_to_defaults(tmp_path, monkeypatch, capsys):
    from mnist_classifier import training
    from mnist_classifier.cli import main
    from mnist_classifier.config import left_to_defaults

    partial = tmp_path / "partial.yaml"
    partial.write_text("epochs: 1\nlimit_train: 500\n")
    config = resolve_config(partial, {})
    left = left_to_defaults(partial, config)
    assert left["weight_average"] == (0.0, 0.99) and left["model_options"] == ({}, {"pool_first": True})
    assert "epochs" not in left and left_to_defaults("simple_cnn", resolve_config("simple_cnn", {})) == {}

    class Stop(Exception):
        pass

    def stop(*_args, **_kwargs):
        raise Stop

    monkeypatch.setattr(training, "train", stop)
    with pytest.raises(Stop):
        main(["train", "--config", str(partial), "--save-dir", str(tmp_path / "models")])
    note = capsys.readouterr().out
    assert f"note: {partial} does not set what simple_cnn's recipe sets, so config.py's defaults apply: " in note
    assert "weight_average 0.0 (recipe: 0.99)" in note and "configs/simple_cnn.yaml and edit it" in note
    assert "save_dir" not in note  # a flag set it, not config.py
    with pytest.raises(Stop):  # a shipped recipe that differs on purpose says nothing
        main(["train", "--config", "seed_recipe"])
    assert "note:" not in capsys.readouterr().out



def test_a_python_tag_is_refused_as_such_not_as_bad_syntax(tmp_path):
    marker = tmp_path / "ran"
    recipe = tmp_path / "tagged.yaml"
    recipe.write_text(f"model_name: simple_cnn\nnote: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError) as error:
        resolve_config(recipe, {})
    said = str(error.value)
    assert "python/object/apply:os.system" in said and "(line 2)" in said and "plain values only" in said, said
    assert "syntax" not in said and not marker.exists()


@pytest.mark.parametrize("value", ['!!int "abc"', "!!timestamp 2026-13-45", '!!timestamp "x"', '!!bool "x"',
                                   '!!int ""', "!!set [1, 2]"])
def test_a_tagged_value_yaml_cannot_build_is_one_line(tmp_path, value):
    """helper-82: PyYAML raises ValueError for these, which was a traceback."""
    recipe = tmp_path / "tagged.yaml"
    recipe.write_text(f"model_name: simple_cnn\nepochs: {value}\n")
    with pytest.raises(UserError, match=rf"^config file {re.escape(str(recipe))} holds a value that cannot be read \("):
        resolve_config(recipe, {})


NESTED_ALIASES = ", ".join(["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
    f"&a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, 9)])  # 10 levels: 10^9 items


@pytest.mark.parametrize("line, said", [
    (f"epochs: [{NESTED_ALIASES}]", "epochs must be a whole number, got "),  # helper-78: printed whole
    (f"model_options: {{pool_first: [{NESTED_ALIASES}]}}", "model_options.pool_first of model 'simple_cnn' must be "),
])
def test_a_value_of_nested_aliases_is_shown_cut_short(tmp_path, line, said):
    """A 500-byte recipe of YAML aliases made a value of 10^9 items, which the error printed whole (1.4 GB)."""
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text(f"model_name: simple_cnn\n{line}\n")
    with pytest.raises(UserError, match=said) as error:
        resolve_config(recipe, {})
    assert len(str(error.value)) < 300


def test_a_folder_under_home_in_a_recipe_is_the_home_folder_not_one_named_tilde(tmp_path, monkeypatch):
    """helper-94: `save_dir: ~/models` made ./~/models, printed as ~/models (a `rm -rf ~` away from harm)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    recipe = tmp_path / "home_dirs.yaml"
    recipe.write_text("save_dir: ~/models\nlog_dir: ~/runs\ndata_dir: ~/data\nepochs: 1\n")
    config = resolve_config(recipe)
    assert (config.save_dir, config.log_dir, config.data_dir) == tuple(
        str(tmp_path / "home" / name) for name in ("models", "runs", "data"))
    assert resolve_config(None, {"save_dir": "~/elsewhere"}).save_dir == str(tmp_path / "home" / "elsewhere")
