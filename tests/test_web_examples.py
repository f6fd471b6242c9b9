"""Saving labelled drawings over HTTP (`/api/examples`), against a real server on loopback:
a uvicorn thread per test, and once the real `serve --workers 2` with clients in parallel."""
from __future__ import annotations

import dataclasses
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from mnist_classifier.demo.collect import storable
from mnist_classifier.demo.web import create_app, model_card
from mnist_classifier.images import load_image
from mnist_classifier.preprocess import to_mnist
from mnist_classifier.reader import load_predictor
from mnist_classifier.user_examples import INDEX, ExampleStore

from .test_web_api import BAD_REQUESTS, as_paper_png, running_server
from .test_web_faults import DIGIT_JSON, serve_command

BLANK_PNG = cv2.imencode(".png", np.full((280, 280), 255, np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def predictor(small_checkpoint):
    return load_predictor(small_checkpoint)


@pytest.fixture(scope="module")
def digits(mnist_data):
    """The first real MNIST test image of each class: {label: 28x28 uint8}."""
    images, labels = mnist_data.test.images.numpy(), mnist_data.test.labels.numpy()
    return {digit: images[np.flatnonzero(labels == digit)[0]] for digit in range(10)}


@dataclasses.dataclass
class Collecting:
    client: httpx.Client
    folder: Path

    def lines(self) -> list[dict]:
        index = self.folder / INDEX
        return [json.loads(line) for line in index.read_text().splitlines()] if index.exists() else []

    def post(self, label, body: bytes = b"", **request) -> httpx.Response:
        """POST /api/examples?label=...; a PNG body unless `request` says otherwise."""
        request = request or {"content": body, "headers": {"Content-Type": "image/png"}}
        params = label if isinstance(label, list) else {} if label is None else {"label": label}
        return self.client.post("/api/examples", params=params, **request)


@contextmanager
def serving(predictor, user_data):
    with running_server(create_app(predictor, user_data=user_data)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


@pytest.fixture
def collecting(predictor, tmp_path):
    folder = tmp_path / "user"
    with serving(predictor, folder) as client:
        yield Collecting(client, folder)


# ------------------------------------------------------------------ saving


def test_a_labelled_drawing_is_saved_with_the_answer_it_got(collecting, digits, small_checkpoint):
    png = as_paper_png(digits[7])
    response = collecting.post(7, png)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["label"] == 7 and result["counts"] == [0] * 7 + [1, 0, 0] and result["total"] == 1
    answer = result["answer"]
    assert answer["verdict"] == "digit" and answer["best_guess"] == 7 and answer["model"] == "simple_cnn"

    [line] = collecting.lines()
    assert line["id"] == result["id"] and line["label"] == 7 and line["model"] == small_checkpoint.name
    assert line["verdict"] == "digit" and line["answer"] == 7 and line["confidence"] == answer["confidence"]
    drawing = cv2.imread(str(collecting.folder / line["drawing"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(drawing, load_image(png))  # the drawing as sent, not a re-render
    model_input = cv2.imread(str(collecting.folder / line["input"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(model_input, to_mnist(load_image(png)).image)


def test_every_body_predict_takes_can_be_saved_and_counted(collecting, digits):
    upload = collecting.post(3, files={"file": ("three.png", as_paper_png(digits[3]), "image/png")})
    pixels = collecting.post(1, json={"pixels": digits[1].tolist()})
    assert upload.status_code == pixels.status_code == 201
    assert pixels.json()["counts"] == [0, 1, 0, 1, 0, 0, 0, 0, 0, 0] and pixels.json()["total"] == 2
    stats = collecting.client.get("/api/examples/stats").json()
    assert stats == {"counts": [0, 1, 0, 1, 0, 0, 0, 0, 0, 0], "total": 2}
    assert [line["label"] for line in collecting.lines()] == [3, 1]


BAD_LABELS = [None, "", "x", "10", "-1", "7.0", "+7", " 7", "\u0667", "1e0",  # \u0667: an Arabic-Indic 7
              [("label", "3"), ("label", "4")]]


def test_a_bad_label_is_422_and_saves_nothing(collecting, digits):
    png = as_paper_png(digits[7])
    for label in BAD_LABELS:
        response = collecting.post(label, png)
        assert response.status_code == 422 and "label" in response.json()["detail"], (label, response.text)
    assert collecting.lines() == [] and not (collecting.folder / "drawings").exists()


def test_an_empty_drawing_is_422_and_saves_nothing(collecting):
    for response in (collecting.post(0, BLANK_PNG), collecting.post(0, json={"pixels": [[0] * 28] * 28})):
        assert response.status_code == 422 and "empty" in response.json()["detail"]
    assert collecting.lines() == []


# Not the chunked upload: its body is a generator that the predict test may have used up.
SAME_AS_PREDICT = ["body over the limit", "multipart over the limit", "image over 4096x4096", "text sent as PNG",
                   "GIF (PNG/JPEG only)", "truncated PNG", "empty body", "multipart without a file field",
                   "invalid JSON", "above 255"]


def test_bad_bodies_get_the_statuses_predict_gives(collecting):
    for name in SAME_AS_PREDICT:
        expected, request = BAD_REQUESTS[name]
        response = collecting.post(5, **request)
        assert response.status_code == expected, (name, response.text)
        assert isinstance(response.json()["detail"], str)
    assert collecting.client.get("/api/examples/stats").json()["total"] == 0
    head = collecting.client.head("/api/examples/stats")
    assert head.status_code == 200 and head.content == b""


def test_another_sites_page_cannot_save_or_send_drawings(collecting, digits):
    """A page elsewhere can POST to 127.0.0.1 with no preflight (text/plain, no-cors); the
    browser names it in Origin. A site re-pointing its own name at 127.0.0.1 shows in Host."""
    png = as_paper_png(digits[7])
    own = str(collecting.client.base_url).rstrip("/")
    for origin in ("http://localhost:9999", "https://evil.example", "null"):
        for route in ("/api/examples?label=3", "/api/predict"):
            headers = {"Origin": origin, "Content-Type": "text/plain"}  # no preflight for text/plain
            refused = collecting.client.post(route, content=png, headers=headers)
            assert refused.status_code == 403, (origin, route, refused.text)
            assert refused.json()["detail"].startswith(f"request from the page at {origin} refused: only the page")
    rebound = collecting.client.get("/api/model", headers={"Host": "evil.example:80"})
    assert rebound.status_code == 403 and "'evil.example:80' refused" in rebound.json()["detail"]
    assert collecting.lines() == []
    port = collecting.client.base_url.port
    for name in ("localhost", "[::1]", socket.gethostname(), "0.0.0.0"):  # the last: what --host 0.0.0.0 prints
        assert collecting.client.get("/api/model", headers={"Host": f"{name}:{port}"}).status_code == 200, name
    assert collecting.post(7, png, headers={"Origin": own}, content=png).status_code == 201  # the page itself
    assert [line["label"] for line in collecting.lines()] == [7]


# ------------------------------------------------------------------ undo, limits, off


def test_undo_removes_the_last_example_then_says_nothing_to_undo(collecting, digits):
    first, second = (collecting.post(label, as_paper_png(digits[label])).json() for label in (2, 9))
    undone = collecting.client.delete("/api/examples/last")
    assert undone.status_code == 200
    assert undone.json() == {"removed": second["id"], "label": 9, "counts": first["counts"], "total": 1}
    assert [line["id"] for line in collecting.lines()] == [first["id"]]
    assert not list((collecting.folder / "drawings").glob(f"{second['id']}*"))
    assert collecting.client.delete("/api/examples/last").json()["removed"] == first["id"]
    nothing = collecting.client.delete("/api/examples/last")
    assert nothing.status_code == 404 and "nothing to undo" in nothing.json()["detail"]


def test_store_limits_are_507_naming_the_limit(predictor, tmp_path, digits):
    png = as_paper_png(digits[4])
    limits = ((ExampleStore(tmp_path / "count", max_examples=1), [201, 507], "holds 1 examples, the limit"),
              (ExampleStore(tmp_path / "bytes", max_bytes=10), [507, 507], "MB limit"))
    for store, statuses, limit in limits:
        with serving(predictor, store) as client:
            responses = [client.post("/api/examples?label=4", content=png) for _ in statuses]
        assert [response.status_code for response in responses] == statuses
        assert limit in responses[-1].json()["detail"], responses[-1].text


def test_behind_a_reverse_proxy_its_allowed_name_may_send_drawings(predictor, digits, tmp_path):
    png = as_paper_png(digits[7])
    app = create_app(predictor, user_data=tmp_path / "user", allowed_hosts=("digits.example.org",))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        page = {"Origin": "https://digits.example.org", "Content-Type": "image/png"}
        # nginx's default passes the upstream's Host; with `proxy_set_header Host $host`, the public name
        assert client.post("/api/examples?label=7", content=png, headers=page).status_code == 201
        assert client.get("/", headers={"Host": "digits.example.org"}).status_code == 200
        other = client.post("/api/predict", content=png, headers={**page, "Origin": "https://evil.example"})
        assert other.status_code == 403 and "serve --allow-host NAME" in other.json()["detail"]


def test_a_model_of_something_else_saves_no_drawings_for_finetune(predictor, digits, tmp_path):
    """finetune teaches digits: a drawing labelled 'Sneaker' would be learnt as a 7."""
    clothes = dataclasses.replace(predictor, class_names=[f"item {i}" for i in range(10)],
                                  info={**predictor.info, "dataset": "fashion-mnist"})
    with serving(clothes, tmp_path / "user") as client:
        saved = client.post("/api/examples?label=7", content=as_paper_png(digits[7]))
        assert client.get("/api/model").json()["collecting"] is False
    assert saved.status_code == 403 and not (tmp_path / "user").exists()
    assert saved.json()["detail"] == ("labelling is off: simple_cnn reads fashion-mnist, and `finetune` learns digits "
                                      "from labelled drawings")


def test_with_collection_off_the_routes_say_so_and_the_card_too(predictor, digits):
    with serving(predictor, None) as client:
        responses = [client.post("/api/examples?label=1", content=as_paper_png(digits[1])),
                     client.delete("/api/examples/last"), client.get("/api/examples/stats")]
        assert client.get("/api/model").json()["collecting"] is False
    for response in responses:
        assert response.status_code == 403 and "--no-collect" in response.json()["detail"]


def test_model_card_says_which_file_answers_and_whether_it_is_the_users(collecting, predictor, small_checkpoint):
    card = collecting.client.get("/api/model").json()
    assert card["collecting"] is True and card["file"] == small_checkpoint.name and card["user_model"] is False
    tuned = dataclasses.replace(predictor, info={**predictor.info, "fine_tuned": True})
    assert model_card(tuned)["user_model"]
    # helper-70: the file's name decided it; a trained model copied to *_user_best.pth is not the user's
    renamed = dataclasses.replace(predictor, info={**predictor.info, "file": "simple_cnn_user_best.pth"})
    assert not model_card(renamed)["user_model"]


def test_openapi_documents_the_routes_and_no_request_names_a_file(collecting):
    paths = collecting.client.get("/openapi.json").json()["paths"]
    add = paths["/api/examples"]["post"]
    assert [(p["name"], p["in"]) for p in add["parameters"]] == [("label", "query")]
    assert {"201", "403", "408", "413", "415", "422", "507"} <= set(add["responses"])
    assert "image/png" in add["requestBody"]["content"]
    assert "404" in paths["/api/examples/last"]["delete"]["responses"]
    assert "get" in paths["/api/examples/stats"]


def test_drawings_are_stored_as_they_were_drawn():
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), np.uint8)
    assert np.array_equal(cv2.imdecode(cv2.imencode(".png", storable(rgb))[1], cv2.IMREAD_COLOR)[..., ::-1], rgb)
    gray_alpha = np.dstack([np.full((5, 5), 40, np.uint8), np.full((5, 5), 200, np.uint8)])
    assert storable(gray_alpha).shape == (5, 5, 4) and storable(gray_alpha)[0, 0].tolist() == [40, 40, 40, 200]
    assert storable(np.eye(3, dtype=bool)).max() == 255
    assert storable(np.array([[0, 65535]], np.int32)).tolist() == [[0, 255]]


# ------------------------------------------------------------------ serve --workers 2


def test_worker_processes_save_concurrently_without_losing_a_line(small_checkpoint, tmp_path):
    folder = tmp_path / "user"
    with serve_command(small_checkpoint, tmp_path, "--workers", "2", "--backend", "torch",
                       "--user-data", str(folder)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(8) as pool:
            added = list(pool.map(lambda i: client.post(f"/api/examples?label={i % 10}", json=DIGIT_JSON), range(40)))
            removed = list(pool.map(lambda _: client.delete("/api/examples/last"), range(6)))
            stats = client.get("/api/examples/stats").json()
    assert [response.status_code for response in added] == [201] * 40
    # Each save counted all the ones before it, under the lock: totals are 1..40, once each.
    assert sorted(response.json()["total"] for response in added) == list(range(1, 41))
    assert sorted(response.json()["total"] for response in removed) == list(range(34, 40))
    lines = [json.loads(line) for line in (folder / INDEX).read_text().splitlines()]
    ids = [line["id"] for line in lines]
    undone = {response.json()["removed"] for response in removed}
    assert len(ids) == len(set(ids)) == 34 and set(ids) | undone == {r.json()["id"] for r in added}
    assert stats == {"counts": [sum(line["label"] == d for line in lines) for d in range(10)], "total": 34}
    assert all((folder / line["drawing"]).is_file() and (folder / line["input"]).is_file() for line in lines)
    assert len(list((folder / "drawings").iterdir())) == 34  # the undone ones' files are gone too
