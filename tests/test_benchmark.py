"""Benchmark harness: aggregation, failure isolation, restart skipping, outputs (with a fake runner)."""

import csv

import numpy as np
import pytest
import yaml

from recbole_llmplugin.tools.benchmark import run_benchmark
from recbole_llmplugin.utils.errors import ConfigValueError


class FakeRunner:
    def __init__(self, fail=()):
        self.calls = []
        self.fail = set(fail)

    def __call__(self, model, dataset, files, overrides):
        self.calls.append((model, dataset, overrides["seed"]))
        if model in self.fail:
            raise RuntimeError(f"{model} exploded")
        hit = {"A": 0.2, "B": 0.5}.get(model, 0.3) + 0.1 * (overrides["seed"] - 1)
        result = {
            "model": model,
            "variant": "",
            "dataset": dataset,
            "test_result": {"hit@1": hit, "ndcg@10": hit / 2},
            "test_se": {"hit@1": 0.04, "ndcg@10": 0.02},
            "costs": {
                "test_users": 100,
                "fit_seconds": 1.0,
                "eval_seconds_per_user": 0.5,
                "peak_rss_mb": 100.0,
                "trainable_parameters": 7,
            },
        }
        if model == "B":  # a form other than the paper's, with a second ranking of the same weights
            result["variant"] = "vocabulary, match"
            match = {
                "variant": "vocabulary, match; CF match alone, no LLM",
                "eval_mode": "match",
                "test_result": {"hit@1": 0.6},
            }
            result["other_rankings"] = [{**result, **match, "test_se": {"hit@1": 0.05}}]
        return result


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "benchmark_models": ["A", "B", "C"],
                "benchmark_datasets": ["d1"],
                "benchmark_seeds": [1, 2],
                "benchmark_output": str(tmp_path / "out"),
                "benchmark_model_properties": {"B": {"epochs": 3}},
            }
        )
    )
    return path


def test_aggregates_isolates_failures_and_writes_outputs(spec, tmp_path):
    runner = FakeRunner(fail={"C"})
    rows = {r["label"]: r for r in run_benchmark(spec, runner)}
    assert rows["A"]["hit@1"] == pytest.approx(0.25) and rows["A"]["hit@1_std"] == pytest.approx(0.05)
    assert rows["A"]["hit@1_se"] == pytest.approx(0.04) and rows["A"]["users"] == 100
    assert rows["B (vocabulary, match)"]["runs"] == 2 and rows["B (vocabulary, match)"]["ndcg@10"] == pytest.approx(
        0.275
    )
    assert rows["C"]["runs"] == 0 and rows["C"]["failed"] == 2 and "exploded" in rows["C"]["error"]
    out = tmp_path / "out"
    md = (out / "summary.md").read_text()
    assert "FAILED" in md and "0.2500 ± 0.0400 (sd 0.0500)" in md and "| 100 |" in md
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 8  # 3 models x 2 seeds, and B's second ranking in each seed
    assert {r["variant"] for r in runs if r["model"] == "B"} == {
        "vocabulary, match",
        "vocabulary, match; CF match alone, no LLM",
    }
    assert {r["hit@1_se"] for r in runs if r["model"] == "A"} == {"0.04"}


def test_rows_are_grouped_by_label_with_each_form_named(spec, tmp_path):
    """A model in another form than the paper's is labelled with it, and its second ranking of the same trained
    weights (A-LLMRec's CF match alone) is its own row, kept when the benchmark is restarted."""
    run_benchmark(spec, FakeRunner())
    restarted = FakeRunner()
    rows = {r["label"]: r for r in run_benchmark(spec, restarted)}
    assert restarted.calls == []
    assert set(rows) == {"A", "B (vocabulary, match)", "B (vocabulary, match; CF match alone, no LLM)", "C"}
    match = rows["B (vocabulary, match; CF match alone, no LLM)"]
    assert match["model"] == "B" and match["runs"] == 2 and match["hit@1"] == pytest.approx(0.6)
    assert match["hit@1_se"] == pytest.approx(0.05) and "ndcg@10" not in match
    table = (tmp_path / "out" / "summary.md").read_text()
    assert "| B (vocabulary, match; CF match alone, no LLM) |" in table


class GroupedRunner(FakeRunner):
    """A run with ``eval_item_groups``: warm and cold targets' figures beside the overall ones."""

    def __call__(self, model, dataset, files, overrides):
        result = super().__call__(model, dataset, files, overrides)
        groups = {"warm": {"users": 60, "hit@1": 0.7, "hit@1_se": 0.06}, "cold": {"users": 9, "hit@1": 0.1}}
        groups["cold"]["hit@1_se"] = 0.1
        result["test_groups"] = groups
        for row in result.get("other_rankings") or []:
            row["test_groups"] = {"warm": {"users": 60, "hit@1": 0.8, "hit@1_se": 0.05}}
        return result


