"""Item text: one string per internal item id, from the dataset's ``.item`` atomic file.

RecBole loads ``token_seq`` fields as word ids, losing the raw string; this module reads the
``.item`` file itself (same separator and encoding as RecBole) and maps raw item tokens to
RecBole's internal ids, so titles come back exactly as written. A YAML template composes the
text (``item_text_template: "{movie_title} ({release_year})"``); items without text get
``item_text_placeholder``; ``item_text_max_tokens`` truncates long titles with the LLM tokenizer.
"""

import csv
import html
import string
from logging import getLogger

from recbole_llmplugin.data.data_check import require_item_file
from recbole_llmplugin.utils.errors import ConfigValueError


def read_item_file(path, separator="\t", encoding="utf-8"):
    """(column names without types, column types, rows as dicts of raw strings)."""
    with open(path, encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=separator, quoting=csv.QUOTE_NONE)
        header = next(reader)
        names = [column.split(":")[0] for column in header]
        types = [column.split(":")[1] if ":" in column else "token" for column in header]
        rows = [dict(zip(names, row + [""] * (len(names) - len(row)))) for row in reader if row]
    return names, types, rows


def template_fields(template):
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


class ItemTextStore:
    """``texts[i]`` is the text of internal item id ``i`` (``texts[0]`` is padding, empty)."""

    def __init__(self, config, dataset, tokenizer=None):
        logger = getLogger()
        path = require_item_file(config)
        names, types, rows = read_item_file(path, config["field_separator"], config["encoding"] or "utf-8")
        iid_field = dataset.iid_field
        if iid_field not in names:
            raise ConfigValueError(f"'{path}' has no column '{iid_field}' (ITEM_ID_FIELD); its columns are {names}")
        template = config["item_text_template"]
        if not template:
            text_columns = [n for n, t in zip(names, types) if t == "token_seq" and n != iid_field]
            if not text_columns:
                raise ConfigValueError(f"set item_text_template: no token_seq column in '{path}' to use as item text")
            template = "{" + text_columns[0] + "}"
        fields = template_fields(template)
        unknown = [f for f in fields if f not in names]
        if unknown:
            raise ConfigValueError(
                f"item_text_template '{template}' names {unknown}, not columns of '{path}' ({', '.join(names)})"
            )
        unescape = bool(config["item_text_unescape_html"])
        placeholder = config["item_text_placeholder"]
        by_token = {}
        for row in rows:
            values = {f: (html.unescape(row[f]) if unescape else row[f]).strip() for f in fields}
            if any(values.values()):
                by_token[row[iid_field]] = (
                    " ".join(template.format_map(values).split()) if unescape else template.format_map(values)
                )

        token_ids = dataset.field2id_token[iid_field]
        self.texts = [""]
        self.missing = 0
        for item_id in range(1, dataset.item_num):
            raw = str(token_ids[item_id])
            text = by_token.get(raw)
            if text is None:
                self.missing += 1
                text = placeholder.format(item_id=raw)
            self.texts.append(text)
        if self.missing == dataset.item_num - 1:
            raise ConfigValueError(
                f"item text: none of the {self.missing} items has text in '{path}' with item_text_template "
                f"'{template}' (every column it names is empty); fill the .item file or name other columns"
            )
        self.template = template
        self.max_tokens = config["item_text_max_tokens"]
        self.truncated = 0
        if tokenizer is not None and self.max_tokens:
            self._truncate(tokenizer, int(self.max_tokens))
        logger.info(
            f"item text: {dataset.item_num - 1} items from {path} with template '{template}'; "
            f"{self.missing} without text (placeholder), {self.truncated} truncated to {self.max_tokens} tokens"
        )

    def _truncate(self, tokenizer, max_tokens):
        encoded = tokenizer(self.texts[1:], add_special_tokens=False)["input_ids"]
        for index, ids in enumerate(encoded, start=1):
            if len(ids) > max_tokens:
                self.texts[index] = tokenizer.decode(ids[:max_tokens]).strip()
                self.truncated += 1

    def __getitem__(self, item_id):
        return self.texts[item_id]

    def __len__(self):
        return len(self.texts)
