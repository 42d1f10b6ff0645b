"""One RecBole run on a built config: RecBole's ``run_recbole`` flow, with plugin models and the plugin's data step.

The data in one step (``data.preparation``), the model, its trainer (a plugin model's declared trainer, else
RecBole's, with the checkpoint handling of ``trainer.recbole_trainer``) and RecBole's evaluator with standard errors
and item groups, ``fit``, the test; the result record is ``record``'s. The config comes from ``run_config``; the
steps before a model's own run (its CF backbone) are ``backbones``'; ``quick_start`` composes them.
"""

import time
from logging import getLogger
from types import SimpleNamespace

from recbole.utils import get_environment, get_trainer, init_seed, set_color

from recbole_llmplugin.data.preparation import prepare_data
from recbole_llmplugin.evaluator.item_groups import item_groups, use_item_groups
from recbole_llmplugin.evaluator.standard_errors import use_standard_errors
from recbole_llmplugin.quick_start.record import evaluation_record, num_eval_users, retrieval_recall, run_result
from recbole_llmplugin.trainer.recbole_trainer import keep_recbole_checkpoints
from recbole_llmplugin.trainer.trainer import get_trainer_class as plugin_trainer_class
from recbole_llmplugin.utils.checkpoints import load_checkpoint
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.utils.distributed import is_main
from recbole_llmplugin.utils.logs import model_log
from recbole_llmplugin.utils.registry import is_plugin_model


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

    _, train_data, valid_data, test_data = prepare_data(config)

    # RecBole seeds each process apart (DDP then broadcasts the main one's weights); a plugin model's frozen parts
    # are never broadcast (only what a stage trains), so every process builds the same model
    plugin = is_plugin_model(model_class.__name__)
    init_seed(config["seed"] + (0 if plugin else config["local_rank"]), config["reproducibility"])
    model, trainer, evaluator = model_and_trainer(config, model_class, train_data._dataset, ready=logger.info)
    recbole_trainer = plugin_trainer_class(model_class) is None  # RecBole's models and UniSRec
    stopping = keep_recbole_checkpoints(trainer, config) if recbole_trainer else None
    run = SimpleNamespace(model=model, trainer=trainer, evaluator=evaluator, test_data=test_data, plugin=plugin)
    run.saved, run.stopping = saved, stopping
    fit_start = time.time()
    with recbole_warnings_quiet():  # RecBole's _train_epoch builds a deprecated GradScaler each epoch
        run.best_valid_score, run.best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
    run.fit_seconds = time.time() - fit_start
    retrieval_recall(model, config)  # what validation retrieved is not the test's
    eval_start = time.time()
    run.test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    run.retrieved = retrieval_recall(model, config)
    run.eval_seconds = time.time() - eval_start

    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {run.best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {run.test_result}")
    return run_result(config, run, start)


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


def restore(model, checkpoint):
    """Load a plugin checkpoint (trained weights only) or a RecBole one (whole state dict) into ``model``."""
    if checkpoint.get("weights") is not None:
        model.load_trainable_state_dict(checkpoint["weights"])
    else:
        model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
