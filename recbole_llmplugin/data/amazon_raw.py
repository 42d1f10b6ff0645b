"""Convert a raw Amazon review dataset (2018, Ni et al.; 2014 files read too) into RecBole atomic files with item text.

    python -m recbole_llmplugin.data.amazon_raw --reviews Video_Games.json.gz --meta meta_Video_Games.json.gz \\
        --name amazon-games-18 --output dataset

Input, as downloaded from the McAuley lab's pages:
- ``--reviews``: the reviews (``<Category>.json.gz`` or ``.json``: one JSON object a line with ``reviewerID``,
  ``asin``, ``overall``, ``unixReviewTime``), or the ratings-only CSV (``<Category>.csv``, ``.csv.gz``: rows
  ``item,user,rating,timestamp``);
- ``--meta``: ``meta_<Category>.json.gz`` or ``.json`` (one object a line with ``asin``, ``title``, ``description``,
  ``category``, ``brand``; the 2014 files' Python-literal lines are read too).

Output: ``<output>/<name>/<name>.inter`` (user_id, item_id, rating, timestamp; each user's interactions in time order)
and ``<name>.item`` (item_id and the ``--text_fields``: ``title``; the first line of ``description``; ``category``
joined by " > "; ``brand``), texts ``html.unescape``-d with whitespace collapsed. An empty text gets the plugin's
``item_text_placeholder`` at run time. Whose convention each option follows:

- ``--kcore K --kcore_mode single``: users and items counted once over the reviews and both filtered at >= K, as the
  official A-LLMRec code (``pre_train/sasrec/data_preprocess.py``: K 5, 4 for Beauty and Toys); ``iterative``
  (default): filtered again until every user and item has >= K, as RecBole's ``user_inter_num_interval`` /
  ``item_inter_num_interval`` and UniSRec's converter;
- ``--min_rating R``: reviews rated below R dropped first (official code: 3 for Beauty and Toys); default none;
- ``--missing_meta keep`` (default): items without a title kept, with an empty one (official code); ``drop``: their
  reviews dropped before the k-core (UniSRec, LLMRank);
- ``--duplicates keep`` (default): a user's every review of an item kept (official code); ``first``: the earliest one
  alone (UniSRec, LLMRank).

The data carries no open licence: convert it where you use it and never commit the output.
"""

import ast
import csv
import gzip
import html
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from recbole_llmplugin.data.amazon import check_name, check_output_folder, command_parser
from recbole_llmplugin.utils.errors import ConfigValueError, one_line_errors
from recbole_llmplugin.utils.files import atomic_write

TEXT_FIELDS = ("title", "description", "category", "brand")


def clean_text(value):
    """One line of text: lists joined, HTML entities decoded, whitespace (tabs, newlines) collapsed."""
    if isinstance(value, (list, tuple)):
        value = " > ".join(clean_text(v) for v in value if clean_text(v))
    return " ".join(html.unescape(str(value or "")).split())


def _open(path):
    if not os.path.isfile(path):
        raise ConfigValueError(f"'{path}' does not exist; give the downloaded file")
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _records(path):
    """(line number, dict) of each non-empty line of a JSON-lines file (or the 2014 files' Python literals)."""
    with _open(path) as handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    try:
                        record = ast.literal_eval(line.strip())
                    except (ValueError, SyntaxError):
                        record = None
                if not isinstance(record, dict):
                    raise ConfigValueError(
                        f"{path}, line {number}: not a JSON object ({line.strip()[:60]!r}); the file is damaged or not "
                        f"an Amazon review / metadata file"
                    )
                yield number, record
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise ConfigValueError(f"{path}: cannot be read ({type(error).__name__}: {error})") from None


