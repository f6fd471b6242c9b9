"""`serve --workers N`: N processes, each listening on a socket of its own on the one port.

On one shared listening socket, the worker that wakes first accepts every connection waiting,
so a burst of clients lands on one process: 16 clients connecting at once went 16 to 0 (or 14
to 2) over two workers, and the second core sat idle (docs/benchmarks.md, 7 Dec). Linux spreads
new connections over the sockets of a SO_REUSEPORT group by a hash of each connection's
addresses, so each worker gets its own socket of the group. Elsewhere (macOS, Windows: no such
spreading) the workers share one socket, as uvicorn's own supervisor does.

    sockets = listening_sockets(probe, workers)     # the port `probe` holds, one socket per worker
    supervisor(config, sockets).run()
"""
from __future__ import annotations

import logging
import signal
import socket
import sys

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from ..errors import UserError

SPREADS_CONNECTIONS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
BACKLOG = 2048  # uvicorn's default
logger = logging.getLogger("uvicorn.error")  # where uvicorn's supervisor says what it does


def listening_sockets(probe: socket.socket, workers: int) -> list[socket.socket]:
    """One listening socket per worker on `probe`'s address, or `probe` alone where the kernel
    would not spread connections over several. `probe` was bound without SO_REUSEPORT, so a
    port another server holds was refused then; it is closed here and its port taken over.
    (Another process of the same user could join the group while serve runs: the kernel lets
    only the same user, and a second `serve` is refused by its own probe.)"""
    if workers < 2 or not SPREADS_CONNECTIONS:
        return [probe]
    address, family = probe.getsockname(), probe.family
    both = family == socket.AF_INET6 and not probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    probe.close()
    sockets = []
    try:
        for _ in range(workers):
            sockets.append(socket.create_server(address[:2], family=family, backlog=BACKLOG, reuse_port=True,
                                                dualstack_ipv6=both))
    except OSError as error:  # the port taken in the instant between, or no file descriptors left
        for made in sockets:
            made.close()
        raise UserError(f"cannot listen on port {address[1]} for {workers} worker processes ({error.strerror or error}); "
                        "start serve again, or pick another --port") from None
    return sockets


def supervisor(config: Config, sockets: list[socket.socket]) -> Multiprocess:
    """uvicorn's supervisor (signals, health checks), each worker on its own socket when there
    are as many sockets as workers."""
    if len(sockets) == config.workers:
        # Read before uvicorn installs its handler over it: `nohup serve` must outlive its terminal
        hangups_ignored = hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        return _SocketPerWorker(config, sockets, hangups_ignored=hangups_ignored)
    return Multiprocess(config, sockets=sockets)


class _SocketPerWorker(Multiprocess):
    """Worker i always listens on socket i: a replacement for a dead worker takes over its
    socket, so that no socket of the group is left without a process accepting on it. A worker
    that cannot start (its model gone) stops the server: its socket would take connections that
    nobody answers. The number of workers is fixed (uvicorn's SIGTTIN and SIGTTOU add and remove
    workers on one shared socket)."""

    startup_failed = False

    def __init__(self, config: Config, sockets: list[socket.socket], hangups_ignored: bool = False):
        super().__init__(config, sockets=sockets)
        self.hangups_ignored = hangups_ignored

    def _started(self, index: int) -> Process:
        process = Process(self.config, [self.sockets[index]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._started(index) for index in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        for index, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or dead already
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # it would fail again: the app or model is broken
                self.startup_failed = True
                self.should_exit.set()
                return
            self.processes[index] = self._started(index)

    def handle_hup(self) -> None:
        """SIGHUP, the terminal closed: stop, as on SIGTERM, unless started under nohup. (uvicorn
        restarts every worker instead: serve outlived its terminal, holding the port, with no
        Ctrl+C left to stop it.)"""
        if not self.hangups_ignored:
            self.should_exit.set()

    def handle_ttin(self) -> None:
        logger.warning("the number of workers is fixed (--workers): restart serve to change it")

    handle_ttou = handle_ttin
