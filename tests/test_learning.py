"""Proof of learning: on data where ONLY the collaborative signal predicts the next item (random titles, a
hidden Markov successor that SASRec learns), A-LLMRec and MLP-LLM must rank far above the LLM alone and
above chance after a few hundred stage-2 steps, and the gain must vanish when the CF knowledge is removed
(soft tokens zeroed, or the backbone's item embeddings permuted before training)."""

import pytest
import torch
from recbole.utils import init_seed

from conftest import build_tiny_llm
from dataset.make_fixtures import MARKOV_NAME, markov_fixture
from recbole_llmplugin import run_recbole_llm
from recbole_llmplugin.tools.learning_curve import metrics_from_ranks, rank_loader
from recbole_llmplugin.quick_start.quick_start import build_config, prepare_data
from recbole_llmplugin.trainer.trainer import StagedTrainer

TEMPLATE = "{user_token}History: {history}. Candidates: {candidates}. Next: "


def pretrain_to_pick_a_candidate(folder, titles, steps=400, seed=0):
    """Teach the tiny random LLM two things a pre-trained LLM brings to A-LLMRec: the answer is one of the
    listed candidates (its title copied from the prompt), and a hint in the first position, where A-LLMRec
    puts its user token, says which. The hint is one token of the answer's title; the history is random, so
    the LLM learns nothing of the Markov structure: which item comes next can only reach it from the CF model
    through the soft tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    llm = AutoModelForCausalLM.from_pretrained(folder)
    rng = torch.Generator().manual_seed(seed)
    names = list(titles.values())
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    hints = [encode(f'"{name}"')[1] for name in names]  # the title's first token after the quote
    optimizer = torch.optim.Adam(llm.parameters(), lr=3e-3)
    llm.train()
    for _ in range(steps):
        rows = []
        for _ in range(16):
            picks = torch.randperm(len(names), generator=rng)[:13].tolist()
            history, candidates = picks[:3], picks[3:]
            answer = candidates[int(torch.randint(len(candidates), (1,), generator=rng))]
            quote = lambda items: ",".join(f'"{names[i]}"' for i in items)  # noqa: E731
            prompt = [hints[answer]] + encode(
                TEMPLATE.format(user_token="", history=quote(history), candidates=quote(candidates))
            )
            rows.append((prompt, encode(f'"{names[answer]}"') + [tokenizer.eos_token_id]))
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (p, a) in enumerate(rows):
            ids[row, : len(p) + len(a)] = torch.tensor(p + a)
            labels[row, len(p) : len(p) + len(a)] = torch.tensor(a)
            mask[row, : len(p) + len(a)] = 1
        loss = llm(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    llm.save_pretrained(folder)
    return float(loss.detach())


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    """(properties, SASRec checkpoint) on the Markov dataset, with a tiny LLM whose tokenizer knows its titles
    and which has learned to answer with one of the listed candidates."""
    root = tmp_path_factory.mktemp("markov")
    titles = markov_fixture(str(root / "data"))
    corpus = [f'"{t}"' for t in titles.values()] * 20 + ["History: . Candidates: . Next: "] * 20
    llm = build_tiny_llm(root / "llm", hidden=64, layers=2, corpus=corpus)
    pretrain_to_pick_a_candidate(llm, titles)
    props = {
        "data_path": str(root / "data"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "llm_path": llm,
        "item_text_template": "{title}",
        "MAX_ITEM_LIST_LENGTH": 10,
        "prompt_history_len": 3,
        "prompt_template": TEMPLATE,
        "prompt_item_separator": ",",
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "uni9"},
        "eval_candidates": "fixed",
        "train_neg_sample_args": None,
        "metrics": ["Hit", "NDCG"],
        "topk": [1, 5],
        "valid_metric": "NDCG@5",
        "show_progress": False,
        "state": "WARNING",
        "reproducibility": True,
        "eval_batch_size": 200,
        "llm_eval_user_batch": 20,
        "llm_score_row_chunk": 200,
        "checkpoint_dir": str(root / "saved"),
    }
    backbone = run_recbole_llm(
        "SASRec",
        MARKOV_NAME,
        config_dict={
            **props,
            "hidden_size": 32,
            "inner_size": 64,
            "n_layers": 1,
            "n_heads": 2,
            "epochs": 30,
            "learning_rate": 0.01,
            "train_batch_size": 256,
            "stopping_step": 30,
        },
    )
    return props, backbone


def valid_metrics(model, valid_data):
    model.eval()
    return metrics_from_ranks(rank_loader(model, valid_data))


def trained(markov, tiny_encoder, model_name, steps=300, objective="rank", **extra):
    """The model after stage 1 (if any) and ``steps`` stage-2 steps of 8 examples."""
    props, backbone = markov
    config, model_class = build_config(
        model_name,
        MARKOV_NAME,
        config_dict={
            **props,
            "cf_checkpoint": backbone["saved_model_file"],
            "text_encoder": tiny_encoder,
            "stage1_epochs": 5,
            "stage1_batch_size": 64,
            "stage1_learning_rate": 1e-3,
            "stage2_objective": objective,
            "stage2_candidates": 10,
            "stage2_batch_size": 8,
            "stage2_learning_rate": 3e-3,
            **extra,
        },
    )
    init_seed(config["seed"], True)
    _, train_data, valid_data, _ = prepare_data(config)
    model = model_class(config, train_data._dataset)
    trainer = StagedTrainer(config, model)
    stages = model.training_stages()
    for stage in stages[:-1]:
        trainer._fit_stage(stage, train_data, None, False, False, None)
    stage = stages[-1]
    trainer._reset_for(stage)
    loader = model.stage_train_loader(stage, train_data)
    model.train()
    done, model.loss_trace = 0, []
    while done < steps:
        for batch in loader:
            loss = model.calculate_loss(batch)
            trainer.optimizer.zero_grad()
            loss.backward()
            trainer.optimizer.step()
            model.loss_trace.append(float(loss.detach()))
            done += 1
            if done == steps:
                break
    return model, valid_data


class Zeros(torch.nn.Module):
    """Stands in for F_U / F_I: every soft token becomes a zero vector."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x):
        return x.new_zeros(x.shape[0], self.size)


