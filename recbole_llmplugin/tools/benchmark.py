"""Benchmark harness: models x datasets x seeds with shared properties, one table, CSV and a chart.

    python run_recbole_llm.py --benchmark=properties/benchmark/quick-ml100k.yaml

The benchmark file is also every run's property file (shared evaluation, fixed candidates), plus:
``benchmark_models``, ``benchmark_datasets``, ``benchmark_seeds``, ``benchmark_output`` (folder) and
``benchmark_model_properties`` (per-model overrides, e.g. BPR's training negatives; an entry with a
``model`` key is a label for that model with those properties, e.g. ``ALLMRec-GRU4Rec: {model: ALLMRec,
cf_model: GRU4Rec}``). Each finished run
is written to ``<output>/runs/<dataset>-<model>-seed<seed>.json`` and is not redone when the benchmark
is restarted with the same properties (``run_properties``); a run file written under other properties is run again,
with a warning. A failed run is reported as failed (and retried on restart) without stopping the others.
Rows are labelled with each run's form (``record.row_label``: ``ALLMRec (vocabulary, match)``); a model that ranks
its trained weights another way too (A-LLMRec's CF match alone, ``eval_match_row``) adds that row, kept in the same
run file. Outputs: ``runs.csv`` (one row per run and ranking: label, variant, n, metrics and their standard errors),
``summary.csv`` / ``summary.md`` (per label: mean over seeds, standard error over users, std over seeds, n) and
``summary.png`` (hit@1 and ndcg@10 per label, ±1 SE).
"""

import hashlib
import json
import os
import traceback
from logging import getLogger
from pathlib import Path

import numpy as np
import yaml
from tabulate import tabulate
from tqdm import tqdm

from recbole_llmplugin.config.identity import RUN_LOCAL_KEYS
from recbole_llmplugin.evaluator.paired import TESTS
from recbole_llmplugin.data.scenarios import SCENARIO_KEYS
from recbole_llmplugin.quick_start.compare import metric_cell, recall_lines, run_file, run_record, stopping_cell
from recbole_llmplugin.tools.compare import paired_markdown, paired_rows, record_rows, write_csv
from recbole_llmplugin.utils.errors import ConfigValueError, PluginError
from recbole_llmplugin.config.validation import read_yaml_file
from recbole_llmplugin.utils.files import atomic_write

COSTS = [
    "fit_seconds",
    "eval_seconds_per_user",
    "peak_rss_mb",
    "trainable_parameters",
    "stage1_seconds",
    "stage2_seconds",
]
CHART_METRICS = ["hit@1", "ndcg@10"]
NOTE = (
    "Metrics: mean over seeds ± standard error over the n evaluated users (sd: std over seeds). A model named "
    "'Model (...)' ran in the form named, not the paper's; '...; CF match alone, no LLM' ranks by the trained "
    "CF match without the LLM."
)


