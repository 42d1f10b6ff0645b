"""Prompt text from YAML templates; no wording lives in code.

Properties (defaults in the package's properties/overall.yaml, per-dataset wording in its properties/dataset/):
``prompt_template`` with ``{user_token}``, ``{history}`` and ``{candidates}``;
``prompt_history_item`` / ``prompt_candidate_item`` with ``{title}`` and ``{item_token}``;
``prompt_item_separator``; ``prompt_answer`` (the text scored or generated for an item, ``{title}``; an
``{item_token}`` in it puts the candidate's soft item token inside its scored answer, read but not scored).
Models that inject soft tokens pass their placeholder strings as ``user_token`` / ``item_token``.
With ``eval_mode: index`` each candidate is written with ``prompt_index_item`` and a ``{label}`` from
``prompt_index_labels`` (one LLM token each); the answer is that label (LlamaRec's verbalizer).
"""

import torch

from recbole_llmplugin.utils.errors import ConfigValueError


def check_prompt_templates(config):
    """The placeholders each prompt key needs for this run's ranking (``eval_mode: index`` lists candidates with
    ``prompt_index_item``): one line naming the key otherwise. Needs only the config: runs before anything trains."""
    answer = config["prompt_answer"]
    if answer.count("{item_token}") > 1:
        raise ConfigValueError(f"prompt_answer: '{answer}' may hold {{item_token}} once")
    index = config["eval_mode"] == "index"
    candidate_key = "prompt_index_item" if index else "prompt_candidate_item"
    for key, needed in (
        ("prompt_template", ("{history}", "{candidates}")),
        ("prompt_history_item", ("{title}",)),
        (candidate_key, ("{title}", "{label}") if index else ("{title}",)),
        ("prompt_answer", ("{title}",)),
    ):
        value = config[key]
        missing = [n for n in needed if n not in value]
        if missing:
            raise ConfigValueError(f"{key}: '{value}' must contain {', '.join(missing)}")


class PromptBuilder:
    def __init__(self, config, item_texts):
        self.template = config["prompt_template"]
        self.history_item = config["prompt_history_item"]
        self.candidate_item = config["prompt_candidate_item"]
        self.separator = config["prompt_item_separator"]
        self.answer = config["prompt_answer"]
        # the candidate's soft item token inside its scored answer: it conditions the tokens after it
        self.answer_item_token = "{item_token}" in self.answer
        check_prompt_templates(config)
        self.item_texts = item_texts
        self.labels = None
        if config["eval_mode"] == "index":
            self.candidate_item = config["prompt_index_item"]
            self.labels = list(config["prompt_index_labels"])

    def _items(self, pattern, item_ids, item_token, labels=None):
        labels = labels or [""] * len(item_ids)
        return self.separator.join(
            pattern.format(title=self.item_texts[i], item_token=item_token, label=label)
            for i, label in zip(item_ids, labels)
        )

    def prompts(self, histories, candidates, user_token="", history_token="", candidate_token=""):
        """One prompt per user. ``histories`` / ``candidates``: lists of internal item-id lists."""
        return [
            self.template.format(
                user_token=user_token,
                history=self._items(self.history_item, history, history_token),
                candidates=self._items(self.candidate_item, cands, candidate_token, self.labels),
            )
            for history, cands in zip(histories, candidates)
        ]

    def label_token_ids(self, tokenizer, n_candidates):
        """[n_candidates] token id of each candidate label (``eval_mode: index``): one LLM token each."""
        if n_candidates > len(self.labels):
            raise ConfigValueError(
                f"prompt_index_labels: {len(self.labels)} labels for {n_candidates} candidates; give at least {n_candidates}"
            )
        ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in self.labels[:n_candidates]]
        several = [label for label, i in zip(self.labels, ids) if len(i) != 1]
        if several:
            raise ConfigValueError(
                f"prompt_index_labels: {several[:3]} are not one token each for this LLM; use letters"
            )
        return torch.tensor([i[0] for i in ids], dtype=torch.long)

    def answer_text(self, item_id, item_token=""):
        return self.answer.format(title=self.item_texts[item_id], item_token=item_token)

    def answer_token_table(self, tokenizer, eos=False, item_token=""):
        """Token ids of every item's answer text (``item_token``: the placeholder of its soft item token, if the
        answer has one), ending with the EOS token when ``eos`` (as the official A-LLMRec code trains its
        answers): ([n_items, L] right-padded ids, [n_items] lengths)."""
        texts = [self.answer_text(i, item_token) for i in range(1, len(self.item_texts))]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        if eos:
            if tokenizer.eos_token_id is None:
                raise ConfigValueError("prompt_answer_eos: True but the LLM's tokenizer has no EOS token; set it False")
            encoded = [ids + [tokenizer.eos_token_id] for ids in encoded]
        lengths = [0] + [len(ids) for ids in encoded]
        width = max(lengths)
        table = torch.full((len(lengths), width), tokenizer.pad_token_id, dtype=torch.long)
        for index, ids in enumerate(encoded, start=1):
            table[index, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return table, torch.tensor(lengths, dtype=torch.long)


def item_vocabulary_tokens(tokenizer, n_items, offset, reserved=()):
    """[n_items] one ordinary token of the LLM's vocabulary per item (``allmrec_token_space: vocabulary``): the
    tokens from id ``offset`` on, in order, skipping special and added tokens and ``reserved`` ids (the candidate
    labels); index 0 (padding) gets the pad token."""
    skipped = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values()) | set(reserved)
    ids = [i for i in range(offset, len(tokenizer)) if i not in skipped][: n_items - 1]
    if len(ids) < n_items - 1:
        raise ConfigValueError(
            f"item_vocabulary_offset: {offset} leaves {len(ids)} ordinary LLM tokens for {n_items - 1} items; "
            f"lower it, or use allmrec_token_space: projected"
        )
    return torch.tensor([tokenizer.pad_token_id] + ids, dtype=torch.long)
