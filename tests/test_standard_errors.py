"""Standard errors of RecBole's top-k metrics: the evaluator keeps them beside RecBole's own means."""

import math

import numpy as np
import pytest
import torch
from recbole.evaluator.collector import DataStruct

from recbole_llmplugin.evaluator.standard_errors import StandardErrorEvaluator, standard_error


def _struct(ranks, max_k=5):
    """A DataStruct as RecBole's collector builds it: ``rec.topk`` [n, max_k + 1], whether each of the top max_k
    items is the positive, then the number of positives (1); ``ranks``: 0-based rank of each user's positive."""
    hits = torch.zeros(len(ranks), max_k + 1, dtype=torch.long)
    for row, rank in enumerate(ranks):
        if rank < max_k:
            hits[row, rank] = 1
    hits[:, -1] = 1
    struct = DataStruct()
    struct.set("rec.topk", hits)
    return struct


def test_standard_errors_are_those_of_the_per_user_values():
    ranks = np.random.default_rng(0).integers(0, 8, size=37)
    evaluator = StandardErrorEvaluator({"metrics": ["Hit", "NDCG", "MRR"], "topk": [1, 5], "metric_decimal_place": 4})
    result = evaluator.evaluate(_struct(ranks))
    for k in (1, 5):
        hit = (ranks < k).astype(float)
        ndcg = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
        mrr = np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0)
        assert result[f"hit@{k}"] == pytest.approx(hit.mean(), abs=1e-4)  # RecBole's own means, unchanged
        for name, values in (("hit", hit), ("ndcg", ndcg), ("mrr", mrr)):
            expected = values.std(ddof=1) / math.sqrt(len(values))
            assert evaluator.standard_errors[f"{name}@{k}"] == pytest.approx(expected, rel=1e-9)
    assert evaluator.users == 37
    p = (ranks < 1).mean()  # a hit rate's SE: sqrt(p (1 - p) / (n - 1))
    assert evaluator.standard_errors["hit@1"] == pytest.approx(math.sqrt(p * (1 - p) / 36), rel=1e-9)


def test_each_evaluation_replaces_the_last_ones_errors():
    evaluator = StandardErrorEvaluator({"metrics": ["Hit"], "topk": [1], "metric_decimal_place": 4})
    evaluator.evaluate(_struct([0, 1, 0, 3], max_k=1))
    evaluator.evaluate(_struct([0, 0, 0], max_k=1))
    assert evaluator.users == 3 and evaluator.standard_errors["hit@1"] == 0.0


def test_standard_error_of_one_user_is_not_a_number():
    assert math.isnan(standard_error([1.0]))


def test_each_score_row_is_named_by_its_user():
    """The user of each score row, as RecBole's collector receives it: one row per candidate block (sampled ranking,
    1 + N rows a user) or one row per user (full ranking); -1 where the batch cannot say."""
    from recbole.data.interaction import Interaction

    from recbole_llmplugin.evaluator.standard_errors import row_users

    sampled = Interaction({"user_id": torch.tensor([7, 7, 7, 3, 3, 3, 9, 9, 9])})
    assert row_users(3, sampled, "user_id").tolist() == [7, 3, 9]
    full = Interaction({"user_id": torch.tensor([5, 2, 8])})
    assert row_users(3, full, "user_id").tolist() == [5, 2, 8]
    assert row_users(2, full, "user_id").tolist() == [-1, -1]  # no layout that gives 2 rows
    assert row_users(2, Interaction({"item_id": torch.tensor([1, 2])}), "user_id").tolist() == [-1, -1]
