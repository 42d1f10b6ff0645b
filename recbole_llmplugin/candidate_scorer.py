"""Scoring candidate items with a causal LM: length-normalised log-likelihood of each answer.

For U users with C_u candidates each, the prompts (given as embeddings, so models can inject soft
tokens) are encoded once, left-padded, in one batched pass; their key/value cache is then shared by
that user's candidates: each chunk of candidate rows selects its owners' cache rows and scores all
of its answers in one batched pass. A candidate's score is the mean log-probability of its answer
tokens given the prompt. No per-user Python loop runs around the LLM.
"""

import copy
import inspect

import torch


def select_cache_rows(cache, index):
    """A new cache holding rows ``index`` of ``cache`` (the original is left intact)."""
    if hasattr(cache, "layers"):
        selected = copy.copy(cache)
        selected.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        selected = copy.deepcopy(cache)
    selected.batch_select_indices(index)
    return selected


def forward_arguments(llm):
    """Names this transformers version uses for the KV cache and last-logits-only arguments."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    params = inspect.signature(base.forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"
    keep_name = "logits_to_keep" if "logits_to_keep" in params else None
    return cache_name, keep_name


def output_cache(output):
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


class CandidateScorer:
    """``score(...)`` -> one score per candidate row. ``row_chunk`` bounds rows per LLM pass."""

    def __init__(self, llm, row_chunk=64, length_normalize=True):
        self.llm = llm
        self.row_chunk = max(1, int(row_chunk))
        self.length_normalize = length_normalize
        self.cache_name, self.keep_name = forward_arguments(llm)

    def _embed(self, ids):
        return self.llm.get_input_embeddings()(ids)

    def score(self, prompt_embeds, prompt_mask, answer_ids, answer_lengths, owner):
        """Length-normalised log-likelihood of each answer.

        prompt_embeds: [U, Lp, H] left-padded prompt embeddings; prompt_mask: [U, Lp] (1 = token).
        answer_ids: [R, La] right-padded answer token ids; answer_lengths: [R] (>= 1).
        owner: [R] index of each row's user in 0..U-1.
        Returns [R] float scores.
        """
        device = prompt_embeds.device
        prompt_mask = prompt_mask.to(device)
        prompt_positions = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)  # [U, Lp]
        last_only = {self.keep_name: 1} if self.keep_name else {}
        out = self.llm(
            inputs_embeds=prompt_embeds,
            attention_mask=prompt_mask,
            position_ids=prompt_positions,
            use_cache=True,
            **last_only,
        )
        cache = output_cache(out)
        first_logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # [U, V]
        prompt_len = prompt_mask.long().sum(-1)  # [U]
        del out

        answer_ids = answer_ids.to(device)
        answer_lengths = answer_lengths.to(device)
        owner = owner.to(device)
        scores = torch.empty(answer_ids.shape[0], device=device, dtype=torch.float)
        for start in range(0, answer_ids.shape[0], self.row_chunk):
            rows = slice(start, start + self.row_chunk)
            ids, lengths, users = answer_ids[rows], answer_lengths[rows], owner[rows]
            width = int(lengths.max())
            ids = ids[:, :width]  # [r, La]
            answer_mask = torch.arange(width, device=device)[None, :] < lengths[:, None]  # [r, La]
            token_logp = first_logp[users].gather(1, ids[:, :1])  # [r, 1]
            if width > 1:
                step_ids = ids[:, :-1]  # [r, La-1]: token t predicts token t+1
                mask = torch.cat([prompt_mask[users], answer_mask[:, :-1].to(prompt_mask.dtype)], dim=1)
                positions = prompt_len[users][:, None] + torch.arange(width - 1, device=device)[None, :]
                step = self.llm(
                    inputs_embeds=self._embed(step_ids),
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{self.cache_name: select_cache_rows(cache, users)},
                )
                logits = step.logits.float()  # [r, La-1, V]
                rest = logits.gather(2, ids[:, 1:, None]).squeeze(2) - torch.logsumexp(logits, dim=-1)  # [r, La-1]
                token_logp = torch.cat([token_logp, rest], dim=1)  # [r, La]
            total = (token_logp * answer_mask).sum(1)  # [r]
            scores[rows] = total / lengths.float() if self.length_normalize else total
        return scores
