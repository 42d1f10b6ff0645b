"""Writing files so that an interruption never leaves a half-written one behind."""

import hashlib
import json
import os
import tempfile
import time
from logging import getLogger


def digest(*parts):
    """Short stable hash of JSON-able parts (config values): names files that depend on them."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def atomic_write(path, write):
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
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
