from conftest import REPO, TINY_DATASET
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.data.item_text import ItemTextStore, read_item_file
from recbole_llmplugin.model.layers.llm_loading import load_tokenizer
from recbole_llmplugin.quick_start.quick_start import build_config
from recbole.data import create_dataset


def _dataset(tiny_config, **overrides):
    config, _ = build_config("LLMOnly", TINY_DATASET, config_dict={**tiny_config, **overrides})
    with recbole_warnings_quiet():  # RecBole's Dataset._fill_nan (docs/compat.md)
        return config, create_dataset(config)


def test_titles_round_trip_exactly_including_non_ascii(workdir, tiny_config):
    config, dataset = _dataset(tiny_config, item_text_max_tokens=None)
    store = ItemTextStore(config, dataset)
    _, _, rows = read_item_file(REPO / "dataset" / TINY_DATASET / f"{TINY_DATASET}.item")
    raw = {row["item_id"]: row["title"] for row in rows}
    checked = 0
    for item_id in range(1, dataset.item_num):
        token = dataset.id2token("item_id", item_id)
        if raw[token]:
            assert store[item_id] == raw[token]
            checked += 1
    assert checked >= 30
    assert any(not text.isascii() for text in store.texts)


def test_missing_text_uses_placeholder_and_is_counted(workdir, tiny_config):
    config, dataset = _dataset(tiny_config, item_text_placeholder="unknown #{item_id}")
    store = ItemTextStore(config, dataset)
    assert store.missing == 1
    assert store[dataset.token2id("item_id", "7")] == "unknown #7"


def test_template_and_token_budget(workdir, tiny_config):
    config, dataset = _dataset(tiny_config, item_text_template="{title} ({year})", item_text_max_tokens=6)
    tokenizer = load_tokenizer(tiny_config["llm_path"])
    store = ItemTextStore(config, dataset, tokenizer)
    long_item = dataset.token2id("item_id", "8")
    assert store.truncated >= 1
    assert len(tokenizer(store[long_item], add_special_tokens=False)["input_ids"]) <= 6
    config, dataset = _dataset(tiny_config, item_text_template="{title} ({year})", item_text_max_tokens=None)
    assert ItemTextStore(config, dataset)[dataset.token2id("item_id", "3")] == "Star Café 3 (1993)"
