import glob
import os

import pytest
import torch

from conftest import BACKBONE_PROPS, TINY_DATASET, assert_measured, train_backbone
from recbole.utils import init_seed
from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.model.layers.cf_backbone import CFBackbone
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.model.cf_token_recommender import CANDIDATE_TOKEN, HISTORY_TOKEN, USER_TOKEN
from recbole_llmplugin.model.llm_recommender.allmrec import ALLMRec
from recbole_llmplugin.model.layers.candidate_ranking import stop_token_ids, user_blocks
from recbole_llmplugin.model.layers.prompt_encoder import prompt_order
from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data


def build(allmrec_config, **overrides):
    config, _ = build_config("ALLMRec", TINY_DATASET, config_dict={**allmrec_config, **overrides})
    init_seed(config["seed"], True)
    _, train_data, valid_data, test_data = prepare_data(config)
    model = ALLMRec(config, train_data._dataset)
    return model, train_data, test_data


def _batch(model, train_data, stage, n=8):
    from recbole_llmplugin.model.stage import Stage

    loader = model.stage_train_loader(Stage(stage, 1, 1e-3, n, "unused"), train_data)
    return next(iter(loader))


def _fit_fixed_batch(model, loss_fn, steps):
    """Adam on the parameters that require grad, same batch and same negatives every step."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        torch.manual_seed(0)
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.manual_seed(0)


def _frozen_state(model):
    return {
        k: v.clone()
        for k, v in list(model.llm.state_dict().items())
        + [("bb." + k, v) for k, v in model.backbone.state_dict().items()]
    }


@pytest.mark.parametrize("architecture", ["paper", "official"])
def test_each_stage1_loss_decreases_and_frozen_parts_stay(workdir, allmrec_config, architecture):
    model, train_data, _ = build(allmrec_config, allmrec_architecture=architecture)
    batch = _batch(model, train_data, "stage1")
    model.set_stage("stage1")
    frozen = _frozen_state(model)
    stage2_before = {k: v.clone() for k, v in model.user_projection.state_dict().items()}
    torch.manual_seed(0)
    first = {k: float(v.detach()) for k, v in model.stage1_losses(batch).items()}
    _fit_fixed_batch(model, lambda: sum(model.stage1_losses(batch).values()), 60)
    last = {k: float(v.detach()) for k, v in model.stage1_losses(batch).items()}
    # official: both Sigmoid encoders start near 0.5 everywhere, so matching starts near 0 and is traded for
    # the other terms; their weighted sum must fall
    assert sum(last.values()) < sum(first.values())
    for name in first:
        if not (architecture == "official" and name == "matching"):
            assert last[name] < first[name], name
    after = _frozen_state(model)
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert all(torch.equal(stage2_before[k], v) for k, v in model.user_projection.state_dict().items())


def test_stage2_loss_decreases_and_only_projections_change(workdir, allmrec_config):
    model, train_data, _ = build(allmrec_config)
    batch = _batch(model, train_data, "stage2", n=4)
    model.set_stage("stage2")
    frozen = _frozen_state(model)
    stage1 = {k: v.clone() for k, v in model.item_to_joint.state_dict().items()}
    torch.manual_seed(0)
    first = float(model.stage2_loss(batch).detach())
    _fit_fixed_batch(model, lambda: model.stage2_loss(batch), 15)
    assert float(model.stage2_loss(batch).detach()) < first
    after = _frozen_state(model)
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert all(torch.equal(stage1[k], v) for k, v in model.item_to_joint.state_dict().items())


@pytest.mark.parametrize("all_positions", [False, True])
def test_stage_examples_are_each_users_last_position(workdir, allmrec_config, all_positions):
    from recbole_llmplugin.model.stage import Stage

    model, train_data, _ = build(allmrec_config, MAX_ITEM_LIST_LENGTH=5, stage1_all_positions=all_positions)
    loader = model.stage_train_loader(Stage("stage1", 1, 1e-3, 8, "unused"), train_data)
    users = loader.dataset.inter_feat["user_id"]
    full = train_data._dataset.inter_feat
    if all_positions:
        assert len(users) == len(full)
        return
    assert len(users) == len(users.unique()) == len(full["user_id"].unique())
    # the kept row is the user's latest target: no other row of that user has a later timestamp
    kept = loader.dataset.inter_feat
    for u, t in zip(kept["user_id"].tolist(), kept["timestamp"].tolist()):
        assert t == float(full["timestamp"][full["user_id"] == u].max())


def test_soft_tokens_replace_exactly_their_positions(workdir, allmrec_config):
    model, train_data, _ = build(allmrec_config)
    batch = _batch(model, train_data, "stage2", n=3)
    users = model.user_fields(batch, torch.arange(3))
    histories = model.prompts.recent_history(users["item_seq"], users["item_seq_len"])
    candidates = model.training_candidates(users["item_seq"], batch["item_id"]).tolist()
    ids, _ = model.tokenize_prompts(model.prompt_texts(histories, candidates))
    with torch.no_grad():
        embeds = model.prompt_embeddings(ids, users, histories, candidates)
        plain = model.llm.get_input_embeddings()(ids)
        special = torch.zeros_like(ids, dtype=torch.bool)
        for token in (USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN):
            special |= ids == model.token_ids[token]
        assert torch.equal(embeds[~special], plain[~special])
        assert (ids == model.token_ids[USER_TOKEN]).sum(1).tolist() == [1, 1, 1]
        user_vectors = model.user_projection(model.user_representation(users))
        assert torch.allclose(embeds[ids == model.token_ids[USER_TOKEN]], user_vectors)
        hist_items = torch.tensor([i for h in histories for i in h])
        expected = model.item_projection(model.item_to_joint(model.backbone.item_embeddings()[hist_items]))
        assert torch.allclose(embeds[ids == model.token_ids[HISTORY_TOKEN]], expected, atol=1e-6)


def test_scores_do_not_depend_on_block_position(workdir, allmrec_config):
    model, _, test_data = build(allmrec_config)
    model.eval()
    interaction = next(iter(test_data))[0]
    block, _ = user_blocks(interaction["user_id"])
    scores = model.predict(interaction)
    order = torch.cat([torch.nonzero(block == b).flatten().flip(0) for b in reversed(range(int(block.max()) + 1))])
    torch.testing.assert_close(model.predict(interaction[order]), scores[order], atol=1e-5, rtol=1e-5)


def _one_row_per_user(test_data, users=12):
    """The first ``users`` users of a sampled-evaluation loader, one row each (as full-sort evaluation gives them)."""
    interaction = next(iter(test_data))[0]
    _, first_rows = user_blocks(interaction["user_id"])
    assert len(first_rows) >= users
    return interaction[first_rows[:users]]


def test_full_sort_reranks_backbone_top_k(workdir, allmrec_config):
    """Each of 12 users gets finite scores on exactly the backbone's top rerank_topk items, as RecBole ranks them for
    the backbone's own full-ranking row (for sequential models it masks padding alone, no history item)."""
    model, _, test_data = build(allmrec_config, rerank_topk=4, eval_batch_size=200)
    interaction = _one_row_per_user(test_data)
    scores = model.full_sort_predict(interaction)
    finite = torch.isfinite(scores)
    assert finite.sum(1).tolist() == [4] * len(interaction)
    cf = model.backbone.full_sort_scores(
        interaction["item_id_list"], interaction["item_length"], interaction["user_id"]
    )
    cf[:, 0] = -torch.inf
    for user in range(len(interaction)):
        assert set(finite[user].nonzero().flatten().tolist()) == set(cf[user].topk(4).indices.tolist())


