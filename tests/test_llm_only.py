import torch

from conftest import TINY_DATASET, assert_measured
from recbole_llmplugin import load_data_and_model, run_recbole_llm
from recbole_llmplugin.model.layers.candidate_ranking import user_blocks
from recbole_llmplugin.trainer.trainer import LLMTrainer


def test_llm_only_runs_through_the_runner_and_reloads(workdir, tiny_config):
    result = run_recbole_llm("LLMOnly", TINY_DATASET, config_dict={**tiny_config, "eval_candidates": "fixed"})
    metrics = result["test_result"]
    assert set(metrics) >= {"hit@1", "hit@5", "ndcg@5", "mrr@5"}
    assert_measured(result, ("hit@1", "hit@5", "ndcg@5", "mrr@5"))
    per_user = result["test_user_values"]
    assert all(h1 <= h5 for h1, h5 in zip(per_user["hit@1"], per_user["hit@5"]))  # a top-1 hit is a top-5 hit
    assert result["costs"]["trainable_parameters"] == 0

    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    assert type(model).__name__ == "LLMOnly"
    again = LLMTrainer(config, model).evaluate(test_data, load_best_model=False)
    assert dict(again) == dict(metrics)  # same candidates, deterministic scorer


def test_scores_do_not_depend_on_block_position(workdir, tiny_config):
    from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
    from recbole_llmplugin.model.llm_recommender.llm_only import LLMOnly

    config, _ = build_config("LLMOnly", TINY_DATASET, config_dict={**tiny_config, "eval_candidates": "fixed"})
    _, train_data, _, test_data = prepare_data(config)
    model = LLMOnly(config, train_data._dataset)
    interaction = next(iter(test_data))[0]
    block, _ = user_blocks(interaction["user_id"])
    scores = model.predict(interaction)
    # reverse the order of users and shuffle rows inside each block
    order = torch.cat([torch.nonzero(block == b).flatten().flip(0) for b in reversed(range(int(block.max()) + 1))])
    permuted = model.predict(interaction[order])
    torch.testing.assert_close(permuted, scores[order], atol=1e-5, rtol=1e-5)
    assert not torch.equal(scores[block == 0], scores[block == 0][0].expand(int((block == 0).sum())))


def test_int8_evaluation_copy(workdir, tiny_config):
    """llm_eval_quantization: int8 scores with a quantised copy (Linear layers int8), close to float32, and leaves
    the model's own LLM untouched."""
    from recbole_llmplugin.model.llm_recommender.llm_only import LLMOnly
    from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data

    config, _ = build_config("LLMOnly", TINY_DATASET, config_dict={**tiny_config, "eval_candidates": "fixed"})
    _, train_data, _, test_data = prepare_data(config)
    model = LLMOnly(config, train_data._dataset)
    interaction = next(iter(test_data))[0]
    full = model.predict(interaction)
    model.eval_quantization = "int8"
    quantised = model.predict(interaction)
    assert model._eval_llm is not model.llm and model.scorer.llm is model.llm
    int8 = [m for m in model._eval_llm.modules() if "quantized" in type(m).__module__ and "Linear" in type(m).__name__]
    own = [m for m in model.llm.modules() if isinstance(m, torch.nn.Linear)]
    assert int8 and own and all(m.weight.dtype == torch.float32 for m in own)  # the model's LLM stays float
    assert not torch.equal(full, quantised)
    assert torch.corrcoef(torch.stack([full, quantised]))[0, 1] > 0.9
