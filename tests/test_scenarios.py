"""Scenarios: warm / cold item groups from the training split alone; cold users and few-shot users held out of every
training step (CF backbone, stage 1, stage 2, LoRA) and tested alone."""

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from recbole.trainer import Trainer

from conftest import REPO, TINY_DATASET, assert_measured
import recbole_llmplugin.data.preparation as preparation
from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.data.scenarios import _keep_last
from recbole_llmplugin.evaluator.item_groups import item_groups, training_item_counts
from recbole_llmplugin.quick_start.compare import comparison_table, run_models
from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
from recbole_llmplugin.utils.errors import ConfigValueError, PluginError

SMALL_SASREC = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1}


def _sequences():
    """Each raw user's raw items in time order, read from the fixture file itself."""
    lines = (REPO / "dataset" / TINY_DATASET / f"{TINY_DATASET}.inter").read_text(encoding="utf-8").splitlines()
    header = [name.split(":")[0] for name in lines[0].split("\t")]
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    sequences = {}
    for row in sorted(rows, key=lambda r: (r["user_id"], float(r["timestamp"]))):
        sequences.setdefault(row["user_id"], []).append(row["item_id"])
    return sequences


def _groups(props, model="SASRec"):
    config, _ = build_config(model, TINY_DATASET, config_dict={**props, **SMALL_SASREC})
    dataset, train_data, _, test_data = prepare_data(config)
    return config, dataset, train_data, test_data, item_groups(config, train_data._dataset)


def test_item_groups_count_training_interactions_only(workdir, tiny_config):
    props = {**tiny_config, "eval_item_groups": True}
    config, dataset, train_data, _, groups = _groups(props)
    # every interaction but each user's last two (valid and test targets), counted from the raw file
    expected = Counter(item for items in _sequences().values() for item in items[:-2])
    counts = training_item_counts(train_data._dataset)
    for token, count in expected.items():
        assert counts[dataset.token2id(dataset.iid_field, token)] == count
    assert counts.sum() == sum(expected.values())
    warm, cold = set(groups["warm"].tolist()), set(groups["cold"].tolist())
    n_items = dataset.item_num - 1
    assert not warm & cold and 0 not in warm | cold
    assert len(warm) == len(cold) == round(0.35 * n_items)
    assert min(counts[list(warm)]) >= max(counts[list(cold)])


