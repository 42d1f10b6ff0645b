"""A run's config, built once and checked before anything trains: RecBole's Config from the package's property files
and the user's (``config.recbole_config``), the values against the table of properties (``config.validation``), the
dataset (``data.data_check``), the model's own checks and the folders of its LLM and text encoder."""

import os
import tempfile
from logging import getLogger

from recbole.config import Config
from recbole.utils import InputType, ModelType

from recbole_llmplugin.config.options import retriever_name
from recbole_llmplugin.config.recbole_config import property_files, recbole_config
from recbole_llmplugin.config.validation import check_user_files, validate
from recbole_llmplugin.data.data_check import check_dataset, require_item_file
from recbole_llmplugin.model.layers.cf_backbone import load_backbone_checkpoint
from recbole_llmplugin.model.layers.llm_loading import GGUF_ALIASES, check_llm, hub_offline
from recbole_llmplugin.model.layers.text_encoder import TEXT_ENCODER_ALIASES, load_text_encoder
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.utils.registry import get_model_class, is_plugin_model


def build_config(model, dataset, config_file_list=None, config_dict=None):
    """RecBole Config for a plugin or RecBole model; user files and dicts override plugin defaults. Built once, then
    every check of the run before anything trains: the user's files, the values against the table of properties,
    the dataset, the model's own checks, the LLM's and text encoder's folders."""
    model_class = get_model_class(model) if isinstance(model, str) else model
    check_user_files(config_file_list)  # missing / unparsable files: one line naming the file, before RecBole
    config = _data_config(model_class, dataset, config_file_list, config_dict)
    if is_plugin_model(model_class.__name__):
        hub_offline([(config["llm_path"], GGUF_ALIASES), (config["text_encoder"], TEXT_ENCODER_ALIASES)])
        check_model_folders(config, model_class)
    return config, model_class


def target_config(config, model_class, dataset, overrides):
    """A cross-domain run's target config, derived from the run's ``config``: RecBole's Config of ``dataset`` from the
    run's files and ``overrides``, with the checks that depend on the data and the values (the target's dataset and
    item text, the target block's values, the model's checks on the target's items); the user's files, the LLM and
    the text encoder were checked with the run's config."""
    return _data_config(model_class, dataset, config.run_files, overrides)


def _data_config(model_class, dataset, config_file_list, config_dict):
    """RecBole's Config, then the checks of the values, the dataset and the model's own."""
    try:
        config = recbole_config(model_class, dataset, config_file_list, config_dict)
    except ConfigValueError:  # a missing dataset is the first thing to say
        files = property_files(model_class.__name__, dataset) + list(config_file_list or [])
        _check_dataset_alone(dataset, files, config_dict)
        raise
    facts = check_dataset(config)
    if needs_own_negatives(config, model_class):
        config["train_neg_sample_args"] = dict(PAIRWISE_NEGATIVES)
        getLogger().warning(
            f"{model_class.__name__} is a pairwise model: training negatives turned back on "
            f"(train_neg_sample_args: {PAIRWISE_NEGATIVES}); the shared properties turn them off for sequential models"
        )
    ignored = validate(config, model_class.__name__, is_plugin_model(model_class.__name__))
    if ignored:
        getLogger().warning(f"{model_class.__name__} does not use {', '.join(ignored)} (set by you): ignored")
    check_model_properties(config, model_class)
    if hasattr(model_class, "check_config"):  # the model's own checks, before any backbone trains
        model_class.check_config(config, facts["items"])
    if is_plugin_model(model_class.__name__):
        require_item_file(config)  # item text, before any backbone is trained
    return config


def check_model_folders(config, model_class):
    """The LLM's config and tokenizer load, and the text encoder (models with a stage 1) loads, before any
    training: a CF backbone trained first would otherwise be wasted on a misspelt or empty folder."""
    check_llm(config["llm_path"])
    if getattr(model_class, "stage1_modules", ()) or getattr(model_class, "reads_text_encoder", False):
        load_text_encoder(config["text_encoder"])


def _check_dataset_alone(dataset, files, config_dict):
    """``check_dataset`` under the same properties for a model RecBole checks nothing of (``Pop``): the data path
    of a run whose model's properties RecBole refused."""
    try:
        with recbole_warnings_quiet():
            config = Config(model="Pop", dataset=dataset, config_file_list=files, config_dict=config_dict)
    except (ValueError, TypeError, NotImplementedError):  # the same refusal: reported by the caller
        return
    check_dataset(config)


# RecBole's default training negatives (properties/overall.yaml of recbole), resolved form
PAIRWISE_NEGATIVES = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False, "candidate_num": 0}


def needs_own_negatives(config, model_class):
    """A RecBole pairwise model (BPR, ...) run with properties that turn training negatives off (profiles set
    ``train_neg_sample_args: ~`` for sequential models trained with CE): it cannot train without them."""
    pairwise = getattr(model_class, "input_type", None) == InputType.PAIRWISE and not is_plugin_model(
        model_class.__name__
    )
    args = config["train_neg_sample_args"]
    return pairwise and (not args or args.get("distribution") == "none")


