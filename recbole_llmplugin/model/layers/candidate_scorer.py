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
from recbole_llmplugin.config.properties import choices


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


METHODS = choices("llm_score_method")


def attention_implementation(llm):
    config = llm.get_base_model().config if hasattr(llm, "get_base_model") else llm.config
    return getattr(config, "_attn_implementation", None)


def packed_attention_mask(segment, valid, implementation, dtype):
    """[U, 1, L, L] mask of one packed sequence per user: the prompt (segment 0, causal), then each candidate's
    answer (its own segment), which sees the whole prompt and its own earlier tokens, never another answer.

    segment: [U, L] segment id of each position; valid: [U, L] (False = padding).
    Boolean (True = attend) for sdpa, additive float for eager attention."""
    length = segment.shape[1]
    index = torch.arange(length, device=segment.device)
    causal = index[None, :] <= index[:, None]  # [L(query), L(key)]
    visible = (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None])  # [U, L, L]
    allowed = causal[None] & visible & valid[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=segment.device)[None]  # padding queries see themselves
    allowed = allowed[:, None]  # [U, 1, L, L]
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill(~allowed, torch.finfo(dtype).min)


class CandidateScorer:
    """``score(...)`` -> one score per candidate row.

    ``method`` packed (default where the LLM's attention takes a custom 4D mask: eager or sdpa): one LLM pass
    per batch of users over [prompt, answer 1, ..., answer C], each answer seeing only the prompt and itself,
    so the prompt is encoded once and shared with no cache copies (cheap to train through); cache: the prompt's
    key/value cache is copied to each chunk of ``row_chunk`` candidate rows (any causal LM)."""

    def __init__(self, llm, row_chunk=64, length_normalize=True, method="packed"):
        self.llm = llm
        self.row_chunk = max(1, int(row_chunk))
        self.length_normalize = length_normalize
        self.cache_name, self.keep_name = forward_arguments(llm)
        if method not in METHODS:
            raise ValueError(f"llm_score_method: '{method}' is not one of {', '.join(METHODS)}")
        self.method = method

    def _embed(self, ids):
        return self.llm.get_input_embeddings()(ids)

    def score(
        self, prompt_embeds, prompt_mask, answer_ids, answer_lengths, owner, answer_soft=None, soft_token_id=None
    ):
        """Length-normalised log-likelihood of each answer.

        prompt_embeds: [U, Lp, H] left-padded prompt embeddings; prompt_mask: [U, Lp] (1 = token).
        answer_ids: [R, La] right-padded answer token ids; answer_lengths: [R] (>= 1).
        owner: [R] index of each row's user in 0..U-1.
        answer_soft: optional [R, H] embedding of each row's soft token (a candidate's CF item token): it replaces
        the answer's ``soft_token_id`` position, which conditions the tokens after it and is not scored itself.
        Packed method only.
        Returns [R] float scores.
        """
        implementation = attention_implementation(self.llm)
        rows = (prompt_embeds, prompt_mask, answer_ids, answer_lengths, owner)
        if self.method == "packed" and implementation in ("sdpa", "eager") and self.keep_name:
            return self._score_packed(*rows, implementation, answer_soft, soft_token_id)
        if answer_soft is not None:
            raise ValueError(
                "a soft token in the answer (prompt_answer with {item_token}) needs llm_score_method "
                "packed with eager or sdpa attention"
            )
        return self._score_cached(*rows)

    def label_logits(self, prompt_embeds, prompt_mask, label_ids):
        """[U, C] next-token logits of the candidate labels after each (left-padded) prompt: one pass over the
        prompts, no answer tokens (``eval_mode: index``)."""
        prompt_mask = prompt_mask.to(prompt_embeds.device)
        positions = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)  # [U, Lp]
        kwargs = {self.keep_name: 1} if self.keep_name else {}
        logits = self.llm(
            inputs_embeds=prompt_embeds, attention_mask=prompt_mask, position_ids=positions, **kwargs
        ).logits
        return logits[:, -1].float()[:, label_ids.to(prompt_embeds.device)]  # [U, C]

    def _score_packed(
        self,
        prompt_embeds,
        prompt_mask,
        answer_ids,
        answer_lengths,
        owner,
        implementation,
        answer_soft=None,
        soft_token_id=None,
    ):
        """One pass per batch of users over [prompt, answers of its candidates back to back]."""
        device = prompt_embeds.device
        prompt_mask = prompt_mask.to(device)
        answer_ids, answer_lengths, owner = answer_ids.to(device), answer_lengths.to(device), owner.to(device)
        users, prompt_width, _ = prompt_embeds.shape
        rows = len(owner)
        order = torch.argsort(owner, stable=True)  # rows grouped by user
        lengths = answer_lengths[order]  # [R]
        per_user = torch.zeros(users, dtype=torch.long, device=device).index_add_(0, owner, answer_lengths)  # [U]
        width = int(per_user.max())
        row_start = lengths.cumsum(0) - lengths  # [R] first token of each row among all answer tokens
        user_start = (per_user.cumsum(0) - per_user)[owner[order]]  # [R] first answer token of its user
        token_row = torch.repeat_interleave(torch.arange(rows, device=device), lengths)  # [T]
        step = torch.arange(len(token_row), device=device) - row_start[token_row]  # [T] j: place in its answer
        column = row_start[token_row] - user_start[token_row] + step  # [T] place in its user's answer region
        token_user = owner[order][token_row]  # [T]
        token_ids = answer_ids[order][token_row, step]  # [T]
        tokens = torch.zeros((users, width), dtype=answer_ids.dtype, device=device)
        tokens[token_user, column] = token_ids
        segment = torch.full((users, width), -1, dtype=torch.long, device=device)
        segment[token_user, column] = token_row + 1
        answer_embeds = self._embed(tokens)  # [U, W, H]
        soft = token_ids == soft_token_id if answer_soft is not None else torch.zeros_like(token_ids, dtype=torch.bool)
        if answer_soft is not None:  # [T] positions of the rows' soft tokens, filled with their embeddings
            answer_embeds = answer_embeds.index_put(
                (token_user[soft], column[soft]), answer_soft[order][token_row[soft]].to(answer_embeds.dtype)
            )
        embeds = torch.cat([prompt_embeds, answer_embeds], 1)  # [U, Lp + W, H]
        prompt_len = prompt_mask.long().sum(-1)  # [U]
        answer_positions = torch.zeros((users, width), dtype=torch.long, device=device)
        answer_positions[token_user, column] = prompt_len[token_user] + step
        positions = torch.cat([(prompt_mask.long().cumsum(-1) - 1).clamp(min=0), answer_positions], 1)  # [U, Lp + W]
        segments = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.long), segment], 1)
        valid = torch.cat([prompt_mask.bool(), segment > 0], 1)
        mask = packed_attention_mask(segments, valid, implementation, prompt_embeds.dtype)
        logits = self.llm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **{self.keep_name: width + 1}
        ).logits  # [U, 1 + W, V]: prompt's last, then answers
        log_norm = torch.logsumexp(logits.float(), dim=-1)  # [U, 1 + W]
        # token j of an answer is predicted at the prompt's last position (j = 0) or at its token j - 1
        predictor = torch.where(step == 0, torch.zeros_like(column), column)  # [T] index into 1 + W
        token_logp = (
            logits[token_user, predictor].float().gather(1, token_ids[:, None]).squeeze(1)
            - log_norm[token_user, predictor]
        )
        token_logp = token_logp * ~soft  # a soft token is read, never scored
        total = torch.zeros(rows, device=device).index_add_(0, token_row, token_logp)  # [R] in grouped order
        scores = torch.empty_like(total)
        scored = (lengths - torch.zeros_like(lengths).index_add_(0, token_row, soft.long())).float()  # [R]
        scores[order] = total / scored if self.length_normalize else total
        return scores

    def _score_cached(self, prompt_embeds, prompt_mask, answer_ids, answer_lengths, owner):
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
