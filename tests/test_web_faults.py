"""`mnist-classifier serve` under hostile clients and a fuzzer: no 5xx, no crash, others served.

    .venv/bin/python -m pytest tests/test_web_faults.py -q

The server is the real command (`python -m mnist_classifier serve --port 0`) in its own
process, so the uvicorn settings in `demo/web.py:serve` are the ones under test. Hostile
clients speak raw HTTP over sockets: they disconnect mid-upload, and they trickle the
headers or the body one byte at a time. Meanwhile an ordinary client keeps asking for
predictions and must get each answer promptly. Then the API is fuzzed from its own
OpenAPI schema (schemathesis) and with hypothesis-made bodies and content types.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest

from .conftest import REPO_ROOT
from .test_web_api import running_server

PROMPT = 3.0  # s: an ordinary prediction on a busy 2-core machine takes ~0.02 s
DIGIT_JSON = {"pixels": np.pad(np.full((14, 4), 255, np.uint8), ((7, 7), (12, 12))).tolist()}


@dataclass
class Server:
    url: str
    host: str
    port: int
    process: subprocess.Popen
    log: Path
    requests_sent: dict[str, int] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(small_checkpoint, tmp_path_factory):
    with serve_command(small_checkpoint, tmp_path_factory.mktemp("serve")) as running:
        yield running


@contextmanager
def serve_command(checkpoint: Path, folder: Path, *options: str, prefix: tuple[str, ...] = (),
                  hangups_as_in_a_terminal: bool = False):
    """`python -m mnist_classifier serve --port 0 ...` until the block ends (then Ctrl+C), after
    `prefix` (e.g. nohup). Labelled drawings go to `folder`: the fuzzer posts and deletes examples,
    never in data/user. `hangups_as_in_a_terminal`: SIGHUP's default action, whatever this test run
    inherited (a CI job started in the background may ignore it, as nohup does)."""
    log = folder / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "mnist_classifier", "serve", "--checkpoint", str(checkpoint),
             "--port", "0", "--user-data", str(folder / "user"), *options], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)) if hangups_as_in_a_terminal else None)
    try:
        line = read_line(process, timeout=90)
        if line.startswith("exporting "):  # a first start: its ONNX cache is made before serving
            line = read_line(process, timeout=90)
        found = re.search(r"at http://(127\.0\.0\.1):(\d+)/", line)
        assert found, f"no 'serving ... at' line: {line!r}; stderr: {log.read_text()[-2000:]}"
        host, port = found.group(1), int(found.group(2))
        wait_until_healthy(f"http://{host}:{port}")
        yield Server(f"http://{host}:{port}", host, port, process, log)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def read_line(process: subprocess.Popen, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


def wait_until_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never became healthy"
        time.sleep(0.1)


# ------------------------------------------------------------------ hostile clients


def raw_request(content_type: str, length: int, close: bool = False) -> bytes:
    """The head of a POST to /api/predict, as bytes on the wire."""
    lines = ["POST /api/predict HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}",
             f"Content-Length: {length}"] + (["Connection: close"] if close else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def disconnect_mid_upload(server: Server, content_type: str, reset: bool) -> None:
    """Promise 500,000 bytes, send 100,000, vanish (a FIN, or a RST like a crashed client)."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(raw_request(content_type, 500_000) + b"\x89PNG" + b"\0" * 99_996)
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def trickle(server: Server, seconds: float, in_headers: bool) -> bytes:
    """One byte every 0.2 s for `seconds`, then the rest at once; returns the raw response."""
    body = json.dumps(DIGIT_JSON).encode()
    message = raw_request("application/json", len(body), close=True) + body
    header_end = message.index(b"\r\n\r\n") + 4
    start = 0 if in_headers else header_end
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(message[:start])
        position, deadline = start, time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendall(message[position:position + 1])
            position += 1
            time.sleep(0.2)
        sock.sendall(message[position:])
        return receive_all(sock)  # Connection: close, so the server ends it after answering


