"""Worker processes that end with the process that started them, even one killed by SIGKILL.

A parent killed outright (`kill -9`, the out-of-memory killer) cannot stop its workers, and
they would go on: the set-up's workers waiting for ever to hand back their chunk (prepared.py),
the server's workers answering on a port that no visible `serve` holds. On Linux the kernel
sends each a signal when its parent dies (prctl's PR_SET_PDEATHSIG); elsewhere nothing is done.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def end_with_the_parent(signum: int = signal.SIGKILL) -> None:
    """Call in the worker, first thing: `signum` arrives when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signum))
    if os.getppid() != parent:  # it died before the request was made: nobody will send the signal
        os.kill(os.getpid(), signum)
