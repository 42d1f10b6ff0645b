"""The CF backbone step of a run: train, reuse and re-evaluate the RecBole model whose embeddings a plugin
model reads (``cf_checkpoint: auto``), before that model's own run.

Models declare the need with ``needs_cf_backbone = True`` and name it with ``cf_model``; they never import
this module or the runner. A finished backbone is kept under ``<checkpoint_dir>/cf_backbones/`` with the
summary of its run, keyed by ``backbone_identity`` (its whole resolved config minus plugin and run-local keys),
and re-evaluated on each run's users and candidates when reused.
"""

import json
import os
import shutil
from logging import getLogger
from pathlib import Path

from recbole.utils import ModelType

from recbole_llmplugin.utils.distributed import LAUNCH_KEYS, is_main, main_alone, main_first
from recbole_llmplugin.utils.errors import ConfigValueError, UnreadableFileError
from recbole_llmplugin.utils.files import atomic_write, digest, set_aside
from recbole_llmplugin.config.identity import config_identity, dataset_identity
from recbole_llmplugin.trainer.locks import claim
from recbole_llmplugin.utils.registry import is_plugin_model
from recbole_llmplugin.config.options import retriever_name
from recbole_llmplugin.config.recbole_config import derive_config
from recbole_llmplugin.quick_start.runner import evaluate_saved, train_and_evaluate
from recbole_llmplugin.config.properties import plugin_keys
from recbole_llmplugin.config.validation import recbole_keys
from recbole_llmplugin.data.scenarios import SCENARIO_KEYS


def prepare_backbone(config, config_dict, cf_model=None, key="cf_checkpoint", role="backbone"):
    """Train (or reuse) the CF backbone when ``cf_checkpoint: auto`` and point ``config["cf_checkpoint"]`` at
    it; returns ``[its run result]`` (``[]`` for a given checkpoint). ``cf_model``, ``key`` and ``role`` name another
    RecBole model trained the same way (the full-ranking retriever: ``rerank_checkpoint``)."""
    if config[key] != "auto":
        return []
    cf_model = cf_model or config["cf_model"]
    # one process trains it: a data-parallel run's main process, while the others wait (no launch keys)
    skipped = ("model", "cf_checkpoint", "rerank_checkpoint", *LAUNCH_KEYS)
    overrides = {k: v for k, v in (config_dict or {}).items() if k not in skipped}
    # the plugin model's training negatives (its property file's ~ unless the user set them): SASRec and the other
    # sequential backbones train with CE, which RecBole refuses beside its default uniform negatives
    negatives = config["train_neg_sample_args"]  # RecBole's resolved form: distribution 'none' is "off" (~)
    overrides.setdefault("train_neg_sample_args", None if negatives.get("distribution") == "none" else negatives)
    try:
        backbone_config, backbone_class = derive_config(config, cf_model, overrides)
    except ConfigValueError as error:  # the run's properties, read for the model trained first: say which it is
        raise ConfigValueError(f"the {role} {cf_model} ({key}: auto): {error}") from None
    path = backbone_path(backbone_config)
    with main_first():
        if is_main():
            with main_alone(), claim(
                path, f"{cf_model} backbone", config["lock_timeout"]
            ):  # a concurrent identical run waits
                result = _train_or_reuse(cf_model, backbone_config, backbone_class, path)
    config[key] = path
    if not is_main():  # the main process reports it
        return []
    result["model"] = result["label"] = f"{cf_model} ({role})"
    result["variant"] = role
    return [result]


def prepare_retriever(config, config_dict, model_class):
    """Under full ranking, train (or reuse) an LLM model's retriever when ``rerank_checkpoint: auto`` and point
    ``config["rerank_checkpoint"]`` at it; returns ``[its run result]``: its own full-ranking row. Nothing when the
    retriever is the model's CF backbone (its row is the backbone's) or the evaluation is sampled."""
    if not getattr(model_class, "full_sort", False) or not hasattr(model_class, "retrieves_with_backbone"):
        return []
    if "full" not in evaluation_modes(config) or model_class.retrieves_with_backbone(config):
        return []
    return prepare_backbone(config, config_dict, retriever_name(config), key="rerank_checkpoint", role="retriever")


def evaluation_modes(config):
    """RecBole's ``eval_args.mode`` values of a run (one, or valid's and test's)."""
    modes = config["eval_args"]["mode"]
    return list(modes.values()) if isinstance(modes, dict) else [modes]