def receive_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (FIN, or RST if our bytes were left unread)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def trickle_until_closed(sock: socket.socket, data: bytes, limit: float) -> tuple[bytes, float]:
    """Send `data` a byte every 0.1 s (then nothing) until the server answers or closes -> (answer, seconds)."""
    started, sock_answer = time.monotonic(), b""
    sock.settimeout(0.1)
    for byte in [data[i:i + 1] for i in range(len(data))] + [b""] * int(limit * 10):
        try:
            if byte:
                sock.sendall(byte)
            sock_answer = sock.recv(65536)
            break  # an answer, or b"": the server closed the connection
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    waited = time.monotonic() - started
    sock.settimeout(5)
    return sock_answer + (receive_all(sock) if sock_answer else b""), waited


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else -1


def predict_while(server: Server, busy: threading.Event) -> list[float]:
    """Ordinary client: predictions back to back while `busy` is set; returns each latency."""
    latencies = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while busy.is_set() or not latencies:
            started = time.perf_counter()
            response = client.post("/api/predict", json=DIGIT_JSON)
            assert response.status_code == 200 and response.json()["digit"] is not None, response.text
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    return latencies


def test_clients_that_vanish_mid_upload_do_not_disturb_others(server):
    busy = threading.Event()
    busy.set()
    with ThreadPoolExecutor(max_workers=1) as pool:
        ordinary = pool.submit(predict_while, server, busy)
        kinds = [(content_type, reset) for content_type in ("image/png", "application/json", "multipart/form-data;"
                                                            " boundary=x") for reset in (False, True)]
        for content_type, reset in kinds * 4:  # 24 abandoned uploads
            disconnect_mid_upload(server, content_type, reset)
        time.sleep(0.5)
        busy.clear()
        latencies = ordinary.result(timeout=60)
    server.requests_sent["abandoned uploads"] = len(kinds) * 4
    print(f"abandoned uploads: {len(kinds) * 4}; meanwhile {len(latencies)} predictions, "
          f"slowest {max(latencies):.3f} s")
    assert max(latencies) < PROMPT, latencies
    assert httpx.post(f"{server.url}/api/predict", json=DIGIT_JSON, timeout=10).status_code == 200
    assert server.alive() and "Traceback" not in server.stderr(), server.stderr()[-3000:]


def test_slow_tricklers_are_answered_and_others_are_served_meanwhile(server):
    busy = threading.Event()
    busy.set()
    with ThreadPoolExecutor(max_workers=7) as pool:
        ordinary = pool.submit(predict_while, server, busy)
        # Three trickle the headers and three the body, one byte per 0.2 s for 4 s each.
        tricklers = [pool.submit(trickle, server, 4.0, in_headers) for in_headers in (True, False) * 3]
        answers = [t.result(timeout=60) for t in tricklers]
        busy.clear()
        latencies = ordinary.result(timeout=60)
    server.requests_sent["tricklers"] = len(answers)
    print(f"tricklers: {len(answers)} answered {[status_of(a) for a in answers]}; meanwhile "
          f"{len(latencies)} predictions, slowest {max(latencies):.3f} s")
    assert [status_of(a) for a in answers] == [200] * 6, [a[:200] for a in answers]
    # The ordinary client kept going the whole time: many answers, each prompt.
    assert len(latencies) >= 10 and max(latencies) < PROMPT, latencies
    assert server.alive() and "Traceback" not in server.stderr(), server.stderr()[-3000:]


