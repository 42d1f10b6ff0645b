"""Several models, the same properties, one table: the runner's multi-model mode.

``run_recbole_llm.py --model=SASRec,LLMOnly --dataset=ml-100k --config_files=...`` runs each model
through ``run_recbole_llm`` (with ``eval_candidates: fixed`` they rank identical candidates) and
prints their test metrics and costs side by side. A model that fails is reported as failed; the
others still run.
"""

import json
import os
import traceback
from logging import getLogger
from pathlib import Path

from tabulate import tabulate

from recbole_llmplugin.evaluator.item_groups import group_rows
from recbole_llmplugin.utils.distributed import is_main
from recbole_llmplugin.utils.errors import PluginError
from recbole_llmplugin.utils.files import atomic_write
from recbole_llmplugin.quick_start.quick_start import check_run, run_recbole_llm
from recbole_llmplugin.quick_start.record import row_label

COST_COLUMNS = [
    ("fit_seconds", "train s"),
    ("eval_seconds_per_user", "eval s/user"),
    ("peak_rss_mb", "peak RSS MiB"),
    ("trainable_parameters", "trainable params"),
]


def run_models(models, dataset, config_file_list=None, config_dict=None, isolate_failures=True, output=None):
    """Run each model; with ``isolate_failures`` a failure becomes a FAILED row instead of raising. With ``output``
    each finished model's result (and its backbone's) is written there as a run file, the benchmark's format
    (``<output>/runs/<dataset>-<model>-seed<seed>.json``, per-user values included)."""
    results = []
    own = {name: entry_properties(name, config_file_list, config_dict) for name in models}
    if len(models) > 1:  # every model's properties, before the first one trains
        for name in models:
            try:
                check_run(name, dataset, config_file_list, own[name])
            except PluginError as error:  # the same error, saying which model of the list it is
                error.args = (f"{name} (of {', '.join(models)}): {error}", *error.args[1:])
                raise
    for name in models:
        try:
            result = run_recbole_llm(name, dataset, config_file_list, own[name])
            if output is not None and is_main():
                for row in result.get("companions", []) + [result]:
                    write_run_file(output, row)
            ranked = result.get("companions", []) + [result] + result.get("other_rankings", [])
            # e.g. ALLMRec's CF backbone (same candidates) and its CF match alone (same users), each followed by
            # its rows for warm and cold test targets (eval_item_groups)
            results.extend(grouped for row in ranked for grouped in [row] + group_rows(row))
        except Exception as error:  # one model's failure must not stop the comparison
            if not isolate_failures:
                raise
            if not isinstance(error, PluginError):
                getLogger().error(traceback.format_exc())
            results.append({"model": name, "dataset": dataset, "error": f"{type(error).__name__}: {error}"})
    return results


def entry_properties(model, config_file_list, config_dict):
    """``config_dict`` under the properties a benchmark or scenario file gives ``model`` in its
    ``benchmark_model_properties`` (the entry of that exact name): a plain run of the file runs each model in the
    form the file's benchmark runs it. The run's own ``config_dict`` (and the command line) stay above them."""
    from recbole_llmplugin.config.validation import read_yaml_file

    entry = {}
    for path in config_file_list or []:
        given = (read_yaml_file(path).get("benchmark_model_properties") or {}).get(model) or {}
        entry.update({k: v for k, v in given.items() if k != "model"})
    if entry:
        getLogger().info(f"{model}: the properties of its benchmark_model_properties entry, {entry}")
    return {**entry, **(config_dict or {})} or config_dict


def run_file(output, dataset, model, seed):
    return Path(output) / "runs" / f"{dataset}-{model}-seed{seed}.json"


KEPT = (
    "model",
    "variant",
    "label",
    "eval_mode",
    "dataset",
    "seed",
    "test_result",
    "test_se",
    "test_groups",
    "test_user_values",
    "retriever_recall",
    "source_result",
    "best_valid_result",
    "costs",
    "checkpoints",
    "log_file",
)


