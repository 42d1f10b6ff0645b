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


@pytest.mark.parametrize("weights", ["target", "uniform"])
def test_smollm2_copies_the_label_of_the_weighted_candidate(workdir, allmrec_config, weights):
    """Why ``allmrec_token_space: vocabulary`` carries the CF signal (README): with items shown as ordinary
    tokens, SmolLM2, frozen and untrained, answers the label of the candidate whose token the query mixture
    weights most (its induction heads copy what followed a repeated token). All weight on the target: the label
    is right far above chance (1 + 9 candidates); uniform weights: chance."""
    import torch

    from recbole.utils import init_seed
    from recbole_llmplugin.models.allmrec import ALLMRec
    from recbole_llmplugin.quick_start import build_config, prepare_data
    from recbole_llmplugin.trainer import Stage
    from conftest import TINY_DATASET

    overrides = {
        "llm_path": "smollm2-135m",
        "projection_hidden_size": None,
        "eval_mode": "index",
        "stage2_objective": "index",
        "allmrec_token_space": "vocabulary",
        "prompt_template": "A user watched: {history}. Which one will the user watch next: {candidates}? Answer:{user_token}",
        "stage2_candidates": 10,
        "prompt_history_len": 3,
    }
    config, _ = build_config("ALLMRec", TINY_DATASET, config_dict={**allmrec_config, **overrides})
    init_seed(config["seed"], True)
    _, train_data, _, _ = prepare_data(config)
    model = ALLMRec(config, train_data._dataset)
    model.eval()
    batch = next(iter(model.stage_train_loader(Stage("stage2", 1, 1e-3, 40, "unused"), train_data)))
    choose = {
        "target": lambda users, c: (torch.as_tensor(c) == batch[model.ITEM_ID][:, None]).float(),
        "uniform": lambda users, c: torch.full(torch.as_tensor(c).shape, 1.0 / len(c[0])),
    }[weights]
    model.candidate_weights = choose
    with torch.no_grad():
        torch.manual_seed(0)
        target, candidates, prompt, mask = model.training_prompts(batch)
        logits = model.scorer.label_logits(prompt, mask, model.label_ids[:10])  # [B, 10]
    hit1 = float((logits.argmax(1) == (candidates == target[:, None]).float().argmax(1)).float().mean())
    print(weights, "hit@1", hit1, "users", len(target))
    if weights == "target":
        assert hit1 >= 0.6
    else:
        assert hit1 <= 0.35
