"""Ranking RecBole's candidates with an LLM, independent of how a prompt is scored.

RecBole's sampled evaluation hands a model one contiguous block of 1 + N candidate rows per user (same history);
each block becomes one prompt. This module finds the blocks, checks that they are whole, groups users of similar
prompt length into LLM passes, picks a CF retriever's top items under full ranking (``mode: full``) and recording
whether each target was retrieved, and scores greedy-generated titles (``eval_mode: generate``).
"""

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_llmplugin.model.layers.prompt_encoder import prompt_order
from recbole_llmplugin.utils.errors import ConfigValueError


def eval_negatives(config):
    """N of RecBole's ``eval_args.mode: uniN`` (None for full or pop modes)."""
    mode = (config["eval_args"] or {}).get("mode")
    mode = mode.get("test", "") if isinstance(mode, dict) else (mode or "")
    return int(mode[3:]) if mode.startswith("uni") and mode[3:].isdigit() else None


def user_blocks(user_ids):
    """Block index of each row (rows of one user are contiguous) and each block's first row."""
    starts = torch.ones_like(user_ids, dtype=torch.bool)
    starts[1:] = user_ids[1:] != user_ids[:-1]
    block = starts.long().cumsum(0) - 1  # [R]
    return block, starts.nonzero(as_tuple=True)[0]


def check_whole_users(block, n_users, negatives):
    """Every user's prompt must list all of its 1 + ``negatives`` candidates: a call holding part of a user's rows
    would rank that user on a partial list. RecBole's sampled-evaluation loaders batch whole users; anything else
    calling ``predict`` must too. Nothing to check under full ranking (``negatives`` None)."""
    if negatives is None:
        return
    counts = torch.bincount(block, minlength=n_users)  # [U]
    if bool((counts != negatives + 1).any()):
        raise ConfigValueError(
            f"predict() got users with {sorted(set(counts.tolist()))} candidate rows, expected "
            f"{negatives + 1} (eval_args mode uni{negatives}): pass each user's rows whole"
        )


def rank_in_passes(block, first_rows, estimate, batch_users, score_rows):
    """[R] scores of all rows, ``batch_users`` users per pass, users of similar ``estimate`` ([U] prompt tokens)
    together so that padding stays small. ``score_rows(rows, owner, first_rows)`` scores the rows ``rows`` of the
    pass's users (``owner``: 0..u-1 per row; ``first_rows``: each of those users' first row)."""
    device = block.device
    scores = torch.empty(len(block), device=device)
    by_length = torch.argsort(estimate)  # similar lengths share a pass
    for start in range(0, len(first_rows), batch_users):
        users = by_length[start : start + batch_users].sort().values  # [u] block indices
        local = torch.full((len(first_rows),), -1, dtype=torch.long, device=device)
        local[users] = torch.arange(len(users), device=device)
        rows = torch.isin(block, users).nonzero(as_tuple=True)[0]  # [r]
        scored = score_rows(rows, local[block[rows]], first_rows[users])  # [r]
        scores[rows] = scored.to(scores.device)  # an LLM spread by llm_device_map answers on its own device
    return scores