def load_spec(path, overrides=None):
    """The benchmark file's keys, with ``overrides`` (the command line's ``--key=value``) over them, checked."""
    if not os.path.isfile(path):
        raise ConfigValueError(f"benchmark file '{path}' does not exist; check --benchmark")
    spec = {**read_yaml_file(path, loader=yaml.SafeLoader), **(overrides or {})}
    if "benchmark_models" in (overrides or {}) and isinstance(spec.get("benchmark_model_properties"), dict):
        listed = set(map(str, spec["benchmark_models"] or []))  # a subset named on the command line: its entries
        spec["benchmark_model_properties"] = {
            k: v for k, v in spec["benchmark_model_properties"].items() if k in listed
        }
    if spec.get("benchmark_models") and not spec.get("benchmark_datasets"):  # a scenario file: any dataset
        raise ConfigValueError(
            f"benchmark file '{path}' names no dataset; give them on the command line, e.g. "
            f"--benchmark_datasets=[my-set] (RecBole atomic files with item text under data_path)"
        )
    missing = [k for k in ("benchmark_models", "benchmark_datasets") if not spec.get(k)]
    if missing:
        raise ConfigValueError(f"benchmark file '{path}' needs {', '.join(missing)} (lists of names)")
    for key in ("benchmark_models", "benchmark_datasets", "benchmark_seeds"):
        if key in spec and not isinstance(spec[key], list):
            raise ConfigValueError(f"benchmark file '{path}': {key}: {spec[key]!r} must be a list, e.g. [{spec[key]}]")
    seeds = spec.get("benchmark_seeds") or []
    if any(not isinstance(seed, int) or isinstance(seed, bool) for seed in seeds):
        raise ConfigValueError(f"benchmark file '{path}': benchmark_seeds: {seeds} must be a list of integers")
    listed = list(spec["benchmark_models"])
    unlisted = sorted(set(spec.get("benchmark_model_properties") or {}) - set(map(str, listed)))
    if unlisted:
        raise ConfigValueError(
            f"benchmark file '{path}': benchmark_model_properties has {unlisted[0]}, which benchmark_models does not "
            f"list; add it there or remove its properties"
        )
    twice = sorted({name for name in listed if listed.count(name) > 1})
    if twice:
        raise ConfigValueError(
            f"benchmark file '{path}' lists {twice[0]} {listed.count(twice[0])} times in benchmark_models; list each "
            f"once (a second form goes under its own label in benchmark_model_properties)"
        )
    spec.setdefault("benchmark_seeds", [spec.get("seed", 2020)])
    spec.setdefault("benchmark_output", os.path.join("results", Path(path).stem))
    spec.setdefault("benchmark_model_properties", {})
    spec.setdefault("benchmark_reference", str(listed[0]))
    spec.setdefault("benchmark_paired_test", "ttest")
    if spec["benchmark_paired_test"] not in TESTS:
        raise ConfigValueError(
            f"benchmark file '{path}': benchmark_paired_test: {spec['benchmark_paired_test']!r} is not one of "
            f"{', '.join(TESTS)}"
        )
    reference = spec["benchmark_reference"]
    if not isinstance(reference, str) or not any(
        reference == m or reference.startswith(f"{m} (") for m in map(str, listed)
    ):
        raise ConfigValueError(
            f"benchmark file '{path}': benchmark_reference: {reference!r} is not a model of benchmark_models or a row "
            f"label of one (e.g. 'SASRec', 'ALLMRec (vocabulary, match)'); name one of {', '.join(map(str, listed))}"
        )
    return spec


def check_runs(spec, path, given=None):
    """Every (dataset, model) run's properties, data and model folders, checked before the first run starts (a
    misspelt key for the last model would otherwise stop it after hours); and the output folder writable. ``given``:
    the properties given over the file (command line)."""
    from recbole_llmplugin.quick_start.quick_start import check_run
    from recbole_llmplugin.quick_start.run_config import check_writable_folder

    check_writable_folder("benchmark_output", spec["benchmark_output"])
    for dataset in spec["benchmark_datasets"]:
        for model in spec["benchmark_models"]:
            overrides = {**(spec["benchmark_model_properties"].get(model) or {}), **(given or {})}
            try:
                check_run(overrides.pop("model", model), dataset, [str(path)], overrides)
            except PluginError as error:
                raise ConfigValueError(f"benchmark entry {model} on {dataset}: {error}") from None


# keys of RUN_LOCAL_KEYS that change what a benchmark row measures (they are run-local for trained artefacts only)
MEASURED_KEYS = frozenset({"target_domain", "cross_domain_user", "eval_match_row"})


# keys that choose which users (and candidates) a row is measured on
USER_SET_KEYS = SCENARIO_KEYS | {
    "eval_user_sample",
    "eval_candidates",
    "eval_candidates_seed",
    "eval_candidates_file",
    "eval_args",
}


