"""TALLRec (LoRA) and MLPLLM (CF embeddings straight into the LLM) with tiny models."""

import glob

import pytest
import torch

from conftest import TINY_DATASET, assert_measured
from recbole.utils import init_seed
from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
from recbole_llmplugin.utils.registry import get_model_class
from recbole_llmplugin.model.stage import Stage


def build(name, config_dict):
    config, model_class = build_config(name, TINY_DATASET, config_dict=config_dict)
    init_seed(config["seed"], True)
    _, train_data, _, _ = prepare_data(config)
    return model_class(config, train_data._dataset), train_data


def test_tallrec_trains_only_lora_parameters(workdir, tiny_config):
    model, train_data = build("TALLRec", {**tiny_config, "stage2_candidates": 5})
    model.set_stage("stage2")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = next(iter(model.stage_train_loader(Stage("stage2", 1, 1e-2, 4, "unused"), train_data)))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and changed <= trainable
    assert set(model.trainable_state_dict()) == {n for n, _ in model.named_parameters() if "lora_" in n}


def test_tallrec_runs_and_saves_a_peft_adapter(workdir, tiny_config):
    result = run_recbole_llm(
        "TALLRec",
        TINY_DATASET,
        config_dict={**tiny_config, "stage2_candidates": 5, "stage2_epochs": 1, "eval_candidates": "fixed"},
    )
    assert_measured(result, ("hit@1", "ndcg@5"))
    assert glob.glob("saved/tallrec/*-adapter/adapter_config.json")
    assert result["costs"]["trainable_parameters"] > 0


def test_mlpllm_projects_raw_cf_embeddings(workdir, allmrec_config):  # noqa: F811
    model, train_data = build("MLPLLM", allmrec_config)
    assert get_model_class("MLPLLM") is type(model)
    assert [s.name for s in model.training_stages()] == ["stage2"]
    assert not hasattr(model, "item_to_joint") and not hasattr(model, "sentence_encoder")  # no stage 1 at all
    assert model.item_projection[0].in_features == model.backbone.hidden_size
    assert set(k.split(".")[0] for k in model.trainable_state_dict()) == {"user_projection", "item_projection"}
    items = torch.tensor([1, 2, 3])
    with torch.no_grad():
        assert torch.equal(model.item_inputs(items), model.backbone.item_embeddings()[items])
    batch = next(iter(model.stage_train_loader(Stage("stage2", 1, 1e-3, 4, "unused"), train_data)))
    model.set_stage("stage2")
    loss = model.calculate_loss(batch)
    loss.backward()
    assert model.item_projection[0].weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("name", ["TALLRec", "MLPLLM"])
def test_baselines_have_property_files(name):
    from recbole_llmplugin.quick_start.quick_start import property_files

    assert any(f.endswith(f"model/{name}.yaml") for f in property_files(name, TINY_DATASET))
