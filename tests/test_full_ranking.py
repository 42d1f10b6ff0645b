"""Full-catalogue ranking (``eval_args.mode: full``) for every LLM model: each re-ranks the same retrieved top-N per
user from a named CF retriever, whose own full-ranking row stands beside it; a target not retrieved is a miss, and
the retriever's recall@N is reported as the ceiling."""

import numpy as np
import pytest

from conftest import TINY_DATASET
from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.quick_start.compare import comparison_table
from recbole_llmplugin.utils.errors import ConfigValueError

FULL = {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"}
RETRIEVER = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1}


def full_config(tiny_config, **extra):
    return {
        **tiny_config,
        **RETRIEVER,
        "eval_args": FULL,
        "eval_mode": "index",
        "rerank_topk": 10,
        "topk": [1, 5, 10],
        "metrics": ["Hit", "NDCG"],
        "valid_metric": "NDCG@10",
        **extra,
    }


@pytest.mark.parametrize("name", ["LLMOnly", "TALLRec"])
def test_llm_models_rerank_the_retrievers_top_items(workdir, tiny_config, name):
    extra = {"stage2_objective": "index", "stage2_candidates": 5, "stage2_batch_size": 8} if name == "TALLRec" else {}
    result = run_recbole_llm(name, TINY_DATASET, config_dict=full_config(tiny_config, **extra))
    companion = result["companions"][0]
    assert companion["label"] == "SASRec (retriever)"
    recall = result["retriever_recall"]
    assert recall["retriever"] == "SASRec" and recall["at"] == 10
    users = result["costs"]["test_users"]
    assert recall["users"] == users == companion["costs"]["test_users"]
    # the retriever's own full-ranking row on the same users: its hit@K for K <= N is inside the recall ceiling
    assert set(companion["test_user_values"]["users"]) == set(result["test_user_values"]["users"])
    assert companion["test_result"]["hit@5"] <= recall["recall"] + 1e-9
    # the retriever's own top 10 is the retrieved list: the same recall
    assert companion["test_result"]["hit@10"] == pytest.approx(recall["recall"], abs=1e-4)
    # a re-ranked list holds the N = 10 retrieved items: hit@10 is the recall exactly
    assert result["test_result"]["hit@10"] == pytest.approx(recall["recall"], abs=1e-4)
    hits = np.array(result["test_user_values"]["hit@10"])
    assert recall["recall"] == pytest.approx(hits.mean(), abs=1e-9)
    assert 0 < recall["recall"] < 1  # some targets retrieved, some missed (a miss counts as one)
    table = comparison_table([companion, result])
    assert "recall@10" in table and "SASRec (retriever)" in table
    # each kept per-user value belongs to the user it names: whether that user's target is in the retriever's top 10
    retrieved = retrieved_targets(companion["saved_model_file"], full_config(tiny_config, **extra))
    kept = dict(zip(result["test_user_values"]["users"], result["test_user_values"]["hit@10"]))
    assert kept == {user: float(hit) for user, hit in retrieved.items()}


def retrieved_targets(checkpoint, props):
    """{raw user id: whether the retriever's top 10 holds the user's test target}, computed here from the checkpoint."""
    import torch

    from recbole_llmplugin.model.layers.cf_backbone import CFBackbone
    from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data

    config, _ = build_config("SASRec", TINY_DATASET, config_dict=props)
    _, _, _, test_data = prepare_data(config)
    dataset = test_data._dataset
    retriever = CFBackbone(checkpoint, dataset)
    found = {}
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            scores = retriever.full_sort_scores(interaction["item_id_list"], interaction["item_length"])
            scores[:, 0] = -torch.inf
            hit = (scores.topk(10, dim=1).indices == interaction["item_id"][:, None]).any(1)
            for user, value in zip(interaction["user_id"].tolist(), hit.tolist()):
                found[str(dataset.id2token(dataset.uid_field, user))] = value
    return found


def test_allmrec_reranks_its_own_backbone_without_a_second_retriever(workdir, allmrec_config):
    props = full_config(allmrec_config, eval_mode="score", eval_candidates="recbole")
    result = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=props)
    assert result["companions"] == []  # a given backbone checkpoint: no retriever trained
    assert result["retriever_recall"]["retriever"] == "SASRec"
    assert result["test_result"]["hit@10"] == pytest.approx(result["retriever_recall"]["recall"], abs=1e-4)


def test_a_retriever_that_is_not_sequential_stops_before_training(workdir, tiny_config):
    with pytest.raises(ConfigValueError, match="rerank_retriever: 'Pop'"):
        run_recbole_llm("LLMOnly", TINY_DATASET, config_dict=full_config(tiny_config, rerank_retriever="Pop"))


def test_a_cutoff_beyond_the_retrieved_items_is_refused(workdir, tiny_config):
    """A top-20 list of a model that ranks 10 retrieved items would be filled by ties among the rest, where a
    target that was never retrieved could count as a hit."""
    with pytest.raises(ConfigValueError, match="rerank_topk >= 20"):
        run_recbole_llm("LLMOnly", TINY_DATASET, config_dict=full_config(tiny_config, topk=[1, 10, 20]))