def run_record(result, name):
    """What a run file keeps of a run's result, its rows labelled with the benchmark entry's ``name``; the rows of
    the same trained model ranked another way (``other_rankings``) go with it."""

    def keep(row):
        kept = {k: row[k] for k in KEPT if row.get(k) is not None}
        kept["model"], kept["label"] = name, row_label(name, row.get("variant", ""))
        return kept

    kept = keep(result)
    kept["other_rankings"] = [keep(row) for row in result.get("other_rankings") or []]
    return json.loads(json.dumps(kept, default=float))


def write_run_file(output, result):
    """One result written as a run file under ``output`` (atomically): what ``tools.compare`` reads."""
    name = result["model"]
    seed = result.get("seed", "")
    kept = run_record(result, name)
    kept["label"] = result.get("label") or name
    target = run_file(output, str(result["dataset"]).replace(" -> ", "-to-"), name.replace(" ", "_"), seed)
    atomic_write(target, lambda tmp: Path(tmp).write_text(json.dumps(kept, indent=1), encoding="utf-8"))
    return target


def comparison_table(results, tablefmt="github"):
    """Markdown table: one row per result (labelled with its form), each test metric as mean ± standard error over
    the n evaluated users, then n and the costs; below it, each full-ranking LLM row's retriever recall."""
    lines = recall_lines(results)
    return tabulate(*_table(results), tablefmt=tablefmt) + ("\n\n" + "\n".join(lines) if lines else "")


CONSOLE_WIDTH = 120


def console_table(results, metrics=None):
    """The printed table: ``metrics`` (``table_metrics``; default the validation metric and hit at the largest
    cut-off), n, training seconds and how training stopped, in compact cells (``0.354±0.013``), one block per
    dataset (a cross-domain run: ``source -> target`` first, the source's rows under their own heading). Every metric
    and cost is in ``comparison_table`` (the result file)."""
    metrics = [m.lower() for m in metrics or default_table_metrics(results)]
    datasets = _datasets(results)
    cross = any(" -> " in name for name in datasets)
    blocks = []
    for dataset in datasets:
        body, failed = [], []
        for result in (r for r in results if str(r.get("dataset")) == dataset):
            body.append(_console_row(result, metrics))
            if "error" in result:
                failed.append(f"{body[-1][0]} failed: {result['error']}")
        heading = f"{dataset}:" if cross or len(datasets) > 1 else ""
        if cross and " -> " not in dataset:
            heading = f"{dataset} (the source, its own test users):"
        table = tabulate(body, headers=["model", *metrics, "n", "train s", "epochs"], tablefmt="simple")
        blocks.append((heading + "\n" if heading else "") + table + "".join("\n" + line for line in failed))
    return "\n\n".join(blocks)


def _console_row(result, metrics):
    label = (result.get("label") or result["model"]) + (f" [{result['group']}]" if result.get("group") else "")
    if "error" in result:
        return [label, "FAILED"] + [""] * (len(metrics) + 3)
    se = result.get("test_se") or {}
    cells = [_compact(result["test_result"].get(m), se.get(m)) for m in metrics]
    costs = result.get("costs") or {}
    stopped = stopping_cell(costs).replace("valid: best ", "best ").replace(" of ", "/")
    return [label, *cells, costs.get("test_users", ""), f"{costs.get('fit_seconds', 0):.0f}", stopped]


def default_table_metrics(results):
    """The validation metric's column and hit at the largest cut-off, among those measured."""
    measured = [k for r in results for k in (r.get("test_result") or {})]
    chosen = [r["valid_metric"].lower() for r in results if r.get("valid_metric")][:1]
    hits = sorted((m for m in measured if m.startswith("hit@")), key=lambda m: int(m.split("@")[1]))
    chosen += hits[-1:]
    chosen = [m for m in dict.fromkeys(chosen) if m in measured]
    return chosen or list(dict.fromkeys(measured))[:2]


