"""Shared base of the plugin's LLM recommenders: item text, prompts, LLM and candidate scoring.

A subclass sets ``special_tokens`` and overrides ``prompt_embeddings`` to inject soft tokens; the
candidate-ranking ``predict`` (RecBole's sampled evaluation: one contiguous block of 1+N rows per
user, same history) is shared.
"""

from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from recbole.data.dataloader import TrainDataLoader
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llmplugin.candidate_scorer import CandidateScorer
from recbole_llmplugin.errors import ConfigValueError
from recbole_llmplugin.item_text import ItemTextStore
from recbole_llmplugin.llm_loading import load_llm
from recbole_llmplugin.prompts import PromptBuilder
from recbole_llmplugin.trainer import LLMTrainer

_MIX = 2654435761  # Knuth's multiplicative hash: a fixed, row-order-free shuffle of candidates


def user_blocks(user_ids):
    """Block index of each row (rows of one user are contiguous) and each block's first row."""
    starts = torch.ones_like(user_ids, dtype=torch.bool)
    starts[1:] = user_ids[1:] != user_ids[:-1]
    block = starts.long().cumsum(0) - 1  # [R]
    return block, starts.nonzero(as_tuple=True)[0]


def prompt_order(user_ids, item_ids):
    """Sort key for listing candidates in a prompt: depends on (user, item) only, never on row
    position, so the positive (always first in RecBole's block) is not given away by its place."""
    return (item_ids * _MIX + user_ids * 40503) % 2147483647