def test_full_sort_index_mode_labels_every_reranked_item(workdir, allmrec_config):
    """eval_mode index in full-sort re-ranking lists rerank_topk candidates: each needs its own label, more than
    the training prompts' 5."""
    full = {**allmrec_config["eval_args"], "mode": "full"}
    model, _, test_data = build(
        allmrec_config,
        rerank_topk=12,
        eval_mode="index",
        stage2_objective="index",
        eval_args=full,
        eval_batch_size=10**5,
    )
    assert len(model.label_ids) == 12
    interaction = next(iter(test_data))[0][:12]  # full-sort loader: one row per user
    assert len(set(interaction["user_id"].tolist())) == 12
    scores = model.full_sort_predict(interaction)
    assert torch.isfinite(scores).sum(1).tolist() == [12] * len(interaction)


def test_reused_stage1_gives_the_same_metrics(workdir, allmrec_config):
    first = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=allmrec_config)
    stage1 = glob.glob("saved/allmrec/*stage1*.safetensors")
    stage2 = glob.glob("saved/allmrec/*stage2*")
    assert len(stage1) == 1 and stage2
    for path in stage2:
        os.remove(path)  # stage 2 must retrain, stage 1 is reused
    second = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=allmrec_config)
    assert dict(second["test_result"]) == dict(first["test_result"])
    assert "stage1_seconds" in first["costs"] and second["costs"]["stage1_seconds"] < first["costs"]["stage1_seconds"]
    assert os.path.getsize(first["saved_model_file"]) < 2_000_000  # no LLM, no backbone


def test_cf_checkpoint_auto_trains_then_reuses_backbone(workdir, allmrec_config):
    config = {**allmrec_config, "cf_checkpoint": "auto", **BACKBONE_PROPS}
    first = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=config)
    assert first["companions"][0]["model"] == "SASRec (backbone)"
    assert len(glob.glob("saved/cf_backbones/*.pth")) == 1
    second = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=config)
    assert second["companions"][0]["test_result"] == pytest.approx(dict(first["companions"][0]["test_result"]))
    assert len(glob.glob("saved/cf_backbones/*.pth")) == 1
    # other stage-2 properties: the same backbone, reused and re-evaluated on this run's users and candidates
    third = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict={**config, "stage2_learning_rate": 0.01})
    assert third["companions"][0]["test_result"] == pytest.approx(dict(first["companions"][0]["test_result"]))
    assert len(glob.glob("saved/cf_backbones/*.pth")) == 1
    # other evaluation users: they early-stop the backbone too, so another one is trained and evaluated on them
    fourth = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict={**config, "eval_user_sample": 7})
    assert fourth["companions"][0]["costs"]["test_users"] == 7 == fourth["costs"]["test_users"]
    assert len(glob.glob("saved/cf_backbones/*.pth")) == 2


