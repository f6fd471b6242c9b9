"""`make install` run twice at once installs once: the second waits (scripts/install_venv.py); `make help`."""
from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install_venv.py"


def test_an_install_started_during_another_waits_for_it_then_finds_the_work_done():
    assert (ROOT / ".venv" / ".installed").exists()  # make test installed it: the waiting run has nothing to do
    with open(ROOT / ".venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the first install holds it
        second = subprocess.Popen([sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        assert second.stdout.readline() == "another make is installing .venv: waiting for it\n"
        time.sleep(0.5)
        assert second.poll() is None  # still waiting, pip not started
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0 and out == "" and err == ""


def test_make_help_lists_every_target_with_what_it_does():
    """helper-55: `make help` was "No rule to make target"; a new user's first command."""
    done = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = dict(line.split(None, 1) for line in done.stdout.splitlines())
    phony = (ROOT / "Makefile").read_text().split(".PHONY:", 1)[1].splitlines()[0].split()
    assert set(listed) == set(phony) - {"all"}, listed  # every target but the default's alias, with words
    assert listed["train"].startswith("train SimpleCNN") and listed["test"] == "run the whole test suite"
