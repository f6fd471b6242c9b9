"""The JSON API of `mnist-classifier serve`, against a real uvicorn server on loopback."""
from __future__ import annotations

import base64
import dataclasses
import json
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import httpx
import numpy as np
import pytest

import mnist_classifier
from mnist_classifier import cli
from mnist_classifier.demo.server import exposure_warning, uvicorn_server  # bound now: tests may patch server's
from mnist_classifier.demo.web import MAX_BODY, STATIC, SharedModel, create_app, model_card
from mnist_classifier.reader import load_predictor
from mnist_classifier.images import load_image
from mnist_classifier.preprocess import to_mnist


@contextmanager
def running_server(app):
    """uvicorn in a thread, with the settings `serve` gives it (server.uvicorn_server), on an
    ephemeral 127.0.0.1 port bound here (no race) -> base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def predictor(small_checkpoint):
    return load_predictor(small_checkpoint)


@pytest.fixture(scope="module")
def api(predictor):
    with running_server(create_app(predictor)) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client


@pytest.fixture(scope="module")
def digits(mnist_data):
    """The first real MNIST test image of each class: {label: 28x28 uint8}."""
    images, labels = mnist_data.test.images.numpy(), mnist_data.test.labels.numpy()
    return {digit: images[np.flatnonzero(labels == digit)[0]] for digit in range(10)}


def as_paper_png(image28: np.ndarray, side: int = 280) -> bytes:
    """A real MNIST digit as a user would photograph it: large, dark ink on light paper."""
    big = cv2.resize(image28, (side, side), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".png", 255 - big)[1].tobytes()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming any size, with almost no pixel data (a bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def post_png(api, body: bytes) -> httpx.Response:
    return api.post("/api/predict", content=body, headers={"Content-Type": "image/png"})


def decoded_preview(answer: dict) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(answer["preview_png"]), np.uint8)
    return cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)


# ------------------------------------------------------------------ good requests


def test_real_digits_as_dark_on_light_pngs_are_recognised(api, digits, predictor):
    answers = {digit: post_png(api, as_paper_png(image)) for digit, image in digits.items()}
    assert all(response.status_code == 200 for response in answers.values())
    answers = {digit: response.json() for digit, response in answers.items()}
    correct = sum(answer["digit"] == digit for digit, answer in answers.items())
    assert correct >= 9, {digit: answer["digit"] for digit, answer in answers.items()}
    answer = answers[7]
    assert answer["model"] == "simple_cnn" and answer["latency_ms"] > 0
    assert len(answer["probabilities"]) == 10 and abs(sum(answer["probabilities"]) - 1) < 1e-4
    assert answer["confidence"] == max(answer["probabilities"])
    # The API runs the one preprocessing: same input, same 28x28, same probabilities.
    local = to_mnist(load_image(as_paper_png(digits[7])))
    assert np.array_equal(decoded_preview(answer), local.image)
    expected = predictor.answer(local).probabilities
    assert np.allclose(answer["probabilities"], expected, atol=1e-5)
    assert answer["verdict"] == "digit" and answer["best_guess"] == answer["digit"] == 7


def test_a_client_that_sends_its_whole_body_first_still_reads_the_413(api):
    """Python's urllib writes all 2 MB before it reads: a server that answers from the
    Content-Length and closes with the body unread resets the connection under it."""
    import urllib.error
    import urllib.request

    statuses = []
    for _ in range(12):
        request = urllib.request.Request(str(api.base_url).rstrip("/") + "/api/predict", data=b"\0" * (2 * MAX_BODY),
                                         headers={"Content-Type": "image/png"}, method="POST")
        try:
            urllib.request.urlopen(request, timeout=30)
            statuses.append(200)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
        except OSError as error:  # ConnectionResetError, BrokenPipeError
            statuses.append(type(error).__name__)
    assert statuses == [413] * 12


def raw_exchange(api, head: bytes, body: bytes = b"") -> tuple[bytes, float]:
    """(what the server sends first, seconds until it came) for a hand-written request."""
    url = httpx.URL(str(api.base_url))
    with socket.create_connection((url.host, url.port), timeout=30) as connection:
        started = time.monotonic()
        connection.sendall(head + body)
        return connection.recv(200), time.monotonic() - started


def test_an_oversized_body_is_refused_without_asking_for_it_or_waiting_for_bytes_never_sent(api):
    start = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
    # curl waits for "100 Continue" before a big body: it gets the 413 instead, and sends nothing
    answer, _ = raw_exchange(api, start + b"Content-Length: 99999999999\r\nExpect: 100-continue\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer
    # a Content-Length the body never fills: the answer comes after a short idle wait, not the 30 s timeout
    answer, seconds = raw_exchange(api, start + b"Content-Length: 99999999999\r\n\r\n", b"abc")
    assert answer.startswith(b"HTTP/1.1 413") and seconds < 10, (answer, seconds)


def test_multipart_upload_gives_the_same_answer_as_a_raw_body(api, digits, predictor):
    png = as_paper_png(digits[3])
    upload = api.post("/api/predict", files={"file": ("three.png", png, "image/png")})
    assert upload.status_code == 200
    assert upload.json()["probabilities"] == post_png(api, png).json()["probabilities"]
    # What the model answers, not whether this one-epoch model reads this 3 right.
    expected = predictor.answer(to_mnist(load_image(png)))
    assert (upload.json()["verdict"], upload.json()["best_guess"]) == (expected.verdict, expected.best_guess)


def test_a_png_sent_as_json_is_read_as_the_png_it_is(api, digits):
    """`curl -H 'content-type: application/json' --data-binary @digit.png`: the bytes say PNG."""
    png = as_paper_png(digits[3])
    mislabelled = api.post("/api/predict", content=png, headers={"content-type": "application/json"})
    assert mislabelled.status_code == 200, mislabelled.text
    assert mislabelled.json()["probabilities"] == post_png(api, png).json()["probabilities"]


def test_json_pixels_white_on_black_are_recognised(api, digits):
    answers = {digit: api.post("/api/predict", json={"pixels": image.tolist()}).json()
               for digit, image in digits.items()}
    assert sum(answer["digit"] == digit for digit, answer in answers.items()) >= 9
    floats = (digits[1] / 1.0).tolist()  # numbers, not only integers
    assert api.post("/api/predict", json={"pixels": floats}).json()["digit"] == answers[1]["digit"]
    unit_scale = api.post("/api/predict", json={"pixels": (digits[1] / 255.0).tolist()}).json()
    assert np.allclose(unit_scale["probabilities"], answers[1]["probabilities"], atol=1e-3)  # greys kept, not a mask
    as_curl_sends_it = api.post("/api/predict", content=json.dumps({"pixels": digits[1].tolist()}),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert as_curl_sends_it.json()["digit"] == answers[1]["digit"]


def test_a_small_digit_drawn_with_a_wide_pen_is_refused_with_a_hint_over_http(api):
    from mnist_classifier.answer import TOO_BOLD_HINT

    from .test_preprocess import TWO, drawn_with_the_pads_pen

    small, large = (cv2.imencode(".png", drawn_with_the_pads_pen(TWO, share))[1].tobytes() for share in (0.15, 0.6))
    refused, answered = post_png(api, small).json(), post_png(api, large).json()
    assert refused["verdict"] == "not_a_digit" and refused["hint"] == TOO_BOLD_HINT
    assert isinstance(refused["best_guess"], int) and refused["digit"] is None
    assert answered["hint"] is None


def test_digits_pass_and_generated_non_digits_are_refused_over_http(honest_checkpoint, mnist_data):
    from mnist_classifier.outliers import generate_family

    source = (mnist_data.test.images.numpy(), mnist_data.test.labels.numpy())
    non_digits = [image for family in ("shape", "glyph") for image in generate_family(family, 25, 31, source)]
    with running_server(create_app(load_predictor(honest_checkpoint))) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            refused = [post_png(client, as_paper_png(image)).json() for image in non_digits]
            passed = [post_png(client, as_paper_png(image)).json() for image in source[0][:50]]
    assert all(answer["verdict"] in ("digit", "not_a_digit") for answer in refused + passed)
    for answer in refused + passed:  # a refusal keeps its best guess; only `digit` goes null
        assert isinstance(answer["best_guess"], int)
        assert answer["digit"] == (answer["best_guess"] if answer["verdict"] == "digit" else None)
    assert np.mean([a["verdict"] == "not_a_digit" for a in refused]) >= 0.8
    assert np.mean([a["verdict"] == "digit" for a in passed]) >= 0.95
    assert np.mean([a["digit"] == label for a, label in zip(passed, source[1][:50])]) >= 0.9


def test_empty_drawing_gives_no_digit(api):
    blank = cv2.imencode(".png", np.full((280, 280), 255, np.uint8))[1].tobytes()
    for response in (post_png(api, blank), api.post("/api/predict", json={"pixels": [[0] * 28] * 28})):
        answer = response.json()
        assert response.status_code == 200 and answer["digit"] is None and answer["best_guess"] is None
        assert answer["verdict"] == "empty"
        assert answer["probabilities"] == [0.0] * 10 and answer["confidence"] == 0.0
        assert decoded_preview(answer).shape == (28, 28) and not decoded_preview(answer).any()


def test_concurrent_requests_each_get_their_own_answer(api, digits):
    pngs = [as_paper_png(digits[digit]) for digit in range(10)] * 3
    expected = [post_png(api, png).json()["probabilities"] for png in pngs[:10]] * 3
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda png: post_png(api, png).json(), pngs))
    # Overlapping requests share a forward pass; each must still get its own row.
    assert np.allclose([answer["probabilities"] for answer in answers], expected, atol=1e-5)


def test_overlapping_calls_share_one_forward_pass_and_its_errors():
    class SlowModel:  # records batch sizes; the first call is slow so that others queue up
        def __init__(self):
            self.batches = []

        def assess(self, images):
            self.batches.append(len(images))
            time.sleep(0.2 if len(self.batches) == 1 else 0)
            if images[:, 0, 0].max() == 99:
                raise RuntimeError("bad batch")
            return images[:, 0, :2].astype(np.float32), images[:, 0, 0] * 10.0  # rows = the image's own marker

    fake = SlowModel()
    shared = SharedModel(fake)
    images = [np.full((28, 28), value, np.uint8) for value in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(shared, images[0])
        time.sleep(0.05)
        rest = list(pool.map(shared, images[1:]))
    answers = [first.result()] + rest
    assert [row[0] for row, _ in answers] == list(range(8))  # each gets its own row
    assert [score for _, score in answers] == [10.0 * value for value in range(8)]  # and its own score
    assert fake.batches[0] == 1 and sum(fake.batches) == 8 and len(fake.batches) < 8
    with ThreadPoolExecutor(max_workers=2) as pool:
        failing = pool.submit(shared, np.full((28, 28), 99, np.uint8))
        with pytest.raises(RuntimeError, match="bad batch"):
            failing.result(timeout=5)
    assert shared(images[3])[0][0] == 3  # and the model still answers


def test_health_and_model_card(api, predictor):
    assert api.get("/api/health").json() == {"status": "ok", "model": "simple_cnn"}
    for route in ("/api/health", "/api/model"):  # uptime monitors and `curl -I` send HEAD
        head = api.head(route)
        assert head.status_code == 200 and head.content == b"", route
    card = api.get("/api/model").json()
    assert card["name"] == "simple_cnn" and card["parameters"] == 390_858
    assert 0.9 < card["validation_accuracy"] <= 1 and card["dataset"] == "mnist" and card["drawable"]
    assert card["class_names"] == [str(d) for d in range(10)]
    assert card["test_accuracy"] == predictor.info["test_accuracy"]


def test_model_card_says_which_datasets_are_drawable(predictor):
    from mnist_classifier.datasets import DATASETS

    for name, spec in DATASETS.items():
        with_dataset = dataclasses.replace(predictor, info={**predictor.info, "dataset": name})
        assert model_card(with_dataset)["drawable"] == spec.drawable
    unknown = dataclasses.replace(predictor, info={**predictor.info, "dataset": "not-digits"})
    assert model_card(unknown)["drawable"] is False


def test_page_is_self_contained(api):
    page = api.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css"):  # nothing fetched from elsewhere
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert api.get("/app.js").headers["content-type"].startswith("text/javascript")
    head = api.head("/")  # what `curl -I` and link checkers send
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"].startswith("text/html")
    assert api.get("/openapi.json").json()["info"]["version"] == mnist_classifier.__version__


# ------------------------------------------------------------------ bad requests

GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00" \
      b"\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
PIXELS_OK = [[0] * 28 for _ in range(28)]


def oversized_chunks():  # no Content-Length: the server must count as it reads
    for _ in range(MAX_BODY // 65536 + 2):
        yield b"\0" * 65536


def truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)
    png = cv2.imencode(".png", noise)[1].tobytes()
    return png[: len(png) // 2]


def raw_json(text: str) -> dict:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


def image_body(body: bytes, media_type: str = "image/png") -> dict:
    return {"content": body, "headers": {"Content-Type": media_type}}


BAD_REQUESTS = {
    "body over the limit": (413, image_body(b"\0" * (MAX_BODY + 1))),
    "chunked body over the limit": (413, image_body(oversized_chunks())),
    "multipart over the limit": (413, {"files": {"file": ("big.png", b"\0" * (MAX_BODY + 10), "image/png")}}),
    "image over 4096x4096": (413, image_body(png_header(4097, 16))),
    "decompression bomb": (413, image_body(png_header(100_000, 100_000))),
    "the limit's worth of junk (inclusive)": (415, image_body(b"\1" * MAX_BODY)),
    "text sent as PNG": (415, image_body(b"hello, I am not an image")),
    "GIF (PNG/JPEG only)": (415, image_body(GIF, "image/gif")),
    "truncated PNG": (422, image_body(truncated_png())),
    "PNG cut off in its header": (422, image_body(truncated_png()[:40])),
    "JPEG cut off in its header": (422, image_body(cv2.imencode(".jpg", np.zeros((64, 64), np.uint8))[1][:300]
                                                   .tobytes(), "image/jpeg")),
    "empty body": (422, image_body(b"")),
    "multipart without a file field": (422, {"data": {"name": "x"}, "files": {"other": ("a.png", b"x")}}),
    "invalid JSON": (422, raw_json('{"pixels": [1, 2')),
    "JSON not an object": (422, {"json": [PIXELS_OK]}),
    "JSON without pixels": (422, {"json": {"image": PIXELS_OK}}),
    "27 rows": (422, {"json": {"pixels": PIXELS_OK[:27]}}),
    "a short row": (422, {"json": {"pixels": PIXELS_OK[:27] + [[0] * 27]}}),
    "strings": (422, {"json": {"pixels": [["0"] * 28] * 28}}),
    "booleans": (422, {"json": {"pixels": [[True] * 28] * 28}}),
    "NaN": (422, raw_json('{"pixels": [' + ",".join(["[NaN" + ",0" * 27 + "]"] * 28) + "]}")),
    "Infinity": (422, raw_json('{"pixels": [' + ",".join(["[-Infinity" + ",0" * 27 + "]"] * 28) + "]}")),
    "1e999 overflows to inf": (422, raw_json('{"pixels": [' + ",".join(["[1e999" + ",0" * 27 + "]"] * 28) + "]}")),
    "huge integer": (422, {"json": {"pixels": [[10 ** 400] + [0] * 27] * 28}}),
    "an integer of 5,000 digits": (422, raw_json('{"pixels": [' + ",".join(["[" + "9" * 5000 + ",0" * 27 + "]"] * 28)
                                                 + "]}")),
    "rows without the pixels wrapper, as a form": (422, {"content": json.dumps(PIXELS_OK).encode(), "headers": {
        "Content-Type": "application/x-www-form-urlencoded"}}),
    "above 255": (422, {"json": {"pixels": [[256] + [0] * 27] * 28}}),
    "negative": (422, {"json": {"pixels": [[-1] + [0] * 27] * 28}}),
    "deeply nested JSON": (422, raw_json("[" * 100_000 + "]" * 100_000)),
}


@pytest.mark.parametrize("expected, request_args", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_request_gets_status_and_json_detail(api, expected, request_args):
    response = api.post("/api/predict", **request_args)
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert api.get("/api/health").status_code == 200  # and the server carries on


def test_bad_requests_say_what_is_wrong(api):
    cut_off = api.post("/api/predict", **BAD_REQUESTS["PNG cut off in its header"][1])
    assert cut_off.json()["detail"] == "the PNG or JPEG is truncated or corrupt: send the whole file"
    signature_only = api.post("/api/predict", content=b"\x89PN", headers={"Content-Type": "image/png"})
    assert signature_only.status_code == 422, signature_only.text  # helper-73: 415 "not a PNG or JPEG"
    rows = api.post("/api/predict", **BAD_REQUESTS["rows without the pixels wrapper, as a form"][1])
    assert rows.json()["detail"] == 'expected {"pixels": 28 rows of 28 numbers 0..255}'
    digits = api.post("/api/predict", **BAD_REQUESTS["an integer of 5,000 digits"][1])
    assert digits.json()["detail"] == "pixels must be finite numbers 0..255 (white digit on black)"


def test_no_request_can_name_a_file(api):
    app_js = (STATIC / "app.js").read_bytes()
    assert api.get("/app.js", params={"path": "/etc/passwd"}).content == app_js
    for path in ("/../pyproject.toml", "/static/../../pyproject.toml", "/%2e%2e/%2e%2e/pyproject.toml",
                 "/static/index.html", "/etc/passwd"):
        response = api.get(path)
        assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
    operation = api.get("/openapi.json").json()["paths"]["/api/predict"]["post"]
    assert operation.get("parameters", []) == []  # no query or path parameters at all


def test_server_still_serves_after_the_bad_requests(api, digits):
    response = post_png(api, as_paper_png(digits[2]))
    assert response.status_code == 200 and response.json()["digit"] == 2


# ------------------------------------------------------------------ the command


def test_serve_with_missing_checkpoint_fails_before_listening(tmp_path, capsys):
    assert cli.main(["serve", "--checkpoint", str(tmp_path / "none.pth"), "--port", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not found" in error and "mnist-classifier train" in error


def test_serve_on_a_busy_port_is_a_one_line_error(small_checkpoint, capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--checkpoint", str(small_checkpoint), "--port", str(port)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"127.0.0.1:{port}" in error and "--port" in error


def test_only_non_loopback_hosts_get_a_warning():
    assert all(exposure_warning(host) is None for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        assert exposure_warning(host).startswith(f"warning: listening on {host}")