def test_backbone_identity_follows_what_trains_and_early_stops_it(workdir, tiny_config):
    """An auto backbone is reused only under the same training: a RecBole key changes its identity even when a
    plugin property file sets it too (epochs: LLMOnly.yaml), and so do the plugin keys that choose the users and
    candidates that validate it; keys only plugin models read do not."""
    from recbole_llmplugin.quick_start.backbones import backbone_identity
    from recbole_llmplugin.utils.files import digest

    def key(**overrides):
        config, _ = build_config("SASRec", TINY_DATASET, config_dict={**tiny_config, **BACKBONE_PROPS, **overrides})
        return digest(backbone_identity(config))

    plain = key()
    assert key(stage2_epochs=4) == plain and key(prompt_history_len=3) == plain and key(llm_path="elsewhere") == plain
    changed = ({"epochs": 3}, {"eval_user_sample": 7}, {"eval_candidates_seed": 5}, {"learning_rate": 0.01})
    scenarios = ({"cold_users": 5}, {"few_shot_users": 9}, {"cold_users": 5, "cold_user_len": 4})
    for overrides in changed + scenarios:  # the scenario keys choose the users that train it
        assert key(**overrides) != plain, overrides
    assert key(cold_users=5, scenario_seed=1) != key(cold_users=5)
    assert key(eval_item_groups=True) == plain  # groups read the test only


def test_a_recbole_run_is_the_backbone_of_its_properties(workdir, allmrec_config):
    """A SASRec run (a benchmark's SASRec row) is kept as the backbone of the same properties: an A-LLMRec run after
    it with cf_checkpoint auto reuses it, bytes and training costs, and trains no SASRec of its own."""
    config = {**allmrec_config, "cf_checkpoint": "auto", **BACKBONE_PROPS}
    sasrec = run_recbole_llm("SASRec", TINY_DATASET, config_dict=config)
    kept = glob.glob("saved/cf_backbones/*.pth")
    assert len(kept) == 1
    with open(kept[0], "rb") as mine, open(sasrec["saved_model_file"], "rb") as its:
        assert mine.read() == its.read()
    allmrec = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict=config)
    backbone = allmrec["companions"][0]
    assert backbone["saved_model_file"] == kept[0] and len(glob.glob("saved/cf_backbones/*.pth")) == 1
    assert backbone["costs"]["fit_seconds"] == pytest.approx(sasrec["costs"]["fit_seconds"])
    assert backbone["test_result"] == pytest.approx(dict(sasrec["test_result"]))
    other = run_recbole_llm("SASRec", TINY_DATASET, config_dict={**config, "epochs": 2})  # other properties: kept too
    assert len(glob.glob("saved/cf_backbones/*.pth")) == 2 and other["saved_model_file"] not in kept


@pytest.mark.parametrize("family", ["GRU4Rec", "NextItNet", "BERT4Rec", "Caser"])
def test_backbone_families(workdir, tiny_config, family):
    path = train_backbone(tiny_config, workdir, family)
    config, _ = build_config("SASRec", TINY_DATASET, config_dict={**tiny_config, **BACKBONE_PROPS})
    _, train_data, _, _ = prepare_data(config)
    backbone = CFBackbone(path, train_data._dataset)
    batch = next(iter(train_data))
    rep = backbone.user_representation(batch["item_id_list"], batch["item_length"], batch["user_id"])
    assert rep.shape == (len(batch), backbone.hidden_size)
    assert backbone.item_embeddings().shape[0] == train_data._dataset.item_num
    assert not any(p.requires_grad for p in backbone.parameters())


def test_checkpoint_from_other_data_is_refused(workdir, tiny_config, backbone):
    config, _ = build_config("SASRec", "ml-100k", config_dict={"train_neg_sample_args": None, "state": "WARNING"})
    from recbole.data import create_dataset

    with recbole_warnings_quiet():  # RecBole's Dataset._fill_nan (docs/compat.md)
        dataset = create_dataset(config)
    with pytest.raises(ConfigValueError, match="tiny-synth"):
        CFBackbone(backbone, dataset)


def test_generate_mode_reports_hit_at_1(workdir, allmrec_config):
    model, _, test_data = build(allmrec_config, eval_mode="generate")
    model.eval()
    interaction = next(iter(test_data))[0]
    scores = model.predict(interaction)
    block, _ = user_blocks(interaction["user_id"])
    for b in range(int(block.max()) + 1):
        s = scores[block == b]
        assert (s == 1).sum() <= 1 and (s[s != 1] < 0).all()  # at most one matched title, others below
    users = int(block.max()) + 1
    matched = sum(int((scores[block == b] == 1).any()) for b in range(users))
    assert model.generate_counts == [users - matched, users]  # [greedy titles matching no candidate, titles]


@pytest.mark.parametrize("overrides", [{"joint_embedding": "text"}, {"text_encoder_trainable": "last_layer"}])
def test_text_path_and_trainable_encoder(workdir, allmrec_config, overrides):
    model, train_data, _ = build(allmrec_config, **overrides)
    model.set_stage("stage1")
    if overrides.get("text_encoder_trainable") == "last_layer":
        trainable = [n for n, p in model.sentence_encoder.named_parameters() if p.requires_grad]
        assert trainable and all(".layer.0." in n for n in trainable)  # the tiny encoder has one layer
        assert any(k.startswith("sentence_encoder.") for k in model.trainable_state_dict())
    batch = _batch(model, train_data, "stage1")
    loss = sum(model.stage1_loss(batch))
    loss.backward()
    model.set_stage("stage2")
    batch = _batch(model, train_data, "stage2", n=2)
    assert torch.isfinite(model.calculate_loss(batch))


def _generate_answer(model, item_ids_per_user):
    """A stand-in for ``llm.generate`` that 'generates' the given item's answer text for each user (None:
    text that is no candidate's title)."""

    def generate(inputs_embeds, **kwargs):
        texts = [model.prompt_builder.answer_text(i) if i is not None else '"zzz qqq"' for i in item_ids_per_user]
        ids = model.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
        return ids

    return generate


