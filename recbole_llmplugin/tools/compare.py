"""Paired differences to a reference row, for a benchmark's rows, a multi-model run's rows, or run files on disk.

    python -m recbole_llmplugin.tools.compare results/scenario-cold-items-beauty            # a benchmark folder
    python -m recbole_llmplugin.tools.compare a.json b.json --reference SASRec --test permutation

Every row is compared with the reference row of the same dataset and item group (``evaluator.paired``): the mean
paired difference of each metric, its paired standard error, and the p-value of a paired test, Holm-corrected over
the rows compared. Run files are those a benchmark writes (``<output>/runs/*.json``) and those a plain run writes
(``results/<run>/runs/*.json``); a file written before run files kept per-user values is listed as unpaired.
"""

import argparse
import json
import sys
from pathlib import Path

from tabulate import tabulate

from recbole_llmplugin.evaluator.item_groups import group_rows
from recbole_llmplugin.evaluator.paired import TESTS, compare_rows, difference_cell
from recbole_llmplugin.utils.errors import ConfigValueError

TABLE_METRICS = ("hit@1", "ndcg@10", "hit@10")  # the printed table's columns, where the rows have them


def row_label(row):
    return row.get("label") or row["model"]


def find_reference(rows, reference):
    """Index of the reference among ``rows`` (one dataset and group): the row labelled ``reference``, else the own
    row of the model called ``reference`` (not a second ranking of it); None when neither is there."""
    for index, row in enumerate(rows):
        if row_label(row) == reference:
            return index
    for index, row in enumerate(rows):
        if row["model"] == reference and not row.get("eval_mode"):
            return index
    return None


def user_values(records):
    """The per-user values of one label's records (one per seed), keyed by (seed, user) when the seeds differ; None
    when one of them keeps none."""
    kept = [r.get("test_user_values") for r in records]
    if not kept or any(k is None for k in kept):
        return None
    if len(kept) == 1:
        return kept[0]
    merged = {"users": []}
    for record, values in zip(records, kept):
        merged["users"] += [f"{record.get('seed')}/{user}" for user in values["users"]]
        for metric, column in values.items():
            if metric != "users":
                merged.setdefault(metric, []).extend(column)
    return merged


def paired_rows(records, reference, test="ttest"):
    """One entry per (dataset, group, label) of ``records`` (result rows, item-group rows included, one per seed):
    {dataset, group, label, reference, paired, n, and per metric ``<m>_diff``, ``<m>_diff_se``, ``<m>_p``,
    ``<m>_p_raw``}. The reference's own entry has ``reference`` set and no differences."""
    blocks = {}
    for record in records:
        if "error" in record or not record.get("test_result"):
            continue
        key = (record["dataset"], record.get("group") or "all")
        blocks.setdefault(key, {}).setdefault(row_label(record), []).append(record)
    out = []
    for (dataset, group), by_label in blocks.items():
        labels = list(by_label)
        firsts = [by_label[label][0] for label in labels]
        index = find_reference(firsts, reference)
        if index is None:
            continue
        compared = compare_rows([user_values(by_label[label]) for label in labels], index, test)
        for label, entry in zip(labels, compared):
            row = {"dataset": dataset, "group": group, "label": label, "reference": labels[index]}
            if entry is None:
                row["paired"] = "reference"
            elif not entry["paired"]:
                row["paired"] = "no per-user values"
            else:
                row["paired"], row["n"] = "yes", entry["n"]
                for metric, value in entry.items():
                    if isinstance(value, dict):
                        for part in ("diff", "diff_se", "p", "p_raw"):
                            row[f"{metric}_{part}"] = value.get(part)
            out.append(row)
    return out