@pytest.fixture(scope="module")
def llm_only(markov):
    props, _ = markov
    config, model_class = build_config("LLMOnly", MARKOV_NAME, config_dict=props)
    init_seed(config["seed"], True)
    _, train_data, valid_data, _ = prepare_data(config)
    return valid_metrics(model_class(config, train_data._dataset), valid_data)


CHANCE_HIT1 = 0.1  # 1 positive + 9 negatives
GAIN = {"rank": 0.3, "generate": 0.2}  # least hit@1 gain over chance and over LLMOnly


@pytest.mark.parametrize("model_name,objective", [("ALLMRec", "rank"), ("MLPLLM", "rank"), ("ALLMRec", "generate")])
def test_cf_tokens_carry_the_signal(workdir, markov, tiny_encoder, llm_only, model_name, objective):
    """300 steps: valid hit@1 at least GAIN above chance and LLMOnly, ndcg@10 >= LLMOnly + 0.15 (300 users:
    SE <= 0.03); the gain vanishes when the soft tokens are zeroed, or when the backbone's item embeddings are
    permuted after training. ``generate`` learns more slowly and varies more between processes (hit@1 0.38-0.56
    seen with different PYTHONHASHSEED values), hence its smaller margin."""
    gain = GAIN[objective]
    model, valid_data = trained(markov, tiny_encoder, model_name, objective=objective)
    learned = valid_metrics(model, valid_data)
    print(model_name, objective, "learned", learned, "LLMOnly", llm_only)
    assert learned["hit@1"] >= CHANCE_HIT1 + gain and learned["hit@1"] >= llm_only["hit@1"] + gain
    assert learned["ndcg@10"] >= llm_only["ndcg@10"] + 0.15

    table = model.backbone.item_embeddings()
    original = table.detach().clone()
    with torch.no_grad():  # CF knowledge scrambled: each item gets another item's embedding
        table[1:] = original[1:][torch.randperm(len(table) - 1, generator=torch.Generator().manual_seed(0))]
    permuted = valid_metrics(model, valid_data)
    with torch.no_grad():
        table.copy_(original)
    hidden = model.llm.get_input_embeddings().weight.shape[1]
    model.user_projection, model.item_projection = Zeros(hidden), Zeros(hidden)
    zeroed = valid_metrics(model, valid_data)
    print("permuted", permuted, "zeroed", zeroed)
    for ablated in (permuted, zeroed):
        assert ablated["hit@1"] <= learned["hit@1"] - (gain - 0.05)
        assert ablated["hit@1"] <= CHANCE_HIT1 + 0.1


def test_text_chart_places_points_and_reference_lines():
    """The learning-curve chart: log-x columns, y rows from the top, one marker per series."""
    from recbole_llmplugin.tools.learning_curve import text_chart

    chart = text_chart(
        {"low": [(100, 0.1), (1000, 0.3)], "high": [(300, 0.5)]}, {"SASRec": 0.4}, width=21, height=11, top=0.5
    )
    rows = chart.splitlines()[:11]
    grid = [r.split("|", 1)[1] for r in rows]
    assert grid[10 - 2][0] == "a" and grid[10 - 6][20] == "a"  # 0.1 -> row 2 of 10 (top 0.5), 100 -> column 0
    assert grid[0][round(0.477 * 20)] == "b"  # log10(3) of the way from 100 to 1000
    assert set(grid[10 - 8]) == {"-"}  # the reference line at 0.4
    assert "--- SASRec: 0.400" in chart and " b  high: 0.500 at 300" in chart


def test_learning_curve_records_each_point_and_resumes_after_the_last(workdir, allmrec_config, monkeypatch):
    """``python -m recbole_llmplugin.tools.learning_curve``: one evaluated point per count of training examples; a
    second command with one more point resumes after the last finished one and keeps the earlier points."""
    import json
    import sys

    import yaml

    from conftest import TINY_DATASET
    from recbole_llmplugin.tools import learning_curve

    settings = {**allmrec_config, "stage2_batch_size": 4, "state": "INFO", "eval_user_sample": 10}
    (workdir / "curve.yaml").write_text(yaml.safe_dump(settings))
    argv = ["--model=MLPLLM", f"--dataset={TINY_DATASET}", "--config_files=curve.yaml", "--label=mlp"]
    argv += ["--output=curve", "--train_users=5"]
    monkeypatch.setattr(sys, "argv", ["learning_curve"])
    assert learning_curve.main(argv + ["--points=4,8"]) == 0
    first = json.loads((workdir / "curve" / "curve.json").read_text())["mlp"]["points"]
    assert sorted(first, key=int) == ["4", "8"] and (workdir / "curve" / "curve.md").is_file()
    assert first["8"]["test"]["users"] == 10 and first["8"]["train_users"]["users"] == 5
    monkeypatch.setattr(sys, "argv", ["learning_curve"])
    learning_curve.main(argv + ["--points=4,8,12"])
    second = json.loads((workdir / "curve" / "curve.json").read_text())["mlp"]["points"]
    # resumed: the points already recorded (their training seconds included) are kept, not trained again
    assert sorted(second, key=int) == ["4", "8", "12"] and second["8"] == first["8"]
    assert second["12"]["train_seconds"] >= first["8"]["train_seconds"]