def test_generate_mode_counts_only_exact_matches(workdir, allmrec_config, monkeypatch):
    model, _, test_data = build(allmrec_config, eval_mode="generate")
    model.eval()
    interaction = next(iter(test_data))[0]
    block, first_rows = user_blocks(interaction["user_id"])
    items = interaction["item_id"]
    positives = items[first_rows].tolist()  # RecBole puts each user's positive first in its block
    negatives = items[first_rows + 1].tolist()
    n_users = len(first_rows)
    # the positive's title for user 0, a negative's for user 1, a non-title for everyone else
    wanted = [positives[0], negatives[1]] + [None] * (n_users - 2)
    monkeypatch.setattr(model.scorer.llm, "generate", _generate_answer(model, wanted))
    model.eval_user_batch = n_users
    scores = model.predict(interaction)
    top = torch.stack([scores[block == b].argmax() for b in range(n_users)])  # [U] row offset of the top score
    assert top[0] == 0  # hit: the generated title is the positive
    assert top[1] != 0  # generated a negative's title: a miss
    for b in range(2, n_users):  # matched nothing: a miss, whatever the tie-breaker says
        s = scores[block == b]
        assert s[0] < s[1:].min()
    assert model.generate_counts == [n_users - 2, n_users]


def test_generation_stops_at_eos(workdir, allmrec_config):
    model, _, _ = build(allmrec_config, eval_mode="generate")
    assert model.tokenizer.eos_token_id in stop_token_ids(model.tokenizer, model.prompt_builder.answer)
    assert (
        int(model.answer_lengths[1])
        == len(model.tokenizer(model.prompt_builder.answer_text(1), add_special_tokens=False)["input_ids"]) + 1
    )
    assert model.answer_ids[1, int(model.answer_lengths[1]) - 1] == model.tokenizer.eos_token_id


def test_split_user_is_refused_and_recbole_batches_whole_users(workdir, allmrec_config):
    model, _, test_data = build(allmrec_config, eval_batch_size=4)  # fewer rows than one user's 1 + 9
    interaction = next(iter(test_data))[0]
    counts = torch.bincount(user_blocks(interaction["user_id"])[0])
    assert (counts == 10).all()  # RecBole's loader raised the batch to whole users
    with pytest.raises(ConfigValueError, match="expected 10"):
        model.predict(interaction[torch.arange(7)])


def test_minus_generation_loss_is_the_scorers_log_likelihood(workdir, allmrec_config):
    from recbole_llmplugin.model.layers.candidate_scorer import CandidateScorer

    model, train_data, _ = build(allmrec_config)
    model.eval()
    batch = _batch(model, train_data, "stage2", n=1)
    with torch.no_grad():
        torch.manual_seed(0)
        target, candidates, prompt, mask = model.training_prompts(batch)
        loss = model.generation_loss(target, prompt, mask)
        raw = CandidateScorer(model.llm, row_chunk=4, length_normalize=False)
        total = raw.score(
            prompt, mask, model.answer_ids[target], model.answer_lengths[target], torch.zeros(1, dtype=torch.long)
        )
    torch.testing.assert_close(-loss * model.answer_lengths[target].float(), total, atol=1e-4, rtol=1e-4)


def test_rank_objective_is_cross_entropy_over_eval_scores(workdir, allmrec_config):
    model, train_data, _ = build(allmrec_config, stage2_objective="rank")
    model.eval()
    batch = _batch(model, train_data, "stage2", n=2)
    with torch.no_grad():
        torch.manual_seed(0)
        target, candidates, prompt, mask = model.training_prompts(batch)
        loss = model.rank_loss(target, candidates, prompt, mask)
        owner = torch.arange(2).repeat_interleave(candidates.shape[1])
        flat = candidates.reshape(-1)
        scores = model.scorer.score(prompt, mask, model.answer_ids[flat], model.answer_lengths[flat], owner).view(2, -1)
    labels = (candidates == target[:, None]).float().argmax(1)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(scores, labels))
    assert (candidates == target[:, None]).sum(1).tolist() == [1, 1]


def test_training_negatives_are_distinct_and_unseen(workdir, allmrec_config):
    model, train_data, _ = build(allmrec_config, stage2_candidates=20)  # 40 items, histories of up to 16
    batch = _batch(model, train_data, "stage2", n=8)
    seq = batch[model.ITEM_SEQ]
    candidates = model.training_candidates(seq, batch["item_id"])
    for row, history, target in zip(candidates.tolist(), seq.tolist(), batch["item_id"].tolist()):
        assert len(set(row)) == len(row) == 20 and target in row and 0 not in row
        assert not (set(row) - {target}) & set(history)
    model.n_candidates = 39
    with pytest.raises(ConfigValueError, match="stage2_candidates: 39"):
        model.training_candidates(seq, batch["item_id"])


def test_no_space_token_before_soft_tokens(workdir, allmrec_config):
    model, _, _ = build(allmrec_config)
    prompt = model.prompt_texts([[1, 2]], [[3, 4]])[0]
    ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    soft = {model.token_ids[t] for t in (HISTORY_TOKEN, CANDIDATE_TOKEN)}
    before = [model.tokenizer.decode([ids[i - 1]]) for i, t in enumerate(ids) if t in soft]
    assert len(before) == 4 and not any(b.strip() == "" for b in before)