def other_users_note(spec, model):
    """`` [other users: cold_users 5]`` when a benchmark entry sets a key that chooses its users or candidates to
    another value than the benchmark file: its row is measured on other users than its neighbours' rows."""
    entry = spec["benchmark_model_properties"].get(model) or {}
    changed = [f"{key} {entry[key]}" for key in sorted(USER_SET_KEYS & set(entry)) if entry[key] != spec.get(key)]
    if not changed:
        return ""
    getLogger().warning(
        f"benchmark entry {model} sets {', '.join(changed)}: its row is measured on other users or candidates than "
        f"the others and is labelled so"
    )
    return f" [other users: {', '.join(changed)}]"


def run_properties(spec, dataset, model, seed):
    """What one run of the benchmark is asked to run: the benchmark file's properties (its ``benchmark_*`` lists and
    the keys that only say where or how visibly a run works aside), the entry's own properties, the dataset, the seed.
    Its digest is kept in the run file: a finished run is reused only under the same properties."""
    ignored = RUN_LOCAL_KEYS - MEASURED_KEYS
    shared = {k: v for k, v in spec.items() if not k.startswith("benchmark_") and k not in ignored}
    entry = spec["benchmark_model_properties"].get(model) or {}
    wanted = {"shared": shared, "entry": entry, "dataset": dataset, "model": model, "seed": seed}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_run(target, properties):
    """The run file's record when it was written under ``properties``; None (with a warning when it exists) when it
    must run."""
    if not target.is_file():
        return None
    record = json.loads(target.read_text(encoding="utf-8"))
    if record.get("properties") == properties:
        return record
    getLogger().warning(
        f"{target} was written under other properties than the benchmark file's now (or before run files kept "
        f"them): running it again"
    )
    return None


def run_benchmark(path, runner=None, overrides=None):
    """Run every (dataset, seed, model) not finished yet; write and return the summary rows. ``overrides``: properties
    given on the command line, over the file's (RecBole's Config reads the others from it for every run as well);
    they are part of each run's properties, so a finished run is reused only under the same ones."""
    spec = load_spec(path, overrides)
    given = {k: v for k, v in (overrides or {}).items() if not k.startswith("benchmark_")}  # each run's, on top
    if runner is None:
        from recbole_llmplugin.quick_start.quick_start import run_recbole_llm as runner
        from recbole_llmplugin.utils.registry import get_model_class

        for name in spec["benchmark_models"]:  # every name known before any model runs
            get_model_class((spec["benchmark_model_properties"].get(name) or {}).get("model", name))
        check_runs(spec, path, given)
    output = spec["benchmark_output"]
    jobs = [
        (d, s, m) for d in spec["benchmark_datasets"] for s in spec["benchmark_seeds"] for m in spec["benchmark_models"]
    ]
    records = []
    for dataset, seed, model in tqdm(jobs, desc="benchmark", ncols=100):
        target = run_file(output, dataset, model, seed)
        properties = run_properties(spec, dataset, model, seed)
        finished = finished_run(target, properties)
        if finished is not None:
            records.extend(record_rows({**finished, "seed": seed}))
            continue
        overrides = {"seed": seed, **(spec["benchmark_model_properties"].get(model) or {}), **given}
        actual = overrides.pop("model", model)  # an entry may be a label, e.g. ALLMRec-GRU4Rec: {model: ALLMRec, ...}
        try:
            result = run_record(runner(actual, dataset, [str(path)], overrides), model)
            note = other_users_note(spec, model)
            for row in [result, *result.get("other_rankings", [])]:
                row["label"] += note
            result["properties"] = properties
            atomic_write(target, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1), encoding="utf-8"))
        except Exception as error:  # reported, retried on restart, never stops the other runs
            getLogger().error(traceback.format_exc())
            result = {"model": model, "dataset": dataset, "error": f"{type(error).__name__}: {error}"}
        records.extend(record_rows({**result, "seed": seed}))
    rows = summarise(records)
    paired = paired_rows(records, spec["benchmark_reference"], spec["benchmark_paired_test"])
    add_paired_columns(rows, paired)
    write_outputs(output, records, rows, paired, spec["benchmark_paired_test"])
    for line in efficiency_lines(rows):
        print(line)
    return rows


