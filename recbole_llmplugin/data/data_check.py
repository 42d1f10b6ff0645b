"""Checks of a dataset's atomic files before RecBole touches them: that they exist (RecBole would try to download),
are text in the configured encoding, and are well-formed (header types, the same number of fields on every line,
numbers where the header says float, unique ids in ``.item`` / ``.user``, at least one row, the ``load_col``
columns present). RecBole's pandas reader would shift the columns of a line with a stray tab, let the last of two
rows with the same item id win, or fail deep in pandas without a line number.
"""

import codecs
import os

from recbole.utils import FeatureType

from recbole_llmplugin.data.amazon import BEAUTY, CONVERT_COMMAND, GAMES
from recbole_llmplugin.utils.errors import ConfigValueError, DatasetNotFoundError

__all__ = ["DatasetNotFoundError", "check_dataset", "check_atomic_file", "require_item_file"]


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
        if dataset in (GAMES, BEAUTY):
            fix = f"convert it first: {CONVERT_COMMAND}"
        else:
            fix = f"expected RecBole atomic files {', '.join(expected)} (+ {dataset}.item) there; "
            fix += "set data_path to their parent folder"
        raise DatasetNotFoundError(f"dataset '{dataset}': folder '{os.path.abspath(folder)}' does not exist; {fix}")
    missing = [name for name in expected if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise DatasetNotFoundError(
            f"dataset '{dataset}': missing {', '.join(missing)} in '{os.path.abspath(folder)}'; "
            f"put the RecBole atomic files there or set data_path"
        )
    encoding = config["encoding"] or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigValueError(
            f"encoding: '{encoding}' is not a text encoding Python knows; e.g. utf-8 or latin-1"
        ) from None
    texts = {}  # each file read once: decoded here, parsed below
    for name in sorted(os.listdir(folder)):
        if name.startswith(dataset + ".") and os.path.isfile(os.path.join(folder, name)):
            texts[name] = check_encoding(os.path.join(folder, name), encoding)
    headers, items = {}, set()  # items: the distinct item ids of the interaction files, read as they are checked
    for source, name in _atomic_files(config, expected):
        if name in texts:
            seen = items if source == "inter" else None
            headers[source] = check_atomic_file(os.path.join(folder, name), config, source, texts[name], seen)
    _check_load_col(config, headers)
    # the item count before RecBole's filters (at most that after them); None without an item column
    return {"items": len(items) if config["ITEM_ID_FIELD"] in (headers.get("inter") or {}) else None}


def check_encoding(path, encoding):
    """The text of an atomic file. RecBole reads atomic files as ``encoding`` (utf-8 unless set): a file in another
    one fails deep in pandas."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode(encoding)
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


# the source of an atomic file (load_col's keys) and the id column that must be unique in it
_ID_FIELD = {"item": "ITEM_ID_FIELD", "user": "USER_ID_FIELD"}


def _atomic_files(config, inter_files):
    dataset = config["dataset"]
    files = [("inter", name) for name in inter_files] + [("item", f"{dataset}.item"), ("user", f"{dataset}.user")]
    return files + [(suffix, f"{dataset}.{suffix}") for suffix in config["additional_feat_suffix"] or []]


def _loaded(config, source, columns):
    """The columns RecBole loads from a file of ``source`` (its ``load_col`` / ``unload_col`` rule)."""
    load_col, unload_col = config["load_col"], config["unload_col"]
    if load_col is not None:
        if source not in load_col:
            return []
        if load_col[source] != "*":
            return [c for c in columns if c in set(load_col[source])]
    if unload_col is not None and source in unload_col:
        return [c for c in columns if c not in set(unload_col[source])]
    return list(columns)


def check_atomic_file(path, config, source, text, items=None):
    """One atomic file (its decoded ``text``), line by line: returns its columns {name: type}. An error names the
    file and line. ``items``: a set that receives the file's item ids."""
    where = os.path.abspath(path)
    separator = config["field_separator"] or "\t"
    seq_separator = config["seq_separator"] or " "
    lines = text.split("\n")
    header = lines[0].rstrip("\r").split(separator)
    columns = {}
    for field in header:
        name, _, kind = field.partition(":")
        if kind not in {t.value for t in FeatureType}:
            raise ConfigValueError(
                f"'{where}' line 1: column '{field}' is not name:type with type token, token_seq, float or "
                f"float_seq (columns split at field_separator {separator!r}); fix the header or field_separator"
            )
        columns[name] = kind
    numeric = [(i, n, columns[n]) for i, n in enumerate(columns) if "float" in columns[n]]
    numeric = [entry for entry in numeric if entry[1] in _loaded(config, source, columns)]
    id_field = config[_ID_FIELD[source]] if source in _ID_FIELD else None
    id_index = list(columns).index(id_field) if id_field in columns else None
    item_field = config["ITEM_ID_FIELD"]
    item_index = list(columns).index(item_field) if items is not None and item_field in columns else None
    seen = {}
    rows = 0
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue  # RecBole's reader skips blank lines
        rows += 1
        values = line.split(separator)
        if len(values) != len(header):
            raise ConfigValueError(
                f"'{where}' line {number} has {len(values)} fields, the header has {len(header)} "
                f"(a {'tab' if separator == chr(9) else repr(separator)} inside a value?); fix that line"
            )
        for index, name, kind in numeric:
            for value in values[index].split(seq_separator) if kind == "float_seq" else [values[index]]:
                if value.strip() and not _is_number(value):
                    raise ConfigValueError(
                        f"'{where}' line {number}: {name}:{kind} is '{value}', not a number; fix the value or "
                        f"declare the column as token"
                    )
        if item_index is not None:
            items.add(values[item_index])
        if id_index is not None:
            first = seen.setdefault(values[id_index], number)
            if first != number:
                raise ConfigValueError(
                    f"'{where}' lines {first} and {number} both describe {id_field} '{values[id_index]}'; keep one "
                    f"row per {id_field}"
                )
    if rows == 0:
        raise ConfigValueError(f"'{where}' has a header and no rows; give it the dataset's {source} rows")
    return columns


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_load_col(config, headers):
    """``load_col`` naming a column a file lacks (RecBole drops it in silence, then fails where the column is
    used), the user and item id columns, and a time-ordered split without the time column loaded."""
    dataset = config["dataset"]
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        if "inter" in headers and config[key] and config[key] not in _loaded(config, "inter", headers["inter"]):
            raise ConfigValueError(
                f"{key}: '{config[key]}' is not a loaded column of {dataset}'s inter file (its columns: "
                f"{', '.join(headers['inter'])}); name the id column, and keep it in load_col"
            )
    for source, wanted in (config["load_col"] or {}).items():
        if source not in headers or wanted == "*":
            continue
        missing = [c for c in wanted if c not in headers[source]]
        if missing:
            raise ConfigValueError(
                f"load_col: {source} lists {', '.join(missing)}, which {dataset}'s {source} file lacks (its columns: "
                f"{', '.join(headers[source])}); remove {'it' if len(missing) == 1 else 'them'} from load_col"
            )
    time_field = config["TIME_FIELD"]
    order = (config["eval_args"] or {}).get("order")
    if order == "TO" and "inter" in headers and time_field not in _loaded(config, "inter", headers["inter"]):
        raise ConfigValueError(
            f"eval_args order TO sorts by {time_field}, which is not loaded from {dataset}'s inter file: add it to "
            f"load_col inter (or set TIME_FIELD to the time column, or order RO)"
        )