@pytest.mark.parametrize("architecture", ["official", "paper"])
def test_architectures(workdir, allmrec_config, architecture):
    model, _, _ = build(allmrec_config, allmrec_architecture=architecture)
    has_norm = any(isinstance(m, torch.nn.LayerNorm) for m in model.user_projection)
    assert has_norm == (architecture == "official")
    if architecture == "official":
        assert isinstance(model.item_to_joint[1], torch.nn.Sigmoid) and isinstance(model.joint_to_item, torch.nn.Linear)
    with pytest.raises(ConfigValueError, match="allmrec_architecture"):
        build(allmrec_config, allmrec_architecture="offical")


def test_index_mode_ranks_by_label_logits_in_prompt_order(workdir, allmrec_config):
    """eval_mode index: each candidate's score is the next-token logit of its own label after the prompt, the
    labels follow the prompt's (row-order-free) candidate order, and the index objective is the cross-entropy
    over exactly those logits."""
    model, train_data, test_data = build(allmrec_config, eval_mode="index", stage2_objective="index")
    model.eval()
    interaction = next(iter(test_data))[0]
    users = interaction["user_id"]
    block, first_rows = user_blocks(users)
    rows = (block == 0).nonzero(as_tuple=True)[0]  # the first user's 1 + 9 rows
    scores = model.predict(interaction)[rows]
    items = interaction["item_id"][rows]
    prompt = model.prompt_texts(
        model.prompts.recent_history(interaction[model.ITEM_SEQ][rows[:1]], interaction[model.ITEM_SEQ_LEN][rows[:1]]),
        [[0]],
    )[0]
    assert '[CandidateEmb]A: "' in prompt  # the label follows the item's soft token
    with torch.no_grad():
        embeds, mask, slot = model.prompt_inputs(interaction, rows, torch.zeros_like(rows), first_rows[:1])
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits[0, -1]  # [V]
    torch.testing.assert_close(scores, logits[model.label_ids[slot]], atol=1e-4, rtol=1e-4)
    assert sorted(slot.tolist()) == list(range(10))
    order = torch.argsort(prompt_order(users[rows], items))
    assert slot[order].tolist() == list(range(10))  # label k = k-th candidate listed

    batch = _batch(model, train_data, "stage2", n=2)
    with torch.no_grad():
        torch.manual_seed(0)
        target, candidates, prompt_embeds, prompt_mask = model.training_prompts(batch)
        loss = model.index_loss(target, candidates, prompt_embeds, prompt_mask)
        last = model.llm(
            inputs_embeds=prompt_embeds,
            attention_mask=prompt_mask,
            position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        ).logits[:, -1]
    labels = (candidates == target[:, None]).float().argmax(1)
    torch.testing.assert_close(
        loss, torch.nn.functional.cross_entropy(last[:, model.label_ids[:5]], labels), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eval_mode": "index"}, "stage2_objective: 'generate' with eval_mode: 'index'"),
        ({"stage2_objective": "index"}, "stage2_objective: 'index' with eval_mode: 'score'"),
        (
            {"eval_mode": "index", "stage2_objective": "index", "prompt_index_labels": "ABC"},
            "3 labels for 10 candidates",
        ),
        ({"eval_mode": "rank"}, "eval_mode: 'rank' is not one of score, index, generate"),
    ],
)
def test_index_mode_errors(workdir, allmrec_config, overrides, message):
    with pytest.raises(ConfigValueError, match=message):
        build(allmrec_config, **overrides)


def test_answer_item_token_conditions_each_candidates_answer(workdir, allmrec_config):
    """prompt_answer with {item_token}: each candidate's scored answer reads its own F_I token, so
    changing one candidate's CF embedding changes that candidate's score (and the rank loss reaches F_I
    through the answers even with no item tokens in the prompt)."""
    answer = '"{title}"{item_token}'
    model, train_data, test_data = build(
        allmrec_config,
        stage2_objective="rank",
        prompt_answer=answer,
        prompt_candidate_item='"{title}"',
        prompt_history_item='"{title}"',
    )
    model.eval()
    interaction = next(iter(test_data))[0]
    rows = (user_blocks(interaction["user_id"])[0] == 0).nonzero(as_tuple=True)[0]
    block = interaction[rows]
    before = model.predict(block)
    items = block["item_id"]
    with torch.no_grad():
        model.backbone.item_embeddings()[items[3]] += 5.0  # only candidate 3's CF embedding changes
    after = model.predict(block)
    changed = (after - before).abs() > 1e-6
    assert changed.tolist() == [i == 3 for i in range(len(items))]

    model.set_stage("stage2")
    model.train()
    batch = _batch(model, train_data, "stage2", n=2)
    model.rank_loss(*model.training_prompts(batch)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.item_projection.parameters())


@pytest.mark.parametrize(
    "model_name, overrides, message",
    [
        ("ALLMRec", {"stage2_objective": "generate"}, "needs eval_mode score and stage2_objective rank"),
        ("LLMOnly", {}, "needs a model with CF item tokens"),
        ("ALLMRec", {"stage2_objective": "rank", "prompt_answer": '{item_token}"{title}"{item_token}'}, "once"),
    ],
)
def test_answer_item_token_errors(workdir, allmrec_config, model_name, overrides, message):
    settings = {**allmrec_config, "prompt_answer": '{item_token}"{title}"', **overrides}
    with pytest.raises(ConfigValueError, match=message):  # the run's config check, before anything trains
        build_config(model_name, TINY_DATASET, config_dict=settings)


def _stage_files(allmrec_config, **overrides):
    from recbole_llmplugin.trainer.trainer import stage_checkpoints

    model, _, _ = build(allmrec_config, **overrides)
    return [os.path.basename(path) for path in stage_checkpoints(model.config, model).values()]


