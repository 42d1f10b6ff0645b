"""RecBole's ``Config`` of a model on a dataset, from the package's property files under the user's: the one place a
run's config is made (``quick_start/run_config.build_config`` adds the checks), and the configs derived from a run's
(its CF backbone, its full-ranking retriever) with no check run again."""

from pathlib import Path

from recbole.config import Config

from recbole_llmplugin.config.paths import properties_dir
from recbole_llmplugin.config.validation import read_yaml_file, unknown_metric
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.utils.registry import get_model_class, is_plugin_model, model_property_file


def property_files(model_name, dataset_name):
    """Plugin property files for a run, lowest priority first: overall, dataset, model (its registered file,
    or the package's ``properties/model/<Name>.yaml``)."""
    root = properties_dir()
    files = [root / "overall.yaml", root / "dataset" / f"{dataset_name}.yaml"]
    if is_plugin_model(model_name):
        files.append(model_property_file(model_name) or root / "model" / f"{model_name}.yaml")
    return [str(path) for path in files if Path(path).is_file()]


def recbole_config(model_class, dataset, config_file_list, config_dict):
    """RecBole's Config of ``model_class`` from the package's property files, then ``config_file_list`` and
    ``config_dict``; RecBole's own refusals as one line (``ConfigValueError``). The config keeps the user's files
    (``run_files``) and the keys they set, for the configs derived from it and for the unused-key warning."""
    files = property_files(model_class.__name__, dataset) + list(config_file_list or [])
    try:
        with recbole_warnings_quiet():
            config = Config(model=model_class, dataset=dataset, config_file_list=files, config_dict=config_dict)
    except (ValueError, TypeError) as error:  # RecBole's own property checks, e.g. CE loss with train negatives
        raise ConfigValueError(f"{model_class.__name__} on {dataset}: {error}") from None
    except NotImplementedError as error:  # RecBole's Config: "There is no metric named 'Foo'"
        raise unknown_metric(error) from None
    config.run_files = list(config_file_list or [])
    config._user_file_keys = {key for path in config.run_files for key in read_yaml_file(path)}
    return config


def derive_config(config, model, config_dict):
    """The config of another model of the same run on the same data (the CF backbone, the full-ranking retriever):
    RecBole's Config of ``model`` from the run's property files and ``config_dict``, without the run's checks again.
    ``build_config`` checked the files, the values, the dataset and the folders when it built the run's ``config``;
    a backbone or retriever is a RecBole sequential model that the run's checks already required."""
    model_class = get_model_class(model) if isinstance(model, str) else model
    return recbole_config(model_class, config["dataset"], config.run_files, config_dict), model_class
