"""Checks that a dataset's atomic files exist before RecBole touches it (RecBole would try to download)."""

import os

from recbole_llmplugin.errors import DatasetNotFoundError

__all__ = ["DatasetNotFoundError", "check_dataset", "require_item_file"]


def _expected_inter_files(config):
    dataset = config["dataset"]
    names = config["benchmark_filename"]
    if names:
        return [f"{dataset}.{name}.inter" for name in names]
    return [f"{dataset}.inter"]


def check_dataset(config):
    """Raise one clear error when ``config['data_path']`` lacks the dataset's interaction files."""
    folder = config["data_path"]
    dataset = config["dataset"]
    expected = _expected_inter_files(config)
    if not os.path.isdir(folder):
        raise DatasetNotFoundError(
            f"dataset '{dataset}': folder '{os.path.abspath(folder)}' does not exist; "
            f"expected RecBole atomic files {', '.join(expected)} (+ {dataset}.item) there; set data_path to their parent folder"
        )
    missing = [name for name in expected if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise DatasetNotFoundError(
            f"dataset '{dataset}': missing {', '.join(missing)} in '{os.path.abspath(folder)}'; "
            f"put the RecBole atomic files there or set data_path"
        )


def require_item_file(config):
    """Path of ``<dataset>.item``; LLM models need it for item text."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}': LLM models need item text but '{os.path.abspath(path)}' does not exist; "
            f"add a .item atomic file with a title column"
        )
    return path
