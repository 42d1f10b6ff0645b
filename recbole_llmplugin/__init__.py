"""recbole-llmplugin: LLM recommenders fed with collaborative-filtering knowledge, inside RecBole's loop."""

from recbole_llmplugin import compat as _compat

_compat.apply()

from recbole_llmplugin.errors import PluginError  # noqa: E402
from recbole_llmplugin.registry import get_model_class, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["PluginError", "get_model_class", "register_model", "load_data_and_model", "run_recbole_llm"]


def __getattr__(name):
    """``run_recbole_llm`` / ``load_data_and_model`` load the runner on first use, so importing a model module
    never imports the runner."""
    if name in ("run_recbole_llm", "load_data_and_model"):
        from recbole_llmplugin import quick_start

        return getattr(quick_start, name)
    raise AttributeError(f"module 'recbole_llmplugin' has no attribute '{name}'")
