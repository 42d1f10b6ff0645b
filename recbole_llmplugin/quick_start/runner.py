"""One RecBole run: RecBole's ``run_recbole`` flow, with plugin models, dataset checks and fixed candidates.

Uses RecBole's own Config, trainers, evaluator and logger, and its dataset and loaders through
``data.preparation``; only model lookup (plugin registry), property files, the dataset check and the evaluation
candidates are the plugin's. Steps that come before a model's own run (training its CF backbone) live in ``backbones``;
``quick_start`` composes the two.
"""

import os
import tempfile
import time
from logging import getLogger

import numpy as np
from pathlib import Path
from types import SimpleNamespace

from recbole.config import Config
from recbole.utils import (
    InputType,
    ModelType,
    get_environment,
    get_trainer,
    init_seed,
    set_color,
)

from recbole_llmplugin.model.layers.cf_backbone import load_backbone_checkpoint
from recbole_llmplugin.data.data_check import check_dataset, require_item_file
from recbole_llmplugin.data.preparation import prepare_data
from recbole_llmplugin.utils.logs import model_log
from recbole_llmplugin.utils.distributed import is_main
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.utils.files import atomic_write
from recbole_llmplugin.model.layers.llm_loading import GGUF_ALIASES, check_llm, hub_offline
from recbole_llmplugin.config.paths import properties_dir
from recbole_llmplugin.utils.registry import get_model_class, is_plugin_model, model_property_file
from recbole_llmplugin.utils.resources import peak_gpu_mb, peak_rss_mb
from recbole_llmplugin.evaluator.item_groups import item_groups, use_item_groups
from recbole_llmplugin.evaluator.standard_errors import use_standard_errors
from recbole_llmplugin.model.layers.text_encoder import TEXT_ENCODER_ALIASES, load_text_encoder
from recbole_llmplugin.utils.checkpoints import load_checkpoint
from recbole_llmplugin.trainer.trainer import get_trainer_class as plugin_trainer_class, unique_checkpoint_name
from recbole_llmplugin.config.validation import check_user_files, read_yaml_file, unknown_metric, validate


def property_files(model_name, dataset_name):
    """Plugin property files for a run, lowest priority first: overall, dataset, model (its registered file,
    or the package's ``properties/model/<Name>.yaml``)."""
    root = properties_dir()
    files = [root / "overall.yaml", root / "dataset" / f"{dataset_name}.yaml"]
    if is_plugin_model(model_name):
        files.append(model_property_file(model_name) or root / "model" / f"{model_name}.yaml")
    return [str(path) for path in files if Path(path).is_file()]


def build_config(model, dataset, config_file_list=None, config_dict=None):
    """RecBole Config for a plugin or RecBole model; user files and dicts override plugin defaults."""
    model_class = get_model_class(model) if isinstance(model, str) else model
    check_user_files(config_file_list)  # missing / unparsable files: one line naming the file, before RecBole
    config = _recbole_config(model_class, dataset, config_file_list, config_dict, check_data=True)
    facts = check_dataset(config)
    if needs_own_negatives(config, model_class):
        config_dict = dict(config_dict or {}, train_neg_sample_args=PAIRWISE_NEGATIVES)
        config = _recbole_config(model_class, dataset, config_file_list, config_dict)
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
        hub_offline([(config["llm_path"], GGUF_ALIASES), (config["text_encoder"], TEXT_ENCODER_ALIASES)])
        check_model_folders(config, model_class)
    return config, model_class


def derive_config(config, model, config_dict):
    """The config of another model of the same run on the same data (the CF backbone, the full-ranking retriever):
    RecBole's Config of ``model`` from the run's property files and ``config_dict``, without the run's checks again.
    ``build_config`` checked the files, the values, the dataset and the folders when it built the run's ``config``;
    a backbone or retriever is a RecBole sequential model that the run's checks already required
    (``check_model_properties``)."""
    model_class = get_model_class(model) if isinstance(model, str) else model
    return _recbole_config(model_class, config["dataset"], config.run_files, config_dict), model_class


def _recbole_config(model_class, dataset, config_file_list, config_dict, check_data=False):
    """RecBole's Config of ``model_class`` from the package's property files, then ``config_file_list`` and
    ``config_dict``; RecBole's own refusals as one line (``check_data``: a missing dataset said first)."""
    files = property_files(model_class.__name__, dataset) + list(config_file_list or [])
    try:
        with recbole_warnings_quiet():
            config = Config(model=model_class, dataset=dataset, config_file_list=files, config_dict=config_dict)
    except (ValueError, TypeError) as error:  # RecBole's own property checks, e.g. CE loss with train negatives
        if check_data:
            _check_dataset_alone(dataset, files, config_dict)  # a missing dataset is the first thing to say
        raise ConfigValueError(f"{model_class.__name__} on {dataset}: {error}") from None
    except NotImplementedError as error:  # RecBole's Config: "There is no metric named 'Foo'"
        raise unknown_metric(error) from None
    config.run_files = list(config_file_list or [])  # the user's property files, for the configs derived from it
    config._user_file_keys = {key for path in config.run_files for key in read_yaml_file(path)}
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


