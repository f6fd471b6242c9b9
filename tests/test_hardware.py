"""Device and precision chosen at run time (hardware.py), and real short runs under each precision."""
from __future__ import annotations

import pytest
import torch

from mnist_classifier.checkpoint import load_checkpoint
from mnist_classifier.cli import main
from mnist_classifier.config import resolve_config
from mnist_classifier.errors import UserError
from mnist_classifier.hardware import choose_precision, read_cpu_flags, read_cpu_model, resolve_device
from mnist_classifier.run_files import resume_config
from mnist_classifier.training import train

from .conftest import DATA_DIR

CPU = torch.device("cpu")
AVX2_ONLY = {"fpu", "sse2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_auto_takes_bf16_only_where_the_cpu_computes_it():
    assert choose_precision("auto", CPU, SAPPHIRE_RAPIDS).name == "bf16"
    assert "avx512_bf16" in choose_precision("auto", CPU, SAPPHIRE_RAPIDS).reason
    assert choose_precision("auto", CPU, AVX2_ONLY).name == "fp32"
    assert "no native bf16" in choose_precision("auto", CPU, AVX2_ONLY).reason
    assert choose_precision("auto", CPU, {"amx_bf16"}).name == "bf16"


def test_asked_for_precision_is_kept_and_explained():
    forced = choose_precision("bf16", CPU, AVX2_ONLY)
    assert forced.name == "bf16" and "expect it slower" in forced.reason
    assert choose_precision("fp32", CPU, SAPPHIRE_RAPIDS).name == "fp32"
    with pytest.raises(UserError, match="precision must be one of auto, fp32, bf16"):
        choose_precision("fp16", CPU, AVX2_ONLY)


def test_this_machines_flags_are_read():
    flags = read_cpu_flags()
    assert not flags or "sse2" in flags or "fp" in flags  # x86 lists sse2; ARM lists fp


def test_this_machines_cpu_is_named_as_linux_names_it():
    from pathlib import Path

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    listed = [line.partition(":")[2].strip() for line in info.splitlines() if line.startswith("model name")]
    name = read_cpu_model()
    assert name and ":" not in name and "\n" not in name
    if listed:
        assert name == listed[0]


@pytest.mark.parametrize("device", ["cuda", "mps", "xpu"])
def test_an_absent_accelerator_is_a_one_line_error(device):
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
                 "xpu": hasattr(torch, "xpu") and torch.xpu.is_available()}[device]
    if available:
        assert resolve_device(device).type == device
        return
    with pytest.raises(UserError) as error:
        resolve_device(device)
    message = str(error.value)
    assert f"device {device} asked for (--device, or device in the config)" in message
    assert message.endswith("use cpu or auto") and "\n" not in message


def test_auto_device_falls_back_to_the_cpu():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present: auto picks it")
    assert resolve_device("auto") == CPU


def test_cli_rejects_an_unknown_precision(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_a_run_records_the_precision_it_used_and_why(small_checkpoint):
    stored = load_checkpoint(small_checkpoint)["precision"]
    expected = choose_precision("auto", CPU)
    assert stored == {"name": expected.name, "reason": expected.reason, "used": [expected.name]}


@pytest.mark.slow
def test_a_short_real_run_learns_under_bf16(tmp_path, mnist_raw_dir):
    """fp32 runs are everywhere in the suite; bf16 autocast on a CPU without native bf16
    is several times slower, so: 2,000 images, no extras."""
    config = resolve_config(None, dict(limit_train=2000, epochs=2, batch_size=100, seed=5, val_size=1000,
                                       pen_redraw=0.0, outlier_weight=0.0, precision="bf16",
                                       data_dir=str(DATA_DIR), save_dir=str(tmp_path / "models"),
                                       log_dir=str(tmp_path / "runs")))
    said = []
    result = train(config, log=said.append, stop_after_epochs=1)
    assert result.best_val_accuracy > 0.80
    stored = load_checkpoint(result.best_path)["precision"]
    assert stored["name"] == "bf16" and stored["reason"].startswith("asked for") and stored["used"] == ["bf16"]
    assert any("precision bf16 (asked for" in line for line in said)
    # resumed in fp32 (helper-56: the checkpoint then said fp32 alone): both, in the order they ran
    resumed_config, payload = resume_config(result.last_path, {"precision": "fp32"})
    resumed = train(resumed_config, resume_payload=payload, log=said.append)
    assert load_checkpoint(resumed.best_path)["precision"]["used"] == ["bf16", "fp32"]
    assert any("this resume runs with precision bf16 -> fp32" in line for line in said)
