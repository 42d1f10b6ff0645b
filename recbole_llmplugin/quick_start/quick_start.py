"""Entry points: ``run_recbole_llm`` (one model, with the steps it needs before its run) and
``load_data_and_model``, like RecBole's ``quick_start``; they compose the steps of a run, each file entered from here.

A model that declares ``needs_cf_backbone`` (A-LLMRec, MLP-LLM) with ``cf_checkpoint: auto`` gets its CF backbone
trained or reused first (``backbones``); the run itself is ``runner.train_and_evaluate``.
"""

import os
import tempfile
import time

import yaml

from recbole.utils import init_logger, init_seed

from recbole_llmplugin.quick_start.backbones import keep_as_backbone, prepare_backbone, prepare_retriever
from recbole_llmplugin.quick_start.cross_domain import (
    check_cross_domain,
    evaluate_on_target,
    source_properties,
    target_overrides,
)
from recbole_llmplugin.data.data_check import check_dataset
from recbole_llmplugin.data.preparation import prepare_data
from recbole_llmplugin.utils.distributed import is_main
from recbole_llmplugin.utils.logs import model_log
from recbole_llmplugin.utils.registry import get_model_class
from recbole_llmplugin.quick_start.run_config import build_config, target_config
from recbole_llmplugin.quick_start.runner import (  # noqa: F401  (re-exported: the public runner API)
    evaluate_saved,
    get_trainer_class,
    restore,
    train_and_evaluate,
)
from recbole_llmplugin.config.recbole_config import property_files  # noqa: F401  (re-exported)
from recbole_llmplugin.utils.checkpoints import load_checkpoint


def run_recbole_llm(model, dataset, config_file_list=None, config_dict=None, saved=True):
    """Train and evaluate one model (plugin or RecBole) like ``recbole.quick_start.run_recbole``; a model
    that needs a CF backbone gets it first, and a RecBole sequential model's run is kept as the backbone of its
    properties (``backbones.keep_as_backbone``). With ``target_domain`` it trains on this dataset, with the
    ``source_domain`` block's properties, and tests on the target's (``cross_domain``). The result (see
    ``runner.train_and_evaluate``) lists the backbone's own run under ``companions``."""
    start = time.time()
    own = source_properties(config_file_list, config_dict)  # the training side's properties
    config, model_class = build_config(model, dataset, config_file_list, own)
    with model_log(config, write=is_main()) as log_file:  # from here on, the backbone's lines in its own log
        result = _run(config, model_class, own, config_dict, saved, start)
    result["log_file"] = log_file
    return result


def _run(config, model_class, own, config_dict, saved, start):
    """The steps of a run on its built config, each entered once: the target's config (cross-domain), the backbone
    and the retriever, the run, the backbone kept, the test on the target."""
    target = _target_config(model_class, config, config_dict)
    companions = prepare_backbone(config, own) if needs_backbone(model_class) else []
    companions += prepare_retriever(config, own, model_class)  # full ranking: what is re-ranked
    result = train_and_evaluate(config, model_class, saved=saved or target is not None, start=start)
    keep_as_backbone(config, model_class, result)  # a later cf_checkpoint: auto run of these properties reuses it
    if target is not None:
        result = evaluate_on_target(model_class, config, result, target)
    result["companions"] = companions
    return result


def _target_config(model_class, config, config_dict):
    """A cross-domain run's target config, derived from the run's and checked before anything trains; None for any
    other run."""
    cross = check_cross_domain(model_class, config)
    if cross is None:
        return None
    return target_config(config, model_class, cross[1]["dataset"], target_overrides(config, config_dict, cross[1]))


def check_run(model, dataset, config_file_list=None, config_dict=None):
    """Every property check of ``run_recbole_llm``'s first steps for ``model``, with nothing trained: a comparison
    checks each of its models this way before the first one trains (one refused model stops it at once)."""
    own = source_properties(config_file_list, config_dict)
    config, model_class = build_config(model, dataset, config_file_list, own)
    _target_config(model_class, config, config_dict)


def _rebuild_config(checkpoint):
    """The config of the run that wrote a plugin checkpoint, from the properties it recorded. They go through a
    YAML file, as they came: RecBole would ``eval`` string values given as a config_dict."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "properties.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(checkpoint["config_overrides"], handle, allow_unicode=True)
        config, _ = build_config(checkpoint["model"], checkpoint["dataset"], [path])
    return config


def needs_backbone(model_class):
    return bool(getattr(model_class, "needs_cf_backbone", False))


def load_data_and_model(model_file, trust_checkpoint=False):
    """Reload a saved run (plugin or RecBole model) for evaluation or inference.

    Returns ``(config, model, dataset, train_data, valid_data, test_data)`` like RecBole's function;
    the loaders carry the same evaluation candidates as the run that saved the checkpoint. A RecBole checkpoint
    is unpickled with the type allow-list of ``checkpoints`` unless ``trust_checkpoint``.
    """
    checkpoint = load_checkpoint(model_file, trust=trust_checkpoint)
    if checkpoint.get("weights") is not None:  # the plugin's checkpoint: its run's properties, rebuilt
        config = _rebuild_config(checkpoint)
    else:
        config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    check_dataset(config)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model_class = get_model_class(config["model"])
    model = model_class(config, train_data._dataset).to(config["device"])
    restore(model, checkpoint)
    return config, model, dataset, train_data, valid_data, test_data