def get_trainer_class(config, model_class):
    """A plugin model's trainer (the ``trainer_type`` it declares), else RecBole's choice for the model."""
    return plugin_trainer_class(model_class) or get_trainer(config["MODEL_TYPE"], config["model"])


def train_and_evaluate(config, model_class, saved=True, start=None):
    """Train and evaluate one model (plugin or RecBole) on a built config, like ``recbole.quick_start.run_recbole``.

    Returns a dict with RecBole's keys (best_valid_score, valid_score_bigger, best_valid_result,
    test_result) plus ``model``, ``dataset``, ``saved_model_file`` and ``costs`` (wall times, peak RSS).
    """
    start = time.time() if start is None else start
    with model_log(config, write=is_main()) as log_file:  # the other processes of a data-parallel run write none
        result = _train_and_evaluate(config, model_class, saved, start)
    result["log_file"] = log_file
    return result


def _train_and_evaluate(config, model_class, saved, start):
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    logger.info(config)

    dataset_obj, train_data, valid_data, test_data = prepare_data(config)

    # RecBole seeds each process apart (DDP then broadcasts the main one's weights); a plugin model's frozen parts
    # are never broadcast (only what a stage trains), so every process builds the same model
    plugin = is_plugin_model(model_class.__name__)
    init_seed(config["seed"] + (0 if plugin else config["local_rank"]), config["reproducibility"])
    model_obj, trainer, evaluator = model_and_trainer(config, model_class, train_data._dataset, ready=logger.info)
    if not trainer.saved_model_file.endswith(".safetensors"):  # RecBole's own trainer: a name no other run shares
        trainer.saved_model_file = unique_checkpoint_name(trainer.saved_model_file, ".pth")

    recbole_trainer = plugin_trainer_class(model_class) is None  # RecBole's models and UniSRec
    if recbole_trainer:
        atomic_checkpoints(trainer)
    stopping = watch_stopping(trainer, config) if recbole_trainer else None
    fit_start = time.time()
    with recbole_warnings_quiet():  # RecBole's _train_epoch builds a deprecated GradScaler each epoch
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
    fit_seconds = time.time() - fit_start
    retrieval_recall(model_obj, config)  # what validation retrieved is not the test's
    eval_start = time.time()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    retrieved = retrieval_recall(model_obj, config)
    eval_seconds = time.time() - eval_start
    n_eval_users = num_eval_users(test_data)
    measured = evaluation_record(evaluator, config, plugin, test_data._dataset)

    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    costs = {
        "total_seconds": time.time() - start,
        "fit_seconds": fit_seconds,
        "test_eval_seconds": eval_seconds,
        "test_users": n_eval_users,
        "eval_seconds_per_user": eval_seconds / max(n_eval_users, 1),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb(config["device"]),
        "trainable_parameters": _trained_parameter_count(model_obj),
    }
    costs.update(getattr(trainer, "stage_seconds", {}))
    if stopping is not None:
        costs.update(stopping())
    if hasattr(model_obj, "token_stats"):  # LLM models: mean prompt tokens per training example / evaluated user
        costs.update({k: v for k, v in model_obj.token_stats().items() if v is not None})
    logger.info(set_color("costs", "yellow") + f": {costs}")
    variant = variant_of(model_class, config)
    result = {
        "model": config["model"],
        "variant": variant,
        "label": row_label(config["model"], variant),
        "dataset": config["dataset"],
        "seed": config["seed"],
        "valid_metric": config["valid_metric"],
        "table_metrics": config["table_metrics"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        **measured,
        "saved_model_file": model_file(trainer) if saved else None,
        "checkpoints": checkpoints_of(model_obj, trainer) if saved else {},
        "costs": costs,
    }
    if retrieved is not None:
        result["retriever_recall"] = retrieved
    result["other_rankings"] = [
        ranked_again(model_obj, trainer, evaluator, test_data, mode, result, plugin)
        for mode in getattr(model_obj, "other_rankings", lambda: [])()
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


def atomic_checkpoints(trainer):
    """RecBole's trainer writes its ``.pth`` with ``torch.save`` straight onto the file: an interruption or a full disk
    leaves a truncated checkpoint that a later ``cf_checkpoint: auto`` run would read. Here each save goes to a temp
    file first and replaces the checkpoint whole (``atomic_write``: a full disk is one line)."""
    save = trainer._save_checkpoint

    def _save_checkpoint(epoch, verbose=True, **kwargs):
        config = trainer.config
        if not config["single_spec"] and config["local_rank"] != 0:  # RecBole: only the main process writes
            return
        final = kwargs.pop("saved_model_file", trainer.saved_model_file)
        size = 3 * sum(p.numel() * p.element_size() for p in trainer.model.parameters())  # weights + Adam moments
        atomic_write(final, lambda tmp: save(epoch, verbose=False, saved_model_file=tmp, **kwargs), size=size)
        if verbose:
            trainer.logger.info(set_color("Saving current", "blue") + f": {final}")

    trainer._save_checkpoint = _save_checkpoint


def watch_stopping(trainer, config):
    """Records the epochs of a RecBole trainer's fit; returns a function giving ``epochs_run``, ``best_epoch`` (the
    last epoch whose weights were kept, 1-based), ``epoch_cap`` and ``stopped_by``: ``validation`` when early
    stopping ended it before the cap, ``epoch cap`` when it ran every epoch (then it may still have been improving)."""
    kept = []
    save = trainer._save_checkpoint

    def _save_checkpoint(epoch, *args, **kwargs):
        kept.append(epoch)
        return save(epoch, *args, **kwargs)

    trainer._save_checkpoint = _save_checkpoint

    def summary():
        run = len(getattr(trainer, "train_loss_dict", {}) or {})
        best = max(kept) + 1 if kept and max(kept) >= 0 else None
        cap = config["epochs"]
        return {
            "epochs_run": run,
            "best_epoch": best,
            "epoch_cap": cap,
            "stopped_by": "validation" if run < cap else "epoch cap",
        }

    return summary


def retrieval_recall(model, config):
    """A full-ranking LLM model's retriever recall@rerank_topk since the last call, with the retriever named; None
    for any other model or evaluation."""
    recall = getattr(model, "retrieval_recall", lambda: None)()
    if recall is None:
        return None
    recall["retriever"] = retriever_name(config)
    return recall


def retriever_name(config):
    """The RecBole model whose top items an LLM model re-ranks under full ranking (``rerank_retriever``; backbone:
    the model's ``cf_model``, SASRec for a model without one)."""
    name = config["rerank_retriever"]
    return (config["cf_model"] or "SASRec") if name == "backbone" else name


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


def evaluate_saved(config, model_class, checkpoint_file):
    """Test result of a saved RecBole checkpoint under the CURRENT properties (``config``: users, candidates...),
    not those pickled in it: e.g. a reused CF backbone shown beside A-LLMRec on A-LLMRec's candidates."""
    tested = evaluate_weights(config, model_class, checkpoint_file)
    plugin = is_plugin_model(model_class.__name__)
    return {
        "test_result": dict(tested.test_result),
        **evaluation_record(tested.evaluator, config, plugin, tested.test_data._dataset),
        "test_users": tested.users,
        "eval_seconds_per_user": tested.seconds / max(tested.users, 1),
    }


def evaluate_weights(config, model_class, checkpoint_file, ready=None, show_progress=False):
    """``model_class`` built on ``config``'s data, ``checkpoint_file``'s weights loaded (None: none, for a model that
    trains nothing), ``ready(model)`` called, then tested on ``config``'s test users with standard errors and item
    groups. Returns a namespace: model, trainer, evaluator, test_data, test_result, seconds, users."""
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, _, test_data = prepare_data(config)

    def loaded(model):
        if checkpoint_file:
            trust = config["trust_checkpoint"]
            restore(model, load_checkpoint(checkpoint_file, map_location=config["device"], trust=trust))
        if ready is not None:
            ready(model)

    model, trainer, evaluator = model_and_trainer(config, model_class, train_data._dataset, ready=loaded)
    start = time.time()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=show_progress)
    return SimpleNamespace(
        model=model,
        trainer=trainer,
        evaluator=evaluator,
        test_data=test_data,
        test_result=test_result,
        seconds=time.time() - start,
        users=num_eval_users(test_data),
    )


def model_and_trainer(config, model_class, dataset, ready=None):
    """What a training run and a re-evaluation of kept weights share: the model built on ``dataset`` (then
    ``ready(model)``: log it, load weights), its trainer, and the evaluator with standard errors and item groups
    attached. Returns (model, trainer, evaluator)."""
    model = model_class(config, dataset).to(config["device"])
    if ready is not None:
        ready(model)
    with recbole_warnings_quiet():
        trainer = get_trainer_class(config, model_class)(config, model)
    evaluator = use_standard_errors(trainer, config)
    use_item_groups(trainer, evaluator, item_groups(config, dataset))
    return model, trainer, evaluator


def num_eval_users(loader):
    uid_list = getattr(loader, "uid_list", None)
    if uid_list is not None:
        return len(uid_list)
    return len(loader._dataset)


def restore(model, checkpoint):
    """Load a plugin checkpoint (trained weights only) or a RecBole one (whole state dict) into ``model``."""
    if checkpoint.get("weights") is not None:
        model.load_trainable_state_dict(checkpoint["weights"])
    else:
        model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
