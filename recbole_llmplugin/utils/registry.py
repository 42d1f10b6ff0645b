"""Model registry: plugin models by name, falling back to RecBole's own ``get_model``.

RecBole's ``get_model`` only searches ``recbole.model``. Plugin models are registered explicitly, one
``register_model`` call each: the package's own in ``model/llm_recommender/__init__.py`` (which importing the
package runs), yours anywhere before the run::

    register_model(MyLLMRec, properties="my_llm_rec.yaml")

``properties`` is the model's default property file (lowest priority after ``overall.yaml`` and the
dataset's file); the package's models use ``properties/model/<Name>.yaml``.
"""

import importlib
import inspect
import pkgutil
from pathlib import Path

from recbole_llmplugin.utils.errors import ConfigValueError, UnknownModelError

_PLUGIN_MODELS = {}
_PROPERTY_FILES = {}
_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


def register_model(cls, properties=None):
    """Make ``cls`` available to the runner under ``cls.__name__``; ``properties``: its default property
    file (None: ``properties/model/<Name>.yaml`` of this package, if there is one). Returns ``cls``."""
    from recbole.model.abstract_recommender import AbstractRecommender

    if not (isinstance(cls, type) and issubclass(cls, AbstractRecommender)):
        raise ConfigValueError(f"register_model({cls!r}): give a RecBole model class (an AbstractRecommender)")
    if cls.__name__ not in _PLUGIN_MODELS and _is_recbole_model(cls.__name__):
        raise ConfigValueError(
            f"register_model({cls.__name__}): RecBole has a model of that name, which it would hide; rename the class"
        )
    if properties is not None and not Path(properties).is_file():
        raise ConfigValueError(f"register_model({cls.__name__}): properties file '{properties}' does not exist")
    _PLUGIN_MODELS[cls.__name__] = cls
    _PROPERTY_FILES[cls.__name__] = str(properties) if properties is not None else None
    return cls


def model_property_file(name):
    """The registered default property file of plugin model ``name`` (None: the package's own, if any)."""
    return _PROPERTY_FILES.get(name)


def plugin_model_names():
    return sorted(_PLUGIN_MODELS)


def is_plugin_model(name_or_class):
    name = name_or_class if isinstance(name_or_class, str) else name_or_class.__name__
    return name in _PLUGIN_MODELS


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


def _is_recbole_model(name):
    from recbole.utils import get_model

    try:
        get_model(name)
    except (ValueError, ImportError, AttributeError):
        return False
    return True


def get_model_class(name):
    """The plugin model called ``name``, else RecBole's; one clear error when neither exists."""
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
