"""A new user's first steps: the bare command, the plugin models on their own defaults, one log per model, and a
run that says where its results, checkpoints and logs are."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BACKBONE_PROPS, REPO, TINY_DATASET
from recbole_llmplugin import run_recbole_llm


def _cli(args, cwd):
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole_llm.py"), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_the_bare_command_prints_the_usage_with_the_main_job(workdir):
    result = _cli([], workdir)
    assert result.returncode == 0
    assert "--model=ALLMRec --dataset=ml-100k --config_files=" in result.stdout
    assert "quick-ml100k.yaml" in result.stdout
    assert result.stderr == "" and "error:" not in result.stdout


@pytest.fixture
def on_defaults(tiny_config, tiny_encoder):
    """Tiny models and data, with RecBole's default training negatives (the plugin models' files turn them off)."""
    props = {k: v for k, v in tiny_config.items() if k != "train_neg_sample_args"}
    return {**props, **BACKBONE_PROPS, "text_encoder": tiny_encoder, "stage1_embedding_size": 8}


def test_allmrec_trains_its_backbone_on_its_own_defaults(workdir, on_defaults):
    props = {**on_defaults, "stage1_hidden_size": 16, "projection_hidden_size": 16, "stage1_epochs": 1}
    props.update(stage2_epochs=1, stage2_batch_size=8, stage2_candidates=5, stage1_batch_size=16)
    result = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=props)
    backbone = result["companions"][0]
    assert backbone["label"] == "SASRec (backbone)"
    assert backbone["costs"]["epochs_run"] == 1
    assert set(result["checkpoints"]) == {"stage1", "stage2"}
    assert all(Path(path).is_file() for path in result["checkpoints"].values())


def test_llm_only_ranks_on_recbole_full_ranking_by_default(workdir, on_defaults):
    props = dict(on_defaults)
    props["eval_args"] = {**props["eval_args"], "mode": "full"}  # RecBole's default mode
    result = run_recbole_llm("LLMOnly", TINY_DATASET, config_dict=props)
    assert result["companions"][0]["label"] == "SASRec (retriever)"
    assert result["retriever_recall"]["at"] == 20


@pytest.fixture
def tiny_file(workdir, on_defaults):
    props = {**on_defaults, "stage1_hidden_size": 16, "projection_hidden_size": 16, "stage1_epochs": 1}
    props.update(stage2_epochs=1, stage2_batch_size=8, stage2_candidates=5, stage1_batch_size=16, state="INFO")
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(props), encoding="utf-8")
    return path


def _log_lines(text):
    """The message of each logged line (console or file format), colours removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    found = re.findall(r"^(?:\w{3} )?\d\d \w{3} (?:\d{4} )?[\d:]+\s+(?:INFO|WARNING|ERROR)\s+(.*)$", text, re.M)
    return [line.strip() for line in found if line.strip()]


def test_a_comparison_checks_every_model_before_the_first_trains(workdir, tiny_file):
    result = _cli(["--model=ALLMRec,SASRec", f"--dataset={TINY_DATASET}", f"--config_files={tiny_file}"], workdir)
    assert result.returncode == 2
    assert "error: SASRec (of ALLMRec, SASRec): SASRec on tiny-synth: train_neg_sample_args" in result.stderr
    assert [p for p in workdir.glob("saved/**/*") if p.suffix in (".pth", ".safetensors")] == []  # nothing trained


def _documented_files():
    """The file patterns of docs/checkpoints.md's "What is kept" table, as regular expressions."""
    text = (REPO / "docs" / "checkpoints.md").read_text(encoding="utf-8").split("## What is kept", 1)[1]
    cells = re.findall(r"^\|[^|]+\| (.+) \|$", text.split("\n\n(", 1)[0], re.M)
    patterns = [p for cell in cells for p in re.findall(r"`([^`]+)`", cell)]
    return [re.sub(r"<[^>]+>", "[^/]+", re.escape(p).replace(r"\<", "<").replace(r"\>", ">")) for p in patterns]


