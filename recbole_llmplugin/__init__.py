"""recbole-llmplugin: LLM recommenders fed with collaborative-filtering knowledge, inside RecBole's loop."""

from recbole_llmplugin.utils import compat as _compat

_compat.apply()

from recbole_llmplugin.utils.errors import PluginError  # noqa: E402
from recbole_llmplugin.utils.registry import get_model_class, register_model  # noqa: E402
from recbole_llmplugin.model import llm_recommender as _models  # noqa: E402,F401  (registers the package's models)
from recbole_llmplugin.model import sequential_recommender as _baselines  # noqa: E402,F401  (and its text baselines)

__version__ = "0.1.0"
__all__ = ["PluginError", "get_model_class", "register_model", "load_data_and_model", "run_recbole_llm"]


def __getattr__(name):
    """``run_recbole_llm`` / ``load_data_and_model`` load the runner on first use: the models never import it."""
    if name in ("run_recbole_llm", "load_data_and_model"):
        from recbole_llmplugin.quick_start import quick_start

        return getattr(quick_start, name)
    raise AttributeError(f"module 'recbole_llmplugin' has no attribute '{name}'")