def test_item_groups_ignore_valid_and_test_targets(workdir, tiny_config):
    """Making one item every user's test target changes no group: the groups never read the test split."""
    sequences = _sequences()
    folder = workdir / "data" / "shifted"
    folder.mkdir(parents=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    lines = []
    for user, items in sequences.items():
        items = [i for i in items if i != "1"] + ["1"]  # item 1 last: every user's test target
        lines += [f"{user}\t{item}\t1\t{t}\n" for t, item in enumerate(items)]
    (folder / "shifted.inter").write_text(header + "".join(lines), encoding="utf-8")
    item_file = REPO / "dataset" / TINY_DATASET / f"{TINY_DATASET}.item"
    (folder / "shifted.item").write_text(item_file.read_text(encoding="utf-8"), encoding="utf-8")
    props = {**tiny_config, "data_path": str(workdir / "data"), "eval_item_groups": True, **SMALL_SASREC}
    config, _ = build_config("SASRec", "shifted", config_dict=props)
    dataset, train_data, _, _ = prepare_data(config)
    groups = item_groups(config, train_data._dataset)
    assert dataset.token2id(dataset.iid_field, "1") in groups["cold"]  # never trained on: the coldest


def test_every_model_reports_the_same_groups_of_users(workdir, tiny_config):
    props = {**tiny_config, **SMALL_SASREC, "eval_item_groups": True, "eval_candidates": "fixed"}
    _, dataset, _, test_data, groups = _groups(props)
    targets = test_data._dataset.inter_feat[dataset.iid_field].numpy()
    expected = {name: int(np.isin(targets, items).sum()) for name, items in groups.items()}
    assert expected["warm"] > 0 and expected["cold"] > 0
    results = run_models(["SASRec", "LLMOnly"], TINY_DATASET, config_dict=props)
    assert [(r["model"], r.get("group")) for r in results] == [
        (model, group) for model in ("SASRec", "LLMOnly") for group in (None, "warm", "cold")
    ]
    for result, warm, cold in (results[0:3], results[3:6]):
        assert {name: row["users"] for name, row in result["test_groups"].items()} == expected
        assert warm["costs"]["test_users"] == expected["warm"] and cold["costs"]["test_users"] == expected["cold"]
        assert_measured(warm, ("hit@1", "hit@5")) and assert_measured(cold, ("hit@1", "hit@5"))
        assert set(warm["test_user_values"]["users"]) <= set(result["test_user_values"]["users"])
        n, overall = result["costs"]["test_users"], result["test_result"]["hit@5"]
        others = n - expected["warm"] - expected["cold"]
        lowest = (warm["test_result"]["hit@5"] * expected["warm"] + cold["test_result"]["hit@5"] * expected["cold"]) / n
        assert lowest - 1e-3 <= overall <= lowest + others / n + 1e-3  # the groups' users are the overall's
    table = comparison_table(results)
    assert "| SASRec [warm targets] " in table and "| LLMOnly [cold targets] " in table


def test_group_ratios_that_overlap_are_refused(workdir, tiny_config):
    props = {**tiny_config, "eval_item_groups": True, "warm_item_ratio": 0.6, "cold_item_ratio": 0.5}
    with pytest.raises(ConfigValueError, match="warm_item_ratio 0.6 \\+ cold_item_ratio 0.5 > 1"):
        _groups(props)


class TrainingRecord:
    """The users of every batch any training loss sees (RecBole's trainer and each plugin stage go through
    ``Trainer._train_epoch``), and the users a run's scenario held out."""

    def __init__(self, monkeypatch):
        self.trained, self.held = set(), []
        original_epoch = Trainer._train_epoch
        original_scenario = preparation.hold_out_users
        record = self

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            inner = loss_func or self.model.calculate_loss

            def loss(interaction):
                record.trained.update(interaction["user_id"].tolist())
                return inner(interaction)

            return original_epoch(self, train_data, epoch_idx, loss_func=loss, show_progress=show_progress)

        def hold_out_users(config, dataset):
            held = original_scenario(config, dataset)
            record.held.append(set(held.tolist()))
            return held

        monkeypatch.setattr(Trainer, "_train_epoch", _train_epoch)
        monkeypatch.setattr(preparation, "hold_out_users", hold_out_users)


@pytest.mark.parametrize("scenario", [{"cold_users": 12}, {"few_shot_users": 20}])
def test_held_out_users_reach_no_training_step(workdir, monkeypatch, allmrec_config, scenario):
    """ALLMRec trains its CF backbone (cf_checkpoint auto), stage 1 and stage 2, TALLRec its LoRA: none of them sees a
    held-out user, and the test covers the held-out users alone."""
    record = TrainingRecord(monkeypatch)
    props = {
        **allmrec_config,
        **SMALL_SASREC,
        **scenario,
        "cf_checkpoint": "auto",
        "checkpoint_dir": str(workdir / "saved"),
        "stage2_objective": "index",
        "eval_mode": "index",
    }
    results = [run_recbole_llm(model, TINY_DATASET, config_dict=props) for model in ("ALLMRec", "TALLRec")]
    held = record.held[0]
    assert all(h == held for h in record.held) and len(record.held) >= 3  # backbone, ALLMRec, TALLRec: same users
    assert record.trained and not record.trained & held
    n_users = len(_sequences())
    assert len(held) == (12 if "cold_users" in scenario else n_users - 20)
    assert len(record.trained) == n_users - len(held)
    for result in results:
        assert result["costs"]["test_users"] == len(held)
    assert Path(results[0]["companions"][0]["saved_model_file"]).name.startswith(f"{TINY_DATASET}-SASRec-")


def test_cold_users_keep_their_last_interactions(workdir, tiny_config):
    props = {**tiny_config, "cold_users": 10, "cold_user_len": 4}
    config, _ = build_config("SASRec", TINY_DATASET, config_dict={**props, **SMALL_SASREC})
    dataset, train_data, valid_data, test_data = prepare_data(config)
    held = dataset.scenario_held_out
    uid, iid = dataset.uid_field, dataset.iid_field
    test = test_data._dataset.inter_feat
    assert sorted(test[uid].tolist()) == sorted(held.tolist())
    assert set(test["item_length"].tolist()) == {3}  # 4 kept: three history items, then the test target
    sequences = _sequences()
    for row in range(len(test)):
        raw = sequences[dataset.id2token(uid, int(test[uid][row]))]
        history = dataset.id2token(iid, test[iid + "_list"][row][:3].numpy()).tolist()
        assert history + [dataset.id2token(iid, int(test[iid][row]))] == raw[-4:]
    for split in (train_data, valid_data):
        assert not set(split._dataset.inter_feat[uid].tolist()) & set(held.tolist())
    # the other users keep all their interactions: one augmented row per interaction after each user's first
    cut = sum(len(sequences[dataset.id2token(uid, int(u))]) - 4 for u in held)
    assert len(dataset.inter_feat) == sum(len(s) for s in sequences.values()) - cut - len(sequences)


def test_the_cut_at_equal_timestamps_keeps_the_rows_standing_first():
    inter = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2], "item_id": [10, 11, 12, 13, 20, 21], "ts": [1, 2, 2, 2, 1, 2]})
    dataset = SimpleNamespace(inter_feat=inter, uid_field="user_id", time_field="ts")
    _keep_last(dataset, np.array([1]), 2)
    assert dataset.inter_feat["item_id"].tolist() == [11, 12, 20, 21]  # user 1: ts 2 three times; 11, 12 stand first
    _keep_last(dataset, np.array([1, 2]), 1)
    assert dataset.inter_feat["item_id"].tolist() == [11, 21]


