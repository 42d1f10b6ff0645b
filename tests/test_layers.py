"""The parts of an LLM recommender tested alone, without a model or an LLM: prompt lists, candidate ranking, full
ranking by re-ranking, generated titles, losses and random draws (``recbole_llmplugin/model/layers``)."""

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_llmplugin.model.layers import objectives
from recbole_llmplugin.model.layers.candidate_ranking import (
    Retrieval,
    check_whole_users,
    eval_negatives,
    generated_title_scores,
    rank_in_passes,
    user_blocks,
)
from recbole_llmplugin.model.layers.draws import random_items, training_candidates
from recbole_llmplugin.model.layers.prompt_encoder import PromptEncoder, place_soft_tokens, prompt_order
from recbole_llmplugin.utils.errors import ConfigValueError

FIELDS = ("user_id", "item_id_list", "item_length", "item_id")


def test_a_users_candidate_list_does_not_depend_on_the_order_of_its_rows():
    users = torch.tensor([7, 7, 7, 9, 9, 9])
    items = torch.tensor([4, 11, 2, 4, 5, 30])
    owner = torch.tensor([0, 0, 0, 1, 1, 1])
    lists, slot = PromptEncoder.candidate_lists(users, items, owner, 2)
    assert sorted(lists[0]) == [2, 4, 11] and sorted(lists[1]) == [4, 5, 30]
    for row in range(6):  # each row's slot is the place of its item in its user's list
        assert lists[int(owner[row])][int(slot[row])] == int(items[row])
    shuffled = torch.tensor([2, 0, 1, 5, 3, 4])
    again, _ = PromptEncoder.candidate_lists(users[shuffled], items[shuffled], owner[shuffled], 2)
    assert again == lists
    keys = prompt_order(users[:3], items[:3])
    assert lists[0] == items[:3][torch.argsort(keys)].tolist()


def test_the_prompt_shows_the_last_history_items_and_counts_their_tokens():
    encoder = PromptEncoder(tokenizer=None, history_len=2, prefix="")
    seq = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0]])
    seq_len = torch.tensor([3, 1])
    assert encoder.recent_history(seq, seq_len) == [[6, 7], [8]]
    answer_lengths = torch.arange(10) * 10  # item i: 10 i tokens
    assert encoder.history_tokens(seq, seq_len, answer_lengths).tolist() == [130, 80]
    encoder.count("eval", 2, torch.ones(2, 5))
    encoder.count("train", 4)
    assert encoder.stats() == {"train_examples": 4, "prompt_tokens_per_example": 0.0, "prompt_tokens_per_user": 5.0}


def test_passes_score_every_row_once_whatever_the_pass_size():
    users = torch.tensor([3, 3, 5, 5, 8, 8, 9, 9])
    block, first_rows = user_blocks(users)
    assert block.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and first_rows.tolist() == [0, 2, 4, 6]
    seen = []

    def score_rows(rows, owner, firsts):
        seen.extend(rows.tolist())
        assert (block[rows] == block[firsts[owner]]).all()  # owner points at the row's own user
        return rows.float() * 10

    estimate = torch.tensor([40, 10, 30, 20])
    for batch in (1, 3, 8):
        seen.clear()
        scores = rank_in_passes(block, first_rows, estimate, batch, score_rows)
        assert scores.tolist() == [r * 10.0 for r in range(8)] and sorted(seen) == list(range(8))


def test_a_user_with_part_of_its_candidates_is_refused():
    block = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(ConfigValueError, match=r"candidate rows, expected 3 \(eval_args mode uni2\)"):
        check_whole_users(block, 2, negatives=2)
    check_whole_users(torch.tensor([0, 0, 0, 1, 1, 1]), 2, negatives=2)
    check_whole_users(block, 2, negatives=None)  # full ranking: nothing to check
    assert eval_negatives({"eval_args": {"mode": "uni19"}}) == 19
    assert eval_negatives({"eval_args": {"mode": {"valid": "full", "test": "uni9"}}}) == 9
    assert eval_negatives({"eval_args": {"mode": "full"}}) is None


class _FixedRetriever:
    def __init__(self, scores):
        self.table = scores

    def full_sort_scores(self, seq, seq_len, uid):
        return self.table[uid].clone()