def paired_markdown(rows, metrics=None, test="ttest"):
    """The paired rows as a Markdown table: per metric, the difference to the reference ± its paired SE and the
    Holm-corrected p."""
    if not rows:
        return ""
    present = list(dict.fromkeys(k[: -len("_diff")] for row in rows for k in row if k.endswith("_diff")))
    metrics = [m for m in (metrics or TABLE_METRICS) if m in present] or present[:3]
    grouped = any(row["group"] != "all" for row in rows)
    table = []
    for row in rows:
        cells = [row["dataset"], row["label"]] + ([row["group"]] if grouped else [])
        if row["paired"] == "reference":
            cells += ["(reference)"] + [""] * len(metrics)
        elif row["paired"] != "yes":
            cells += [f"unpaired: {row['paired']}"] + [""] * len(metrics)
        else:
            cells += [row["n"]] + [difference_cell(_entry(row, m)) for m in metrics]
        table.append(cells)
    headers = ["dataset", "model"] + (["test targets"] if grouped else []) + ["paired n"]
    headers += [f"Δ {m} (p, Holm)" for m in metrics]
    reference = rows[0]["reference"]
    how = "paired t-test" if test == "ttest" else "paired randomisation test"
    note = (
        f"Paired differences to {reference} (row - reference) on the same users: mean ± paired SE; p from a {how}, "
        f"Holm-corrected over the rows compared with the reference."
    )
    return note + "\n\n" + tabulate(table, headers=headers, tablefmt="github")


def _entry(row, metric):
    if row.get(f"{metric}_diff") is None:
        return None
    return {"diff": row[f"{metric}_diff"], "diff_se": row[f"{metric}_diff_se"], "p": row[f"{metric}_p"]}


def load_records(paths):
    """The result rows of run files: a benchmark or run folder (its ``runs/*.json``), or run files."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted((path / "runs").glob("*.json")) if (path / "runs").is_dir() else sorted(path.glob("*.json"))
            if not found:
                raise ConfigValueError(f"'{path}' holds no run files (runs/*.json); give a benchmark folder or files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigValueError(f"'{path}' does not exist; give a benchmark folder or run files (.json)")
    records = []
    for path in files:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigValueError(f"run file '{path}' does not load ({error}); remove it or run it again") from None
        records.extend(record_rows(record))
    return records


def record_rows(record):
    """A run file's rows: the model's own, then its other rankings (same dataset, seed and training), each followed
    by its item groups' rows (``eval_item_groups``)."""
    own = {k: v for k, v in record.items() if k != "other_rankings"}
    extra = [{**row, "dataset": own["dataset"], "seed": own.get("seed")} for row in record.get("other_rankings") or []]
    return [grouped for row in [own] + extra for grouped in [row] + group_rows(row)]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m recbole_llmplugin.tools.compare",
        description="Paired differences to a reference row, from run files already on disk (no rerun).",
    )
    parser.add_argument("paths", nargs="+", help="a benchmark or run folder, or two or more run files (.json)")
    parser.add_argument("--reference", default=None, help="row label or model name (default: the first row)")
    parser.add_argument("--test", default="ttest", choices=TESTS, help="paired t-test or randomisation test")
    parser.add_argument("--metrics", default=",".join(TABLE_METRICS), help="comma-separated metric columns")
    parser.add_argument("--csv", default=None, help="also write every metric's columns to this CSV file")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.paths)
        usable = [r for r in records if "error" not in r and r.get("test_result")]
        if not usable:
            raise ConfigValueError("the run files hold no finished run")
        reference = args.reference or row_label(usable[0])
        rows = paired_rows(records, reference, args.test)
        if not rows:
            labels = ", ".join(dict.fromkeys(row_label(r) for r in usable))
            raise ConfigValueError(f"--reference '{reference}' names no row; the rows are: {labels}")
    except ConfigValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(paired_markdown(rows, args.metrics.split(","), args.test))
    if args.csv:
        write_csv(args.csv, rows)
    return 0


def write_csv(path, rows):
    """``rows`` (dicts) as a CSV file written atomically, the columns in first-seen order."""
    import csv

    from recbole_llmplugin.utils.files import atomic_write

    fields = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


if __name__ == "__main__":
    sys.exit(main())