def test_item_groups_are_rows_of_their_own_with_their_users(spec, tmp_path):
    run_benchmark(spec, GroupedRunner())
    rows = {(r["label"], r["group"]): r for r in run_benchmark(spec, GroupedRunner())}  # restarted: read back
    assert rows[("A", "all")]["users"] == 100 and rows[("A", "all")]["hit@1"] == pytest.approx(0.25)
    warm, cold = rows[("A", "warm")], rows[("A", "cold")]
    assert warm["users"] == 60 and warm["hit@1"] == pytest.approx(0.7) and warm["hit@1_se"] == pytest.approx(0.06)
    assert cold["users"] == 9 and cold["hit@1_se"] == pytest.approx(0.1) and "ndcg@10" not in cold
    match = rows[("B (vocabulary, match; CF match alone, no LLM)", "warm")]
    assert match["hit@1"] == pytest.approx(0.8) and match["eval_mode"] == "match"
    table = (tmp_path / "out" / "summary.md").read_text()
    flat = " ".join(table.split())
    assert "| dataset | model | test targets | runs | n |" in flat
    assert "| d1 | A | warm | 2 | 60 | 0.7000 ± 0.0600 (sd 0.0000) | |" in flat
    with open(tmp_path / "out" / "runs.csv") as handle:
        assert {r["group"] for r in csv.DictReader(handle)} == {"all", "warm", "cold"}


def test_restart_skips_finished_runs_and_retries_failed(spec):
    first = FakeRunner(fail={"C"})
    run_benchmark(spec, first)
    assert len(first.calls) == 6
    second = FakeRunner()
    rows = {r["label"]: r for r in run_benchmark(spec, second)}
    assert sorted(second.calls) == [("C", "d1", 1), ("C", "d1", 2)]  # only the failed ones run again
    assert rows["C"]["failed"] == 0 and rows["C"]["runs"] == 2


def test_a_run_file_of_other_properties_runs_again(spec, caplog):
    run_benchmark(spec, FakeRunner())
    bench = yaml.safe_load(spec.read_text())
    again = FakeRunner()
    run_benchmark(spec, again)
    assert again.calls == []  # same properties: every run reused
    bench["benchmark_model_properties"]["B"] = {"epochs": 4}  # one entry's properties
    bench["show_progress"] = False  # how visibly a run works: no new run for it
    spec.write_text(yaml.safe_dump(bench))
    again = FakeRunner()
    run_benchmark(spec, again)
    assert sorted(again.calls) == [("B", "d1", 1), ("B", "d1", 2)]
    assert "written under other properties" in caplog.text
    bench["epochs"] = 9  # a shared property: every run
    spec.write_text(yaml.safe_dump(bench))
    again = FakeRunner()
    run_benchmark(spec, again)
    assert len(again.calls) == 6
    again = FakeRunner()
    run_benchmark(spec, again)
    assert again.calls == []


def test_per_model_properties_reach_the_runner(spec):
    seen = {}

    def runner(model, dataset, files, overrides):
        seen[model] = overrides
        return FakeRunner()(model if model != "C" else "A", dataset, files, overrides)

    run_benchmark(spec, runner)
    assert seen["B"]["epochs"] == 3 and "epochs" not in seen["A"]


def test_benchmark_file_must_name_models(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("benchmark_datasets: [x]\n")
    with pytest.raises(ConfigValueError, match="benchmark_models"):
        run_benchmark(path, FakeRunner())


def test_efficiency_ratios():
    from recbole_llmplugin.tools.benchmark import efficiency_lines

    rows = [
        {
            "dataset": "d",
            "model": "ALLMRec",
            "runs": 1,
            "stage1_seconds": 10.0,
            "stage2_seconds": 30.0,
            "eval_seconds_per_user": 2.0,
        },
        {"dataset": "d", "model": "TALLRec", "runs": 1, "stage2_seconds": 100.0, "eval_seconds_per_user": 3.0},
    ]
    rows.append({**rows[0], "eval_mode": "match", "eval_seconds_per_user": 0.001})
    (line,) = efficiency_lines(rows)  # the LLM-ranked row, not the CF match alone
    assert "2.50x" in line and "1.50x" in line


def test_labelled_entries_run_their_model_with_their_properties(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "benchmark_models": ["A", "A-variant"],
                "benchmark_datasets": ["d1"],
                "benchmark_seeds": [1],
                "benchmark_output": str(tmp_path / "out"),
                "benchmark_model_properties": {"A-variant": {"model": "A", "cf_model": "GRU4Rec"}},
            }
        )
    )
    runner = FakeRunner()
    rows = {r["model"]: r for r in run_benchmark(path, runner)}
    assert set(rows) == {"A", "A-variant"} and [c[0] for c in runner.calls] == ["A", "A"]


