"""End-to-end runs with the real default LLM (SmolLM2-135M-Instruct from PyPI) on a slice of ml-100k."""

import pytest

from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.compare import comparison_table

pytestmark = pytest.mark.real_models


def test_llm_only_with_smollm2_on_ml100k_slice(workdir):
    config = {
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "uni19"},
        "eval_candidates": "fixed",
        "eval_user_sample": 3,
        "MAX_ITEM_LIST_LENGTH": 20,
        "metrics": ["Hit", "NDCG"],
        "topk": [1, 10],
        "valid_metric": "NDCG@10",
        "show_progress": False,
        "state": "WARNING",
    }
    result = run_recbole_llm("LLMOnly", "ml-100k", config_dict=config)
    assert result["costs"]["test_users"] == 3
    metrics = result["test_result"]
    assert 0.0 <= metrics["hit@1"] <= metrics["hit@10"] <= 1.0
    assert "LLMOnly" in comparison_table([result])