class LLMRecommender(SequentialRecommender):
    """Base for LLM recommenders that rank RecBole's candidates with a (mostly frozen) LLM."""

    input_type = InputType.POINTWISE
    trainer_class = LLMTrainer
    special_tokens = ()

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.logger = getLogger()
        self.history_len = config["prompt_history_len"]
        self.eval_user_batch = config["llm_eval_user_batch"]
        self.llm, self.tokenizer = load_llm(
            config["llm_path"],
            device=config["device"],
            dtype=config["llm_dtype"],
            quantization=config["llm_quantization"],
            special_tokens=self.special_tokens,
        )
        self.tokenizer.padding_side = "left"
        self.item_texts = ItemTextStore(config, dataset, self.tokenizer)
        self.prompt_builder = PromptBuilder(config, self.item_texts)
        answer_ids, answer_lengths = self.prompt_builder.answer_token_table(self.tokenizer)
        self.register_buffer("answer_ids", answer_ids, persistent=False)  # [n_items, La]
        self.register_buffer("answer_lengths", answer_lengths, persistent=False)  # [n_items]
        self.scorer = CandidateScorer(self.llm, row_chunk=config["llm_score_row_chunk"])
        self.config = config
        self.n_candidates = config["stage2_candidates"]

    def train(self, mode=True):
        """The frozen LLM stays in eval mode (no dropout) while the trained modules train."""
        super().train(mode)
        self.llm.eval()
        return self

    # --- checkpoints: only what was trained -------------------------------------------------
    def trainable_state_dict(self):
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, weights):
        expected = set(self.trainable_state_dict())
        if set(weights) != expected:
            missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise ConfigValueError(
                f"checkpoint does not match {type(self).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        own = {**dict(self.named_buffers()), **dict(self.named_parameters())}
        with torch.no_grad():
            for name, tensor in weights.items():
                own[name].copy_(tensor.to(own[name].device, own[name].dtype))

    # --- prompts -----------------------------------------------------------------------------
    def recent_history(self, item_seq, item_seq_len):
        """Last ``prompt_history_len`` items per user, oldest first: list of id lists."""
        seqs = item_seq.tolist()
        lengths = item_seq_len.tolist()
        return [seq[max(0, n - self.history_len):n] for seq, n in zip(seqs, lengths)]

    def tokenize_prompts(self, prompts):
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def prompt_embeddings(self, input_ids, users, histories, candidates):
        """[U, Lp, H] embeddings of tokenized prompts; subclasses replace soft-token positions.

        users: dict with each prompt's ``item_seq`` [U, L], ``item_seq_len`` [U] and ``user_id`` [U].
        """
        return self.llm.get_input_embeddings()(input_ids)

    def prompt_texts(self, histories, candidates):
        return self.prompt_builder.prompts(histories, candidates)

    def user_fields(self, interaction, rows):
        return {
            "item_seq": interaction[self.ITEM_SEQ][rows],
            "item_seq_len": interaction[self.ITEM_SEQ_LEN][rows],
            "user_id": interaction[self.USER_ID][rows],
        }

    # --- ranking RecBole's candidates -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, interaction):
        user_ids = interaction[self.USER_ID]  # [R]
        item_ids = interaction[self.ITEM_ID]  # [R] candidates (positive and negatives alike)
        block, first_rows = user_blocks(user_ids)
        scores = torch.empty(len(item_ids), device=item_ids.device)
        for start in range(0, len(first_rows), self.eval_user_batch):
            users = torch.arange(start, min(start + self.eval_user_batch, len(first_rows)), device=item_ids.device)
            rows = torch.isin(block, users).nonzero(as_tuple=True)[0]  # [r]
            scores[rows] = self._score_rows(interaction, rows, block[rows] - start, first_rows[users])
        return scores

    def prompt_inputs(self, interaction, rows, owner, first_rows):
        """Embedded prompts of the users owning ``rows``: ([U, Lp, H] embeddings, [U, Lp] mask)."""
        user_ids = interaction[self.USER_ID]
        item_ids = interaction[self.ITEM_ID]
        users = self.user_fields(interaction, first_rows)
        histories = self.recent_history(users["item_seq"], users["item_seq_len"])
        keys = prompt_order(user_ids[rows], item_ids[rows])
        order = torch.argsort(owner * 2147483647 + keys)  # group by user, then by the row-free key
        counts = torch.bincount(owner[order], minlength=len(first_rows)).tolist()
        candidates = [c.tolist() for c in torch.split(item_ids[rows][order], counts)]
        input_ids, attention_mask = self.tokenize_prompts(self.prompt_texts(histories, candidates))
        return self.prompt_embeddings(input_ids, users, histories, candidates), attention_mask

    def _score_rows(self, interaction, rows, owner, first_rows):
        """Scores of ``rows`` (owner: 0..U-1 per row; first_rows: each user's first row)."""
        embeds, attention_mask = self.prompt_inputs(interaction, rows, owner, first_rows)
        row_items = interaction[self.ITEM_ID][rows]
        return self.scorer.score(
            embeds, attention_mask, self.answer_ids[row_items], self.answer_lengths[row_items], owner
        )

    # --- training on next-item title generation (A-LLMRec stage 2, TALLRec, MLP-LLM) ----------
    def stage_train_loader(self, stage, train_data):
        """Training examples of a stage: each user's last training position (or all positions with
        ``stage1_all_positions`` in stage 1); stage 2 optionally on a seeded ``stage2_user_sample`` of users."""
        dataset = train_data._dataset
        inter = dataset.inter_feat
        uid = inter[self.USER_ID].numpy()
        keep = np.ones(len(uid), dtype=bool)
        if not (stage.name == "stage1" and self.config["stage1_all_positions"]):
            # RecBole's augmentation lists each user's prefixes in time order: keep each user's last row
            row = np.arange(len(uid))
            last = np.full(uid.max() + 1, -1)
            np.maximum.at(last, uid, row)
            keep &= row == last[uid]
        sample = self.config["stage2_user_sample"] if stage.name != "stage1" else None
        if sample:
            users = np.unique(uid)
            chosen = np.random.default_rng(self.config["seed"]).choice(users, size=min(int(sample), len(users)), replace=False)
            keep &= np.isin(uid, chosen)
            getLogger().info(f"{stage.name}: training on a seeded sample of {len(chosen)} of {len(users)} users")
        subset = dataset.copy(inter[torch.from_numpy(keep)])
        saved_batch = self.config["train_batch_size"]
        self.config["train_batch_size"] = stage.batch_size
        try:
            return TrainDataLoader(self.config, subset, None, shuffle=True)
        finally:
            self.config["train_batch_size"] = saved_batch

    def random_items(self, shape, exclude):
        """Uniform item ids of ``shape`` not in ``exclude`` ([B, *] ids per row; 0 is padding)."""
        items = torch.randint(1, self.n_items, shape, device=exclude.device)
        for _ in range(20):
            clash = (items.unsqueeze(-1) == exclude.unsqueeze(1)).any(-1)  # [B, k]
            if not clash.any():
                break
            items[clash] = torch.randint(1, self.n_items, (int(clash.sum()),), device=exclude.device)
        return items

    def training_candidates(self, seq, target):
        """[B, n_candidates]: the target and random negatives outside the history, shuffled."""
        exclude = torch.cat([seq, target[:, None]], 1)
        negatives = self.random_items((len(target), self.n_candidates - 1), exclude)
        candidates = torch.cat([target[:, None], negatives], 1)
        order = torch.argsort(torch.rand(candidates.shape, device=target.device), dim=1)
        return candidates.gather(1, order)

    def generation_loss(self, interaction):
        """Next-item title generation loss: prompt (history + shuffled candidates) -> target title."""
        target = interaction[self.ITEM_ID]  # [B]
        users = self.user_fields(interaction, torch.arange(len(target), device=target.device))
        histories = self.recent_history(users["item_seq"], users["item_seq_len"])
        candidates = self.training_candidates(users["item_seq"], target).tolist()
        input_ids, prompt_mask = self.tokenize_prompts(self.prompt_texts(histories, candidates))
        prompt = self.prompt_embeddings(input_ids, users, histories, candidates)  # [B, Lp, H]
        lengths = self.answer_lengths[target]  # [B]
        width = int(lengths.max())
        answer = self.answer_ids[target][:, :width]  # [B, La]
        answer_mask = torch.arange(width, device=target.device)[None, :] < lengths[:, None]  # [B, La]
        embeds = torch.cat([prompt, self.llm.get_input_embeddings()(answer)], 1)
        mask = torch.cat([prompt_mask, answer_mask.long()], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {self.scorer.keep_name: width + 1} if self.scorer.keep_name else {}
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs).logits
        logits = logits[:, -(width + 1):-1].float()  # [B, La, V]: position t predicts answer token t
        return F.cross_entropy(logits[answer_mask], answer[answer_mask])

    def full_sort_predict(self, interaction):
        raise ConfigValueError(
            f"{type(self).__name__} ranks sampled candidates: set eval_args mode to uniN (e.g. uni19), not full"
        )
