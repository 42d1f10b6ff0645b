"""Several models, the same properties, one table: the runner's multi-model mode.

``run_recbole_llm.py --model=SASRec,LLMOnly --dataset=ml-100k --config_files=...`` runs each model
through ``run_recbole_llm`` (with ``eval_candidates: fixed`` they rank identical candidates) and
prints their test metrics and costs side by side. A model that fails is reported as failed; the
others still run.
"""

import traceback
from logging import getLogger

from tabulate import tabulate

from recbole_llmplugin.evaluator.item_groups import group_rows
from recbole_llmplugin.utils.errors import PluginError
from recbole_llmplugin.quick_start.quick_start import run_recbole_llm

COST_COLUMNS = [
    ("fit_seconds", "train s"),
    ("eval_seconds_per_user", "eval s/user"),
    ("peak_rss_mb", "peak RSS MiB"),
    ("trainable_parameters", "trainable params"),
]


def run_models(models, dataset, config_file_list=None, config_dict=None, isolate_failures=True):
    """Run each model; with ``isolate_failures`` a failure becomes a FAILED row instead of raising."""
    results = []
    for name in models:
        try:
            result = run_recbole_llm(name, dataset, config_file_list, config_dict)
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


def comparison_table(results, tablefmt="github"):
    """Markdown table: one row per result (labelled with its form), each test metric as mean ± standard error over
    the n evaluated users, then n and the costs."""
    return tabulate(*_table(results), tablefmt=tablefmt)


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
            rows.append([label, "FAILED: " + result["error"][:80]] + [""] * (len(metrics) + len(COST_COLUMNS) + 1))
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
        ]
        rows.append(row)
    headers = ["model"] + metrics + ["n"] + [label for _, label in COST_COLUMNS] + ["train s per stage"]
    return rows, headers