def summarise(records):
    """One row per (dataset, label): mean over seeds of each metric, its standard error over the evaluated users
    (``_se``: the runs' mean) and its std over seeds (``_std``), mean costs and evaluated users; failures counted."""
    groups = {}
    for record in records:
        label = record.get("label") or record["model"]
        groups.setdefault((record["dataset"], label, record.get("group", "all")), []).append(record)
    rows = []
    for (dataset, label, users_group), group in groups.items():
        ok = [r for r in group if "error" not in r and r.get("test_result")]
        row = {
            "dataset": dataset,
            "label": label,
            "group": users_group,
            "model": group[0]["model"],
            "variant": next((r.get("variant", "") for r in ok), ""),
            "eval_mode": next((r.get("eval_mode") for r in ok if r.get("eval_mode")), None),  # set: a second ranking
            "runs": len(ok),
            "failed": len(group) - len(ok),
            "users": _mean([r["costs"].get("test_users") for r in ok]),
        }
        if len(group) > len(ok):
            row["error"] = next(r["error"] for r in group if "error" in r)
        for key in dict.fromkeys(k for r in ok for k in r["test_result"]):  # RecBole's metric order
            values = np.array([r["test_result"][key] for r in ok], dtype=float)
            row[key], row[key + "_std"] = float(values.mean()), float(values.std())
            row[key + "_se"] = _mean([(r.get("test_se") or {}).get(key) for r in ok])
        for key in COSTS:
            values = [r["costs"][key] for r in ok if r["costs"].get(key) is not None]
            if values:
                row[key] = float(np.mean(values))
        stops = {stopping_cell(r["costs"]) for r in ok} - {""}
        if stops:
            row["epochs"] = "; ".join(sorted(stops))
        rows.append(row)
    return rows


def _mean(values):
    values = [v for v in values if v is not None and v == v]
    return float(np.mean(values)) if values else None


def efficiency_lines(rows, fast="ALLMRec", slow="TALLRec"):
    """A-LLMRec vs TALLRec on the same data, LLM and training examples (paper: 2.53x / 1.71x)."""
    lines = []
    own = [r for r in rows if r["runs"] > 0 and not r.get("eval_mode") and r.get("group", "all") == "all"]
    by_key = {(r["dataset"], r["model"]): r for r in own}
    for (dataset, model), row in by_key.items():
        other = by_key.get((dataset, slow))
        if model != fast or other is None:
            continue
        train_fast = row.get("stage1_seconds", 0.0) + row.get("stage2_seconds", 0.0)
        train_slow = other.get("stage2_seconds") or other.get("fit_seconds")
        lines.append(
            f"{dataset}: training {slow} {train_slow:.0f} s vs {fast} {train_fast:.0f} s (stage 1 + 2) -> "
            f"{train_slow / max(train_fast, 1e-9):.2f}x; inference {other['eval_seconds_per_user']:.2f} vs "
            f"{row['eval_seconds_per_user']:.2f} s/user -> {other['eval_seconds_per_user'] / row['eval_seconds_per_user']:.2f}x"
        )
    return lines


def markdown_table(rows):
    """One line per (dataset, label); each metric as mean ± standard error over the n evaluated users (with several
    seeds, their std follows as ``sd``); the metric columns are those of every run that finished, whatever the
    position of a failed one, whose error goes in the last column."""
    metrics = list(dict.fromkeys(k for row in rows for k in row if "@" in k and not k.endswith(("_std", "_se"))))
    grouped = any(row.get("group", "all") != "all" for row in rows)
    table = []
    for row in rows:
        cells = [row["dataset"], row.get("label") or row["model"]]
        cells += [row.get("group", "all")] if grouped else []
        cells += [row["runs"], _users(row.get("users"))]
        cells += [_cell(row, m) if m in row else "" for m in metrics]
        cells += [f"{row[c]:.3g}" if c in row else "" for c in COSTS]
        cells.append(row.get("epochs", ""))
        error = row.get("error", "")
        cells.append(f"FAILED {row['failed']}: {error[:80]}" if error else "")
        table.append(cells)
    headers = (
        ["dataset", "model"]
        + (["test targets"] if grouped else [])
        + ["runs", "n"]
        + metrics
        + ["train s", "eval s/user", "peak RSS MiB", "trainable params", "stage1 s", "stage2 s", "epochs", "error"]
    )
    return tabulate(table, headers=headers, tablefmt="github")