def test_one_identity_rule_for_stage_checkpoints(workdir, allmrec_config, tiny_llm, tmp_path):
    """Stage checkpoints are named by the whole resolved config minus run-local keys (config/identity.py): any
    property that changes what is trained gives fresh stages, run-local ones reuse them."""
    import shutil

    base = _stage_files(allmrec_config)
    other_llm = shutil.copytree(tiny_llm, tmp_path / "same-llm-elsewhere")
    for key, value in [
        ("item_text_max_tokens", 3),
        ("prompt_item_separator", " | "),  # prompt wording: a stage trained on other prompts is not reused
        ("prompt_bos", False),
        ("prompt_template", "{user_token}{history} -> {candidates}: "),
        ("llm_path", str(other_llm)),
        ("learner", "sgd"),
        ("eval_candidates_seed", 7),
        ("stage2_learning_rate", 0.5),
    ]:
        changed = _stage_files(allmrec_config, **{key: value})
        assert changed[1] != base[1], key  # stage 2 is never reused across such a change
    assert _stage_files(allmrec_config, stage1_learning_rate=0.5)[0] != base[0]
    assert _stage_files(allmrec_config, show_progress=True) == base
    assert _stage_files(allmrec_config, checkpoint_dir=str(tmp_path / "elsewhere")) == base
    assert _stage_files(allmrec_config, llm_eval_user_batch=5, eval_batch_size=100) == base
    assert _stage_files(allmrec_config, benchmark_models=["ALLMRec", "SASRec"]) == base  # a benchmark file's keys
    assert _stage_files(allmrec_config, config_files="renamed.yaml") == base  # file names: content counts, not names


def test_stage_identity_follows_the_model_folders_content_and_gradient_checkpointing(
    workdir, allmrec_config, tiny_llm, tiny_encoder, tmp_path
):
    """A changed LLM or text-encoder folder under the same path trains fresh stages (and a fresh text cache), and so
    does llm_gradient_checkpointing (it puts the LLM in train mode: an LLM with dropout would train differently)."""
    import shutil

    llm = shutil.copytree(tiny_llm, tmp_path / "llm")
    encoder = shutil.copytree(tiny_encoder, tmp_path / "encoder")
    props = {**allmrec_config, "llm_path": str(llm), "text_encoder": str(encoder)}
    base = _stage_files(props)
    assert _stage_files(props) == base
    assert _stage_files(props, llm_gradient_checkpointing=True)[1] != base[1]
    for folder in (llm, encoder):
        weights = max(folder.rglob("*.safetensors"), key=lambda path: path.stat().st_size)
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten in place
        changed = _stage_files(props)
        assert changed[0] != base[0] and changed[1] != base[1], folder
        base = changed
    assert len(glob.glob("saved/text_cache/*.safetensors")) == 2  # the encoder's change re-encoded the item texts


VOCABULARY = {
    "eval_mode": "index",
    "stage2_objective": "index",
    "allmrec_token_space": "vocabulary",
    "prompt_template": "History: {history}. Candidates: {candidates}. Answer:{user_token}",
    "item_vocabulary_offset": 100,
}


def vocabulary_prompts(model, batch):
    """(users, candidates [B, C], input ids [B, L], embeddings [B, L, H]) of a training batch's prompts."""
    torch.manual_seed(0)
    target, candidates, embeds, _ = model.training_prompts(batch)
    users = model.user_fields(batch, torch.arange(len(target)))
    histories = model.prompts.recent_history(users["item_seq"], users["item_seq_len"])
    input_ids, _ = model.tokenize_prompts(model.prompt_texts(histories, candidates.tolist()))
    return target, users, candidates, input_ids, embeds


def test_vocabulary_token_space_shows_items_as_vocabulary_tokens(workdir, allmrec_config):
    """allmrec_token_space vocabulary: every history and candidate item is shown as its own ordinary LLM token
    (distinct; no special, added or label token), the prompt's last token is the candidates' tokens mixed by
    softmax <F_U(u), F_I(item)> / sqrt(H), and the index loss reaches F_U and F_I through that mixture."""
    model, train_data, _ = build(allmrec_config, **VOCABULARY)
    ids = model.item_vocab_ids[1:].tolist()
    assert len(set(ids)) == model.n_items - 1 and min(ids) >= 100
    reserved = set(model.tokenizer.all_special_ids) | set(model.label_ids.tolist()) | set(model.token_ids.values())
    assert not reserved & set(ids)
    model.set_stage("stage2")
    model.train()
    batch = _batch(model, train_data, "stage2", n=4)
    target, users, candidates, input_ids, embeds = vocabulary_prompts(model, batch)
    table = model.llm.get_input_embeddings().weight
    shown = embeds[input_ids == model.token_ids[CANDIDATE_TOKEN]]  # [B*C, H]
    torch.testing.assert_close(shown, table[model.item_vocab_ids[candidates.reshape(-1)]])
    shown_history = [i for h in model.prompts.recent_history(users["item_seq"], users["item_seq_len"]) for i in h]
    torch.testing.assert_close(
        embeds[input_ids == model.token_ids[HISTORY_TOKEN]], table[model.item_vocab_ids[torch.tensor(shown_history)]]
    )
    assert bool((input_ids[:, -1] == model.token_ids[USER_TOKEN]).all())  # the query token ends every prompt
    weights = model.candidate_weights(users, candidates.tolist())  # [B, C]
    torch.testing.assert_close(weights.sum(1), torch.ones(len(target)))
    expected = (weights[:, :, None] * table[model.item_vocab_ids[candidates]]).sum(1)
    torch.testing.assert_close(embeds[:, -1], expected)
    torch.manual_seed(0)
    loss = model.stage2_loss(batch)
    loss.backward()
    for module in (model.user_projection, model.item_projection):
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())
    assert all(p.grad is None for p in model.llm.parameters())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"allmrec_token_space": "vocabulary"}, "allmrec_token_space: vocabulary ranks by the candidate labels"),
        (
            {**VOCABULARY, "prompt_template": "{user_token}History: {history}. Candidates: {candidates}. Answer:"},
            r"end prompt_template with \{user_token\}",
        ),
        ({**VOCABULARY, "item_vocabulary_offset": 390}, "item_vocabulary_offset: 390 leaves"),
    ],
)
def test_vocabulary_token_space_errors(workdir, allmrec_config, overrides, message):
    with pytest.raises(ConfigValueError, match=message):
        build(allmrec_config, **overrides)


