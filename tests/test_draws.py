"""The random draws of a training batch are made in one place, ``LLMRecommender.draw``: a loss reads them
(``drawn``) and never draws for itself, so a batch split over processes or micro-batches trains what the whole batch
trains. Checked by computing each stage's loss twice on one drawn batch, under two different random states."""

import pytest
import torch
from recbole.utils import init_seed

from conftest import TINY_DATASET
from recbole_llmplugin.model.abstract_llm_recommender import DRAWN
from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
from recbole_llmplugin.model.stage import Stage

VOCABULARY = {
    "allmrec_token_space": "vocabulary",
    "prompt_template": "History: {history}. Candidates: {candidates}. Answer:{user_token}",
    "item_vocabulary_offset": 100,
}


def _model_and_batch(model_name, settings, stage):
    config, model_class = build_config(model_name, TINY_DATASET, config_dict=settings)
    init_seed(config["seed"], True)
    _, train_data, _, _ = prepare_data(config)
    model = model_class(config, train_data._dataset)
    model.set_stage(stage) if hasattr(model, "set_stage") else None
    loader = model.stage_train_loader(Stage(stage, 1, 1e-3, 6, "unused"), train_data)
    return model, next(iter(loader))


def _loss_under(model, stage, batch, seed):
    torch.manual_seed(seed)
    return model.total_loss(getattr(model, f"{stage}_loss")(batch)).detach()


CASES = [
    ("ALLMRec", {}, "stage1", {"negative"}),
    ("ALLMRec", {"stage2_objective": "generate"}, "stage2", {"candidates"}),
    ("ALLMRec", {"stage2_objective": "rank"}, "stage2", {"candidates"}),
    ("ALLMRec", {"stage2_objective": "index", "eval_mode": "index"}, "stage2", {"candidates"}),
    ("ALLMRec", {"stage2_objective": "match", "eval_mode": "index", **VOCABULARY}, "stage2", {"candidates"}),
    (
        "ALLMRec",
        {"stage2_match_weight": 0.5, "eval_mode": "index", "stage2_objective": "index"},
        "stage2",
        {"candidates"},
    ),
    ("MLPLLM", {"stage2_objective": "both"}, "stage2", {"candidates"}),
    ("TALLRec", {"stage2_objective": "generate"}, "stage2", {"candidates"}),
]


@pytest.mark.parametrize("model_name, overrides, stage, names", CASES)
def test_every_draw_of_a_loss_is_made_by_draw(workdir, allmrec_config, model_name, overrides, stage, names):
    model, batch = _model_and_batch(model_name, {**allmrec_config, **overrides}, stage)
    model.train()
    batch, _, _ = model.training_batch(stage, batch)
    assert {c[len(DRAWN) :] for c in batch.columns if c.startswith(DRAWN)} == names
    drawn = {name: batch[DRAWN + name].clone() for name in names}
    first, second = _loss_under(model, stage, batch, 1), _loss_under(model, stage, batch, 2)
    torch.testing.assert_close(first, second)  # no draw inside the loss
    for name in names:
        assert torch.equal(batch[DRAWN + name], drawn[name])  # the loss read the draws, it did not make new ones


def test_a_loss_that_draws_for_itself_is_caught(workdir, allmrec_config):
    """What the check above finds: an auxiliary loss that draws its own negatives gives another value under another
    random state."""
    model, batch = _model_and_batch("ALLMRec", {**allmrec_config, "stage2_match_weight": 0.5}, "stage2")

    def own_draw(interaction, target, candidates):
        return model.random_items((len(target), 2), candidates).float().mean()  # drawn here, not in draw()

    model.auxiliary_loss = own_draw
    batch, _, _ = model.training_batch("stage2", batch)
    assert not torch.equal(_loss_under(model, "stage2", batch, 1), _loss_under(model, "stage2", batch, 2))


def test_a_batch_that_skipped_training_batch_is_drawn_once(workdir, allmrec_config):
    """A loss called on a plain batch (a script, a test) has ``draw`` make the draws, once: a second call reads them."""
    model, batch = _model_and_batch("ALLMRec", allmrec_config, "stage1")
    first = _loss_under(model, "stage1", batch, 1)
    assert DRAWN + "negative" in batch
    torch.testing.assert_close(first, _loss_under(model, "stage1", batch, 2))


def test_a_draw_the_model_does_not_make_is_named(workdir, allmrec_config):
    model, batch = _model_and_batch("ALLMRec", allmrec_config, "stage1")
    with pytest.raises(KeyError, match=r"ALLMRec.draw\('stage1'\) makes no 'candidates'"):
        model.drawn("stage1", batch, "candidates")
