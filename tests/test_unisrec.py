"""UniSRec on a synthetic set where the item text alone determines the next item: each item's title names its
category, and a user's next item is always of the following category. Every test target is a cold item, named by
no training interaction. Inductive UniSRec, trained through RecBole's trainer, must rank those cold targets well
above chance through their text; with its text embeddings zeroed it must fall to chance."""

import math
import random

import pytest
import torch

from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.quick_start.quick_start import build_config
from recbole_llmplugin.quick_start.runner import evaluate_weights
from recbole_llmplugin.utils.errors import ConfigValueError

NAME = "text-chain"
CATEGORIES = ["Star", "Café", "Noir", "Night", "River", "Blue"]
WARM, COLD, USERS, LENGTH = 12, 3, 240, 7
CHANCE = 0.1  # 1 positive + 9 negatives


def write_text_chain(folder, seed=0, name=NAME, first_title=0, first_item=1):
    """Atomic files of the set; returns {cold item ids}. ``first_title`` / ``first_item``: where the titles' numbers
    and the raw item ids start (another domain: other items, the same categories)."""
    rng = random.Random(seed)
    items, cold = {}, {}
    for c, word in enumerate(CATEGORIES):
        for k in range(WARM + COLD):
            item = len(items) + first_item
            items[item] = (c, f"{word} {word} {word} {k + first_title}")
            if k >= WARM:
                cold.setdefault(c, []).append(item)
    warm = {c: [i for i, (cat, _) in items.items() if cat == c and i not in cold[c]] for c in range(len(CATEGORIES))}
    rows = []
    for user in range(1, USERS + 1):
        category = rng.randrange(len(CATEGORIES))
        for step in range(LENGTH):
            pool = cold[category] if step == LENGTH - 1 else warm[category]
            rows.append((user, rng.choice(pool), step + 1))
            category = (category + 1) % len(CATEGORIES)
    data = folder / name
    data.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in rows]
    (data / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = ["item_id:token\ttitle:token_seq"] + [f"{i}\t{title}" for i, (_, title) in items.items()]
    (data / f"{name}.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {str(i) for ids in cold.values() for i in ids}


@pytest.fixture(scope="module")
def text_chain(tmp_path_factory, tiny_llm, tiny_encoder):
    root = tmp_path_factory.mktemp("text_chain")
    cold = write_text_chain(root / "data")
    props = {
        "data_path": str(root / "data"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "llm_path": tiny_llm,
        "text_encoder": tiny_encoder,
        "item_text_template": "{title}",
        "item_text_max_tokens": None,
        "MAX_ITEM_LIST_LENGTH": 10,
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "uni9"},
        "eval_candidates": "fixed",
        "metrics": ["Hit", "NDCG"],
        "topk": [1, 5],
        "valid_metric": "NDCG@5",
        "hidden_size": 32,
        "inner_size": 64,
        "n_layers": 1,
        "n_heads": 2,
        "hidden_dropout_prob": 0.1,
        "attn_dropout_prob": 0.1,
        "unisrec_adaptor_dropout": 0.1,
        "learning_rate": 0.005,
        "train_batch_size": 256,
        "epochs": 40,
        "stopping_step": 40,
        "show_progress": False,
        "state": "WARNING",
        "reproducibility": True,
        "checkpoint_dir": str(root / "saved"),
    }
    return props, cold, root


def _hit1_bound(hit1, users):
    """Two standard errors of a hit@1 estimate on ``users`` users."""
    return 2 * math.sqrt(max(hit1 * (1 - hit1), CHANCE * (1 - CHANCE)) / users)


def test_inductive_unisrec_learns_from_text_and_ranks_cold_items(text_chain, monkeypatch):
    props, cold, root = text_chain
    monkeypatch.chdir(root)
    result = run_recbole_llm("UniSRec", NAME, config_dict=props)
    assert result["label"] == "UniSRec (inductive, no pre-training)"
    users = result["costs"]["test_users"]
    assert users == USERS
    assert set(result["test_user_values"]["users"]) == {str(u) for u in range(1, USERS + 1)}
    hit1, hit5 = result["test_result"]["hit@1"], result["test_result"]["hit@5"]
    # every test target is cold: only its text can place it (chance: hit@1 0.1, hit@5 0.5; a model that knows the
    # category alone, with about 1.5 of the 9 negatives in it, reaches hit@1 about 0.4 and hit@5 about 1)
    assert hit1 >= CHANCE + 2 * _hit1_bound(hit1, users), result["test_result"]
    assert hit5 >= 0.5 + 0.3, result["test_result"]

    config, model_class = build_config("UniSRec", NAME, config_dict=props)

    def zero_text(model):
        model.text_table.zero_()

    ablated = evaluate_weights(config, model_class, result["saved_model_file"], ready=zero_text).test_result
    assert ablated["hit@1"] <= CHANCE + _hit1_bound(CHANCE, users), ablated
    assert ablated["hit@5"] <= 0.5 + 2 * math.sqrt(0.25 / users), ablated
    kept = evaluate_weights(config, model_class, result["saved_model_file"]).test_result
    assert kept["hit@1"] == pytest.approx(hit1, abs=1e-4)  # the checkpoint holds what was tested


def test_unisrec_state_names_no_catalogue_in_inductive_mode(text_chain):
    props, _, _ = text_chain
    config, model_class = build_config("UniSRec", NAME, config_dict=props)
    from recbole_llmplugin.quick_start.quick_start import prepare_data

    _, train_data, _, _ = prepare_data(config)
    inductive = model_class(config, train_data._dataset)
    assert not any(k.startswith("item_embedding") for k in inductive.state_dict())
    assert "text_table" not in inductive.state_dict()  # the frozen table is rebuilt from text, never saved
    config, _ = build_config("UniSRec", NAME, config_dict={**props, "unisrec_mode": "transductive"})
    transductive = model_class(config, train_data._dataset)
    assert transductive.state_dict()["item_embedding.weight"].shape[0] == train_data._dataset.item_num
    assert model_class.variant(config) == "transductive, no pre-training"
    assert model_class.cross_domain_problem(config)


def test_unisrec_pretrained_checkpoint_initialises_adaptor_and_encoder(text_chain, tmp_path):
    props, _, root = text_chain
    config, model_class = build_config("UniSRec", NAME, config_dict=props)
    from recbole_llmplugin.quick_start.quick_start import prepare_data

    _, train_data, _, _ = prepare_data(config)
    source = model_class(config, train_data._dataset)
    with torch.no_grad():
        source.adaptor.bias.fill_(0.5)
    path = tmp_path / "source.pth"
    torch.save({"config": None, "state_dict": source.state_dict()}, path)
    config, _ = build_config("UniSRec", NAME, config_dict={**props, "unisrec_pretrained": str(path)})
    loaded = model_class(config, train_data._dataset)
    assert torch.equal(loaded.adaptor.bias, source.adaptor.bias)
    assert model_class.variant(config) == "inductive, pre-trained"
    with pytest.raises(ConfigValueError, match="unisrec_pretrained"):
        build_config("UniSRec", NAME, config_dict={**props, "unisrec_pretrained": str(tmp_path / "missing.pth")})
        model_class(*_built(props, tmp_path, train_data))


def _built(props, tmp_path, train_data):
    config, _ = build_config("UniSRec", NAME, config_dict={**props, "unisrec_pretrained": str(tmp_path / "x.pth")})
    return config, train_data._dataset


def test_inductive_unisrec_ranks_a_new_domain_zero_shot(text_chain, monkeypatch):
    """Trained on text-chain, tested on another set of items (other ids, other titles, the same categories): the
    target's items reach it through their text alone."""
    props, _, root = text_chain
    monkeypatch.chdir(root)
    write_text_chain(root / "data", seed=1, name="text-chain-new", first_title=50, first_item=1000)
    target = {"dataset": "text-chain-new", "data_path": str(root / "data")}
    result = run_recbole_llm("UniSRec", NAME, config_dict={**props, "target_domain": target})
    assert result["dataset"] == f"{NAME} -> text-chain-new"
    assert result["label"] == "UniSRec (inductive, no pre-training)"
    assert set(result["test_user_values"]["users"]) == {str(u) for u in range(1, USERS + 1)}
    hit5 = result["test_result"]["hit@5"]
    assert hit5 >= 0.5 + 0.3, result["test_result"]  # chance 0.5
    with pytest.raises(ConfigValueError, match="unisrec_mode: inductive"):
        run_recbole_llm("UniSRec", NAME, config_dict={**props, "target_domain": target, "unisrec_mode": "transductive"})