def read_reviews(path, min_rating=None):
    """Lists (users, items, ratings, times) of the reviews, in file order, those rated below ``min_rating`` left out."""
    users, items, ratings, times = [], [], [], []

    def add(user, item, rating, time):
        if min_rating is None or rating >= min_rating:
            users.append(user)
            items.append(item)
            ratings.append(rating)
            times.append(time)

    name = str(path)
    if name.endswith((".csv", ".csv.gz")):
        with _open(path) as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                try:
                    item, user, rating, time = row
                    add(user, item, float(rating), int(float(time)))
                except ValueError:
                    raise ConfigValueError(
                        f"{path}, line {number}: {','.join(row)[:60]!r} is not item,user,rating,timestamp"
                    ) from None
        return users, items, ratings, times
    for number, record in _records(path):
        try:
            add(record["reviewerID"], record["asin"], float(record["overall"]), int(record["unixReviewTime"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigValueError(
                f"{path}, line {number}: no usable {error} (a review needs reviewerID, asin, overall, unixReviewTime)"
            ) from None
    return users, items, ratings, times


def read_meta(path, wanted, fields=TEXT_FIELDS):
    """{asin: {field: text}} for the items in ``wanted``; ``description`` is its first non-empty line."""
    meta = {}
    for number, record in _records(path):
        asin = record.get("asin")
        if asin is None:
            raise ConfigValueError(f"{path}, line {number}: no asin (is this a metadata file?)")
        if asin not in wanted:
            continue
        texts = {}
        for field in fields:
            value = record.get(field)
            if field == "description":
                lines = value if isinstance(value, list) else [value]
                value = next((clean_text(v) for v in lines if clean_text(v)), "")
            texts[field] = clean_text(value)
        meta[asin] = texts
    return meta


def kcore(users, items, k, mode):
    """Boolean mask of the interactions kept by the k-core filter (``single``: one counting pass; ``iterative``:
    until every kept user and item has >= k)."""
    keep = np.ones(len(users), dtype=bool)
    if not k or k <= 1:
        return keep
    user_ids = np.unique(users, return_inverse=True)[1]
    item_ids = np.unique(items, return_inverse=True)[1]
    while keep.any():
        user_counts = np.bincount(user_ids[keep], minlength=user_ids.max() + 1)
        item_counts = np.bincount(item_ids[keep], minlength=item_ids.max() + 1)
        new = keep & (user_counts[user_ids] >= k) & (item_counts[item_ids] >= k)
        if mode == "single" or new.sum() == keep.sum():
            return new
        keep = new
    return keep


def convert(
    reviews,
    meta,
    name,
    output,
    kcore_k=5,
    kcore_mode="iterative",
    min_rating=None,
    missing_meta="keep",
    duplicates="keep",
    text_fields=("title",),
):
    """Write the atomic files; returns (folder, statistics dict)."""
    check_name(name)  # every file inside ``output``
    unknown = [f for f in text_fields if f not in TEXT_FIELDS]
    if unknown:
        raise ConfigValueError(f"--text_fields {unknown[0]} is not one of {', '.join(TEXT_FIELDS)}")
    if "title" not in text_fields:
        raise ConfigValueError("--text_fields must include title (the item text prompts show)")
    users, items, ratings, times = read_reviews(reviews, min_rating)
    if not users:
        raise ConfigValueError(f"'{reviews}' holds no review{' rated >= ' + str(min_rating) if min_rating else ''}")
    users, items = np.array(users, dtype=object), np.array(items, dtype=object)
    ratings, times = np.array(ratings, dtype=float), np.array(times, dtype=np.int64)
    texts = read_meta(meta, set(items.tolist()), text_fields)
    keep = np.ones(len(users), dtype=bool)
    if missing_meta == "drop":
        keep &= np.array([bool(texts.get(item, {}).get("title")) for item in items.tolist()], dtype=bool)
    user_codes = np.unique(users, return_inverse=True)[1]
    item_codes = np.unique(items, return_inverse=True)[1]
    order = np.lexsort((np.arange(len(users)), times, user_codes))  # per user, time order, ties in file order
    if duplicates == "first":
        pairs = user_codes[order] * (item_codes.max() + 1) + item_codes[order]
        _, first = np.unique(pairs, return_index=True)
        unique = np.zeros(len(users), dtype=bool)
        unique[order[first]] = True
        keep &= unique
    kept = np.nonzero(keep)[0]
    kept = kept[kcore(user_codes[kept], item_codes[kept], kcore_k, kcore_mode)]
    if not len(kept):
        raise ConfigValueError(f"the {kcore_k}-core leaves no interaction; lower --kcore")
    kept = kept[np.lexsort((kept, times[kept], user_codes[kept]))]
    folder = Path(output) / name
    folder.mkdir(parents=True, exist_ok=True)

    def write_inter(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            handle.writelines(f"{users[i]}\t{items[i]}\t{ratings[i]:g}\t{times[i]}\n" for i in kept)

    kept_items = sorted(set(items[kept].tolist()))

    def write_item(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\t".join(["item_id:token"] + [f"{f}:token_seq" for f in text_fields]) + "\n")
            for item in kept_items:
                values = texts.get(item, {})
                handle.write("\t".join([item] + [values.get(f, "") for f in text_fields]) + "\n")

    atomic_write(folder / f"{name}.inter", write_inter)
    atomic_write(folder / f"{name}.item", write_item)
    lengths = np.array(list(Counter(users[kept].tolist()).values()))
    stats = {
        "users": len(lengths),
        "items": len(kept_items),
        "interactions": len(kept),
        "items_without_title": sum(not texts.get(item, {}).get("title") for item in kept_items),
        "sequence_length": {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
            "max": int(lengths.max()),
        },
    }
    return folder, stats


def _rating(text):
    return None if text in (None, "~", "none") else float(text)


@one_line_errors
def main(argv=None):
    parser = command_parser("recbole_llmplugin.data.amazon_raw", __doc__)
    parser.add_argument("--reviews", required=True, help="reviews .json(.gz) or ratings-only .csv(.gz)")
    parser.add_argument("--meta", required=True, help="meta_<Category>.json(.gz)")
    parser.add_argument("--name", required=True, help="dataset name (folder and file names), e.g. amazon-games-18")
    parser.add_argument("--output", default="dataset", help="folder that receives the dataset folder")
    parser.add_argument("--kcore", type=int, default=5, help="minimum interactions per user and per item (1: none)")
    parser.add_argument("--kcore_mode", choices=("iterative", "single"), default="iterative")
    parser.add_argument("--min_rating", type=_rating, default=None, help="drop reviews rated below this")
    parser.add_argument("--missing_meta", choices=("keep", "drop"), default="keep")
    parser.add_argument("--duplicates", choices=("keep", "first"), default="keep")
    parser.add_argument("--text_fields", default="title", help=f"comma-separated, from {','.join(TEXT_FIELDS)}")
    parser.add_argument("--overwrite", action="store_true", help="replace a set converted there before")
    args = parser.parse_args(argv)
    check_output_folder(args.output, (args.name,), args.overwrite)
    folder, stats = convert(
        args.reviews,
        args.meta,
        args.name,
        args.output,
        kcore_k=args.kcore,
        kcore_mode=args.kcore_mode,
        min_rating=args.min_rating,
        missing_meta=args.missing_meta,
        duplicates=args.duplicates,
        text_fields=tuple(f.strip() for f in args.text_fields.split(",") if f.strip()),
    )
    length = stats["sequence_length"]
    print(
        f"wrote {folder}: {stats['users']} users, {stats['items']} items ({stats['items_without_title']} without a "
        f"title), {stats['interactions']} interactions; interactions per user min {length['min']}, mean "
        f"{length['mean']:.2f}, median {length['median']:g}, max {length['max']}"
    )


if __name__ == "__main__":
    sys.exit(main())
