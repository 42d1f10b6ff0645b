"""Writing files so that an interruption never leaves a half-written one behind."""

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from logging import getLogger

from recbole_llmplugin.utils.errors import DiskFullError


def digest(*parts):
    """Short stable hash of JSON-able parts (config values): names files that depend on them."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


# how a full disk shows in the writers' errors: OSError ENOSPC, safetensors' SafetensorError, torch.save's RuntimeError
_DISK_FULL = ("No space left", "StorageFull", "unexpected pos", "file write failed")


def atomic_write(path, write, size=None):
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it onto ``path``. A full disk is one
    ``DiskFullError`` naming the folder, the space free and ``size`` (bytes the file needs, when known)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    os.close(fd)
    try:
        try:
            write(tmp)
        except Exception as error:
            full = getattr(error, "errno", None) == errno.ENOSPC or any(m in str(error) for m in _DISK_FULL)
            if not full:
                raise
            free = shutil.disk_usage(folder).free
            needed = f"; it needs about {size / 2**20:.0f} MiB" if size else ""
            raise DiskFullError(
                f"writing '{path}' failed: the disk holding '{folder}' is full ({free / 2**20:.0f} MiB free{needed}); "
                f"free space there or write elsewhere (checkpoint_dir)"
            ) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def set_aside(path, what, reason):
    """Move an unreadable cache file (a truncated download, a disk that filled up) out of the way, so that the
    caller makes it anew; the file is kept beside it as ``<name>.corrupt-<time>`` and a warning names both."""
    aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, aside)
    getLogger().warning(f"{what} '{path}' is unreadable ({reason}): moved aside to '{aside}'; making it anew")
    return aside


def short_reason(error, limit=160):
    """The first line of an error's text, cut at a word boundary: for messages of one line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