def _datasets(results):
    """The datasets of a run's rows, a cross-domain pair (``source -> target``) first."""
    names = list(dict.fromkeys(str(r.get("dataset")) for r in results))
    return sorted(names, key=lambda name: " -> " not in str(name))


def _compact(value, se):
    if value is None:
        return ""
    if se is None or se != se:
        return f"{float(value):.3f}"
    return f"{float(value):.3f}±{float(se):.3f}"


def where_lines(results, output):
    """The three closing lines of a run: its result files, each model's checkpoints, each model's log."""
    checkpoints, logs, named = [], [], set()
    for result in results:
        if result.get("group") or "error" in result:
            continue
        kept = tuple((result.get("checkpoints") or {}).values())
        if kept and kept not in named:  # a second ranking of the same weights (CF match alone) names none again
            named.add(kept)
            checkpoints.append(f"{result.get('label') or result['model']}: {', '.join(kept)}")
        if result.get("log_file"):
            logs.append(os.path.relpath(result["log_file"]))
    return [
        f"results: {output}/ (table.md: every metric and cost; runs/: per-user values)",
        "checkpoints: " + ("; ".join(checkpoints) or "none (nothing trained)"),
        "logs: " + "; ".join(dict.fromkeys(logs)),
    ]


def stopping_cell(costs):
    """How a RecBole trainer's fit ended: ``valid: best 12 of 15`` (early stopping) or ``CAP 10: best 10`` (the
    epoch cap stopped it, maybe still improving); "" for the plugin's stage trainers."""
    if not costs or costs.get("stopped_by") is None:
        return ""
    best = costs.get("best_epoch")
    if costs["stopped_by"] == "validation":
        return f"valid: best {best} of {costs['epochs_run']}"
    return f"CAP {costs['epoch_cap']}: best {best}"


def recall_lines(results):
    """One line per full-ranking row that re-ranked a retriever's top items: the retriever's recall@N over the same
    users, the ceiling of that row's metrics."""
    lines = []
    for result in results:
        recall = result.get("retriever_recall")
        if recall and not result.get("group"):
            label = result.get("label") or result["model"]
            lines.append(
                f"{label} re-ranks {recall['retriever']}'s top {recall['at']}: recall@{recall['at']} "
                f"{metric_cell(recall['recall'], recall['se'])} (n {recall['users']}); a target not retrieved is a miss"
            )
    return lines


def metric_cell(value, se):
    """``0.2933 ± 0.0372``: a metric and its standard error over users (the value alone when it has none)."""
    if se is None or se != se:  # none measured, or NaN (fewer than 2 users)
        return f"{float(value):.4f}"
    return f"{float(value):.4f} ± {float(se):.4f}"


def _table(results):
    metrics = []
    for result in results:
        for key in result.get("test_result") or {}:
            if key not in metrics:
                metrics.append(key)
    rows = []
    for result in results:
        label = result.get("label") or result["model"]
        label += f" [{result['group']} targets]" if result.get("group") else ""
        if "error" in result:
            rows.append([label, "FAILED: " + result["error"][:80]] + [""] * (len(metrics) + len(COST_COLUMNS) + 2))
            continue
        se = result.get("test_se") or {}
        row = [label] + [metric_cell(result["test_result"][m], se.get(m)) for m in metrics]
        costs = result["costs"]
        row += [
            costs.get("test_users", ""),
            f"{costs['fit_seconds']:.1f}",
            f"{costs['eval_seconds_per_user']:.3f}",
            f"{costs['peak_rss_mb']:.0f}",
            f"{costs['trainable_parameters']:,}",
            " / ".join(
                f"{k[:-8]} {v:.0f}" for k, v in costs.items() if k.endswith("_seconds") and k.startswith("stage")
            ),
            stopping_cell(costs),
        ]
        rows.append(row)
    headers = ["model"] + metrics + ["n"] + [label for _, label in COST_COLUMNS] + ["train s per stage", "epochs"]
    return rows, headers
