"""A dataset from a Debian package, for machines that reach the Debian archive but not the web.

    mnist-classifier data --dataset fashion-mnist --source debian

Debian's `dataset-fashion-mnist` installs Zalando's original .gz files under
/usr/share/datasets/fashion-mnist/; this source copies them, decompressed and verified
by SHA-256, into data/<folder>/raw/. When the package is missing, root installs it with
apt-get (and says so); anyone else is told the exact command to run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..datasets import DatasetSpec, DebianPackage
from ..errors import DataError
from .idx import copy_gz_verified, find_idx_file

APT_TIMEOUT_S = 900  # a slow mirror; the Fashion-MNIST package is 30 MB


def fetch_debian(raw_dir: Path, spec: DatasetSpec, data_dir: Path, log) -> None:
    package = spec.debian
    if package is None:
        raise DataError(f"no Debian package carries {spec.name}")
    directory = Path(package.directory)
    if any(find_idx_file(directory, f) is None for f in spec.files):
        _install_package(package, spec, log)
    for f in spec.files:
        path = find_idx_file(directory, f)
        if path is None:
            raise DataError(f"{package.name} is installed but {directory / f.name}.gz is missing: "
                            f"run `sudo apt-get install --reinstall -y {package.name}`")
        copy_gz_verified(path, raw_dir, f, f"{path} (from {package.name})")
    log(f"debian: copied {len(spec.files)} files from {directory} ({package.name}) "
        f"to {raw_dir} (verified)")


def install_command(package: DebianPackage) -> str:
    return f"sudo apt-get install -y {package.name}"


def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0  # no geteuid: not a Unix, no apt-get


def _install_package(package: DebianPackage, spec: DatasetSpec, log) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise DataError(f"{package.name} is a Debian package and this system has no apt-get: "
                        f"use another --source, or copy the four IDX files into data/{spec.folder}/raw")
    if not _is_root():
        raise DataError(f"{package.name} is not installed: run `{install_command(package)}`, "
                        f"then `{spec.fetch_command}` again")
    log(f"debian: installing {package.name} with apt-get (running as root)")
    done = _apt(apt, "install", package.name)
    if done.returncode != 0 and "Unable to locate package" in done.stderr:
        # A fresh machine (a container, CI) often has no package lists yet.
        log("debian: apt-get does not know the package yet; running apt-get update first")
        updated = _apt(apt, "update")
        if updated.returncode != 0:  # offline, most often: that is the reason to give, not the missing package
            last = (updated.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"apt-get update failed ({last}), so {package.name} cannot be installed: "
                            "check the network, or copy the four IDX files into "
                            f"data/{spec.folder}/raw")
        done = _apt(apt, "install", package.name)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"apt-get install -y {package.name} failed ({last})")


def _apt(apt: str, command: str, *packages: str) -> subprocess.CompletedProcess:
    extra = ("--no-install-recommends",) if command == "install" else ()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}  # never stop at a prompt
    try:
        return subprocess.run([apt, "-y", "-q", *extra, command, *packages], capture_output=True,
                              text=True, timeout=APT_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise DataError(f"apt-get {command} took over {APT_TIMEOUT_S} s: try again later") from None
