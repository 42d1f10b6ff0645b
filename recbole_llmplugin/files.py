"""Writing files so that an interruption never leaves a half-written one behind."""

import hashlib
import json
import os
import tempfile


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