def test_match_loss_is_cross_entropy_of_the_cf_match_over_the_training_candidates(workdir, allmrec_config):
    """stage2_match_weight w: stage 2's loss is (LLM objective, w * CE of <F_U(u), F_I(item)> / sqrt(H) over the
    prompt's candidates against the target); the LLM part is unchanged, the match part trains F_U / F_I only,
    and RecBole's trainer sums and logs both parts. allmrec_query_temperature divides the match in the query's
    mixture only."""
    from recbole_llmplugin.model.stage import Stage
    from recbole_llmplugin.trainer.trainer import StagedTrainer

    plain, train_data, _ = build(allmrec_config, **VOCABULARY, allmrec_query_temperature=0.25)
    model, _, _ = build(allmrec_config, **VOCABULARY, stage2_match_weight=0.5, allmrec_query_temperature=0.25)
    model.load_state_dict(plain.state_dict())
    for m in (plain, model):
        m.set_stage("stage2")
        m.train()
    batch = _batch(model, train_data, "stage2", n=4)
    torch.manual_seed(0)
    llm_part, match_part = model.stage2_loss(batch)
    torch.manual_seed(0)
    target, candidates, _, _ = model.training_prompts(batch)
    torch.manual_seed(0)
    torch.testing.assert_close(llm_part, plain.stage2_loss(batch))  # weight 0: a plain tensor, the same LLM loss
    users = model.user_fields(batch, torch.arange(len(target)))
    root_h = model.user_projection[-1].out_features ** 0.5
    user = model._user_token(users)  # [B, H]
    scores = torch.tensor(
        [
            [float((user[b] @ model._projected_items([i], "cpu")[0]).detach()) / root_h for i in row]
            for b, row in enumerate(candidates.tolist())
        ]
    )  # [B, C], one dot product at a time
    labels = torch.tensor([row.index(t) for row, t in zip(candidates.tolist(), target.tolist())])
    torch.testing.assert_close(match_part, 0.5 * torch.nn.functional.cross_entropy(scores, labels))  # no temperature
    weights = model.candidate_weights(users, candidates.tolist())  # the query mixes the candidates at temperature 0.25
    torch.testing.assert_close(weights, torch.softmax(4 * scores, 1))
    match_part.backward()
    for module in (model.user_projection, model.item_projection):
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())
    assert all(p.grad is None for p in model.llm.parameters())

    trainer = StagedTrainer(model.config, model)
    trainer._reset_for(Stage("stage2", 1, 1e-3, 4, "unused"))
    loader = model.stage_train_loader(Stage("stage2", 1, 1e-3, 4, "unused"), train_data)
    losses = trainer._train_epoch(loader, 0)
    assert isinstance(losses, tuple) and len(losses) == 2 and all(x > 0 for x in losses)


def test_match_objective_trains_the_cf_match_without_the_llm(workdir, allmrec_config, monkeypatch):
    """stage2_objective match: stage 2's loss is match_loss alone on the training candidates, and no LLM pass runs."""
    model, train_data, _ = build(allmrec_config, **{**VOCABULARY, "stage2_objective": "match"})
    model.set_stage("stage2")
    model.train()
    batch = _batch(model, train_data, "stage2", n=4)
    monkeypatch.setattr(model.llm, "forward", lambda *a, **k: pytest.fail("the match objective ran the LLM"))
    torch.manual_seed(0)
    loss = model.stage2_loss(batch)
    torch.manual_seed(0)
    target = batch[model.ITEM_ID]
    candidates = model.training_candidates(batch[model.ITEM_SEQ], target)
    torch.testing.assert_close(loss, model.match_loss(batch, target, candidates))
    loss.backward()
    for module in (model.user_projection, model.item_projection):
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


@pytest.mark.parametrize(
    "model_name, overrides, message",
    [
        ("ALLMRec", {"stage2_objective": "match", "eval_mode": "index"}, "set allmrec_token_space: vocabulary"),
        ("TALLRec", {"stage2_objective": "match", "eval_mode": "index"}, "stage2_objective: 'match' is not one of"),
        ("ALLMRec", {**VOCABULARY, "stage2_objective": "rank"}, "set both to index, or neither"),
    ],
)
def test_match_objective_errors(workdir, allmrec_config, model_name, overrides, message):
    with pytest.raises(ConfigValueError, match=message):
        config, model_class = build_config(model_name, TINY_DATASET, config_dict={**allmrec_config, **overrides})
        _, train_data, _, _ = prepare_data(config)
        model_class(config, train_data._dataset)


MATCH_FORM = {**VOCABULARY, "stage2_objective": "match", "stage2_learning_rate": 0.01}


