"""The one exception type users see.

Every expected failure (bad data, bad checkpoint, bad flag, bad image) raises a
`UserError` whose message is one line: what is wrong and how to fix it. The CLI
prints that line and exits non-zero; anything else is a bug and keeps its traceback.
"""
import reprlib
import sys
import warnings


class UserError(Exception):
    """A problem the user can fix; `str(error)` is the whole explanation."""

    exit_code = 2


class DataError(UserError):
    """A dataset file is missing, corrupt or cannot be fetched."""


class NotFetchedYet(DataError):
    """None of a dataset's files is there: the usual state before its first fetch."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, unsafe or does not fit its model."""


class ImageError(UserError):
    """An input image cannot be read or turned into a model input."""


class PeerLost(UserError):
    """Another process of a torchrun job ended mid-run. Every surviving rank says so (rank 0 may
    be the one gone)."""

    exit_code = 1
    every_rank = True


def shown_short(value: object) -> str:
    """repr(value), cut short: a value built of nested YAML aliases would print as gigabytes (helper-78)."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()  # its keyword arguments came in Python 3.12
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def hide_image_size_warning() -> None:
    """For programs (the CLI, serve's workers), not the library: PIL warns of a "decompression
    bomb" over ~89 Mpx, and images.MAX_SIDE refuses such a picture right after in a line of our
    own. Matched by its text, so that the CLI need not import PIL to start."""
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")


INTERRUPTED_EXIT = 128 + 2  # what a shell reports for a process that Ctrl-C (SIGINT) ended


def to_stderr(line: str) -> None:
    """Where a warning goes when stdout carries the command's result."""
    print(line, file=sys.stderr)


def what_it_raised(error: BaseException) -> str:
    """Someone else's code failed (a plugin's model or metric): its exception's type and first line,
    e.g. "KeyError: 'swish'"."""
    said = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}{': ' + said if said else ''}"


def first_line(error: BaseException) -> str:
    """A library's message (torch's, ONNX Runtime's) cut to what a user can act on: its first
    clause, and the one a colon announces."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for X:" says nothing yet
        text = f"{text} {lines[1]}"
    text = text.split(" (", 1)[0].split(". ", 1)[0].rstrip(":.")  # asides and later sentences: torch's internals
    text = text if len(text) <= 120 else text[:119].rstrip() + "…"
    return text if len(text) > 12 else f"{error.__class__.__name__} {text}".strip()
