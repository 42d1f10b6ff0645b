"""Model registry: plugin models by name, falling back to RecBole's own ``get_model``.

RecBole's ``get_model`` only searches ``recbole.model``; registering a plugin model is one line::

    @register_model
    class MyLLMRec(LLMRecommender): ...
"""

import importlib
import inspect
import pkgutil

from recbole_llmplugin.errors import UnknownModelError

_PLUGIN_MODELS = {}
_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


def register_model(cls):
    """Class decorator: make ``cls`` available to the runner under ``cls.__name__``."""
    _PLUGIN_MODELS[cls.__name__] = cls
    return cls


def plugin_model_names():
    _load_plugin_models()
    return sorted(_PLUGIN_MODELS)


def is_plugin_model(name_or_class):
    _load_plugin_models()
    name = name_or_class if isinstance(name_or_class, str) else name_or_class.__name__
    return name in _PLUGIN_MODELS


def _load_plugin_models():
    importlib.import_module("recbole_llmplugin.models")


def recbole_model_names():
    """Names of every model class shipped in ``recbole.model`` (only used for error messages)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    names = set()
    for sub in _RECBOLE_SUBMODULES:
        package = importlib.import_module(f"recbole.model.{sub}")
        for info in pkgutil.iter_modules(package.__path__):
            try:
                module = importlib.import_module(f"{package.__name__}.{info.name}")
            except Exception:  # an optional dependency (xgboost, lightgbm...) is missing
                continue
            for attr, obj in vars(module).items():
                if inspect.isclass(obj) and issubclass(obj, AbstractRecommender) and attr.lower() == info.name:
                    names.add(attr)
    return sorted(names)


def get_model_class(name):
    """The plugin model called ``name``, else RecBole's; one clear error when neither exists."""
    _load_plugin_models()
    if name in _PLUGIN_MODELS:
        return _PLUGIN_MODELS[name]
    from recbole.utils import get_model

    try:
        return get_model(name)
    except (ValueError, ImportError, AttributeError):
        raise UnknownModelError(
            f"unknown model '{name}'; plugin models: {', '.join(plugin_model_names())}; "
            f"RecBole models: {', '.join(recbole_model_names())}"
        ) from None