def test_full_ranking_reranks_the_retrieved_items_and_reports_recall():
    table = torch.tensor([[9.0, 1, 5, 4, 3, 2], [9.0, 6, 5, 1, 2, 3]])  # item 0 is padding
    retrieval = Retrieval(topk=2, n_items=6, fields=FIELDS)
    batch = Interaction(
        {
            "user_id": torch.tensor([0, 1]),
            "item_id_list": torch.tensor([[1, 0], [2, 0]]),
            "item_length": torch.tensor([1, 1]),
            "item_id": torch.tensor([3, 5]),  # user 0's target retrieved (items 2, 3), user 1's not (items 1, 2)
        }
    )
    cf_scores, top, rows = retrieval.candidates(_FixedRetriever(table), batch)
    assert top.tolist() == [[2, 3], [1, 2]] and rows["user_id"].tolist() == [0, 0, 1, 1]
    assert rows["item_id"].tolist() == [2, 3, 1, 2] and rows["item_id_list"].shape == (4, 2)
    scores = retrieval.scores(cf_scores, top, torch.tensor([0.25, 0.75, 0.5, 0.125]))
    assert scores[0].tolist() == [-torch.inf, -torch.inf, 0.25, 0.75, -torch.inf, -torch.inf]
    assert scores[1].argmax() == 1 and torch.isinf(scores[1, 5])  # the target not retrieved: a miss
    recall = retrieval.recall()
    assert recall["recall"] == 0.5 and recall["users"] == 2 and recall["at"] == 2
    assert recall["se"] == pytest.approx(0.5)
    assert retrieval.recall() is None  # the record is cleared


def test_generated_titles_hit_only_on_an_exact_match():
    rows = torch.arange(6)
    owner = torch.tensor([0, 0, 0, 1, 1, 1])
    first_rows = torch.tensor([0, 3])
    users, items = torch.tensor([1, 1, 1, 2, 2, 2]), torch.tensor([10, 11, 12, 10, 11, 12])
    answers = ['"Red Lipstick"', "Blue Mascara", "Lip Balm", '"Red Lipstick"', "Blue Mascara", "Lip Balm"]
    texts = ['lip balm" and more', "green shampoo"]  # user 0: item 12; user 1: no candidate
    scores, unmatched = generated_title_scores(texts, answers, rows, owner, first_rows, users, items)
    assert unmatched == 1
    assert scores[:3].argmax() == 2 and scores[2] == 1.0 and (scores[:2] < 0).all()
    assert scores[3:].argmin() == 0 and scores[3] == -3.0  # the unmatched user's positive row ranks last


def test_candidate_losses_are_cross_entropy_against_the_target_place():
    candidates = torch.tensor([[4, 2, 9], [1, 5, 3]])
    target = torch.tensor([9, 1])
    scores = torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]])
    assert objectives.target_places(candidates, target).tolist() == [2, 0]
    expected = F.cross_entropy(scores, torch.tensor([2, 0]))
    torch.testing.assert_close(objectives.candidate_loss(scores, candidates, target), expected)

    def score_answers(prompt, mask, items, owner):  # rank_loss scores each (prompt, candidate) row
        assert owner.tolist() == [0, 0, 0, 1, 1, 1] and items.tolist() == candidates.reshape(-1).tolist()
        return scores.reshape(-1)

    torch.testing.assert_close(objectives.rank_loss(score_answers, target, candidates, None, None), expected)


def test_draws_are_distinct_and_outside_the_history():
    torch.manual_seed(0)
    exclude = torch.tensor([[1, 2, 3], [4, 5, 0]])
    drawn = random_items(12, (2, 6), exclude)
    for row, banned in zip(drawn.tolist(), exclude.tolist()):
        assert len(set(row)) == 6 and not set(row) & (set(banned) | {0})
    with pytest.raises(ConfigValueError, match="a user has only 8 unseen items"):
        random_items(12, (2, 9), exclude)
    candidates = training_candidates(12, 4, torch.tensor([[1, 2], [3, 0]]), torch.tensor([5, 6]))
    assert candidates.shape == (2, 4) and (candidates == torch.tensor([[5], [6]])).sum(1).tolist() == [1, 1]


def test_soft_tokens_replace_their_placeholders_in_reading_order():
    embeds = torch.zeros(2, 4, 3)
    input_ids = torch.tensor([[1, 50, 2, 50], [50, 3, 4, 5]])
    soft = {"[Item]": (50, lambda: torch.tensor([[1.0] * 3, [2.0] * 3, [3.0] * 3])), "[User]": (60, None)}
    out = place_soft_tokens(embeds, input_ids, soft)  # [User] absent: its make is never called
    assert out[0, 1, 0] == 1.0 and out[0, 3, 0] == 2.0 and out[1, 0, 0] == 3.0 and embeds.abs().sum() == 0
    with pytest.raises(ConfigValueError, match=r"prompt has 3 \[Item\] tokens for 2 items"):
        place_soft_tokens(embeds, input_ids, {"[Item]": (50, lambda: torch.ones(2, 3))})
