"""Where the plugin's property files and user cache live."""

import os
import sys
from pathlib import Path

_SOURCE_PROPERTIES = Path(__file__).resolve().parents[2] / "properties"
_INSTALLED_PROPERTIES = Path(sys.prefix) / "share" / "recbole_llmplugin" / "properties"


def properties_dir():
    """The ``properties/`` folder: the checkout's (editable install) or the installed copy."""
    for candidate in (_SOURCE_PROPERTIES, _INSTALLED_PROPERTIES):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"recbole_llmplugin properties not found in {_SOURCE_PROPERTIES} or {_INSTALLED_PROPERTIES}"
    )


def cache_dir():
    """User cache for built model folders: $RECBOLE_LLM_CACHE or ~/.cache/recbole_llmplugin."""
    root = os.environ.get("RECBOLE_LLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "recbole_llmplugin"
    )
    return Path(root)
