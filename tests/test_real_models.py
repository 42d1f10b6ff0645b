"""End-to-end runs with the real default LLM (SmolLM2-135M-Instruct from PyPI), on ml-100k users and on the fixture.

Bounds come from n: a ranker at chance picks the positive among C candidates with p = 1 / C, so its hit@1 on n users
stays under p + 3 sqrt(p (1 - p) / n) with ~99.9 % probability."""

import math

import torch

import pytest

from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.quick_start.compare import comparison_table
from conftest import REPO

pytestmark = pytest.mark.real_models


def chance_bound(n, candidates=20, z=3.0):
    """hit@1 that a ranker at chance (1 of ``candidates``) stays under with ~99.9 % probability on n users."""
    p = 1.0 / candidates
    return p + z * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("weights", ["target", "uniform"])
def test_smollm2_copies_the_label_of_the_weighted_candidate(workdir, allmrec_config, weights):
    """Why ``allmrec_token_space: vocabulary`` carries the CF signal (docs/allmrec.md): with items shown as ordinary
    tokens, SmolLM2, frozen and untrained, answers the label of the candidate whose token the query mixture
    weights most (its induction heads copy what followed a repeated token). All weight on the target: the label
    is right far above chance (1 + 9 candidates); uniform weights: chance."""
    import torch

    from recbole.utils import init_seed
    from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec
    from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
    from recbole_llmplugin.model.stage import Stage
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
        assert hit1 <= chance_bound(len(target), candidates=10)


QUICK_PROFILE = str(REPO / "properties" / "benchmark" / "quick-ml100k.yaml")


def test_vocabulary_form_learns_on_ml100k_and_needs_the_cf_match(workdir):
    """The quick profile's A-LLMRec (vocabulary, match) with the real SmolLM2 on 100 ml-100k users (its SASRec
    backbone trained for 2 epochs, to fit CI time). LLMOnly, the frozen LLM reading titles alone, stays within 3 SE
    of chance: its text priors know nothing of these users, and the positive's place in RecBole's block (always
    first) does not leak. A-LLMRec, whose user token mixes the candidates' tokens by the trained CF match, ranks
    above chance and LLMOnly by more than 2 SE on the same users and candidates. Zero F_U (every candidate weighs
    the same) or permute F_I's inputs (each item read through another item's embedding): it falls back to chance."""
    from recbole_llmplugin import load_data_and_model
    from recbole_llmplugin.tools.learning_curve import metrics_from_ranks, rank_loader

    props = {"eval_user_sample": 100, "epochs": 2, "show_progress": False, "state": "WARNING"}
    llm_only = run_recbole_llm("LLMOnly", "ml-100k", [QUICK_PROFILE], props)
    result = run_recbole_llm("ALLMRec", "ml-100k", [QUICK_PROFILE], props)
    n = result["costs"]["test_users"]
    assert n == llm_only["costs"]["test_users"] == 100
    base, base_se = llm_only["test_result"]["hit@1"], llm_only["test_se"]["hit@1"]
    assert base_se == pytest.approx(math.sqrt(base * (1 - base) / (n - 1)), abs=1e-4)
    assert base <= chance_bound(n)
    hit, se = result["test_result"]["hit@1"], result["test_se"]["hit@1"]
    print("ALLMRec (vocabulary, match)", hit, se, "LLMOnly", base, base_se)
    assert hit > chance_bound(n)
    assert hit - base > 2 * math.hypot(se, base_se)
    table = comparison_table(result["companions"] + [result, llm_only] + result["other_rankings"])
    for label in ("SASRec (backbone)", "ALLMRec (vocabulary, match)", "LLMOnly (index ranking)"):
        assert f"| {label} " in table

    _, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    model.eval()
    joint = model.item_inputs
    permutation = torch.randperm(model.n_items, generator=torch.Generator().manual_seed(0))
    model.item_inputs = lambda items: joint(permutation.to(items.device)[items])
    permuted = metrics_from_ranks(rank_loader(model, test_data))
    model.item_inputs = joint
    with torch.no_grad():
        model.user_projection[-1].weight.zero_()
        model.user_projection[-1].bias.zero_()
    zeroed = metrics_from_ranks(rank_loader(model, test_data))
    print("F_I inputs permuted", permuted, "F_U zeroed", zeroed)
    for broken in (permuted, zeroed):
        assert broken["hit@1"] <= chance_bound(n)
        assert hit - broken["hit@1"] > 2 * math.hypot(se, broken["hit@1_se"])
