"""Run isolation: a trained artefact (a stage checkpoint, a CF backbone) is claimed by one run at a time.

``claim(path, what, timeout)`` creates ``<path>.lock`` with O_EXCL for the time the run trains it; the lock records
the process's pid, host, start time (the kernel's, from ``/proc``) and when it was taken. A second run that finds
the lock held by a live process waits for it to finish (and then reuses what it wrote), logging who holds it and
for how long, and stops with one line after ``timeout`` seconds (``lock_timeout``); it never resumes another run's
unfinished stage. A lock whose process is gone -- or whose pid now belongs to another process (pid reuse: the start
time differs) -- is stale and taken over, by one waiter only: a takeover holds ``<path>.lock.takeover`` (O_EXCL)
and removes the lock only if it still holds the stale owner it read. Locks held on another host are honoured until
removed (a message says which file).
"""

import json
import os
import socket
import time
from contextlib import contextmanager
from logging import getLogger

from recbole_llmplugin.utils.errors import PluginError

POLL_SECONDS = 5.0
REPORT_SECONDS = 300.0  # how often a waiting run says it is still waiting
GUARD_SECONDS = 60.0  # a takeover guard older than this was left by a waiter that died while taking over


class LockTimeoutError(PluginError, TimeoutError):
    """A lock held longer than ``lock_timeout``."""


def lock_path(path):
    return f"{path}.lock"


def process_start(pid):
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            data = handle.read()
    except (OSError, ValueError):
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])  # field 22; the name (field 2) may hold spaces


def _alive(owner):
    """Whether the process a lock records still runs: its pid exists and started when the lock says."""
    pid = int(owner.get("pid", -1))
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # gone, or no pid at all
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    recorded, now = owner.get("process_start"), process_start(pid)
    return recorded is None or now is None or recorded == now  # another start time: the pid was reused


def _read(lock):
    try:
        with open(lock, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _try_create(lock):
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": process_start(os.getpid()),
        "started": time.time(),
    }
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(owner, handle)
    return True


def _age(path):
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return None


def held_by_other(lock, owner):
    """``owner`` (read from ``lock``) if it is another live process (same host) or another host; None if stale."""
    if owner is None:
        # being written right now, or unreadable: treat a young file as held, an old one as stale
        age = _age(lock)
        return {"pid": "?", "host": "?"} if age is not None and age < 10 * POLL_SECONDS else None
    if owner.get("host") != socket.gethostname():
        return owner
    if owner.get("pid") == os.getpid() and owner.get("process_start") == process_start(os.getpid()):
        return None
    return owner if _alive(owner) else None


def take_over(lock, stale_owner):
    """Remove ``lock`` if it still records ``stale_owner`` (read before, as stale): True when this process did.
    Two waiters never both take it over: one holds the takeover guard, and a new owner's lock is never removed."""
    guard = f"{lock}.takeover"
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        age = _age(guard)
        if age is not None and age > GUARD_SECONDS:
            _remove(guard)
        return False
    try:
        if _read(lock) != stale_owner:  # someone took it over, or the lock is gone: look again
            return False
        _remove(lock)
        return True
    finally:
        os.close(fd)
        _remove(guard)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _holder(owner):
    started = owner.get("started")
    since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}" if started else ""
    return f"run pid {owner.get('pid')} on {owner.get('host')}{since}"


@contextmanager
def claim(path, what, timeout=None):
    """Hold ``<path>.lock`` while the body trains ``path``; wait while another live run holds it, at most
    ``timeout`` seconds (None: no limit)."""
    lock = lock_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    logger = getLogger()
    waiting_since = time.time()
    reported = None
    while not _try_create(lock):
        seen = _read(lock)
        owner = held_by_other(lock, seen)
        if owner is None:  # stale: its run is gone
            if take_over(lock, seen):
                logger.warning(f"{what}: took over the stale lock {lock} (its run is gone)")
            else:  # another waiter is taking it over
                time.sleep(0.1)
            continue
        waited = time.time() - waiting_since
        if timeout is not None and waited >= timeout:
            raise LockTimeoutError(
                f"{what}: waited {waited:.0f} s (lock_timeout) for {lock}, held by {_holder(owner)}; if that run is "
                f"gone, delete the file; else wait for it or raise lock_timeout"
            )
        if reported is None or time.time() - reported >= REPORT_SECONDS:
            logger.warning(
                f"{what}: {_holder(owner)} is training it ({lock}); waiting for it to finish, {waited:.0f} s so far "
                f"(delete that file if that run is gone)"
            )
            reported = time.time()
        time.sleep(POLL_SECONDS if timeout is None else max(0.0, min(POLL_SECONDS, timeout - waited)))
    try:
        yield
    finally:
        owner = _read(lock)
        if owner is None or owner.get("pid") == os.getpid():
            _remove(lock)
