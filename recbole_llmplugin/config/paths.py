"""Where the plugin's property files, the shipped run profiles and the user cache live."""

import os
from pathlib import Path

# the plugin's defaults, inside the package as RecBole's recbole/properties/: overall.yaml, model/, dataset/
_PACKAGE_PROPERTIES = Path(__file__).resolve().parents[1] / "properties"
# the run profiles of a checkout (benchmark/, scenario/): files a user passes by path, not installed
_CHECKOUT_PROFILES = Path(__file__).resolve().parents[2] / "properties"


def properties_dir():
    """The package's ``properties/`` folder (``overall.yaml``, ``model/``, ``dataset/``)."""
    return _PACKAGE_PROPERTIES


def profiles_dir():
    """The checkout's ``properties/`` folder of run profiles (``benchmark/``, ``scenario/``); None when the package
    runs from an install without its checkout."""
    return _CHECKOUT_PROFILES if (_CHECKOUT_PROFILES / "benchmark").is_dir() else None


def cache_dir():
    """User cache for built model folders: $RECBOLE_LLM_CACHE or ~/.cache/recbole_llmplugin."""
    root = os.environ.get("RECBOLE_LLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "recbole_llmplugin"
    )
    return Path(root)
