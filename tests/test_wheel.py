"""`make dist`'s wheel, installed into a fresh virtual environment, answers without training.

The one test that reaches the package index (as `make install` does): torch is pinned
to the CPU build, as in set-up, and nothing from the source tree is on the path.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from .conftest import REPO_ROOT


def torch_requirement() -> list[str]:
    """scripts/install_venv.py's arguments for the CPU build of torch, without its dependencies."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_venv", REPO_ROOT / "scripts" / "install_venv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.torch_requirement()

MAX_WHEEL_BYTES = 10 * 1024 * 1024
SHIPPED = ("mnist_classifier/bundled/simple_cnn.onnx", "mnist_classifier/bundled/simple_cnn.pth",
           "mnist_classifier/bundled/provenance.json", "mnist_classifier/demo/static/index.html",
           "mnist_classifier/configs/simple_cnn.yaml", "mnist_classifier/configs/seed_recipe.yaml",
           "mnist_classifier/py.typed", "mnist_classifier/reviewed/fragment.npz",
           "mnist_classifier/reviewed/scribble.npz")
EXAMPLE = """
import json, mnist_classifier
reader = mnist_classifier.load()
answer = reader.predict("digit.png")
batch = reader.predict_batch(["digit.png", open("digit.png", "rb")])
print(json.dumps({"verdict": answer.verdict, "digit": answer.digit, "confidence": answer.confidence,
                  "batch": [a.digit for a in batch], "module": mnist_classifier.__file__}))
"""


def run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO_ROOT)], cwd=REPO_ROOT)
    return out


def test_wheel_and_sdist_carry_the_model_and_the_page(dist):
    wheel, = dist.glob("*.whl")
    sdist, = dist.glob("*.tar.gz")
    assert wheel.stat().st_size <= MAX_WHEEL_BYTES
    names = set(zipfile.ZipFile(wheel).namelist())
    assert all(name in names for name in SHIPPED), sorted(set(SHIPPED) - names)
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert all(f"src/{name}" in members for name in SHIPPED)
    # the MIT licence that the metadata declares asks for its notice to travel with every copy
    assert "LICENSE" in members and any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    # setuptools would add tests/test_*.py without conftest.py and the fixtures: a suite that cannot run
    assert not any(name.startswith("tests/") for name in members)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_installed_wheel_answers_a_drawing_from_the_command_line_and_python(dist, mnist_data, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    constraints = str(REPO_ROOT / "constraints.txt")
    # as the README says, and `make install` does (scripts/install_venv.py): the CPU build wherever PyPI's is not
    for step in (torch_requirement(), ["torch==2.13.0"]):
        run([str(python), "-m", "pip", "install", "--quiet", "-c", constraints, *step], cwd=tmp_path)
    wheel, = dist.glob("*.whl")
    run([str(python), "-m", "pip", "install", "--quiet", "-c", constraints, str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"  # no models/, no source tree
    work.mkdir()
    digit, label = mnist_data.test.images[7].numpy(), int(mnist_data.test.labels[7])
    Image.fromarray(255 - digit).resize((200, 200), Image.BILINEAR).save(work / "digit.png")

    said = run([str(venv / "bin" / "mnist-classifier"), "predict", "digit.png", "--json"], cwd=work)
    assert json.loads(said.stdout)[0]["digit"] == label
    assert "bundled SimpleCNN" in said.stderr

    answered = json.loads(run([str(python), "-c", EXAMPLE], cwd=work).stdout)
    assert answered["verdict"] == "digit" and answered["digit"] == label and answered["batch"] == [label, label]
    assert 0.5 < answered["confidence"] <= 1
    assert answered["module"].startswith(str(venv)), "the example ran the source tree, not the wheel"

    # training from the installed package follows the shipped recipes, not config.py's bare defaults
    recipes = "from mnist_classifier.config import resolve_config as r; print(r().outlier_target, r('seed_recipe').batch_size)"
    assert run([str(python), "-c", recipes], cwd=work).stdout.split() == ["class", "64"]
