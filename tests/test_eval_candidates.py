import numpy as np
import torch

from conftest import REPO, TINY_DATASET
from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
from recbole.utils import init_seed


def _test_candidates(model, tiny_config, **overrides):
    config, _ = build_config(model, TINY_DATASET, config_dict={**tiny_config, "eval_candidates": "fixed", **overrides})
    init_seed(config["seed"], config["reproducibility"])
    dataset, _, _, test_data = prepare_data(config)
    rows = {}
    for interaction, _, _, _ in test_data:
        users = dataset.id2token("user_id", interaction["user_id"].numpy())
        items = dataset.id2token("item_id", interaction["item_id"].numpy())
        for user, item in zip(users, items):
            rows.setdefault(user, []).append(item)
    return rows, _raw_histories()


def _raw_histories():
    """Each user's whole history read straight from the atomic file (not through RecBole)."""
    history = {}
    with open(REPO / "dataset" / TINY_DATASET / f"{TINY_DATASET}.inter", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user, item = line.split("\t")[:2]
            history.setdefault(user, set()).add(item)
    return history


def test_two_models_rank_identical_candidates(workdir, tiny_config):
    sasrec, history = _test_candidates("SASRec", tiny_config, seed=1)
    gru, _ = _test_candidates("GRU4Rec", tiny_config, seed=99)  # another model, another training seed
    llm_only, _ = _test_candidates("LLMOnly", tiny_config, seed=5)
    bpr, _ = _test_candidates("BPR", tiny_config, train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
    assert sasrec == gru == llm_only == bpr  # sequential and general models alike
    for user, items in sasrec.items():
        negatives = items[1:]
        assert len(negatives) == 9 and len(set(negatives)) == 9
        assert not set(negatives) & history[user]  # never from the user's whole history
    files = list((workdir / "saved" / "eval_candidates").glob("*.npz"))
    assert len(files) == 1


def test_candidates_follow_their_seed_and_file(workdir, tiny_config):
    first, _ = _test_candidates("SASRec", tiny_config)
    other, _ = _test_candidates("SASRec", tiny_config, eval_candidates_seed=7)
    assert first != other
    path = next((workdir / "saved" / "eval_candidates").glob("*seed2024*.npz"))
    stored = np.load(path)
    again, _ = _test_candidates("SASRec", tiny_config, eval_candidates_file=str(path))
    assert again == first and stored["test_item_tokens"].shape[1] == 9


def test_recbole_default_redraws(workdir, tiny_config):
    config, _ = build_config("SASRec", TINY_DATASET, config_dict={**tiny_config, "eval_candidates": "recbole"})
    _, _, _, test_data = prepare_data(config)
    passes = [torch.cat([i["item_id"] for i, _, _, _ in test_data]) for _ in range(2)]
    assert not torch.equal(passes[0], passes[1])


def test_eval_user_sample_is_shared(workdir, tiny_config):
    a, _ = _test_candidates("SASRec", tiny_config, eval_user_sample=10)
    b, _ = _test_candidates("LLMOnly", tiny_config, eval_user_sample=10)
    assert len(a) == 10 and a == b


def test_saved_loaders_are_reloaded_with_the_same_candidates(workdir, tiny_config, caplog):
    """``save_dataloaders: True`` saves the loaders (fixed candidates, user sample and all) with RecBole's own
    functions; the next run with the same properties reloads them and ranks the same candidates."""
    import logging

    caplog.set_level(logging.INFO)
    first, _ = _test_candidates("SASRec", tiny_config, save_dataloaders=True, eval_user_sample=5)
    assert list((workdir / "saved").glob(f"{TINY_DATASET}-for-SASRec-dataloader.pth"))
    assert "Load split dataloaders from" not in caplog.text
    again, _ = _test_candidates("SASRec", tiny_config, save_dataloaders=True, eval_user_sample=5)
    assert "Load split dataloaders from" in caplog.text
    assert again == first and len(first) == 5