def test_a_two_model_run_logs_each_model_to_its_own_file_and_names_its_outputs(workdir, tiny_file):
    text = yaml.safe_load(tiny_file.read_text())
    tiny_file.write_text(yaml.safe_dump({**text, "train_neg_sample_args": None}))  # SASRec: as RecBole needs for CE
    result = _cli(["--model=SASRec,ALLMRec", f"--dataset={TINY_DATASET}", f"--config_files={tiny_file}"], workdir)
    assert result.returncode == 0, result.stdout[-3000:]
    sasrec_logs = list((workdir / "log" / "SASRec").glob("*.log"))
    allmrec_logs = list((workdir / "log" / "ALLMRec").glob("*.log"))
    assert len(sasrec_logs) == 1 and len(allmrec_logs) == 1
    sasrec, allmrec = sasrec_logs[0].read_text(), allmrec_logs[0].read_text()
    assert "stage1: 1 epochs" in allmrec and "stage1: 1 epochs" not in sasrec
    for stage in ("stage1", "stage2"):  # the plan, measured: seconds per example on the first batch, time to go
        assert re.search(rf"{stage}: first batch [\d.]+ s per example -> about \d+ s for 1 epoch\(s\) of 60", allmrec)
    assert "reusing SASRec backbone" in allmrec and "reusing SASRec backbone" not in sasrec
    # logged while every model's properties were checked, before any log was open: kept for the first model's log
    assert "Loading SentenceTransformer model" in sasrec.split("kept as the SASRec backbone")[0]
    console = _log_lines(result.stderr)
    assert len(console) > 20
    in_files = set(_log_lines(sasrec + allmrec))
    assert [line for line in console if line not in in_files] == []

    last = result.stdout.strip().splitlines()[-3:]
    assert [line.split(":")[0] for line in last] == ["results", "checkpoints", "logs"]
    folder = workdir / last[0].split()[1]
    assert (folder / "table.md").stat().st_size > 0
    assert len(list((folder / "runs").glob("*.json"))) == 3  # SASRec, its kept backbone row, ALLMRec
    named = re.findall(r"(saved/\S+?\.(?:pth|safetensors))", last[1]) + re.findall(r"(log/\S+?\.log)", last[2])
    assert len(named) == 6  # SASRec, the backbone it was kept as, ALLMRec's two stages; two logs
    assert all((workdir / path).stat().st_size > 0 for path in named)
    patterns = _documented_files()
    for path in named:
        assert any(re.fullmatch(p, path) for p in patterns), (path, patterns)  # docs/checkpoints.md names it
    table = result.stdout[result.stdout.index("model ") : result.stdout.index("Paired")]
    assert max(len(line) for line in table.splitlines()) <= 120


@pytest.mark.parametrize(
    "model, props, expected",
    [
        ("ALLMRec", {"stage2_objective": "index", "eval_mode": "score"}, "stage2_objective"),  # check_ranking
        ("ALLMRec", {"prompt_template": "{user_token} {history}. Answer:"}, "prompt_template: "),  # placeholders
        ("ALLMRec", {"prompt_history_item": "an item"}, "prompt_history_item: 'an item' must contain {title}"),
        (
            "ALLMRec",
            {"allmrec_token_space": "vocabulary", "eval_mode": "index", "stage2_objective": "match"},
            "allmrec_token_space: vocabulary reads the user token where the answer starts",
        ),
        ("ALLMRec", {"stage2_candidates": 5000}, "stage2_candidates: 5000 but tiny-synth has"),
        ("ALLMRec", {"eval_mode": "index", "prompt_index_labels": "ABC"}, "prompt_index_labels: 3 labels for 10"),
        ("ALLMRec", {"prompt_answer": '"{title}"{item_token}', "stage2_objective": "generate"}, "prompt_answer"),
    ],
)
def test_every_model_check_comes_before_the_backbone_trains(workdir, on_defaults, model, props, expected):
    from recbole_llmplugin.utils.errors import ConfigValueError

    with pytest.raises(ConfigValueError, match=re.escape(expected)):
        run_recbole_llm(model, TINY_DATASET, config_dict={**on_defaults, "cf_checkpoint": "auto", **props})
    assert not (workdir / "saved" / "cf_backbones").exists()  # refused before the backbone trained
    assert not (workdir / "log" / "SASRec").exists()


def test_a_cross_domain_table_is_headed_by_the_pair_and_keeps_source_rows_apart():
    from recbole_llmplugin.quick_start.compare import console_table

    def row(label, dataset, hit):
        costs = {"test_users": 300, "fit_seconds": 1.0}
        return {"model": label, "label": label, "dataset": dataset, "test_result": {"hit@1": hit}, "costs": costs}

    results = [row("SASRec (backbone)", "beauty", 0.3), row("ALLMRec", "beauty -> games", 0.1)]
    table = console_table(results, ["hit@1"])
    assert table.index("beauty -> games:") < table.index("ALLMRec") < table.index("beauty (the source")
    assert table.index("beauty (the source") < table.index("SASRec (backbone)")


