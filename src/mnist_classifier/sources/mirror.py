"""The public HTTPS mirrors that serve `<file>.gz`, with a fast failure when offline."""
from __future__ import annotations

import gzip
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..datasets import DatasetSpec, IdxFile
from ..errors import DataError
from .idx import copy_hashed, install_verified

MIRRORS_ENV = "MNIST_CLASSIFIER_MIRRORS"  # comma-separated base URLs replacing spec.mirrors
CONNECT_TIMEOUT_S = 3.0


class _Unreachable(Exception):
    """The host could not be reached at all; its other files are not worth a try."""


def _mirror_bases(spec: DatasetSpec) -> list[str]:
    bases = [b.strip() for b in os.environ.get(MIRRORS_ENV, "").split(",") if b.strip()]
    return [b if b.endswith("/") else b + "/" for b in (bases or spec.mirrors)]


def fetch_mirror(raw_dir: Path, spec: DatasetSpec, data_dir: Path, log) -> None:
    dead: dict[str, str] = {}  # host -> why: an offline machine pays one timeout per host
    for f in spec.files:
        reasons = []
        for base in _mirror_bases(spec):
            host = urllib.parse.urlsplit(base).netloc or base
            if host in dead:
                reasons.append(dead[host])
                continue
            try:
                _download(base + f.name + ".gz", raw_dir, f)
                break
            except _Unreachable as err:
                dead[host] = f"no network ({host}: {err})"
                reasons.append(dead[host])
            except DataError as err:
                reasons.append(str(err))
        else:
            raise DataError("; ".join(dict.fromkeys(reasons)) or "no mirror configured")
    log(f"mirror: wrote {len(spec.files)} files to {raw_dir} (verified)")


def _download(url: str, raw_dir: Path, f: IdxFile) -> None:
    _check_resolves(url)
    try:
        response = urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise DataError(f"{url}: HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        raise _Unreachable(getattr(err, "reason", err)) from None
    with response, gzip.GzipFile(fileobj=response) as src:
        install_verified(raw_dir, f, url, lambda out: copy_hashed(src, out, f.size, url))


def _check_resolves(url: str) -> None:
    """Resolve the host with a deadline: urlopen's timeout does not cover DNS, which
    can hang for many seconds on a machine without a working resolver."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.getproxies().get(parts.scheme):
        return  # a proxy resolves names itself
    outcome: list = []

    def resolve():
        try:
            outcome.append(socket.getaddrinfo(parts.hostname, parts.port or 443))
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT_S)
    if not outcome:
        raise _Unreachable(f"DNS lookup of {parts.hostname} timed out")
    if isinstance(outcome[0], OSError):
        raise _Unreachable(outcome[0])
