"""Load test for `mnist-classifier serve`: concurrent clients posting drawn-digit PNGs.

    python benchmarks/serve_load.py                                  # 16 clients, 20 s
    python benchmarks/serve_load.py --duration 5 --clients 4 --checkpoint models/simple_cnn_best.pth
    python benchmarks/serve_load.py --workers 2 --onnx    # export the checkpoint, serve the .onnx

The server is the real CLI (`python -m mnist_classifier serve`) in its own process, so
the load generator never competes with it for a GIL (it still shares the CPU cores:
on a 2-core machine that is part of what is measured). Clients are plain asyncio
sockets speaking keep-alive HTTP/1.1, a few microseconds of Python per request, so
the numbers are the server's. Latency is measured at the client: send to last byte.

Targets (issue 5): >= 300 requests/s, p99 <= 50 ms, no errors. `run()` returns the
figures as a dict for benchmarks/run_all.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "models" / "simple_cnn_best.pth"
PROC = Path("/proc")  # Linux's process table: the server's CPU time and its worker processes are read there
TARGETS = {"requests_per_s": 300.0, "p99_ms": 50.0, "errors": 0}
MAX_DURATION_S, MAX_CLIENTS = 300.0, 256  # bounded: a typo must not run for an hour
CANVAS_SIDE = 336  # what the page's canvas sends (demo/static/index.html)
WARMUP_REQUESTS = 50
# Encoded the way Chromium's canvas.toBlob("image/png") does (read off a real one: every
# row "Up"-filtered, zlib's fastest level). The filter matters: OpenCV's default "Sub"
# rows take twice as long to decode.
CHROMIUM_PNG = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP, cv2.IMWRITE_PNG_COMPRESSION, 1]


class BenchmarkError(RuntimeError):
    """The benchmark could not run (no checkpoint, server did not start)."""


def run(duration: float = 20.0, clients: int = 16, checkpoint: str | Path | None = None,
        workers: int = 1, onnx: bool = False) -> dict:
    """Start a server, load it for `duration` seconds, stop it; -> figures and targets.

    With `onnx`, a .pth checkpoint is first exported (to a temporary folder) and the
    export is served, so that one command line reproduces the ONNX Runtime figures."""
    require_proc()
    duration = min(max(float(duration), 0.5), MAX_DURATION_S)
    clients = min(max(int(clients), 1), MAX_CLIENTS)
    checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
    if not checkpoint.is_file():
        raise BenchmarkError(f"checkpoint {checkpoint} not found: train one with `mnist-classifier train`")
    command = command_line(duration, clients, checkpoint, workers, onnx)
    if not (onnx and checkpoint.suffix == ".pth"):
        return measure(duration, clients, checkpoint, workers, command)
    from mnist_classifier.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        exported = export_onnx(checkpoint, Path(folder) / f"{checkpoint.stem}.onnx", data_dir=ROOT / "data")
        return measure(duration, clients, exported, workers, command)


def measure(duration: float, clients: int, model_file: Path, workers: int, command: str) -> dict:
    bodies = drawn_digit_pngs()
    port = free_port()
    errors_file = tempfile.TemporaryFile("w+")  # a file, not a pipe: a pipe nobody reads can fill up
    # --backend torch: a .pth is measured as PyTorch serves it, not through serve's own ONNX export
    # (an .onnx is ONNX Runtime's whatever the flag, and serve refuses the flag with one)
    backend = ["--backend", "torch"] if model_file.suffix.lower() == ".pth" else []
    server = subprocess.Popen([sys.executable, "-m", "mnist_classifier", "serve", "--checkpoint",
                               str(model_file), "--port", str(port), "--workers", str(workers), *backend,
                               "--no-collect"],
                              stdout=subprocess.DEVNULL, stderr=errors_file)
    try:
        wait_until_ready(port, server, errors_file)
        wait_for_workers(server.pid, workers)
        cpu_before = cpu_seconds(server.pid)
        latencies, errors, elapsed = asyncio.run(load(port, bodies, clients, duration))
        server_cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        errors_file.close()
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "workers": workers, "duration_s": round(elapsed, 2), "requests": len(latencies),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "errors": errors, "server_cpu_ms_per_request": round(server_cpu * 1000 / max(len(latencies), 1), 2),
            "checkpoint": model_file.name, "targets": TARGETS, "command": command}


def drawn_digit_pngs(count: int = 40) -> list[bytes]:
    """Canvas-like PNGs: thick dark strokes of the ten digits on white, jittered."""
    rng = np.random.default_rng(0)
    bodies = []
    for index in range(count):
        canvas = np.full((CANVAS_SIDE, CANVAS_SIDE, 3), 255, np.uint8)  # RGB: what Chromium sends
        scale = rng.uniform(6.5, 8.5)
        origin = (int(rng.uniform(70, 130)), int(rng.uniform(250, 300)))
        cv2.putText(canvas, str(index % 10), origin, cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (17, 17, 17), thickness=24, lineType=cv2.LINE_AA)
        bodies.append(cv2.imencode(".png", canvas, CHROMIUM_PNG)[1].tobytes())
    return bodies


async def load(port: int, bodies: list[bytes], clients: int, duration: float):
    """-> (latencies in s, error count, elapsed s) of `clients` keep-alive loops."""
    await asyncio.gather(*(client(port, bodies, 0, WARMUP_REQUESTS // clients + 1, [], [0])
                           for _ in range(clients)))
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(client(port, bodies, deadline, None, latencies, errors, offset=i)
                           for i in range(clients)))
    return latencies, errors[0], time.perf_counter() - started


async def client(port, bodies, deadline, limit, latencies, errors, offset=0):
    """One connection posting PNGs back to back until `deadline` (or `limit` requests)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        while (time.perf_counter() < deadline) if limit is None else sent < limit:
            body = bodies[(offset + sent) % len(bodies)]
            sent += 1
            head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            begin = time.perf_counter()
            try:
                writer.write(head + body)
                status, payload = await read_response(reader)
                ok = status == 200 and "digit" in json.loads(payload)
            except (OSError, ValueError, asyncio.IncompleteReadError):
                ok = False
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies.append(time.perf_counter() - begin)
            errors[0] += not ok
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