def test_cross_domain_without_a_user_refuses_the_match_ranking(workdir, on_defaults):
    from recbole_llmplugin.utils.errors import ConfigValueError

    target = {"dataset": "no-such-target", "data_path": on_defaults["data_path"]}
    props = {**on_defaults, "cross_domain_user": "none", "eval_mode": "match", "target_domain": target}
    props.update(allmrec_token_space="vocabulary", stage2_objective="match", joint_embedding="text")
    props["prompt_template"] = "A user liked: {history}. Next one of: {candidates}? Answer:{user_token}"
    with pytest.raises(ConfigValueError, match="cross_domain_user: none with eval_mode match"):
        run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=props)


def _raw_amazon(folder, users=90, items=40, seed=0):
    """A raw Amazon 2018 download in miniature: reviews and metadata as gzipped JSON lines."""
    import gzip
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    reviews = [
        {"reviewerID": f"U{u}", "asin": f"B{i:04d}", "overall": 5.0, "unixReviewTime": 1000 * u + t}
        for u in range(users)
        for t, i in enumerate(rng.choice(items, size=8, replace=False))
    ]
    meta = [{"asin": f"B{i:04d}", "title": f"Gadget number {i} &amp; case"} for i in range(items)]
    for name, rows in (("reviews.json.gz", reviews), ("meta.json.gz", meta)):
        with gzip.open(folder / name, "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    return folder / "reviews.json.gz", folder / "meta.json.gz"


def test_a_scenario_runs_on_a_dataset_converted_from_a_raw_amazon_download(workdir, tiny_llm, tiny_encoder):
    from recbole_llmplugin.data.amazon_raw import main as convert
    from recbole_llmplugin.quick_start.cli import command_line_properties
    from recbole_llmplugin.tools.benchmark import run_benchmark

    reviews, meta = _raw_amazon(workdir)
    assert convert(["--reviews", str(reviews), "--meta", str(meta), "--name", "gadgets", "--output", "data"]) == 0
    argv = [
        "--benchmark=properties/scenario/cold-items.yaml",
        "--benchmark_datasets=[gadgets]",
        "--benchmark_models=[SASRec, ALLMRec]",
        "--data_path=data/",
        f"--llm_path={tiny_llm}",
        f"--text_encoder={tiny_encoder}",
        "--item_vocabulary_offset=100",
        "--eval_user_sample=~",
        "--epochs=2",
        "--hidden_size=16",
        "--inner_size=32",
        "--n_layers=1",
        "--n_heads=1",
        "--stage1_embedding_size=8",
        "--projection_hidden_size=16",
    ]
    given = command_line_properties(argv)
    assert given["benchmark_datasets"] == ["gadgets"] and given["eval_user_sample"] is None
    rows = run_benchmark(str(REPO / "properties" / "scenario" / "cold-items.yaml"), None, given)
    labels = {(row["label"], row.get("group", "all")) for row in rows if not row.get("failed")}
    assert ("SASRec", "cold") in labels and ("ALLMRec (vocabulary, text joint, all positions, match)", "all") in labels
    assert all(row["dataset"] == "gadgets" and row["users"] == 90 for row in rows if row.get("group", "all") == "all")
    assert (workdir / "results" / "cold-items" / "summary.md").is_file()


def test_a_plain_run_of_a_benchmark_file_gives_each_model_its_entry(tmp_path):
    from recbole_llmplugin.quick_start.compare import entry_properties

    path = tmp_path / "bench.yaml"
    entries = {"ALLMRec": {"stage1_epochs": 7, "eval_mode": "match"}, "ALLMRec-x": {"model": "ALLMRec", "lora_r": 2}}
    path.write_text(yaml.safe_dump({"benchmark_models": ["SASRec", "ALLMRec"], "benchmark_model_properties": entries}))
    given = {"eval_mode": "index"}  # the run's own (command line, config_dict) stay above the entry
    assert entry_properties("ALLMRec", [str(path)], given) == {"stage1_epochs": 7, "eval_mode": "index"}
    assert entry_properties("SASRec", [str(path)], given) == given
    assert entry_properties("SASRec", [str(path)], None) is None


def test_the_paired_reference_is_the_first_model_or_a_one_model_runs_backbone():
    from recbole_llmplugin.quick_start.cli import summary_reference

    rows = [{"model": "SASRec (backbone)", "label": "SASRec (backbone)"}, {"model": "ALLMRec", "label": "ALLMRec (x)"}]
    assert summary_reference(["ALLMRec"], rows) == "SASRec (backbone)"
    assert summary_reference(["LLMOnly", "ALLMRec"], rows) == "LLMOnly"
    assert summary_reference(["LLMOnly"], [{"model": "LLMOnly", "label": "LLMOnly (index ranking)"}]) == (
        "LLMOnly (index ranking)"
    )