@pytest.mark.parametrize(
    "props, message",
    [
        ({"cold_users": 5, "few_shot_users": 5}, "cold_users: 5 and few_shot_users: 5 are two scenarios"),
        ({"cold_users": 60}, "cold_users: 60 would hold out all 60 users"),
        ({"few_shot_users": 60}, "few_shot_users: 60 is not fewer than the dataset's 60 users"),
        ({"cold_user_len": 2, "cold_users": 3}, "cold_user_len"),
    ],
)
def test_impossible_scenarios_are_one_line(workdir, tiny_config, props, message):
    with pytest.raises(ConfigValueError, match=message):
        config, _ = build_config("SASRec", TINY_DATASET, config_dict={**tiny_config, **SMALL_SASREC, **props})
        prepare_data(config)


def _target_dataset(workdir):
    """A second dataset with other users, items and titles: the fixture's interactions under new tokens."""
    folder = workdir / "data" / "tiny-target"
    folder.mkdir(parents=True)
    source = REPO / "dataset" / TINY_DATASET
    inter = (source / f"{TINY_DATASET}.inter").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in inter[1:]]
    lines = [inter[0]] + ["\t".join([f"v{r[0]}", f"x{r[1]}", *r[2:]]) for r in rows]
    (folder / "tiny-target.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    item = (source / f"{TINY_DATASET}.item").read_text(encoding="utf-8").splitlines()
    items = [line.split("\t") for line in item[1:]]
    lines = [item[0]] + ["\t".join([f"x{r[0]}", " ".join(reversed(r[1].split()))] + r[2:]) for r in items]
    (folder / "tiny-target.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"dataset": "tiny-target", "data_path": str(workdir / "data")}


def test_cross_domain_trains_on_the_source_alone_and_tests_the_target(workdir, monkeypatch, allmrec_config):
    """ALLMRec (text joint, vocabulary + match), TALLRec and LLMOnly train on tiny-synth (backbone, stages, LoRA) and
    rank tiny-target's users and items; no training epoch reads the target."""
    trained_on = []
    original = Trainer._train_epoch

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        trained_on.append(train_data._dataset.dataset_name)
        return original(self, train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    monkeypatch.setattr(Trainer, "_train_epoch", _train_epoch)
    props = {**_cross_domain_props(workdir, allmrec_config), "eval_item_groups": True}
    allmrec = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=props)
    assert allmrec["dataset"] == "tiny-synth -> tiny-target"
    assert allmrec["label"] == "ALLMRec (vocabulary, text joint, match; target user from text)"
    assert allmrec["costs"]["test_users"] == 60
    assert_measured(allmrec, ("hit@1", "ndcg@5"))
    assert allmrec["companions"][0]["costs"]["test_users"] == 7  # the backbone is tested on the source's sample
    cold, warm = (set(allmrec["test_groups"][g]["user_values"]["users"]) for g in ("cold", "warm"))
    assert not cold & warm and cold | warm <= set(allmrec["test_user_values"]["users"])  # groups of the target users
    assert len(cold) == allmrec["test_groups"]["cold"]["users"] and len(warm) == allmrec["test_groups"]["warm"]["users"]
    match = allmrec["other_rankings"][0]
    assert match["label"].endswith("CF match alone, no LLM; target user from text)") and match["dataset"].endswith(
        "target"
    )
    assert allmrec["companions"][0]["dataset"] == TINY_DATASET  # the backbone trained on the source
    no_user = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict={**props, "cross_domain_user": "none"})
    assert no_user["label"].endswith("; no user token: reads nothing trained)") and no_user["other_rankings"] == []
    assert no_user["test_result"] != allmrec["test_result"]
    tallrec = run_recbole_llm("TALLRec", TINY_DATASET, config_dict={**props, "stage2_objective": "index"})
    no_backbone = {k: v for k, v in props.items() if k != "cf_checkpoint"}  # as LLMOnly's properties have none
    llm_only = run_recbole_llm("LLMOnly", TINY_DATASET, config_dict=no_backbone)
    for result in (tallrec, llm_only):
        assert result["dataset"] == "tiny-synth -> tiny-target" and result["costs"]["test_users"] == 60
    assert trained_on and set(trained_on) == {TINY_DATASET}


def test_the_target_users_representation_comes_from_their_history_text(workdir, allmrec_config):
    """cross_domain_user text: the backbone's item table on the target is the stage-1 map of the target items'
    text (text-to-joint, then joint-to-item), with the padding row zero."""
    import torch

    target = _target_dataset(workdir)
    props = {**allmrec_config, "target_domain": target, "joint_embedding": "text", "cross_domain_source": TINY_DATASET}
    config, model_class = build_config(
        "ALLMRec", "tiny-target", config_dict={**props, "data_path": target["data_path"]}
    )
    _, train_data, _, _ = prepare_data(config)
    model = model_class(config, train_data._dataset)
    model.adopt_target_items()
    table = model.backbone.item_embeddings()
    with torch.no_grad():
        expected = model.joint_to_item(model.text_to_joint(model.text_table))
    assert torch.allclose(table[1:], expected[1:]) and not table[0].any()


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("SASRec", {}, "SASRec has no embedding for the items of target_domain 'tiny-target'"),
        ("MLPLLM", {}, "MLPLLM reads the CF backbone's item embeddings"),
        ("ALLMRec", {"joint_embedding": "cf"}, "set joint_embedding: text"),
        ("ALLMRec", {"target_domain": {"data_path": "x"}}, "target_domain has no dataset"),
        ("ALLMRec", {"target_domain": {"dataset": TINY_DATASET}}, "is the source"),
        ("ALLMRec", {"source_domain": {"dataset": "ml-100k"}}, "source_domain dataset 'ml-100k' is not the run's"),
    ],
)
def test_models_that_cannot_rank_the_target_stop_before_training(workdir, allmrec_config, model, extra, message):
    props = {**allmrec_config, **SMALL_SASREC, "target_domain": _target_dataset(workdir), "joint_embedding": "text"}
    with pytest.raises(ConfigValueError, match=message):
        run_recbole_llm(model, TINY_DATASET, config_dict={**props, **extra})
    assert not list(workdir.glob("saved/**/*.pth")) and not list(workdir.glob("saved/**/*.safetensors"))


