"""Locks of trained artefacts: a reused pid is told from its owner by the process start time, a waiting run says who
holds the lock and stops after ``lock_timeout``, and a stale lock is taken over by one waiter only."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from recbole_llmplugin.trainer import locks


def _write_lock(path, **owner):
    with open(locks.lock_path(path), "w", encoding="utf-8") as handle:
        json.dump({"host": socket.gethostname(), "started": time.time() - 90, **owner}, handle)
    return locks.lock_path(path)


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_reused_pid_is_not_the_owner(tmp_path, sleeper):
    """The pid is alive but started at another time than the lock records: the lock is stale (it hung before)."""
    path = str(tmp_path / "stage.safetensors")
    lock = _write_lock(path, pid=sleeper.pid, process_start=locks.process_start(sleeper.pid) - 1)
    assert locks.held_by_other(lock, locks._read(lock)) is None
    with locks.claim(path, "stage", timeout=5):
        assert locks._read(lock)["pid"] == os.getpid()
    assert not os.path.exists(lock)


def test_a_live_holder_is_named_and_the_wait_ends_at_lock_timeout(tmp_path, sleeper, caplog):
    path = str(tmp_path / "stage.safetensors")
    lock = _write_lock(path, pid=sleeper.pid, process_start=locks.process_start(sleeper.pid))
    start = time.time()
    with pytest.raises(locks.LockTimeoutError, match=rf"waited 1 s \(lock_timeout\) .* held by run pid {sleeper.pid}"):
        with locks.claim(path, "stage", timeout=1.0):
            pass
    assert time.time() - start < 3
    assert (
        f"run pid {sleeper.pid} on {socket.gethostname()}, since " in caplog.text
        and "waiting for it to finish, 0 s so far" in caplog.text
    )
    assert os.path.exists(lock)  # the holder's lock is left alone


WAITER = """
import os, sys, time
sys.path.insert(0, {repo!r})
from recbole_llmplugin.trainer import locks

locks.POLL_SECONDS = 0.05
remove = os.remove
def slow_remove(path):  # a waiter that is slow between deciding "stale" and removing the lock
    if path.endswith(".lock"):
        time.sleep(0.5)
    remove(path)
locks.os.remove = slow_remove
while time.time() < {start}:
    time.sleep(0.001)
with locks.claim({path!r}, "stage", timeout=30):
    with open({log!r}, "a") as handle:
        handle.write(f"in {{time.time()}}\\n")
    time.sleep(0.3)
    with open({log!r}, "a") as handle:
        handle.write(f"out {{time.time()}}\\n")
"""


def test_two_waiters_take_over_a_stale_lock_one_at_a_time(tmp_path):
    path = str(tmp_path / "stage.safetensors")
    _write_lock(path, pid=2**22 + 12345, process_start=1)  # a pid no process has
    log = tmp_path / "held.log"
    script = WAITER.format(repo=str(REPO), start=time.time() + 2.0, path=path, log=str(log))
    waiters = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [w.wait(timeout=60) for w in waiters] == [0, 0, 0]
    events = [line.split() for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["in", "out"] * 3  # never two holders at once
