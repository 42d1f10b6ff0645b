"""Convert the Amazon datasets of ``shared/data`` into RecBole atomic files, at run time.

    python -m recbole_llmplugin.data.amazon --source ../shared/data --output dataset

writes ``<output>/amazon-games-llmrank/`` (LLMRank's Games-6k: 2018 Video Games) and
``<output>/amazon-beauty-p5/`` (P5's 2014 Beauty 5-core), each with ``.inter`` (user_id, item_id,
timestamp = position in the user's sequence) and ``.item`` (item_id, title: ``html.unescape`` and
whitespace collapsed; empty when the source has none, so ``item_text_placeholder`` applies). The data
carries no open licence: convert it where you use it and never commit the output (``dataset/amazon-*``
is git-ignored).
"""

import argparse
import csv
import html
import json
import os
import sys
import tempfile
from pathlib import Path

from recbole_llmplugin.utils.errors import ConfigValueError, one_line_errors
from recbole_llmplugin.utils.files import atomic_write

GAMES, BEAUTY = "amazon-games-llmrank", "amazon-beauty-p5"
CONVERT_COMMAND = "python -m recbole_llmplugin.data.amazon --source ../shared/data --output dataset"


def clean_title(text):
    return " ".join(html.unescape(text or "").split())


def _write_atomic_files(folder, name, sequences, titles):
    """sequences: {user: [items oldest first]}; titles: {item: title}."""
    folder = Path(folder) / name
    folder.mkdir(parents=True, exist_ok=True)

    def write_inter(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
            for user, items in sequences.items():
                handle.writelines(f"{user}\t{item}\t{position}\n" for position, item in enumerate(items))

    def write_item(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("item_id:token\ttitle:token_seq\n")
            handle.writelines(f"{item}\t{title}\n" for item, title in titles.items())

    atomic_write(folder / f"{name}.inter", write_inter)
    atomic_write(folder / f"{name}.item", write_item)
    return folder


def convert_games(source, output):
    """LLMRank Games-6k: test.inter holds each user's full sequence (history + target)."""
    src = Path(source) / "amazon-games"
    titles = {}
    with open(src / "Games-6k.item", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            item, title = line.rstrip("\n").split("\t", 1)
            titles[item] = clean_title(title)
    sequences = {}
    with open(src / "Games-6k.test.inter", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user, history, target = line.rstrip("\n").split("\t")
            sequences[user] = history.split() + [target]
    return _write_atomic_files(output, GAMES, sequences, titles)


def convert_beauty(source, output):
    """P5 Beauty: user_sequence.txt (reviewer + ASINs), titles joined through item_id_to_int.json."""
    src = Path(source) / "amazon-beauty"
    with open(src / "item_id_to_int.json", encoding="utf-8") as handle:
        asin_to_int = json.load(handle)
    names = {}
    with open(src / "products_lookup.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            names[int(row["global_product_id"])] = row["name"]
    titles = {asin: clean_title(names.get(index, "")) for asin, index in asin_to_int.items()}
    sequences = {}
    with open(src / "user_sequence.txt", encoding="utf-8") as handle:
        for line in handle:
            user, *items = line.split()
            sequences[user] = items
    return _write_atomic_files(output, BEAUTY, sequences, titles)


SOURCE_FILES = {
    convert_games: ("amazon-games/Games-6k.item", "amazon-games/Games-6k.test.inter"),
    convert_beauty: (
        "amazon-beauty/item_id_to_int.json",
        "amazon-beauty/products_lookup.csv",
        "amazon-beauty/user_sequence.txt",
    ),
}


def check_folders(source, output, overwrite=False):
    """Every source file there and an output folder, before anything is written."""
    for needed in SOURCE_FILES.values():
        missing = [name for name in needed if not (Path(source) / name).is_file()]
        if missing:
            raise ConfigValueError(
                f"--source '{source}' has no {missing[0]}; give the folder holding amazon-games/ and amazon-beauty/ "
                f"(../shared/data)"
            )
    check_output_folder(output, (GAMES, BEAUTY), overwrite)


def check_output_folder(output, names=(), overwrite=False):
    """``output`` is (or can be made) a folder this process writes in; each dataset folder ``<output>/<name>`` can
    take ``<name>.inter`` and ``<name>.item``, and holds no converted set unless ``overwrite``: one line otherwise,
    before anything is read or written."""
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise ConfigValueError(f"--output '{output}' is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise ConfigValueError(
            f"--output '{output}' cannot be written ({error.strerror or error}); give a folder you can write to"
        ) from None
    for name in names:
        check_name(name)
        target = folder / name
        if target.exists() and not target.is_dir():
            raise ConfigValueError(f"'{target}' is a file; remove it or give another --name")
        files = [target / f"{name}{suffix}" for suffix in (".inter", ".item")]
        for path in files:
            if path.is_dir():
                raise ConfigValueError(f"'{path}' is a folder; move it away or give another --name")
        if not overwrite and any(path.exists() for path in files):
            raise ConfigValueError(
                f"'{target}' already holds a converted set; add --overwrite to replace it, or give another --name"
            )


def check_name(name):
    """A dataset name is one plain folder name: every file goes inside ``--output``."""
    if not name or name in (".", "..") or name.startswith(".") or any(sep in name for sep in ("/", "\\", os.sep)):
        raise ConfigValueError(
            f"--name '{name}' is not a plain folder name (empty, hidden, '..' or a path separator); the set is "
            f"written to <output>/<name>/: give e.g. --name amazon-games-18"
        )


def command_parser(module, doc):
    """The argument parser of a converter command, its module docstring as help."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


@one_line_errors
def main(argv=None):
    parser = command_parser("recbole_llmplugin.data.amazon", __doc__)
    parser.add_argument(
        "--source", default=os.path.join("..", "shared", "data"), help="folder holding amazon-games/ and amazon-beauty/"
    )
    parser.add_argument("--output", default="dataset", help="folder that receives the RecBole dataset folders")
    parser.add_argument("--overwrite", action="store_true", help="replace sets converted there before")
    args = parser.parse_args(argv)
    check_folders(args.source, args.output, args.overwrite)
    for convert in (convert_games, convert_beauty):
        print(f"wrote {convert(args.source, args.output)}")


if __name__ == "__main__":
    sys.exit(main())