def _train_or_reuse(cf_model, backbone_config, backbone_class, path):
    summary = path[:-4] + ".json"
    if os.path.isfile(path) and os.path.isfile(summary):
        getLogger().info(
            f"cf_checkpoint: auto -> reusing {cf_model} backbone {path}; evaluating it on this run's candidates"
        )
        try:
            return _reused(backbone_config, backbone_class, path, summary)
        except UnreadableFileError as error:  # truncated, a disk that filled up: moved aside and trained anew
            set_aside(path, "CF backbone", error.reason)
            os.remove(summary)
    getLogger().info(
        f"cf_checkpoint: auto -> training the {cf_model} backbone through RecBole first: up to "
        f"{backbone_config['epochs']} epochs, stopping after {backbone_config['stopping_step']} validations without a "
        f"better {backbone_config['valid_metric']}"
    )
    return _keep(train_and_evaluate(backbone_config, backbone_class, saved=True), path)


def _keep(result, path):
    """A finished run's checkpoint and summary, written where ``cf_checkpoint: auto`` looks for them (``path``)."""
    summary = path[:-4] + ".json"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda tmp: shutil.copyfile(result["saved_model_file"], tmp))
    result = {k: (dict(v) if k.endswith("result") and v is not None else v) for k, v in result.items()}
    result = json.loads(json.dumps(result, default=float))
    result["saved_model_file"] = path
    result["checkpoints"] = {"model": path}
    atomic_write(summary, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1), encoding="utf-8"))
    return result


def backbone_path(backbone_config):
    """Where the backbone trained under ``backbone_config`` (a RecBole model's resolved config) is kept."""
    model = backbone_config["model"]
    key = digest(model, backbone_identity(backbone_config))
    folder = os.path.join(backbone_config["checkpoint_dir"], "cf_backbones")
    return os.path.join(folder, f"{backbone_config['dataset']}-{model}-{key}.pth")


def keep_as_backbone(config, model_class, result):
    """A RecBole sequential model's finished run (``saved``), kept as the CF backbone of the same properties, so that
    a plugin model run after it with ``cf_checkpoint: auto`` (a benchmark's SASRec row, then A-LLMRec) reuses it
    instead of training the same model again. A backbone already kept there stays."""
    recbole_sequential = getattr(model_class, "type", None) == ModelType.SEQUENTIAL and not is_plugin_model(
        model_class.__name__
    )
    if not recbole_sequential or not result.get("saved_model_file"):
        return
    if not is_main() or not os.path.isfile(result["saved_model_file"]):
        return
    path = backbone_path(config)
    with claim(path, f"{config['model']} backbone", config["lock_timeout"]):
        if not (os.path.isfile(path) and os.path.isfile(path[:-4] + ".json")):
            _keep(result, path)
            getLogger().info(f"kept as the {config['model']} backbone of these properties: {path}")


def _reused(backbone_config, backbone_class, path, summary):
    """A kept backbone's run: its training costs, and its metrics measured again on this run's users."""
    with open(summary, encoding="utf-8") as handle:
        result = json.load(handle)
    fresh = evaluate_saved(backbone_config, backbone_class, path)
    result["test_result"], result["test_se"] = fresh["test_result"], fresh["test_se"]
    result["test_groups"], result["test_user_values"] = fresh["test_groups"], fresh["test_user_values"]
    result["costs"].update(test_users=fresh["test_users"], eval_seconds_per_user=fresh["eval_seconds_per_user"])
    result.update(checkpoints={"model": path}, log_file=None)  # evaluated again inside this run: its log has it
    return result


# plugin keys a RecBole run reads too: they choose the users that train, validate (early-stop) and test it, and the
# candidates
EVALUATION_KEYS = frozenset(
    {"eval_candidates", "eval_candidates_seed", "eval_candidates_file", "eval_user_sample", *SCENARIO_KEYS}
)


def backbone_identity(backbone_config):
    """The backbone run's identity (``identity.config_identity``: its whole resolved config minus run-local
    keys) without the keys only plugin models read (stages, prompts, LLM...: the keys of the plugin's table that
    no RecBole property file defines, ``EVALUATION_KEYS`` excepted), plus the content of its dataset files.
    A RecBole key that a plugin file sets too (``epochs``, ``eval_batch_size``...) stays in it."""
    plugin_only = plugin_keys() - recbole_keys() - EVALUATION_KEYS
    return [config_identity(backbone_config, exclude=plugin_only), dataset_identity(backbone_config)]
