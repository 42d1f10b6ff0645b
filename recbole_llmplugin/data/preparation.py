"""A run's data in one step, from its config to RecBole's loaders.

RecBole's dataset (``create_dataset``), then, in this order: the scenario's held-out users
(``data.scenarios``), RecBole's split (``Dataset.build``), the scenario split, the evaluation-user sample and the
fixed candidates (``sampler.eval_candidates``), and RecBole's samplers and loaders (``create_samplers``,
``get_dataloader``), built as ``recbole.data.data_preparation`` builds them. Each step takes what the one before
returned; none replaces a method of a built object. ``save_dataloaders`` saves and reloads the loaders with RecBole's
own functions, as ``data_preparation`` does.
"""

import contextlib
from logging import getLogger

from recbole.data import create_dataset, create_samplers, get_dataloader
from recbole.data.utils import load_split_dataloaders, save_split_dataloaders
from recbole.data.dataloader import KnowledgeBasedDataLoader
from recbole.sampler import KGSampler
from recbole.utils import set_color

from recbole_llmplugin.data.scenarios import hold_out_users, split_by_scenario
from recbole_llmplugin.sampler.eval_candidates import (
    CandidateSource,
    check_eval_candidates,
    fixed_candidate_samplers,
    sample_eval_users,
)
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.utils.distributed import single_process_view
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.utils.registry import is_plugin_model


def prepare_data(config):
    """(dataset, train, valid, test loaders) of a run. In a data-parallel run a plugin model's processes each get the
    whole loaders (its trainer splits the batches itself); a RecBole model's get RecBole's per-process shards."""
    dataset = _create_dataset(config)
    held_out = hold_out_users(config, dataset)  # cold users / few-shot: before anything reads the interactions
    getLogger().info(dataset)
    loaded = load_split_dataloaders(config)  # RecBole's saved loaders (save_dataloaders), as data_preparation reads
    if loaded is not None:
        dataset._change_feat_format()
        _log_loaders(config)
        return (dataset, *loaded)
    source = CandidateSource(dataset) if config["eval_candidates"] == "fixed" else None  # before build()
    with single_process_view(config) if is_plugin_model(config["model"]) else contextlib.nullcontext():
        with recbole_warnings_quiet():
            splits = dataset.build()
            splits = split_by_scenario(config, dataset, splits, held_out)
            splits = sample_eval_users(config, dataset, splits, apart=held_out is not None)
            samplers = create_samplers(config, dataset, splits)
            samplers = fixed_candidate_samplers(config, dataset, samplers, source)
            loaders = _loaders(config, dataset, splits, samplers)
    check_eval_candidates(config, dataset, *loaders[1:])
    if config["save_dataloaders"]:
        save_split_dataloaders(config, dataloaders=loaders)
    _log_loaders(config)
    return (dataset, *loaders)


def _create_dataset(config):
    try:
        with recbole_warnings_quiet():
            return create_dataset(config)
    except ValueError as error:
        if not str(error).startswith("Some feat is empty"):
            raise
        raise ConfigValueError(
            f"dataset '{config['dataset']}': its filters (user_inter_num_interval, item_inter_num_interval, "
            f"val_interval, ...) leave no interactions; loosen them"
        ) from None


def _loaders(config, dataset, splits, samplers):
    """RecBole's train, valid and test loaders of ``splits`` with ``samplers``, as ``data_preparation`` makes them."""
    train_class = get_dataloader(config, "train")
    if issubclass(train_class, KnowledgeBasedDataLoader):
        args = config["train_neg_sample_args"]
        kg_sampler = KGSampler(dataset, args["distribution"], args["alpha"])
        train = train_class(config, splits[0], samplers[0], kg_sampler, shuffle=True)
    else:
        train = train_class(config, splits[0], samplers[0], shuffle=config["shuffle"])
    valid = get_dataloader(config, "valid")(config, splits[1], samplers[1], shuffle=False)
    test = get_dataloader(config, "test")(config, splits[2], samplers[2], shuffle=False)
    return train, valid, test


def _log_loaders(config):
    """The two lines RecBole's ``data_preparation`` logs."""
    for phase, size, args in (
        ("Training", "train_batch_size", "train_neg_sample_args"),
        ("Evaluation", "eval_batch_size", "eval_args"),
    ):
        getLogger().info(
            set_color(f"[{phase}]: ", "pink")
            + set_color(size, "cyan")
            + " = "
            + set_color(f"[{config[size]}]", "yellow")
            + set_color(f" {args}", "cyan")
            + ": "
            + set_color(f"[{config[args]}]", "yellow")
        )
