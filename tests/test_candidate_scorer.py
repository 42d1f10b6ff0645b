import pytest
import torch

from recbole_llmplugin.model.layers.candidate_scorer import CandidateScorer
from recbole_llmplugin.model.layers.llm_loading import load_llm


def _reference_scores(llm, tokenizer, prompts, answers, owner):
    """Length-normalised log-likelihood by one plain forward pass per (prompt, answer): no cache."""
    scores = []
    for row, answer in enumerate(answers):
        p = tokenizer(prompts[owner[row]], add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        logits = llm(torch.tensor([p + a])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        scores.append(torch.stack([logp[len(p) - 1 + t, a[t]] for t in range(len(a))]).mean())
    return torch.stack(scores)


def _batch(tokenizer, llm, prompts, answers):
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ans = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
    width = max(map(len, ans))
    ids = torch.full((len(ans), width), tokenizer.pad_token_id)
    for i, a in enumerate(ans):
        ids[i, : len(a)] = torch.tensor(a)
    lengths = torch.tensor([len(a) for a in ans])
    return llm.get_input_embeddings()(enc["input_ids"]), enc["attention_mask"], ids, lengths


PROMPTS = ["A user watched Star Noir 1, Café Blue 2. Answer: ", "Answer: "]
ANSWERS = ['"Star Café 3"', '"Ghost River 12"', '"東京 Dream 30"', '"Blue Night 4"', '"Señor Star 5"']
OWNER = torch.tensor([0, 0, 0, 1, 1])


@pytest.mark.parametrize("method,attention", [("cache", "sdpa"), ("packed", "sdpa"), ("packed", "eager")])
def test_batched_scores_equal_plain_forward(tiny_llm, method, attention):
    llm, tokenizer = load_llm(tiny_llm)
    llm.config._attn_implementation = attention
    embeds, mask, ids, lengths = _batch(tokenizer, llm, PROMPTS, ANSWERS)
    with torch.no_grad():
        got = CandidateScorer(llm, row_chunk=2, method=method).score(embeds, mask, ids, lengths, OWNER)
        want = _reference_scores(llm, tokenizer, PROMPTS, ANSWERS, OWNER.tolist())
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["cache", "packed"])
def test_row_order_does_not_change_scores(tiny_llm, method):
    llm, tokenizer = load_llm(tiny_llm)
    embeds, mask, ids, lengths = _batch(tokenizer, llm, PROMPTS, ANSWERS)
    perm = torch.tensor([4, 2, 0, 3, 1])
    with torch.no_grad():
        base = CandidateScorer(llm, row_chunk=3, method=method).score(embeds, mask, ids, lengths, OWNER)
        shuffled = CandidateScorer(llm, row_chunk=3, method=method).score(
            embeds, mask, ids[perm], lengths[perm], OWNER[perm]
        )
    torch.testing.assert_close(shuffled, base[perm], atol=1e-5, rtol=1e-5)


def test_preferred_candidate_ranks_first(tiny_llm):
    """Teach the tiny LM one answer for the prompt; the scorer must rank that candidate first."""
    llm, tokenizer = load_llm(tiny_llm, trainable=True)
    llm.train()
    prompt, target = PROMPTS[0], ANSWERS[2]
    sequence = torch.tensor([tokenizer(prompt + target, add_special_tokens=False)["input_ids"]])
    optimizer = torch.optim.Adam(llm.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(40):
        optimizer.zero_grad()
        llm(sequence, labels=sequence).loss.backward()
        optimizer.step()
    llm.eval()
    embeds, mask, ids, lengths = _batch(tokenizer, llm, [prompt], ANSWERS)
    with torch.no_grad():
        scores = CandidateScorer(llm, row_chunk=2).score(
            embeds, mask, ids, lengths, torch.zeros(len(ANSWERS), dtype=torch.long)
        )
    assert int(scores.argmax()) == 2


def test_packed_scores_train_like_cached_ones(tiny_llm):
    """Gradients reach the prompt embeddings identically through both methods (the rank objective's path)."""
    llm, tokenizer = load_llm(tiny_llm)
    embeds, mask, ids, lengths = _batch(tokenizer, llm, PROMPTS, ANSWERS)
    grads = []
    for method in ("cache", "packed"):
        leaf = embeds.detach().clone().requires_grad_(True)
        CandidateScorer(llm, row_chunk=2, method=method).score(leaf, mask, ids, lengths, OWNER).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_soft_token_in_answers_is_read_not_scored(tiny_llm, attention):
    """A soft token inside each answer (prompt_answer with {item_token}), at its start, middle or end: each
    answer's score equals a plain forward over [prompt, answer with that row's vector at the soft position],
    averaged over the other answer tokens only."""
    llm, tokenizer = load_llm(tiny_llm)
    llm.config._attn_implementation = attention
    emb = llm.get_input_embeddings()
    soft_id = tokenizer.eos_token_id  # any id: its positions are replaced
    answers = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
    answers = [a[:k] + [soft_id] + a[k:] for a, k in zip(answers, [0, 1, len(answers[2]), 2, 0])]
    ids = torch.full((len(answers), max(map(len, answers))), tokenizer.pad_token_id)
    for i, a in enumerate(answers):
        ids[i, : len(a)] = torch.tensor(a)
    lengths = torch.tensor([len(a) for a in answers])
    embeds, mask, _, _ = _batch(tokenizer, llm, PROMPTS, ANSWERS)
    torch.manual_seed(0)
    soft = torch.randn(len(ANSWERS), embeds.shape[-1])
    want = []
    for row, answer in enumerate(answers):
        p = tokenizer(PROMPTS[OWNER[row]], add_special_tokens=False)["input_ids"]
        sequence = emb(torch.tensor(p + answer)).clone()
        k = len(p) + answer.index(soft_id)
        sequence[k] = soft[row]
        with torch.no_grad():
            logp = torch.log_softmax(llm(inputs_embeds=sequence[None]).logits[0].float(), -1)
        want.append(torch.stack([logp[len(p) - 1 + t, a] for t, a in enumerate(answer) if len(p) + t != k]).mean())
    with torch.no_grad():
        got = CandidateScorer(llm).score(embeds, mask, ids, lengths, OWNER, answer_soft=soft, soft_token_id=soft_id)
        other = CandidateScorer(llm).score(embeds, mask, ids, lengths, OWNER, answer_soft=-soft, soft_token_id=soft_id)
    torch.testing.assert_close(got, torch.stack(want), atol=1e-4, rtol=1e-4)
    assert (got - other)[[0, 1, 3, 4]].abs().min() > 1e-4  # a soft token before answer tokens changes the score
    with pytest.raises(ValueError, match="needs llm_score_method packed"):
        CandidateScorer(llm, method="cache").score(
            embeds, mask, ids, lengths, OWNER, answer_soft=soft, soft_token_id=soft_id
        )
