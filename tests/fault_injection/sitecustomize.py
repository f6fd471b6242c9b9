"""Loaded by a training subprocess in the fault tests: dies by SIGKILL halfway through
the Nth checkpoint write (N from MNIST_FAULT_KILL_ON_SAVE), as a power cut would.
MNIST_FAULT_KILL_SAVES_OF, if set, counts only writes to files whose name holds it
(e.g. `_last.pth`: the Nth epoch's resume point, whichever epochs improved)."""
import os
import signal

import torch

_original_save = torch.save
_saves = 0


def _file_name(f) -> str:
    # checkpoint.py writes through os.fdopen, whose file's .name is the descriptor
    if hasattr(f, "fileno"):
        return os.readlink(f"/proc/self/fd/{f.fileno()}")
    return str(f)


def _dying_save(obj, f, *args, **kwargs):
    global _saves
    if os.environ.get("MNIST_FAULT_KILL_SAVES_OF", "") in _file_name(f):
        _saves += 1
        if _saves == int(os.environ["MNIST_FAULT_KILL_ON_SAVE"]):
            f.write(b"\x50\x4b\x03\x04" + os.urandom(4096))  # the start of a zip, then noise
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return _original_save(obj, f, *args, **kwargs)


torch.save = _dying_save