class Retrieval:
    """Full ranking (RecBole's ``mode: full``) by re-ranking: a frozen CF retriever's top ``topk`` items per user
    become that user's candidate rows, and every other item scores -inf, so a target that was not retrieved is a
    miss. Records for each user whether its target was retrieved (``recall``)."""

    def __init__(self, topk, n_items, fields):
        self.topk = topk
        self.n_items = n_items
        self.user, self.seq, self.seq_len, self.item = fields  # RecBole's field names
        self.hits = []  # [users] per evaluated batch: whether the target was retrieved

    def candidates(self, retriever, interaction):
        """([B, n_items] the retriever's scores, [B, K] its top items, the candidate rows: K per user in one
        contiguous block, as sampled evaluation gives them). The retriever's ranking is RecBole's for its own row
        (for sequential models RecBole masks no history item)."""
        seq, seq_len, uid = interaction[self.seq], interaction[self.seq_len], interaction[self.user]
        cf_scores = retriever.full_sort_scores(seq, seq_len, uid)  # [B, n_items]
        cf_scores[:, 0] = -torch.inf  # padding
        top = cf_scores.topk(min(self.topk, self.n_items - 1), dim=1).indices  # [B, K]
        if self.item in interaction.interaction:  # the test target of each row (RecBole's sequential loaders)
            self.hits.append((top == interaction[self.item][:, None]).any(1).cpu())  # [B]
        k = top.shape[1]
        rows = Interaction(
            {
                self.user: uid.repeat_interleave(k),
                self.seq: seq.repeat_interleave(k, 0),
                self.seq_len: seq_len.repeat_interleave(k),
                self.item: top.reshape(-1),
            }
        )
        return cf_scores, top, rows

    @staticmethod
    def scores(cf_scores, top, row_scores):
        """[B, n_items]: each retrieved item's ``row_scores`` ([B * K]), -inf everywhere else."""
        scores = torch.full_like(cf_scores, -torch.inf)
        scores.scatter_(1, top, row_scores.view(top.shape).to(scores.dtype).clone())
        return scores

    def recall(self):
        """{"at": topk, "recall", "se", "users"} of the retrieval since the last call (the share of evaluated users
        whose target the retriever put in its top ``topk``, the ceiling of every re-ranked metric), or None; the
        record is cleared."""
        hits, self.hits = self.hits, []
        if not hits:
            return None
        hits = torch.cat(hits).double().numpy()
        se = float(hits.std(ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else float("nan")
        return {"at": self.topk, "recall": float(hits.mean()), "se": se, "users": len(hits)}


def stop_token_ids(tokenizer, answer_template):
    """EOS, and the token of the answer's closing text (e.g. a closing quote) when it is one token."""
    stops = [tokenizer.eos_token_id]
    closing = answer_template.split("{title}")[-1]
    ids = tokenizer(closing, add_special_tokens=False)["input_ids"] if closing else []
    if len(ids) == 1:
        stops.append(ids[0])
    return [t for t in stops if t is not None]


def generate_texts(llm, tokenizer, embeds, attention_mask, max_new_tokens, answer_template):
    """The greedy continuation of each prompt ([U, Lp, H] ``embeds``), decoded; it stops at ``stop_token_ids``."""
    generated = llm.generate(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(tokenizer, answer_template),
    )
    return tokenizer.batch_decode(generated, skip_special_tokens=True)


def normalise_title(text):
    """A title or generated text compared by words, case and quotes aside."""
    return " ".join(text.lower().replace('"', " ").split())


def generated_title_scores(texts, answers, rows, owner, first_rows, user_ids, item_ids):
    """Scores of the paper's protocol (``eval_mode: generate``) and the users whose text matched no candidate.

    texts: the generated text of each user of the pass; answers: the answer title of each row ``rows`` (owner: its
    user). The matching candidate scores 1 and every other row less, so hit@1 counts exact matches only. A user
    whose text matches no candidate is scored as a miss: the first row of its block, where RecBole puts the
    positive, gets the lowest score, so no hit comes from breaking ties. Returns ([r] scores, unmatched users)."""
    texts = [normalise_title(t) for t in texts]
    answers = [normalise_title(a) for a in answers]
    matched = torch.tensor(
        [bool(a) and (texts[o] == a or texts[o].startswith(a + " ")) for a, o in zip(answers, owner.tolist())],
        device=rows.device,
    )  # exact match of the normalised title at the start of the generated text
    per_user = torch.zeros(len(first_rows), device=rows.device).index_add_(0, owner, matched.float())  # [U]
    tie = prompt_order(user_ids[rows], item_ids[rows]).float() / 2147483647  # [r] in [0, 1)
    scores = torch.where(matched, torch.ones_like(tie), -1 - tie)
    miss = (rows == first_rows[owner]) & (per_user[owner] == 0)  # first row of a user with no match
    return torch.where(miss, torch.full_like(tie, -3.0), scores), int((per_user == 0).sum())
