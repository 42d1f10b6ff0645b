"""The training losses of the LLM-facing stage (``stage2_objective``), each in one place.

generate: the paper's next-title generation; rank: softmax cross-entropy over the candidates' answer scores; index:
cross-entropy over the candidates' label logits (LlamaRec's verbalizer); match: cross-entropy of the trained CF
match over the same candidates (``cf_token_recommender``). Every loss but generate is a cross-entropy over the
training candidates of each example ([B, C]) against the place of its target among them.
"""

import torch
import torch.nn.functional as F


def target_places(candidates, target):
    """[B] place of each example's target among its candidates [B, C]."""
    return (candidates == target[:, None]).float().argmax(1)


def candidate_loss(scores, candidates, target):
    """Softmax cross-entropy of [B, C] candidate ``scores`` against each example's target."""
    return F.cross_entropy(scores, target_places(candidates, target))


def generation_loss(llm, keep_name, answer_ids, answer_lengths, target, prompt, prompt_mask):
    """Next-item title generation loss: prompt (history + shuffled candidates) -> the target's answer tokens
    (``answer_ids`` [n_items, La], ``answer_lengths`` [n_items]); a mean over answer tokens. ``keep_name``: the
    LLM's last-logits-only argument, if it has one."""
    lengths = answer_lengths[target]  # [B]
    width = int(lengths.max())
    answer = answer_ids[target][:, :width]  # [B, La]
    answer_mask = torch.arange(width, device=target.device)[None, :] < lengths[:, None]  # [B, La]
    embeds = torch.cat([prompt, llm.get_input_embeddings()(answer)], 1)
    mask = torch.cat([prompt_mask, answer_mask.long()], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {keep_name: width + 1} if keep_name else {}
    logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs).logits
    logits = logits[:, -(width + 1) : -1].float()  # [B, La, V]: position t predicts answer token t
    return F.cross_entropy(logits[answer_mask], answer[answer_mask])


def rank_loss(score_answers, target, candidates, prompt, prompt_mask):
    """Softmax cross-entropy over each prompt's candidates, scored as ``eval_mode: score`` ranks them
    (``score_answers(prompt, mask, items [R], owner [R])``: length-normalised answer log-likelihood)."""
    rows, n = candidates.shape
    flat = candidates.reshape(-1)  # [B*C]
    owner = torch.arange(rows, device=flat.device).repeat_interleave(n)  # [B*C]
    scores = score_answers(prompt, prompt_mask, flat, owner)
    return candidate_loss(scores.view(rows, n), candidates, target)


def index_loss(scorer, label_ids, target, candidates, prompt, prompt_mask):
    """Cross-entropy over the labels of each prompt's candidates (LlamaRec's verbalizer): one pass per prompt."""
    logits = scorer.label_logits(prompt, prompt_mask, label_ids[: candidates.shape[1]])  # [B, C]
    return candidate_loss(logits, candidates, target)
