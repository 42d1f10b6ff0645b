"""Run isolation: a trained artefact (a stage checkpoint, a CF backbone) is claimed by one run at a time.

``claim(path)`` creates ``<path>.lock`` (pid, host, start time) with O_EXCL for the time the run trains it. A
second run that finds the lock held by a live process waits for it to finish (and then reuses what it wrote);
it never resumes another run's unfinished stage. A lock whose process is gone (killed, host rebooted) is stale
and taken over. Locks held on another host are honoured until removed (a message says which file).
"""

import json
import os
import socket
import time
from contextlib import contextmanager
from logging import getLogger

POLL_SECONDS = 5.0


def lock_path(path):
    return f"{path}.lock"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(lock):
    try:
        with open(lock, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _try_create(lock):
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(owner, handle)
    return True


def held_by_other(lock):
    """The owner dict of a lock held by another live process (same host), or of another host; None if free/stale."""
    owner = _read(lock)
    if owner is None:
        # being written right now, or unreadable: treat a young file as held, an old one as stale
        try:
            young = time.time() - os.path.getmtime(lock) < 10 * POLL_SECONDS
        except OSError:
            return None
        return {"pid": "?", "host": "?"} if young else None
    if owner.get("host") != socket.gethostname():
        return owner
    if owner.get("pid") == os.getpid():
        return None
    return owner if _alive(int(owner.get("pid", -1))) else None


@contextmanager
def claim(path, what):
    """Hold ``<path>.lock`` while the body trains ``path``; wait while another live run holds it."""
    lock = lock_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    logger = getLogger()
    announced = False
    while not _try_create(lock):
        owner = held_by_other(lock)
        if owner is None:  # stale: its run is gone
            logger.warning(f"{what}: taking over the stale lock {lock} (its run is gone)")
            try:
                os.remove(lock)
            except FileNotFoundError:
                pass
            continue
        if not announced:
            logger.warning(
                f"{what}: run pid {owner.get('pid')} on {owner.get('host')} is training it ({lock}); waiting for it "
                f"to finish (delete that file if that run is gone)"
            )
            announced = True
        time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        owner = _read(lock)
        if owner is None or owner.get("pid") == os.getpid():
            try:
                os.remove(lock)
            except FileNotFoundError:
                pass
