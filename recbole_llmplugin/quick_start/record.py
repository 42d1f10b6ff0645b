"""A run's result record: RecBole's keys (best_valid_score, best_valid_result, test_result...), the row's label
(the model and its form), standard errors, per-user values and item groups of the evaluation, the costs, the
checkpoints kept, and the rows of the same model ranked another way (A-LLMRec's CF match alone)."""

import os
import time
from logging import getLogger

import numpy as np
from recbole.utils import set_color

from recbole_llmplugin.config.options import retriever_name
from recbole_llmplugin.utils.resources import peak_gpu_mb, peak_rss_mb


def run_result(config, run, start):
    """The result dict of one trained and tested run. ``run`` holds what the runner measured: model, trainer,
    evaluator, test_data, plugin, saved, best_valid_score, best_valid_result, test_result, fit_seconds,
    eval_seconds, retrieved (the retriever's recall, or None) and stopping (the epoch record, or None)."""
    model, trainer = run.model, run.trainer
    n_eval_users = num_eval_users(run.test_data)
    measured = evaluation_record(run.evaluator, config, run.plugin, run.test_data._dataset)
    costs = {
        "total_seconds": time.time() - start,
        "fit_seconds": run.fit_seconds,
        "test_eval_seconds": run.eval_seconds,
        "test_users": n_eval_users,
        "eval_seconds_per_user": run.eval_seconds / max(n_eval_users, 1),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb(config["device"]),
        "trainable_parameters": _trained_parameter_count(model),
    }
    costs.update(getattr(trainer, "stage_seconds", {}))
    if run.stopping is not None:
        costs.update(run.stopping())
    if hasattr(model, "token_stats"):  # LLM models: mean prompt tokens per training example / evaluated user
        costs.update({k: v for k, v in model.token_stats().items() if v is not None})
    getLogger().info(set_color("costs", "yellow") + f": {costs}")
    variant = variant_of(type(model), config)
    result = {
        "model": config["model"],
        "variant": variant,
        "label": row_label(config["model"], variant),
        "dataset": config["dataset"],
        "seed": config["seed"],
        "valid_metric": config["valid_metric"],
        "table_metrics": config["table_metrics"],
        "best_valid_score": run.best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": run.best_valid_result,
        "test_result": run.test_result,
        **measured,
        "saved_model_file": model_file(trainer) if run.saved else None,
        "checkpoints": checkpoints_of(model, trainer) if run.saved else {},
        "costs": costs,
    }
    if run.retrieved is not None:
        result["retriever_recall"] = run.retrieved
    result["other_rankings"] = [
        ranked_again(model, trainer, run.evaluator, run.test_data, mode, result, run.plugin)
        for mode in getattr(model, "other_rankings", lambda: [])()
    ]
    return result


def model_file(trainer):
    """The checkpoint a trainer evaluated: a plugin trainer's ``model_file()`` (a staged one's last stage), else
    RecBole's ``saved_model_file``."""
    return trainer.model_file() if hasattr(trainer, "model_file") else trainer.saved_model_file


def checkpoints_of(model, trainer):
    """What a run kept, by name, as its trainer says: each training stage's checkpoint (a staged trainer's
    ``stage_checkpoints``), or the model's one checkpoint; only files that exist (a model that trains nothing
    keeps none)."""
    kept = getattr(trainer, "stage_checkpoints", None) or {"model": model_file(trainer)}
    return {name: path for name, path in kept.items() if path and os.path.isfile(path)}


def retrieval_recall(model, config):
    """A full-ranking LLM model's retriever recall@rerank_topk since the last call, with the retriever named; None
    for any other model or evaluation."""
    recall = getattr(model, "retrieval_recall", lambda: None)()
    if recall is None:
        return None
    recall["retriever"] = retriever_name(config)
    return recall


def ranked_again(model, trainer, evaluator, test_data, eval_mode, result, plugin):
    """The row of the same trained model and test users ranked by ``eval_mode`` (e.g. A-LLMRec's CF match alone):
    its metrics, standard errors and evaluation time; the training costs are the model's own row's."""
    config = trainer.config
    own = model.eval_mode
    model.eval_mode = eval_mode
    try:
        start = time.time()
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
        seconds = time.time() - start
    finally:
        model.eval_mode = own
    retrieval_recall(model, config)  # the same retrieval as the model's own row (its figure is kept there)
    variant = variant_of(type(model), config, eval_mode)
    getLogger().info(set_color(f"test result ({variant})", "yellow") + f": {test_result}")
    users = num_eval_users(test_data)
    costs = dict(result["costs"], test_eval_seconds=seconds, eval_seconds_per_user=seconds / max(users, 1))
    return {
        **{k: v for k, v in result.items() if k not in ("other_rankings", "saved_model_file")},
        "variant": variant,
        "label": row_label(config["model"], variant),
        "eval_mode": eval_mode,
        "test_result": test_result,
        **evaluation_record(evaluator, config, plugin, test_data._dataset),
        "costs": costs,
    }


def variant_of(model_class, config, eval_mode=None):
    """The form of a run's row in words ("" for the paper's form, and for RecBole's models): see
    ``LLMRecommender.variant``."""
    return model_class.variant(config, eval_mode) if hasattr(model_class, "variant") else ""


def row_label(name, variant):
    """A result row's label: the model (or benchmark entry) name, with its form when it is not the paper's."""
    return f"{name} ({variant})" if variant else name


def evaluation_record(evaluator, config, plugin, dataset):
    """What a result keeps of its last evaluation beside RecBole's metric means: ``test_se`` (standard errors over
    all its users), ``test_groups`` (item groups) and ``test_user_values`` ({"users": raw user ids, "hit@1": per-user
    values, ...}: what paired comparisons read; None where the users are not known, e.g. a data-parallel evaluation
    of a RecBole model). Group entries keep their users' values the same way."""
    names = dataset.field2id_token[dataset.uid_field]

    def named(ids, values):
        if ids is None or not values:
            return None
        kept = {"users": [str(names[i]) for i in np.asarray(ids)]}
        kept.update({metric: [round(float(v), 6) for v in column] for metric, column in values.items()})
        return kept

    standard_errors = _whole_standard_errors(evaluator, config, plugin)
    user_ids = evaluator.user_ids if standard_errors else None
    groups = {}
    for group, values in evaluator.group_results.items():
        values = dict(values)
        own = values.pop("user_values", None)
        if own is not None:
            ids = own.pop("users")
            values["user_values"] = named(ids, own)
        groups[group] = values
    return {
        "test_se": standard_errors,
        "test_groups": groups,
        "test_user_values": named(user_ids, evaluator.user_values),
    }


def _whole_standard_errors(evaluator, config, plugin):
    """The standard errors of the last evaluation, over all its users. A RecBole model's data-parallel evaluation
    measures each process's share of the users (RecBole then averages the metrics): no SE is claimed for it."""
    if not plugin and not config["single_spec"]:
        return {}
    return dict(evaluator.standard_errors)


def _trained_parameter_count(model):
    if hasattr(model, "trainable_state_dict"):
        return sum(t.numel() for t in model.trainable_state_dict().values())
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def num_eval_users(loader):
    uid_list = getattr(loader, "uid_list", None)
    if uid_list is not None:
        return len(uid_list)
    return len(loader._dataset)
