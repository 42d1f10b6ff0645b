"""Checks that a dataset's atomic files exist before RecBole touches it (RecBole would try to download)."""

import os

from recbole_llmplugin.errors import ConfigValueError, DatasetNotFoundError

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
    encoding = config["encoding"] or "utf-8"
    for name in sorted(os.listdir(folder)):
        if name.startswith(dataset + ".") and os.path.isfile(os.path.join(folder, name)):
            check_encoding(os.path.join(folder, name), encoding)


def check_encoding(path, encoding):
    """RecBole reads atomic files as ``encoding`` (utf-8 unless set): a file in another one fails deep in pandas."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as error:
        raise ConfigValueError(
            f"'{os.path.abspath(path)}' is not {encoding} text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            f"convert it to {encoding} (e.g. iconv -f latin1 -t utf-8) or set encoding to the file's"
        ) from None


def require_item_file(config):
    """Path of ``<dataset>.item``; LLM models need it for item text."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}': LLM models need item text but '{os.path.abspath(path)}' does not exist; "
            f"add a .item atomic file with a title column"
        )
    return path