def test_a_body_that_never_finishes_is_cut_off(small_checkpoint, monkeypatch):
    """A body still incomplete after BODY_TIMEOUT gets 408 and the connection is closed."""
    from mnist_classifier.demo import web
    from mnist_classifier.reader import load_predictor

    monkeypatch.setattr(web, "BODY_TIMEOUT", 1.0)  # the real one is 120 s
    with running_server(web.create_app(load_predictor(small_checkpoint))) as url:
        with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), timeout=10) as sock:
            sock.sendall(raw_request("image/png", 1000))
            answer, waited = trickle_until_closed(sock, b"\0" * 80, limit=8)
        assert status_of(answer) == 408 and b"not received within" in answer, answer[:300]
        print(f"never-finishing body: 408 after {waited:.2f} s (BODY_TIMEOUT patched to 1 s), connection closed")
        assert 0.9 < waited < 4
        assert httpx.get(f"{url}/api/health", timeout=10).status_code == 200



def test_a_head_that_never_finishes_is_cut_off(small_checkpoint, monkeypatch):
    """A connection gets HEAD_TIMEOUT s for each request's head: a trickled head gets 408, an idle
    connection is closed without a word, a head sent in time is answered, also after an answer."""
    from mnist_classifier.demo import connections, web
    from mnist_classifier.reader import load_predictor

    monkeypatch.setattr(connections, "HEAD_TIMEOUT", 1.0)  # the real one is 20 s
    health = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with running_server(web.create_app(load_predictor(small_checkpoint))) as url:
        address = urlsplit(url).hostname, urlsplit(url).port
        with socket.create_connection(address, timeout=10) as sock:  # slowloris: a byte now and then
            answer, head_waited = trickle_until_closed(sock, health * 10, limit=8)
        assert status_of(answer) == 408 and b"headers not received within 1 s" in answer, answer[:300]
        assert 0.9 < head_waited < 4, head_waited
        with socket.create_connection(address, timeout=10) as sock:  # opened, never used
            answer, waited = trickle_until_closed(sock, b"", limit=8)
        assert answer == b"" and 0.9 < waited < 4, (answer[:300], waited)
        with socket.create_connection(address, timeout=10) as sock:  # keep-alive: each head on time
            for _ in range(3):
                sock.sendall(health[:20])
                time.sleep(0.6)  # over half the deadline, twice in a row: each request gets its own
                sock.sendall(health[20:])
                sock.settimeout(5)
                first = sock.recv(65536)
                assert status_of(first) == 200, first[:300]
            answer, waited = trickle_until_closed(sock, health * 10, limit=8)  # then a slow one after answers
        assert status_of(answer) == 408 and 0.9 < waited < 4, (answer[:300], waited)
        with socket.create_connection(address, timeout=10) as sock:  # the rest of a refused upload: no 408
            sock.sendall(raw_request("image/png", 10_000_000))  # over MAX_BODY: 413 once 2 s pass without a byte
            refused = sock.recv(65536)
            assert status_of(refused) == 413, refused[:300]
            answer, waited = trickle_until_closed(sock, b"\0" * 5, limit=8)
        assert answer == b"" and waited < 4, (answer[:300], waited)
        print(f"head deadline (patched to 1 s): trickled head 408 after {head_waited:.2f} s, idle connection closed, "
              "heads in time answered on one connection, a refused upload's rest cut without a 408")


# ------------------------------------------------------------------ fuzzing


# Operations that take no parameters and no body: schema-violating requests cannot be made for them.
INPUTLESS = {("GET", "/api/health"), ("GET", "/api/model"), ("GET", "/api/examples/stats"),
             ("DELETE", "/api/examples/last")}