def test_match_eval_mode_ranks_by_the_cf_match_without_the_llm(workdir, allmrec_config, monkeypatch):
    """eval_mode match: each candidate row scores <F_U(u), F_I(item)> / sqrt(H) with its own user, one dot product
    at a time here, and no LLM pass runs."""
    model, _, test_data = build(allmrec_config, **{**MATCH_FORM, "eval_mode": "match"})
    model.eval()
    monkeypatch.setattr(model.llm, "forward", lambda *a, **k: pytest.fail("eval_mode match ran the LLM"))
    interaction = next(iter(test_data))[0]
    block, first_rows = user_blocks(interaction[model.USER_ID])
    assert len(first_rows) >= 5
    scores = model.predict(interaction)
    root_h = model.user_projection[-1].out_features ** 0.5
    with torch.no_grad():
        users = model._user_token(model.user_fields(interaction, first_rows))  # [U, H]
        expected = torch.tensor(
            [
                float(users[b] @ model._projected_items([i], "cpu")[0]) / root_h
                for b, i in zip(block.tolist(), interaction[model.ITEM_ID].tolist())
            ]
        )
    torch.testing.assert_close(scores, expected)


def test_run_reports_the_llm_ranked_row_and_the_cf_match_alone(workdir, allmrec_config):
    """A run of the vocabulary form gives two labelled rows with n and standard errors: the LLM-ranked one and the
    CF match alone from the same weights, equal to a run that ranks by the match (eval_mode match) itself."""
    from recbole_llmplugin.quick_start.compare import comparison_table

    result = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict={**allmrec_config, **MATCH_FORM})
    assert result["label"] == "ALLMRec (vocabulary, match)"
    (match,) = result["other_rankings"]
    assert match["label"] == "ALLMRec (vocabulary, match; CF match alone, no LLM)" and match["eval_mode"] == "match"
    assert match["costs"]["test_users"] == result["costs"]["test_users"] > 10
    for row in (result, match):
        assert set(row["test_se"]) == set(row["test_result"])
        assert_measured(row, tuple(row["test_result"]))
    alone = run_recbole_llm("ALLMRec", TINY_DATASET, config_dict={**allmrec_config, **MATCH_FORM, "eval_mode": "match"})
    assert alone["label"] == match["label"] and alone["other_rankings"] == []
    assert dict(alone["test_result"]) == dict(match["test_result"])
    assert alone["test_se"] == pytest.approx(match["test_se"])
    table = comparison_table([result, match])
    assert "| ALLMRec (vocabulary, match; CF match alone, no LLM) |" in table
    assert f"{result['test_result']['hit@1']:.4f} ± {result['test_se']['hit@1']:.4f}" in table
    without = run_recbole_llm(
        "ALLMRec", TINY_DATASET, config_dict={**allmrec_config, **MATCH_FORM, "eval_match_row": False}
    )
    assert without["other_rankings"] == []


@pytest.mark.parametrize(
    "model_name, overrides, variant",
    [
        ("ALLMRec", {}, ""),
        ("ALLMRec", {"eval_mode": "generate"}, ""),
        ("ALLMRec", MATCH_FORM, "vocabulary, match"),
        ("ALLMRec", {**MATCH_FORM, "eval_mode": "match"}, "vocabulary, match; CF match alone, no LLM"),
        ("ALLMRec", {"joint_embedding": "text", "stage1_all_positions": True}, "text joint, all positions"),
        ("ALLMRec", {"stage2_objective": "rank", "stage2_match_weight": 0.5}, "rank, + match loss x0.5"),
        ("ALLMRec", {"cf_model": "GRU4Rec"}, "GRU4Rec backbone"),
        ("ALLMRec", {"eval_mode": "index", "stage2_objective": "index"}, "index"),
        ("MLPLLM", {**MATCH_FORM, "joint_embedding": "text"}, "vocabulary, match"),
        ("TALLRec", {"eval_mode": "index", "stage2_objective": "index"}, "index"),
        ("LLMOnly", {"eval_mode": "index"}, "index ranking"),
        ("LLMOnly", {}, ""),
        ("SASRec", {}, ""),
    ],
)
def test_each_row_names_its_form(workdir, allmrec_config, model_name, overrides, variant):
    """The paper's form keeps the bare name; every option that makes another method is named."""
    from recbole_llmplugin.quick_start.record import row_label, variant_of

    config, model_class = build_config(model_name, TINY_DATASET, config_dict={**allmrec_config, **overrides})
    assert variant_of(model_class, config) == variant
    assert row_label(model_name, variant) == (f"{model_name} ({variant})" if variant else model_name)


def test_match_eval_mode_needs_a_trained_match(workdir, allmrec_config):
    with pytest.raises(ConfigValueError, match="stage2_objective 'generate' does not train: set stage2_objective"):
        build(allmrec_config, eval_mode="match")


def test_the_log_names_each_stages_trained_modules(workdir, allmrec_config):
    model, _, _ = build(allmrec_config)
    text = str(model)
    stage1 = sum(p.numel() for name in model.stage1_modules for p in getattr(model, name).parameters())
    stage2 = sum(p.numel() for name in model.stage2_modules for p in getattr(model, name).parameters())
    assert text.startswith("ALLMRec: frozen LLM ") and "CF backbone SASRec" in text
    assert f"stage1 trains {stage1:,} parameters: item_to_joint" in text
    assert f"stage2 trains {stage2:,} parameters: user_projection" in text
    assert not any(p.requires_grad for p in model.parameters())  # summarising left every stage off