def require_proc() -> None:
    """Fail at once where there is no /proc (macOS, Windows): the server's CPU figure would read 0
    and `wait_for_workers` would wait 90 s for workers it cannot see."""
    if not (PROC / "self" / "stat").is_file():
        raise BenchmarkError(f"serve_load reads the server's CPU time and workers from Linux's {PROC}, "
                             "which this system lacks: run it on Linux")


def cpu_seconds(pid: int) -> float:
    """CPU time the server has used, worker processes included (Linux): tells server
    cost apart from machine contention."""
    return sum(process_cpu(pid).values())


def process_cpu(pid: int) -> dict[int, float]:
    """{pid: CPU seconds} of the process `pid` and its children."""
    used = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while we looked
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            used[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def wait_for_workers(pid: int, workers: int, timeout: float = 90.0) -> None:
    """Until `serve --workers N` has N children that sit idle: all started, models loaded,
    so no start-up CPU is counted as serving."""
    if workers == 1:
        return
    deadline, before = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = {child: cpu for child, cpu in process_cpu(pid).items()
               if b"spawn_main" in read_bytes(PROC / str(child) / "cmdline")}  # not the resource tracker
        if len(now) == workers and all(now[child] - before.get(child, 0.0) < 0.05 for child in now):
            return
        before = now
    raise BenchmarkError(f"{workers} server processes not ready after {timeout:.0f} s")


def free_port() -> int:
    # A small race (another process could take the port before the server binds) is
    # acceptable for a benchmark; the server then fails fast with a one-line error.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(port: int, server: subprocess.Popen, errors_file, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            errors_file.seek(0)
            raise BenchmarkError(f"server exited: {errors_file.read().strip()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise BenchmarkError(f"server not ready after {timeout:.0f} s")


def command_line(duration: float, clients: int, checkpoint: Path, workers: int, onnx: bool) -> str:
    """The command that repeats this run from the project folder, on any clone."""
    try:
        shown = Path(checkpoint).resolve().relative_to(ROOT)
    except ValueError:  # a model outside the project: only its own path names it
        shown = Path(checkpoint)
    return shlex.join(["python", "benchmarks/serve_load.py", "--duration", f"{duration:g}",
                       "--clients", str(clients), "--checkpoint", str(shown), "--workers", str(workers)]
                      + (["--onnx"] if onnx else []))


def report(result: dict) -> str:
    targets = result["targets"]
    checks = [("requests/s", f"{result['requests_per_s']:.1f}", f">= {targets['requests_per_s']:.0f}",
               result["requests_per_s"] >= targets["requests_per_s"]),
              ("p50 latency", f"{result['p50_ms']:.1f} ms", "", None),
              ("p99 latency", f"{result['p99_ms']:.1f} ms", f"<= {targets['p99_ms']:.0f} ms",
               result["p99_ms"] <= targets["p99_ms"]),
              ("errors", str(result["errors"]), str(targets["errors"]), result["errors"] <= targets["errors"]),
              ("server CPU", f"{result['server_cpu_ms_per_request']:.2f} ms", "per request", None)]
    lines = [f"serve_load: {result['clients']} clients, {result['workers']} server process(es), "
             f"{result['duration_s']} s, {result['requests']} requests, {Path(result['checkpoint']).name}",
             f"{'metric':<12} {'measured':>10}  {'target':<10} verdict"]
    for name, measured, target, ok in checks:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        lines.append(f"{name:<12} {measured:>10}  {target:<10} {verdict}")
    lines.append(f"command: {result['command']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0,
                        help=f"seconds of load (default: 20, max {MAX_DURATION_S:g})")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (default: 16)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help="model to serve (default: models/simple_cnn_best.pth)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (`serve --workers`, default: 1)")
    parser.add_argument("--onnx", action="store_true",
                        help="export the .pth checkpoint to ONNX first and serve the export (default: serve as given)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (default: a table)")
    args = parser.parse_args(argv)
    try:
        result = run(args.duration, args.clients, args.checkpoint, args.workers, args.onnx)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else report(result))
    met = (result["requests_per_s"] >= TARGETS["requests_per_s"] and result["p99_ms"] <= TARGETS["p99_ms"]
           and result["errors"] <= TARGETS["errors"])
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