def test_schemathesis_fuzz_of_the_openapi_schema_finds_no_5xx(server):
    """Every operation in /openapi.json, schema-valid and schema-violating data, bounded."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=10)
    sent, statuses, per_operation = [0], {}, {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=50, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def send(case):
                    response = case.call(base_url=server.url, session=session, timeout=30)
                    sent[0] += 1
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    label = f"{case.method} {case.path} {mode.value}"
                    per_operation[label] = per_operation.get(label, 0) + 1
                    assert response.status_code < 500, (case.method, case.path, response.text[:300])

                try:
                    send()
                except Unsatisfiable:  # nothing to get wrong in a request without inputs (GET /api/health)
                    assert mode == GenerationMode.NEGATIVE and (operation.method.upper(), operation.path) in INPUTLESS
    server.requests_sent["schemathesis"] = sent[0]
    print(f"schemathesis: {sent[0]} requests, statuses {dict(sorted(statuses.items()))}, by operation {per_operation}")
    assert sent[0] >= 60 and server.alive()


def test_hypothesis_fuzz_of_bodies_and_content_types_finds_no_5xx(server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    png = cv2.imencode(".png", np.asarray(DIGIT_JSON["pixels"], np.uint8))[1].tobytes()
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
        max_leaves=60)
    pixel_rows = st.lists(st.lists(st.integers(-10, 300) | st.floats(allow_nan=True), min_size=26, max_size=30),
                          min_size=26, max_size=30)
    bodies = st.one_of(
        st.binary(max_size=4096),
        json_values.map(lambda value: json.dumps(value).encode()),  # NaN, Infinity included
        st.fixed_dictionaries({"pixels": pixel_rows}).map(lambda value: json.dumps(value).encode()),
        st.tuples(st.integers(0, len(png)), st.binary(max_size=64)).map(  # a real PNG, cut and spliced
            lambda cut: png[:cut[0]] + cut[1] + png[cut[0] + len(cut[1]):]),
    )
    content_types = st.sampled_from([
        "image/png", "image/jpeg", "application/json", "application/x-www-form-urlencoded", "text/plain",
        "multipart/form-data", "multipart/form-data; boundary=zz", "application/octet-stream", "",
        "image/png; charset=utf-8", "APPLICATION/JSON", "*/*", "image/", ";;;",
    ])
    # Mostly the one operation that reads a body; now and then the wrong method or route.
    elsewhere = st.sampled_from([("GET", "/api/predict"), ("PUT", "/api/predict"), ("OPTIONS", "/api/predict"),
                                 ("POST", "/api/health"), ("DELETE", "/api/model"), ("HEAD", "/"), ("POST", "/")])
    routes = st.tuples(st.integers(0, 7), elsewhere).map(
        lambda pick: pick[1] if pick[0] == 7 else ("POST", "/api/predict"))
    sent, statuses = [0], {}

    with httpx.Client(base_url=server.url, timeout=30) as client:
        @settings(max_examples=250, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(route=routes, content_type=content_types, body=bodies)
        def send(route, content_type, body):
            method, path = route
            headers = {"Content-Type": content_type} if content_type else {}
            response = client.request(method, path, content=body, headers=headers)
            sent[0] += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (method, path, content_type, body[:80], response.text[:300])

        send()

        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(name=st.sampled_from(["file", "file", "image", ""]), data=bodies,
               filename=st.text(max_size=20), declared=content_types)
        def upload(name, data, filename, declared):
            response = client.post("/api/predict", files={name: (filename, data, declared or "image/png")})
            sent[0] += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (name, filename, declared, response.text[:300])

        upload()
    server.requests_sent["hypothesis"] = sent[0]
    print(f"hypothesis: {sent[0]} requests, statuses {dict(sorted(statuses.items()))}")
    assert server.alive() and httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200


def test_server_is_still_up_and_clean_after_everything(server):
    response = httpx.post(f"{server.url}/api/predict", json=DIGIT_JSON, timeout=10)
    assert response.status_code == 200 and response.json()["digit"] is not None
    assert server.alive()
    assert "Traceback" not in server.stderr() and "Exception" not in server.stderr(), server.stderr()[-3000:]
    print(f"requests by kind: {server.requests_sent}")


# ------------------------------------------------------------------ serve --workers


def test_worker_processes_answer_killed_ones_come_back_with_the_model_all_stop_together(small_checkpoint, tmp_path):
    served = tmp_path / "served.pth"
    shutil.copyfile(small_checkpoint, served)
    with serve_command(served, tmp_path, "--workers", "2") as running:
        workers = wait_for_children(running.process.pid, count=2)
        held = connections_held(running, workers)  # 16 clients at once: each worker takes a share
        assert min(held.values()) >= 2, held  # on one shared socket: 16 to 0 (docs/benchmarks.md, 7 Dec)
        os.kill(running.process.pid, signal.SIGTTOU)  # uvicorn's "one worker fewer": its socket would go unanswered
        time.sleep(1)
        assert sorted(child_pids(running.process.pid)) == sorted(workers)  # the count is fixed (helper-60)
        assert min(connections_held(running, workers).values()) >= 2
        answers = post_digits(running, 24)
        # The .pth is served through its ONNX export: no worker needs torch (~180 MB of memory each)
        assert not any("libtorch" in (Path(f"/proc/{worker}") / "maps").read_text() for worker in workers)
        assert len(set(answers)) == 1 and answers[0] is not None, answers  # every process, one model

        served.unlink()  # retrained, moved or deleted while serving: a new worker still has the model
        for worker in workers:  # both die (out of memory, a bug, kill -9): only replacements can answer
            os.kill(worker, signal.SIGKILL)
            replaced = wait_for_children(running.process.pid, count=2, without=worker)
        assert post_digits(running, 8) == answers[:8]
        assert min(connections_held(running, child_pids(running.process.pid)).values()) >= 2  # replacements too
        assert not set(workers) & set(child_pids(running.process.pid))
        assert stop(running.process) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in replaced), "a worker outlived the server"


def test_a_worker_that_cannot_start_again_stops_the_server_in_one_line(small_checkpoint, tmp_path):
    """Its model's snapshot gone (a /tmp cleaner, weeks in), a replacement failed with a traceback
    every ~3 s while its socket took half the connections unanswered (helper-60)."""
    with serve_command(small_checkpoint, tmp_path, "--workers", "2") as running:
        workers = wait_for_children(running.process.pid, count=2)
        environment = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
        snapshot = next(Path(entry.split(b"=", 1)[1].decode()) for entry in environment
                        if entry.startswith(b"MNIST_CLASSIFIER_SERVE_CHECKPOINT="))
        snapshot.unlink()
        os.kill(workers[0], signal.SIGKILL)
        assert running.process.wait(timeout=60) == 2
        said = running.log.read_text()
        assert "error: a worker process cannot load the model: " in said and "Traceback" not in said
        assert said.rstrip().endswith("error: a worker process could not start again (its line above says why), "
                                      "so serve stopped: start it again")
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_workers_of_a_server_killed_outright_stop_answering(small_checkpoint, tmp_path):
    """kill -9 (or the out-of-memory killer) gives the supervisor no chance to stop its workers:
    they must not go on answering on a port no visible `serve` holds."""
    with serve_command(small_checkpoint, tmp_path, "--workers", "2") as running:
        workers = wait_for_children(running.process.pid, count=2)
        assert post_digits(running, 2)[0] is not None
        environment = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
        snapshot = next(Path(entry.split(b"=", 1)[1].decode()) for entry in environment
                        if entry.startswith(b"MNIST_CLASSIFIER_SERVE_CHECKPOINT="))
        assert snapshot.is_file() and snapshot.parent.name.startswith("mnist-classifier-serve-")
        running.process.kill()
        running.process.wait()
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers outlived a killed server"
        assert not snapshot.parent.exists(), "the model's snapshot folder outlived a killed server"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{running.url}/api/health", timeout=5)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_one_worker_server_asked_to_stop_exits_0_as_several_workers_do(small_checkpoint, tmp_path, stop_signal):
    with serve_command(small_checkpoint, tmp_path, "--workers", "1") as running:
        assert post_digits(running, 1)[0] is not None
        running.process.send_signal(stop_signal)
        assert running.process.wait(timeout=15) == 0
    assert "error" not in running.log.read_text() and "Traceback" not in running.log.read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_does_not_wait_for_a_client_stalled_mid_upload(small_checkpoint, tmp_path, workers):
    """helper-64: one phone stalled mid-upload held Ctrl+C for the whole body timeout (120 s), silently;
    a second Ctrl+C printed 85 lines of traceback."""
    with serve_command(small_checkpoint, tmp_path, "--workers", workers) as running:
        with socket.create_connection((running.host, running.port)) as stalled:
            stalled.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                            b"Content-Length: 5000\r\n\r\n\x89PNG\r\n\x1a\n")
            time.sleep(1)
            running.process.send_signal(signal.SIGINT)
            time.sleep(0.8)
            running.process.send_signal(signal.SIGINT)  # impatient: a second Ctrl+C within the grace period
            assert running.process.wait(timeout=60) == 0  # BODY_TIMEOUT is 120 s
    said = running.log.read_text()
    assert "Traceback" not in said and "CancelledError" not in said, said


@pytest.mark.parametrize("workers", ["1", "2"])
def test_closing_the_terminal_stops_serve_and_its_workers(small_checkpoint, tmp_path, workers):
    """A closed terminal hangs up its process group: uvicorn's supervisor took SIGHUP for "restart the
    workers", so serve outlived its window, holding the port (helper-64); one process died of it."""
    with serve_command(small_checkpoint, tmp_path, "--workers", workers, hangups_as_in_a_terminal=True) as running:
        workers = wait_for_children(running.process.pid, count=2) if workers == "2" else []
        for pid in [running.process.pid, *workers]:  # what the kernel does to the terminal's foreground group
            os.kill(pid, signal.SIGHUP)
        assert running.process.wait(timeout=60) == 0
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers outlived the hang-up"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{running.url}/api/health", timeout=5)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_under_nohup_outlives_its_terminal(small_checkpoint, tmp_path, workers):
    with serve_command(small_checkpoint, tmp_path, "--workers", workers, prefix=("nohup",)) as running:
        children = wait_for_children(running.process.pid, count=2) if workers == "2" else []
        for pid in [running.process.pid, *children]:
            os.kill(pid, signal.SIGHUP)
        time.sleep(2)
        assert running.process.poll() is None
        assert httpx.get(f"{running.url}/api/health", timeout=5).status_code == 200
        assert stop(running.process) == 0