@pytest.mark.parametrize("failing", ["A", "B", "C"])
def test_summary_stays_well_formed_whichever_model_fails(spec, tmp_path, failing):
    run_benchmark(spec, FakeRunner(fail={failing}))
    text = (tmp_path / "out" / "summary.md").read_text()
    summary = text.split("Paired differences")[0]  # the paired table follows the summary's
    lines = [line for line in summary.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:6] == ["dataset", "model", "runs", "n", "hit@1", "ndcg@10"] and header[-1] == "error"
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert all(len(cells) == len(header) for cells in rows.values())
    assert rows[failing][header.index("hit@1")] == "" and "exploded" in rows[failing][-1]
    assert rows[failing][header.index("train s")] == ""
    own = {"A": "A", "B": "B (vocabulary, match)", "C": "C"}  # a failed run's row has the bare name
    for model in {"A", "B", "C"} - {failing}:
        assert "±" in rows[own[model]][header.index("hit@1")] and rows[own[model]][-1] == ""


def test_missing_or_unparsable_benchmark_file_is_one_line(tmp_path):
    with pytest.raises(ConfigValueError, match="does not exist"):
        run_benchmark(tmp_path / "nope.yaml", FakeRunner())
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark_models: [A\n")
    with pytest.raises(ConfigValueError, match="bad.yaml' line .*YAML does not parse"):
        run_benchmark(bad, FakeRunner())


def test_a_model_listed_twice_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("benchmark_models: [Pop, SASRec, Pop]\nbenchmark_datasets: [d1]\n")
    with pytest.raises(ConfigValueError, match="lists Pop 2 times in benchmark_models"):
        run_benchmark(path, FakeRunner())


def test_an_unknown_model_is_refused_before_any_run(tmp_path):
    from recbole_llmplugin.utils.errors import UnknownModelError

    path = tmp_path / "unknown.yaml"
    out = tmp_path / "out"
    path.write_text(f"benchmark_models: [Pop, NoSuchRec]\nbenchmark_datasets: [ml-100k]\nbenchmark_output: {out}\n")
    with pytest.raises(UnknownModelError, match="unknown model 'NoSuchRec'"):
        run_benchmark(path)
    assert not out.exists()


@pytest.mark.parametrize(
    "lines, message",
    [
        ("benchmark_models: Pop\nbenchmark_datasets: [d1]\n", "benchmark_models: 'Pop' must be a list, e.g. [Pop]"),
        ("benchmark_models: [Pop]\nbenchmark_datasets: [d1]\nbenchmark_seeds: [a]\n", "must be a list of integers"),
        (
            "benchmark_models: [Pop]\nbenchmark_datasets: [d1]\nbenchmark_model_properties: {SASRec: {epochs: 2}}\n",
            "benchmark_model_properties has SASRec, which benchmark_models does not list",
        ),
    ],
)
def test_malformed_lists_are_one_line(tmp_path, lines, message):
    path = tmp_path / "bench.yaml"
    path.write_text(lines)
    with pytest.raises(ConfigValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_benchmark(path, FakeRunner())


@pytest.mark.parametrize(
    "extra, message",
    [
        ("benchmark_datasets: [tiny-synth, nope-data]\n", "benchmark entry Pop on nope-data: dataset 'nope-data'"),
        (
            "benchmark_model_properties: {SASRec: {epoch: 2}}\n",
            "benchmark entry SASRec on tiny-synth: unknown property 'epoch': did you mean 'epochs'?",
        ),
        ("benchmark_output: /etc/hostname\n", "benchmark_output: '/etc/hostname' is a file, not a folder"),
    ],
)
def test_every_run_is_checked_before_the_first_one(workdir, tiny_config, extra, message):
    """A misspelt key or a missing dataset of any entry stops the benchmark before anything runs."""
    props = {k: v for k, v in tiny_config.items() if k != "llm_path"}
    path = workdir / "bench.yaml"
    spec = "benchmark_models: [Pop, SASRec]\nbenchmark_datasets: [tiny-synth]\n"
    path.write_text(yaml.safe_dump(props) + spec + extra)
    with pytest.raises(ConfigValueError, match=message.replace("?", r"\?")):
        run_benchmark(path)
    assert not list(workdir.glob("results/**/*.*")) and not list(workdir.glob("saved/**/*.*"))  # nothing ran


def _shipped(kind):
    from conftest import REPO

    files = sorted((REPO / "properties" / "benchmark").glob("*.yaml"))
    return [f for f in files if ("benchmark_models" in yaml.safe_load(f.read_text(encoding="utf-8"))) == (kind == "b")]


@pytest.fixture(scope="module")
def amazon_data(tmp_path_factory):
    """The folder the Amazon profiles' ``data_path: dataset/`` points to: the repository's ``dataset/`` where
    ``python -m recbole_llmplugin.data.amazon --output dataset`` has written both sets, else synthetic stand-ins
    written by the converter's own writer under the same names (1,500 users, 300 titled items each): every shipped
    profile is checked on a clean checkout."""
    from conftest import REPO

    from recbole_llmplugin.data.amazon import BEAUTY, GAMES, _write_atomic_files

    if all((REPO / "dataset" / name).is_dir() for name in (BEAUTY, GAMES)):
        return REPO / "dataset"
    folder = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    for name in (BEAUTY, GAMES):
        sequences = {f"u{u}": [f"i{i}" for i in rng.choice(300, size=6, replace=False)] for u in range(1500)}
        _write_atomic_files(folder, name, sequences, {f"i{i}": f"product number {i}" for i in range(300)})
    return folder


@pytest.mark.parametrize("path", _shipped("b"), ids=lambda p: p.name)
def test_every_shipped_benchmark_file_passes_its_checks(workdir, amazon_data, path):
    """Each benchmark file in properties/benchmark/ names known models and valid properties for every entry (the
    Amazon ones on the converted sets, or on synthetic stand-ins of the same names)."""
    from recbole_llmplugin.tools.benchmark import check_runs, load_spec

    spec = load_spec(str(path))
    (workdir / "dataset").symlink_to(amazon_data)  # the profiles' data_path, from this temp working folder
    check_runs(spec, str(path))


@pytest.mark.parametrize("name", ["cold-items", "cold-users", "few-shot"])
def test_every_scenario_file_runs_its_checks_on_a_dataset_named_on_the_command_line(workdir, amazon_data, name):
    """properties/scenario/ files name no dataset: refused alone, checked for every model on a dataset given as the
    command line's --benchmark_datasets (here the Amazon sets, or their stand-ins)."""
    from conftest import REPO

    from recbole_llmplugin.tools.benchmark import check_runs, load_spec

    path = str(REPO / "properties" / "scenario" / f"{name}.yaml")
    with pytest.raises(ConfigValueError, match="names no dataset; give them on the command line"):
        load_spec(path)
    spec = load_spec(path, {"benchmark_datasets": ["amazon-games-llmrank"]})
    (workdir / "dataset").symlink_to(amazon_data)
    check_runs(spec, path)


def test_the_gpu_scale_profile_builds_its_configs(workdir, amazon_data):
    """The GPU speed benchmark's property file (.ci/gpu-bench), for both models it times."""
    from conftest import REPO

    from recbole_llmplugin.quick_start.quick_start import build_config

    (workdir / "dataset").symlink_to(amazon_data)
    path = REPO / "properties" / "benchmark" / "gpu-scale-beauty.yaml"
    for model in ("ALLMRec", "TALLRec"):
        config, _ = build_config(model, "amazon-beauty-p5", [str(path)], {"llm_dtype": "float32"})
        assert config["stage2_objective"] == "generate" and config["eval_user_sample"] == 1000


@pytest.mark.parametrize("path", [p for p in _shipped("p") if "beauty" not in p.name], ids=lambda p: p.name)
def test_every_shipped_property_file_builds_an_allmrec_config(workdir, path):
    from recbole_llmplugin.quick_start.quick_start import build_config

    config, _ = build_config("ALLMRec", "ml-100k", [str(path)])
    assert config["eval_candidates"] == "fixed"


def test_a_row_measured_on_other_users_is_labelled_so(tmp_path):
    path = tmp_path / "bench.yaml"
    spec = {
        "benchmark_models": ["A", "B"],
        "benchmark_datasets": ["d1"],
        "benchmark_seeds": [1],
        "benchmark_output": str(tmp_path / "out"),
        "cold_users": 60,
        "benchmark_model_properties": {"A": {"cold_users": 5, "epochs": 2}},
    }
    path.write_text(yaml.safe_dump(spec))
    rows = run_benchmark(path, FakeRunner())
    labels = {row["label"] for row in rows}
    assert "A [other users: cold_users 5]" in labels  # not "A": another user set than B's rows
    assert "B (vocabulary, match)" in labels and "B (vocabulary, match; CF match alone, no LLM)" in labels
