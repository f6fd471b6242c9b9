"""`mnist-classifier serve`: load the model, bind the port, run uvicorn in one process or
several (`--workers N`). The app itself (routes, request handling) is in web.py.

    mnist-classifier serve                        # a process per core, the model through ONNX Runtime
    mnist-classifier serve --workers 1 --backend torch --checkpoint models/simple_cnn_best.pth
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import cv2
from fastapi import FastAPI

from ..cores import usable_cores
from ..errors import UserError, hide_image_size_warning
from ..parent import end_with_the_parent
from ..user_examples import ExampleStore
from .web import create_app, drawable, not_digits_reason

CHECKPOINT_ENV = "MNIST_CLASSIFIER_SERVE_CHECKPOINT"  # tells spawned workers what to load
THRESHOLD_ENV = "MNIST_CLASSIFIER_SERVE_REJECT_THRESHOLD"  # and the --reject-threshold they refuse at
ALLOWED_HOSTS_ENV = "MNIST_CLASSIFIER_SERVE_ALLOWED_HOSTS"  # and the --allow-host names
USER_DATA_ENV = "MNIST_CLASSIFIER_SERVE_USER_DATA"  # and where labelled drawings go (JSON null: --no-collect)
BACKENDS = ("auto", "onnx", "torch")
WORKERS_PER_CORE = 4  # more only queue for the same cores, each holding a copy of the model


def serve(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None,
          log=print, reject_threshold: float | None | str = "stored", backend: str = "auto",
          data_dir: str | Path = "data", user_data: str | Path | None = None,
          allowed_hosts: tuple[str, ...] = ()) -> None:
    """Load the model, bind, serve until Ctrl+C. Problems are UserErrors, before serving.

    The defaults are the fastest configuration measured (docs/benchmarks.md): one worker
    process per core, and a `.pth` served through its ONNX export (see `served_model`).
    `user_data`: the folder labelled drawings are saved in (`POST /api/examples`); None: none are.
    `allowed_hosts`: the names a reverse proxy in front serves the page as (guards.py)."""
    from ..reader import load_predictor

    cores = usable_cores()
    workers = cores if workers is None else workers
    if not 1 <= workers <= WORKERS_PER_CORE * cores:
        raise UserError(f"--workers must be between 1 and {WORKERS_PER_CORE * cores} on this machine's {cores} "
                        f"core(s), got {workers}: each is a process with its own model (~130 MB); leave the flag "
                        "out for one per core, the fastest measured")
    checkpoint = served_model(Path(checkpoint), backend, data_dir, log)
    predictor = thresholded(load_predictor(checkpoint, warn=log), reject_threshold)  # a bad checkpoint stops us here
    collecting = user_data is not None and drawable(predictor)  # create_app saves nothing for other models
    labelling_off = ("labelling is off (--no-collect): nothing drawn is saved" if user_data is None
                     else not_digits_reason(predictor))
    if collecting:
        ExampleStore(user_data).check_usable()  # refused now, not at the first label
    sock = bind(host, port)  # and so does a busy port, before any process-wide setting below
    warning = exposure_warning(host)
    if warning:
        log(warning)
    shown = f"[{host}]" if ":" in host else host
    processes = f", {workers} worker processes" if workers > 1 else ""
    port = sock.getsockname()[1]
    log(f"serving {predictor.model_name} ({Path(checkpoint).name}{processes}) at "
        f"http://{shown}:{port}/ ; Ctrl+C stops")
    if host in WILDCARD_HOSTS:  # no browser opens http://0.0.0.0/: say where a phone on the network finds it
        found = ", ".join(f"http://{address}:{port}/" for address in network_addresses(host))
        log(f"from other machines: {found}" if found else
            "from other machines: this machine's network address (none found here) on that port")
    log(f"drawings you label are saved in {user_data} (for `mnist-classifier finetune`; --no-collect: never)"
        if collecting else labelling_off)
    if workers == 1:
        tune_process()
        run_until_stopped(uvicorn_server(create_app(predictor, user_data=user_data, allowed_hosts=allowed_hosts)), sock)
    else:
        os.environ[THRESHOLD_ENV] = json.dumps(reject_threshold)
        os.environ[ALLOWED_HOSTS_ENV] = json.dumps(list(allowed_hosts))
        # Absolute: the workers must all write to the one folder the log line named.
        os.environ[USER_DATA_ENV] = json.dumps(None if user_data is None else str(Path(user_data).absolute()))
        serve_in_processes(Path(checkpoint), sock, workers)


def served_model(model: Path, backend: str, data_dir: str | Path, log) -> Path:
    """The file the workers load. backend "auto"/"onnx": a `.pth` is served through its ONNX
    export, made on first use and cached beside it (rebuilt when the checkpoint changes);
    ONNX Runtime answers a drawing in ~1/3 of eager PyTorch's time. "auto" falls back to
    PyTorch, saying why, when the export cannot be made (e.g. no test images to check it on)."""
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch" and model.suffix.lower() == ".onnx":
        raise UserError(f"--backend torch needs a .pth checkpoint; {model} is an ONNX export, which ONNX Runtime "
                        "serves: drop --backend, or name the .pth it was exported from")
    if backend == "torch" or model.suffix.lower() == ".onnx":
        return model
    from ..errors import CheckpointError
    from ..export import cached_export  # imports torch, which a .pth needs anyway

    try:
        return cached_export(model, data_dir, log)
    except CheckpointError:
        raise  # the checkpoint itself is bad: PyTorch could not serve it either
    except (UserError, OSError) as error:
        if backend == "onnx":
            raise
        log(f"note: serving {model} with PyTorch, not ONNX Runtime: its export beside it could not be made "
            f"({error})")
        return model


def serve_in_processes(checkpoint: Path, sock: socket.socket, workers: int) -> None:
    """One app and model per process, each on a socket of its own on the port where the kernel
    spreads connections over them (workers.py): the GIL of one process caps it at about one
    core of decoding and HTTP, so more cores need more processes."""
    from .workers import listening_sockets, supervisor

    # The supervisor restarts a worker that dies, maybe hours later: it must load the model
    # the others serve, even if the file was retrained, moved or deleted meanwhile. So the
    # workers load a private copy, which lives as long as the server.
    with tempfile.TemporaryDirectory(prefix="mnist-classifier-serve-") as folder:
        snapshot = Path(folder) / checkpoint.name
        try:
            shutil.copyfile(checkpoint, snapshot)
        except OSError as error:
            raise UserError(f"cannot copy {checkpoint} for the worker processes to {folder} "
                            f"({error.strerror}): free some space there or set TMPDIR") from None
        # Workers are spawned, not forked: they rebuild the app from the environment.
        os.environ[CHECKPOINT_ENV] = str(snapshot)
        server = uvicorn_server(f"{__name__}:app_from_environment", factory=True, workers=workers)
        running = supervisor(server.config, listening_sockets(sock, workers))
        running.run()
        if getattr(running, "startup_failed", False):
            raise UserError("a worker process could not start again (its line above says why), so serve stopped: "
                            "start it again")


def app_from_environment() -> FastAPI:
    """The app of one worker process of `serve --workers N`."""
    from ..plugins import import_plugins
    from ..reader import load_predictor

    _end_with_the_supervisor(Path(os.environ[CHECKPOINT_ENV]).parent)
    hide_image_size_warning()  # as cli.main does: a spawned worker starts with Python's filters
    quiet_requests_cut_at_shutdown()
    if hasattr(signal, "SIGHUP"):  # a closed terminal hangs up its whole process group: the supervisor
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # decides, and stops the workers in order
    import_plugins()  # a spawned process starts bare: a plugin model's architecture must be registered again
    try:
        predictor = load_predictor(os.environ[CHECKPOINT_ENV], warn=lambda _line: None)  # the parent said it once
    except UserError as error:  # a replacement, hours later, whose snapshot a /tmp cleaner removed
        from uvicorn.config import STARTUP_FAILURE

        print(f"error: a worker process cannot load the model: {error}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)  # uvicorn's code for "would fail again": not restarted in a loop
    tune_process()
    return create_app(thresholded(predictor, json.loads(os.environ.get(THRESHOLD_ENV, '"stored"'))),
                      user_data=json.loads(os.environ.get(USER_DATA_ENV, "null")),
                      allowed_hosts=tuple(json.loads(os.environ.get(ALLOWED_HOSTS_ENV, "[]"))))


def _end_with_the_supervisor(snapshot_folder: Path) -> None:
    """A supervisor killed outright (kill -9, the out-of-memory killer) must not leave its workers
    answering on its port, nor the model's snapshot folder in the temporary directory: the kernel
    tells each worker (SIGUSR1), which removes the folder (the first one does) and stops as on SIGTERM."""
    orphaned = getattr(signal, "SIGUSR1", None)
    if orphaned is None:  # Windows: no such signal, and no PR_SET_PDEATHSIG either
        return

    def stop(_signum, _frame) -> None:
        shutil.rmtree(snapshot_folder, ignore_errors=True)
        signal.raise_signal(signal.SIGTERM)  # uvicorn's own graceful stop

    signal.signal(orphaned, stop)
    end_with_the_parent(orphaned)


def thresholded(predictor, reject_threshold: float | None | str):
    """The predictor refusing at --reject-threshold ("stored": the model's own threshold)."""
    return predictor if reject_threshold == "stored" else predictor.with_reject_threshold(reject_threshold)


def run_until_stopped(server, sock: socket.socket) -> None:
    """Serve until Ctrl+C, SIGTERM or SIGHUP (the terminal closed; not under nohup), then return: a
    stop asked for is no error, as with several workers. (Once shut down, uvicorn raises the signal
    again for the handler it found, which would turn Ctrl+C into a KeyboardInterrupt and SIGTERM
    into death by signal: it finds this one.)"""
    stops = (signal.SIGINT, signal.SIGTERM)
    found = {stop: signal.signal(stop, signal.SIG_IGN) for stop in stops}
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) != signal.SIG_IGN:  # uvicorn leaves SIGHUP to us
        found[hangup] = signal.signal(hangup, lambda _signum, frame: server.handle_exit(signal.SIGTERM, frame))
    try:
        server.run(sockets=[sock])
    finally:
        for stop, handler in found.items():
            signal.signal(stop, handler)


