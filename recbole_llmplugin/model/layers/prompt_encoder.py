"""A batch of users' prompts as LLM tokens: the history each shows, the order of its candidates, the tokens, and
the count of prompt tokens (the cost driver of an LLM recommender).

The wording comes from ``data.prompts.PromptBuilder``; the model turns the tokens into embeddings (with its soft
tokens, ``LLMRecommender.prompt_embeddings``).
"""

import torch

from recbole_llmplugin.utils.errors import ConfigValueError

_MIX = 2654435761  # Knuth's multiplicative hash: a fixed, row-order-free shuffle of candidates


def prompt_order(user_ids, item_ids):
    """Sort key for listing candidates in a prompt: depends on (user, item) only, never on row
    position, so the positive (always first in RecBole's block) is not given away by its place."""
    return (item_ids * _MIX + user_ids * 40503) % 2147483647


def place_soft_tokens(embeds, input_ids, soft):
    """[U, Lp, H] ``embeds`` with the positions of each placeholder token replaced, in reading order, by its soft
    tokens. ``soft``: {placeholder: (its token id, make)}, ``make()`` -> [n, H], called only when the prompts hold
    that placeholder (a template without {item_token} / {user_token}: text only there)."""
    embeds = embeds.clone()
    for token, (token_id, make) in soft.items():
        mask = input_ids == token_id  # [U, Lp]
        if not mask.any():
            continue
        values = make()
        if int(mask.sum()) != len(values):
            raise ConfigValueError(
                f"prompt has {int(mask.sum())} {token} tokens for {len(values)} items; check prompt_* templates"
            )
        embeds[mask] = values.to(embeds.device, embeds.dtype)
    return embeds


class PromptEncoder:
    """Histories, candidate lists and tokens of prompts, and their token counts.

    ``history_len``: history items shown (``prompt_history_len``); ``prefix``: text before each prompt (the LLM's BOS
    token with ``prompt_bos``)."""

    def __init__(self, tokenizer, history_len, prefix):
        self.tokenizer = tokenizer
        self.history_len = history_len
        self.prefix = prefix
        self.counts = {"train_examples": 0, "train_tokens": 0, "eval_users": 0, "eval_tokens": 0}

    def recent_history(self, item_seq, item_seq_len):
        """Last ``history_len`` items per user, oldest first: list of id lists."""
        seqs = item_seq.tolist()
        lengths = item_seq_len.tolist()
        return [seq[max(0, n - self.history_len) : n] for seq, n in zip(seqs, lengths)]

    def history_tokens(self, seq, seq_len, answer_lengths):
        """[B] tokens of the history items a prompt shows (their answer texts' lengths, ``answer_lengths``
        [n_items]: a cheap estimate)."""
        positions = torch.arange(seq.shape[1], device=seq.device)[None, :]
        shown = (positions < seq_len[:, None]) & (positions >= seq_len[:, None] - self.history_len)  # [B, L]
        return (answer_lengths[seq] * shown).sum(1)  # [B]

    def tokenize(self, prompts, device):
        """([U, Lp] token ids, [U, Lp] mask) of ``prompts``, left-padded, on ``device``."""
        prompts = [self.prefix + prompt for prompt in prompts]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)

    @staticmethod
    def candidate_lists(user_ids, item_ids, owner, n_users):
        """Each user's candidates in prompt order (``prompt_order``) and each row's place in its user's list.

        user_ids, item_ids, owner: [r] of the rows (owner: 0..n_users-1). Returns (list of id lists, [r] slot)."""
        keys = prompt_order(user_ids, item_ids)
        order = torch.argsort(owner * 2147483647 + keys)  # group by user, then by the row-free key
        counts = torch.bincount(owner[order], minlength=n_users).tolist()
        candidates = [c.tolist() for c in torch.split(item_ids[order], counts)]
        starts = torch.tensor([0] + counts[:-1], device=owner.device).cumsum(0)  # [U] first sorted row of each user
        slot = torch.empty_like(order)
        slot[order] = torch.arange(len(order), device=owner.device) - starts[owner[order]]  # [r]
        return candidates, slot

    def count(self, kind, rows, attention_mask=None):
        """Add ``rows`` prompts (``kind``: train examples or eval users) and their tokens to the counts."""
        unit = "examples" if kind == "train" else "users"
        self.counts[f"{kind}_{unit}"] += rows
        if attention_mask is not None:
            self.counts[f"{kind}_tokens"] += int(attention_mask.sum())

    def stats(self):
        """Training examples, and mean prompt tokens per training example and per evaluated user so far."""
        c = self.counts
        return {
            "train_examples": c["train_examples"],  # this process's (its share in a data-parallel run)
            "prompt_tokens_per_example": c["train_tokens"] / c["train_examples"] if c["train_examples"] else None,
            "prompt_tokens_per_user": c["eval_tokens"] / c["eval_users"] if c["eval_users"] else None,
        }