def test_a_missing_target_dataset_stops_the_run_before_training(workdir, allmrec_config):
    props = {**allmrec_config, "joint_embedding": "text", "target_domain": {"dataset": "nowhere", "data_path": "x"}}
    with pytest.raises(PluginError, match="dataset 'nowhere': folder .* does not exist"):
        run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=props)
    assert not list(workdir.glob("saved/**/*.safetensors"))


@pytest.mark.parametrize(
    "counts, warned",
    [
        (
            [4] * 20,
            [
                "7 of the 20 items with 4 training interactions are put in the cold group by item id alone",
                "7 of the 20 items with 4 training interactions are put in the warm group by item id alone",
            ],
        ),
        (list(range(1, 21)), []),  # every count distinct: no tie at either cut
        ([1] * 7 + [2] * 6 + [3] * 7, []),  # ties, but none across a cut
    ],
)
def test_item_groups_warn_when_tied_counts_are_cut_by_id(monkeypatch, caplog, counts, warned):
    import recbole_llmplugin.evaluator.item_groups as groups_module

    monkeypatch.setattr(groups_module, "training_item_counts", lambda dataset: np.array([0] + counts))
    config = {"eval_item_groups": True, "warm_item_ratio": 0.35, "cold_item_ratio": 0.35}
    with caplog.at_level("WARNING"):
        groups = item_groups(config, SimpleNamespace(item_num=len(counts) + 1))
    assert len(groups["cold"]) == len(groups["warm"]) == 7
    messages = [record.getMessage() for record in caplog.records]
    assert [m.split(" (their")[0] for m in messages] == ["eval_item_groups: " + w for w in warned]