# Ctrl+C waits this long for requests in progress (an answer takes milliseconds), then closes
# them: a client stalled mid-upload would otherwise hold the stop for its whole body timeout.
SHUTDOWN_GRACE_SECONDS = 3


def uvicorn_server(app, **options):
    import uvicorn

    from .connections import HeadDeadline

    quiet_requests_cut_at_shutdown()
    # No access log: at hundreds of requests/s it floods the terminal and costs CPU. No lifespan:
    # the app has no start-up or shut-down work, and a second Ctrl+C would print its cancelled task.
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                         timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
                                         http=HeadDeadline, **options))


def quiet_requests_cut_at_shutdown() -> None:
    """uvicorn logs a request it cancels as a 30-line "Exception in ASGI application": after the grace
    period its own one line ("Cancel 1 running task(s) ...") says it already, and on a second Ctrl+C
    the event loop's end cancels it. Nothing else cancels a request (the app never does)."""
    logging.getLogger("uvicorn.error").addFilter(_not_cancelled)


def _not_cancelled(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def tune_process() -> None:
    """Process-wide settings for answering one small image per request. Call it after loading
    the model: torch is set only if the model brought it in (an ONNX worker never imports it,
    ~180 MB a process)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        # One image per call: intra-op threads cost more to wake than they save, and
        # requests already run in parallel.
        torch.set_num_threads(1)
    # OpenCV's pool splits each small resize or decode across cores and then spins
    # waiting for more work: ~0.7 ms of a second core per request, for nothing.
    cv2.setNumThreads(0)
    # The event loop thread gives up the GIL on every socket call and then waits up to
    # the switch interval (5 ms) for a worker thread to hand it back: at 16 concurrent
    # clients that wait dominated p99. 0.5 ms gave ~1.4x the requests/s in A/B runs.
    sys.setswitchinterval(0.0005)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so that a busy port is a one-line error, not a traceback."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # "::" is every interface: IPv4 ones too, as the addresses serve lists for other machines
        both = host == "::" and socket.has_dualstack_ipv6()
        return socket.create_server((host, port), family=family, backlog=2048,  # uvicorn's default backlog
                                    dualstack_ipv6=both)
    except (OSError, OverflowError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UserError(f"cannot listen on {host}:{port} ({reason}); pick another --port or --host") from None


WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # every interface


# Documentation addresses (RFC 5737, RFC 3849): "connecting" a UDP socket there sends nothing,
# it only asks the routing table which of this machine's addresses faces the network.
ROUTE_PROBES = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def network_addresses(host: str) -> list[str]:
    """The addresses other machines can reach a server listening on the wildcard `host` at
    (IPv6 in brackets): the one each family routes out of, then those the host name gives.
    Not loopback or link-local ones."""
    families = ((socket.AF_INET,) if host == "0.0.0.0" else  # "::" takes IPv4 too where it can (bind)
                (socket.AF_INET, socket.AF_INET6) if socket.has_dualstack_ipv6() else (socket.AF_INET6,))
    found = [_routed_address(family) for family in families]
    try:
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
                  if info[0] in families]
    except OSError:  # the host name does not resolve
        pass
    addresses = []
    for text in filter(None, found):
        address = ipaddress.ip_address(text.split("%")[0])
        shown = f"[{address}]" if address.version == 6 else str(address)
        if not (address.is_loopback or address.is_link_local or address.is_unspecified) and shown not in addresses:
            addresses.append(shown)
    return addresses


def _routed_address(family: int) -> str | None:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((ROUTE_PROBES[family], 9))
            return probe.getsockname()[0]
    except OSError:  # no route: not on a network
        return None


def exposure_warning(host: str) -> str | None:
    """A warning line when the server would be reachable from other machines."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (f"warning: listening on {host}: anyone who can reach this machine can use the demo "
            "and the API (no authentication); use --host 127.0.0.1 to keep it local")