def test_the_command_line_imports_no_torch_until_a_command_needs_it():
    """`serve`'s workers are spawned, and spawn re-imports the console script (`mnist-classifier`,
    i.e. mnist_classifier.cli) in each: torch there would cost every ONNX worker ~180 MB."""
    imported = subprocess.run([sys.executable, "-c", "import sys, mnist_classifier.cli; print(sorted(m for m in "
                               "sys.modules if m == 'torch' or m.startswith('torch.')))"],
                              capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert imported.returncode == 0 and imported.stdout.strip() == "[]", imported.stdout[:500] + imported.stderr


def test_one_core_allowed_on_every_interface_one_worker_and_the_addresses_to_open(small_checkpoint):
    """A container or `taskset` allowing one core: one process, not one per core of the machine.
    `--host 0.0.0.0`: the addresses other machines open are printed, and each one answers."""
    one_core = min(os.sched_getaffinity(0))
    process = subprocess.Popen([sys.executable, "-m", "mnist_classifier", "serve", "--checkpoint", str(small_checkpoint),
                                "--host", "0.0.0.0", "--port", "0", "--no-collect"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               preexec_fn=lambda: os.sched_setaffinity(0, {one_core}))
    try:
        # warning, serving ..., from other machines: printed at once, before serving (pytest-timeout guards)
        printed = (line for line in iter(process.stdout.readline, "") if not line.startswith("exporting "))
        lines = list(itertools.islice(printed, 3))  # lazily: the server prints nothing more while serving
        [serving] = [line for line in lines if line.startswith("serving ")]
        assert "serving simple_cnn" in serving and "worker processes" not in serving, lines
        [elsewhere] = [line for line in lines if line.startswith("from other machines: ")]
        urls = re.findall(r"http://\S+/", elsewhere)
        if not urls:  # a machine on no network: the line says so
            assert "none found here" in elsewhere
        for url in urls:  # each one this machine answers on, not 0.0.0.0
            assert "0.0.0.0" not in url and "127." not in url
            wait_until_healthy(url.rstrip("/"))
    finally:
        stop(process)


def test_a_file_for_user_data_is_refused_before_serving(small_checkpoint, tmp_path, capsys):
    from mnist_classifier import cli

    readme = tmp_path / "README.md"
    readme.write_text("not a folder")
    assert cli.main(["serve", "--checkpoint", str(small_checkpoint), "--port", "0", "--user-data", str(readme)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "is a file, not a folder for labelled drawings" in error


@pytest.mark.parametrize("workers", ["0", "10000"])
def test_a_worker_count_out_of_range_is_a_one_line_error(small_checkpoint, capsys, workers):
    from mnist_classifier import cli
    from mnist_classifier.cores import usable_cores

    assert cli.main(["serve", "--checkpoint", str(small_checkpoint), "--port", "0", "--workers", workers]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"error: --workers must be between 1 and {4 * usable_cores()} on this machine's "
                     f"{usable_cores()} core(s), got {workers}: each is a process with its own model (~130 MB); "
                     "leave the flag out for one per core, the fastest measured")


def post_digits(running: Server, count: int) -> list:
    def one(_):
        return httpx.post(f"{running.url}/api/predict", json=DIGIT_JSON, timeout=30).json()["digit"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def connections_held(running: Server, workers: list[int], clients: int = 16) -> dict[int, int]:
    """{worker pid: connections it holds} after `clients` connect at once, each answered (so no
    socket of the port is left without a process accepting on it). Read off /proc: each worker's
    socket inodes against the kernel's table of established connections to the port."""
    conns = [socket.create_connection((running.host, running.port), timeout=30) for _ in range(clients)]
    try:
        for conn in conns:
            conn.sendall(f"GET /api/health HTTP/1.1\r\nHost: {running.host}\r\n\r\n".encode())
        for conn in conns:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        established = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == running.port:
                    established.add(fields[9])  # the inode of the server's end of one connection
        held = {}
        for worker in workers:
            inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{worker}/fd").iterdir()
                      if os.readlink(fd).startswith("socket:[")}
            held[worker] = len(inodes & established)
        assert sum(held.values()) == clients, held
        return held
    finally:
        for conn in conns:
            conn.close()


def wait_for_children(pid: int, count: int, without: int | None = None, timeout: float = 60) -> list[int]:
    """The pids of `pid`'s child processes once there are `count` of them (none is `without`)."""
    deadline = time.monotonic() + timeout
    while True:
        children = [child for child in child_pids(pid) if child != without]
        if len(children) == count:
            return children
        assert time.monotonic() < deadline, f"{len(children)} worker processes, expected {count}"
        time.sleep(0.2)


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        # ppid; zombies are gone already; multiprocessing's resource tracker is no worker
        if int(fields[1]) == pid and fields[0] != "Z" and is_spawned_worker(stat.parent):
            children.append(int(stat.parent.name))
    return children


def is_spawned_worker(proc: Path) -> bool:
    try:
        return b"spawn_main" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_every_interface_in_ipv6_takes_ipv4_too_as_the_listed_addresses_say():
    """`serve --host ::` listed IPv4 addresses for other machines but listened on IPv6 alone (helper-60)."""
    from mnist_classifier.demo.server import bind

    if not (socket.has_ipv6 and socket.has_dualstack_ipv6()):
        pytest.skip("no dual-stack IPv6 sockets here")
    try:
        listening = bind("::", 0)
    except Exception as error:  # a container without IPv6
        pytest.skip(f"cannot listen on [::]: {error}")
    with listening, socket.create_connection(("127.0.0.1", listening.getsockname()[1]), timeout=5):
        pass