def _split_users(loader, uid):
    return set(loader._dataset.inter_feat[uid].tolist())


def test_few_shot_validation_holds_only_the_k_trained_users(workdir, tiny_config):
    props = {**tiny_config, **SMALL_SASREC, "few_shot_users": 20}
    config, _ = build_config("SASRec", TINY_DATASET, config_dict=props)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    uid = dataset.uid_field
    trained, valid, test = (_split_users(d, uid) for d in (train_data, valid_data, test_data))
    assert len(trained) == 20 and valid == trained  # early stopping reads the K users alone
    assert not test & trained and len(test) == len(_sequences()) - 20


@pytest.mark.parametrize("scenario", [{"few_shot_users": 20}, {"cold_users": 12}])
def test_an_eval_user_sample_beside_a_scenario_samples_valid_and_test_apart(workdir, tiny_config, scenario):
    """eval_user_sample (the few-shot profiles set it) samples the test users among the tested ones and the valid
    users among the trained ones: valid never holds a test user, whose data trains nothing."""
    props = {**tiny_config, **SMALL_SASREC, **scenario, "eval_user_sample": 8}
    config, _ = build_config("SASRec", TINY_DATASET, config_dict=props)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    uid = dataset.uid_field
    trained, valid, test = (_split_users(d, uid) for d in (train_data, valid_data, test_data))
    held = set(dataset.scenario_held_out.tolist())
    assert len(test) == 8 and test <= held  # the sample of the held-out (tested) users
    assert len(valid) == 8 and valid <= trained and not valid & held  # a sample of the trained users


def _cross_domain_props(workdir, allmrec_config):
    return {
        **allmrec_config,
        **SMALL_SASREC,
        "cf_checkpoint": "auto",
        "checkpoint_dir": str(workdir / "saved"),
        "target_domain": _target_dataset(workdir),
        "source_domain": {"eval_user_sample": 7},  # the source side's alone
        "joint_embedding": "text",
        "allmrec_token_space": "vocabulary",
        "item_vocabulary_offset": 100,
        "stage2_objective": "match",
        "eval_mode": "index",
        "prompt_template": "A user liked: {history}. Next one of: {candidates}? Answer:{user_token}",
    }


def test_a_cross_domain_run_scores_the_targets_own_items_and_its_source_result_is_a_plain_runs(
    workdir, monkeypatch, allmrec_config
):
    import torch

    import recbole_llmplugin.quick_start.cross_domain as cross_domain

    tested = []
    original = cross_domain.evaluate_weights

    def evaluate_weights(*args, **kwargs):
        tested.append(original(*args, **kwargs))
        return tested[-1]

    monkeypatch.setattr(cross_domain, "evaluate_weights", evaluate_weights)
    props = _cross_domain_props(workdir, allmrec_config)
    result = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=props)
    model = tested[0].model
    target_titles = (workdir / "data" / "tiny-target" / "tiny-target.item").read_text(encoding="utf-8").splitlines()
    titles = [line.split("\t")[1] for line in target_titles[1:]]
    for text in model.item_texts.texts[1:]:  # the target's titles (cut to the token budget) or its raw item tokens
        assert text.startswith("item x") or any(title.startswith(text.rstrip(" .")) for title in titles), text
    with torch.no_grad():  # the backbone reads the target's items through their text (adopt_target_items)
        items = torch.arange(model.n_items)
        expected = model.joint_to_item(model.text_to_joint(model.text_embeddings(items)))
    assert torch.allclose(model.backbone.item_embeddings()[1:], expected[1:], atol=1e-5)

    plain_props = {k: v for k, v in props.items() if k not in ("target_domain", "source_domain")}
    plain = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict={**plain_props, "eval_user_sample": 7})
    assert dict(result["source_result"]["test_result"]) == dict(plain["test_result"])