def _users(users):
    return "" if users is None else f"{users:.0f}"


def _cell(row, metric):
    cell = metric_cell(row[metric], row.get(metric + "_se"))
    return cell + (f" (sd {row[metric + '_std']:.4f})" if row["runs"] > 1 else "")


def add_paired_columns(rows, paired):
    """Each summary row gains its paired columns (``<m>_diff``, ``<m>_diff_se``, ``<m>_p``, ``<m>_p_raw``, ``paired_n``
    and ``reference``) from ``paired`` (``tools.compare.paired_rows``)."""
    by_key = {(p["dataset"], p["group"], p["label"]): p for p in paired}
    for row in rows:
        found = by_key.get((row["dataset"], row.get("group", "all"), row.get("label") or row["model"]))
        if found is None:
            continue
        row["reference"] = found["reference"]
        if "n" in found:
            row["paired_n"] = found["n"]
        row.update({k: v for k, v in found.items() if k.endswith(("_diff", "_diff_se", "_p", "_p_raw"))})


def write_outputs(output, records, rows, paired=(), test="ttest"):
    os.makedirs(output, exist_ok=True)
    run_rows = []
    for r in records:
        flat = {
            "dataset": r["dataset"],
            "label": r.get("label") or r["model"],
            "group": r.get("group", "all"),
            "model": r["model"],
            "variant": r.get("variant", ""),
            "seed": r.get("seed"),
            "users": (r.get("costs") or {}).get("test_users"),
            "error": r.get("error", ""),
        }
        flat.update(r.get("test_result") or {})
        flat.update({f"{k}_se": v for k, v in (r.get("test_se") or {}).items()})
        flat.update({k: v for k, v in (r.get("costs") or {}).items() if k in COSTS})
        run_rows.append(flat)
    for name, data in (("runs.csv", run_rows), ("summary.csv", rows)):
        write_csv(os.path.join(output, name), data)
    table = markdown_table(rows)
    recalls = recall_lines([r for r in records if "error" not in r])
    if recalls:
        table += "\n\n" + "\n".join(recalls)
    differences = paired_markdown(list(paired), test=test)
    text = f"{NOTE}\n\n{table}\n" + (f"\n{differences}\n" if differences else "")
    atomic_write(os.path.join(output, "summary.md"), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    atomic_write(os.path.join(output, "summary.png"), lambda tmp: bar_chart(rows, tmp))
    shown = f"\n{differences}\n" if differences else ""
    print(f"\n{NOTE}\n\n{table}\n{shown}\nwritten to {output}/ (runs.csv, summary.csv, summary.md, summary.png)")


def _group_suffix(row):
    group = row.get("group", "all")
    return "" if group == "all" else f", {group} targets"


def bar_chart(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["runs"] > 0]
    labels = [f"{r.get('label') or r['model']}\n{r['dataset']}" + _group_suffix(r) for r in shown]
    x = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(shown) + 2), 4.5))
    width = 0.38
    for i, metric in enumerate(CHART_METRICS):
        means = [r.get(metric, 0.0) for r in shown]
        errors = [r.get(metric + "_se") or 0.0 for r in shown]
        ax.bar(x + (i - 0.5) * width, means, width, yerr=errors, capsize=3, label=metric)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test metric (error bars: ±1 SE over users)")
    ax.legend()
    ax.set_title("Same candidates for every model")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