def check_model_properties(config, model_class):
    """Checks that depend on the model: a RecBole model (or an auto-trained CF backbone) must train."""
    trains_recbole = not is_plugin_model(model_class.__name__)
    auto_backbone = getattr(model_class, "needs_cf_backbone", False) and config["cf_checkpoint"] == "auto"
    if (trains_recbole or auto_backbone) and config["epochs"] < 1:
        what = model_class.__name__ if trains_recbole else f"the auto-trained {config['cf_model']} backbone"
        raise ConfigValueError(f"epochs: {config['epochs']} would leave {what} untrained; set epochs >= 1")
    order = config["eval_args"].get("order")
    if getattr(model_class, "type", None) == ModelType.SEQUENTIAL and order != "TO":
        raise ConfigValueError(
            f"eval_args order: {order}; {model_class.__name__} is a sequential model, which RecBole splits in time "
            f"order: set order TO (e.g. eval_args: {{split: {{LS: valid_and_test}}, group_by: user, order: TO, "
            f"mode: uni19}})"
        )
    modes = config["eval_args"]["mode"]
    modes = list(modes.values()) if isinstance(modes, dict) else [modes]
    if "full" in modes and not getattr(model_class, "full_sort", True):
        raise ConfigValueError(
            f"{model_class.__name__} ranks sampled candidates: set eval_args mode to uniN (e.g. uni19), not full"
        )
    if "full" in modes and hasattr(model_class, "retrieves_with_backbone"):
        check_retriever(config, model_class)
    if getattr(model_class, "needs_cf_backbone", False):
        cf_class = get_model_class(config["cf_model"])
        if getattr(cf_class, "type", None) != ModelType.SEQUENTIAL:
            kind = getattr(getattr(cf_class, "type", None), "name", "non-sequential").lower()
            raise ConfigValueError(
                f"cf_model: '{config['cf_model']}' is a {kind} model; {model_class.__name__} reads a sequential "
                f"model's user representation: use SASRec, GRU4Rec, NextItNet, BERT4Rec or Caser"
            )
    check_writable_folder("checkpoint_dir", config["checkpoint_dir"])
    candidates = config["eval_candidates_file"]
    if candidates and os.path.isdir(candidates):
        raise ConfigValueError(f"eval_candidates_file: '{candidates}' is a folder; give a file name (.npz) in one")
    if candidates and not os.path.isfile(candidates):  # drawn and written there
        check_writable_folder("eval_candidates_file", os.path.dirname(os.path.abspath(candidates)))
    checkpoint = config["cf_checkpoint"] if getattr(model_class, "needs_cf_backbone", False) else None
    if checkpoint and checkpoint != "auto":  # its family and dataset, before the LLM loads
        trained_on = config["cross_domain_source"] or config["dataset"]  # cross-domain: the source's backbone
        load_backbone_checkpoint(checkpoint, trained_on, config["trust_checkpoint"])


def check_retriever(config, model_class):
    """Full ranking of an LLM model: its retriever is a RecBole sequential model, and a given checkpoint holds one
    trained on this dataset (before anything trains)."""
    name = retriever_name(config)
    if getattr(get_model_class(name), "type", None) != ModelType.SEQUENTIAL or is_plugin_model(name):
        raise ConfigValueError(
            f"rerank_retriever: '{name}' is not a RecBole sequential model; {model_class.__name__} re-ranks a "
            f"sequential model's top items under full ranking: use backbone, SASRec, GRU4Rec, NextItNet, BERT4Rec or "
            f"Caser"
        )
    if config["target_domain"]:
        raise ConfigValueError(
            "eval_args mode full with target_domain: a retriever trained on the source has no scores for the target's "
            "items; rank the target's sampled candidates (mode uniN)"
        )
    if max(config["topk"]) > config["rerank_topk"]:
        raise ConfigValueError(
            f"topk {config['topk']} under full ranking: {model_class.__name__} ranks only the retriever's top "
            f"rerank_topk {config['rerank_topk']} items, so a top-{max(config['topk'])} list would be filled with "
            f"unranked items; set rerank_topk >= {max(config['topk'])} or lower topk"
        )
    checkpoint = config["rerank_checkpoint"]
    if checkpoint != "auto" and not model_class.retrieves_with_backbone(config):
        load_backbone_checkpoint(checkpoint, config["dataset"], config["trust_checkpoint"])


def check_writable_folder(key, folder):
    """``folder`` exists or can be made, and a file can be written in it: one line naming ``key`` otherwise."""
    if not folder:
        raise ConfigValueError(f"{key} is empty; give a folder")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigValueError(f"{key}: '{folder}' is a file, not a folder; give a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigValueError(
            f"{key}: '{folder}' cannot be written ({error.strerror}); give a writable folder"
        ) from None
