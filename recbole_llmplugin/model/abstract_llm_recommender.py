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
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llmplugin.config.options import CF_TOKEN_ONLY, check_ranking
from recbole_llmplugin.config.properties import choices
from recbole_llmplugin.model.layers.candidate_scorer import CandidateScorer
from recbole_llmplugin.model.layers.cf_backbone import CFBackbone
from recbole_llmplugin.utils.distributed import is_distributed, single_process_view
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.data.item_text import ItemTextStore
from recbole_llmplugin.model.layers.llm_loading import enable_checkpointing, eval_copy, load_llm
from recbole_llmplugin.data.prompts import PromptBuilder, check_prompt_templates
from recbole_llmplugin.model.stage import Stage

_MIX = 2654435761  # Knuth's multiplicative hash: a fixed, row-order-free shuffle of candidates
DRAWN = "drawn_"  # prefix of the fields that ``add_draws`` adds to a training batch: its random draws
# how a row was ranked, when not by the paper's answer (its likelihood, ``score``, or its generation, ``generate``)
RANKING_NAMES = {"index": "index ranking", "match": "CF match alone, no LLM"}


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


def prompt_order(user_ids, item_ids):
    """Sort key for listing candidates in a prompt: depends on (user, item) only, never on row
    position, so the positive (always first in RecBole's block) is not given away by its place."""
    return (item_ids * _MIX + user_ids * 40503) % 2147483647


class LLMRecommender(SequentialRecommender):
    """Base for LLM recommenders that rank RecBole's candidates with a (mostly frozen) LLM."""

    input_type = InputType.POINTWISE
    trainer_type = "llm"  # the trainer that runs it (trainer.get_trainer_class)
    special_tokens = ()
    # how predict() ranks (answer likelihood, or candidate-label logits), and the stage2_objective values it trains
    # with: all but those that need CF tokens
    eval_modes = tuple(m for m in choices("eval_mode") if m not in CF_TOKEN_ONLY["eval_mode"])
    objectives = tuple(o for o in choices("stage2_objective") if o not in CF_TOKEN_ONLY["stage2_objective"])
    trains_stage2 = True  # False for models that train nothing (their stage-2 keys are not read)
    trains_llm_layers = False  # True when layers inside the LLM train (LoRA): it then leaves eval mode in train()
    answer_item_token = None  # placeholder string of the CF item token models put in answers (answer_soft)
    full_sort = True  # eval_args mode full: re-ranks a CF retriever's top rerank_topk unseen items

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.logger = getLogger()
        self.config = config
        self.history_len = config["prompt_history_len"]
        self.eval_user_batch = config["llm_eval_user_batch"]
        self.eval_mode = config["eval_mode"]
        self.eval_negatives = eval_negatives(config)
        self.rerank_topk = config["rerank_topk"]
        self.retrieval_hits = []  # full ranking: [users] per evaluated batch, whether the target was retrieved
        self.objective = config["stage2_objective"] if self.trains_stage2 else None
        self.n_candidates = config["stage2_candidates"] if self.trains_stage2 else None
        self.check_config(config, dataset.item_num - 1)
        self._load_llm(config)
        self.item_texts = ItemTextStore(config, dataset, self.tokenizer)
        self.prompt_builder = PromptBuilder(config, self.item_texts)
        answer_ids, answer_lengths = self.prompt_builder.answer_token_table(
            self.tokenizer, eos=config["prompt_answer_eos"], item_token=self.answer_item_token or ""
        )
        self.register_buffer("answer_ids", answer_ids, persistent=False)  # [n_items, La]
        self.register_buffer("answer_lengths", answer_lengths, persistent=False)  # [n_items]
        self.scorer = CandidateScorer(
            self.llm, row_chunk=config["llm_score_row_chunk"], method=config["llm_score_method"]
        )
        self.eval_quantization = config["llm_eval_quantization"]
        self._eval_llm = None  # the int8 copy of the frozen LLM, made on the first evaluation that needs it
        if self.eval_mode == "index":
            full = self.full_sort and self.eval_negatives is None  # full-sort evaluation lists the top rerank_topk
            reranked = config["rerank_topk"] if full else 0
            shown = max(self.n_candidates or 0, (self.eval_negatives or 0) + 1, reranked)
            self.register_buffer(
                "label_ids", self.prompt_builder.label_token_ids(self.tokenizer, shown), persistent=False
            )
        self.token_counts = {"train_examples": 0, "train_tokens": 0, "eval_users": 0, "eval_tokens": 0}
        if self.eval_negatives is None and not self.retrieves_with_backbone(config):
            self.retriever = CFBackbone(  # frozen: the CF model whose top items are re-ranked
                config["rerank_checkpoint"], dataset, device=config["device"], trust=config["trust_checkpoint"]
            )

    @classmethod
    def retrieves_with_backbone(cls, config):
        """Whether full ranking re-ranks the model's own CF backbone's top items (no separate retriever). None here:
        models with a backbone override it."""
        return False

    def retrieval_model(self):
        """The frozen CF model whose top ``rerank_topk`` unseen items full ranking re-ranks."""
        return self.retriever

    @classmethod
    def check_config(cls, config, n_items=None):
        """Every check of the model's properties (its options, their combination: ``config.options.check_ranking``;
        the prompt templates; ``stage2_candidates`` against ``n_items``, the dataset's item count when known). The
        run's config check calls it before anything trains (a CF backbone trained first would be wasted), the
        constructor again."""
        eval_mode = config["eval_mode"]
        if eval_mode not in cls.eval_modes:
            raise ConfigValueError(
                f"eval_mode: '{eval_mode}' is not one of {', '.join(cls.eval_modes)} for {cls.__name__}"
            )
        check_prompt_templates(config)
        labels = config["prompt_index_labels"]
        shown = (eval_negatives(config) or 0) + 1
        if eval_mode == "index" and shown > len(labels):
            raise ConfigValueError(
                f"prompt_index_labels: {len(labels)} labels for {shown} candidates; give at least {shown}"
            )
        objective = config["stage2_objective"] if cls.trains_stage2 else None
        cls._check_answer_item_token(config, objective)
        if not cls.trains_stage2:
            return
        candidates = config["stage2_candidates"]
        if n_items is not None and candidates and candidates > n_items:
            raise ConfigValueError(
                f"stage2_candidates: {candidates} but {config['dataset']} has {n_items} items; use at most {n_items}"
            )
        if objective not in cls.objectives:
            raise ConfigValueError(f"stage2_objective: '{objective}' is not one of {', '.join(cls.objectives)}")
        check_ranking(objective, eval_mode, **cls.ranking_options(config))

    @classmethod
    def ranking_options(cls, config):
        """The options besides objective and eval mode that ``check_ranking`` reads (none for models without CF
        tokens)."""
        return {}

    def _load_llm(self, config):
        """The frozen LLM and its tokenizer (with the model's ``special_tokens``), spread over devices by
        ``llm_device_map``, with gradient checkpointing when set."""
        device_map = config["llm_device_map"]
        if device_map != "none" and is_distributed():
            raise ConfigValueError(
                f"llm_device_map: {device_map} spreads one LLM over the GPUs of one process; with nproc > 1 each "
                f"process holds a whole LLM: set llm_device_map: none, or run one process"
            )
        self.llm, self.tokenizer = load_llm(
            config["llm_path"],
            device=config["device"],
            dtype=config["llm_dtype"],
            quantization=config["llm_quantization"],
            special_tokens=self.special_tokens,
            device_map=device_map,
        )
        # accelerate spread its layers over devices (transformers records the map only then): moving the model
        # leaves them where they are
        self.llm_dispatched = bool(getattr(self.llm, "hf_device_map", None))
        self.gradient_checkpointing = bool(config["llm_gradient_checkpointing"])
        if self.gradient_checkpointing:  # recompute the LLM's activations in backward instead of keeping them
            enable_checkpointing(self.llm)
        self.tokenizer.padding_side = "left"
        # the LLM's BOS token first, as OPT's tokenizer adds in the official code: without it a soft user token would
        # sit at position 0, the attention sink, whose hidden state the LLM overwrites (docs/allmrec.md, "Item text
        # and prompts")
        self.prompt_prefix = (self.tokenizer.bos_token or "") if config["prompt_bos"] else ""

    @classmethod
    def _check_answer_item_token(cls, config, objective):
        """``prompt_answer`` with {item_token} needs CF item tokens, the score eval mode and the rank objective."""
        if "{item_token}" not in config["prompt_answer"]:
            return
        if not cls.answer_item_token:
            raise ConfigValueError(
                f"prompt_answer: {{item_token}} needs a model with CF item tokens (ALLMRec, MLPLLM), not {cls.__name__}"
            )
        if config["eval_mode"] != "score" or objective != "rank":
            raise ConfigValueError(
                f"prompt_answer: '{config['prompt_answer']}' has the candidate's item token in its answer: it needs "
                f"eval_mode score and stage2_objective rank (got {config['eval_mode']}, {objective})"
            )

    @classmethod
    def form_parts(cls, config):
        """Short names of this run's options that make it another method than the paper's form of the model
        (none: the paper's form). Base: the training objective, unless it is the paper's title generation."""
        objective = config["stage2_objective"] if cls.trains_stage2 else None
        return [objective] if objective not in (None, "generate") else []

    @classmethod
    def variant(cls, config, eval_mode=None):
        """The form of a result row in words: ``form_parts``, then how it was ranked when not by the paper's answer
        (``eval_mode``; default the config's), e.g. ``vocabulary, match`` or ``vocabulary, match; CF match alone,
        no LLM``. "" for the paper's form: the row keeps the model's bare name."""
        parts = cls.form_parts(config)
        mode = eval_mode or config["eval_mode"]
        ranking = RANKING_NAMES.get(mode)
        if mode == "index" and {"index", "vocabulary"} & set(parts):  # ranked by labels: already said
            ranking = None
        return ", ".join(parts) + ("; " if parts and ranking else "") + (ranking or "")

    def other_rankings(self):
        """Other ``eval_mode`` values whose rows the runner adds beside this model's own, from the same trained
        weights and test users (e.g. A-LLMRec's CF match alone). None here."""
        return []

    @classmethod
    def cross_domain_problem(cls, config):
        """Why this model cannot rank another dataset's items after training (a one-line reason), or None."""
        return None

    def adopt_target_items(self):
        """Cross-domain (``quick_start.cross_domain``): make ready to rank this model's dataset, another one than its
        trained weights came from. Models that read items through their text alone need nothing."""

    def _apply(self, fn, recurse=True):
        """``model.to(device)`` moves everything but an LLM that accelerate has spread over devices
        (``llm_device_map``), which stays where it was placed."""
        if not getattr(self, "llm_dispatched", False):
            return super()._apply(fn, recurse)
        modules = self._modules
        self._modules = type(modules)((name, module) for name, module in modules.items() if name != "llm")
        try:
            return super()._apply(fn, recurse)
        finally:
            self._modules = modules

    def train(self, mode=True):
        """The frozen LLM stays in eval mode (no dropout) while the trained modules train, unless the model
        trains layers inside it (``trains_llm_layers``: TALLRec's LoRA) or checkpoints its activations."""
        super().train(mode)
        # transformers checkpoints only in training mode: with llm_gradient_checkpointing the LLM trains in it (its
        # own dropout, if its config has any, then applies; SmolLM2 / Llama / Qwen have none)
        self.llm.train(mode and (self.trains_llm_layers or self.gradient_checkpointing))
        return self

    def calculate_loss(self, interaction):
        """RecBole's contract: the loss of the model's LLM-facing stage (``stage2_loss``; a tuple of parts
        when it has an auxiliary loss, which RecBole's trainer sums and logs one by one)."""
        return self.stage2_loss(interaction)

    # --- what trains -----------------------------------------------------------------------------
    def stage_names(self):
        """Names of the model's training stages, in order (``training_stages``; none for a model that trains
        nothing)."""
        return ("stage2",) if self.trains_stage2 else ()

    def stage2(self, checkpoint_name="stage2"):
        """The LLM-facing stage, from the ``stage2_*`` properties; its checkpoint file is named ``checkpoint_name``
        (the trainer names the file: a new backbone or any other trained-on property gives a new one)."""
        c = self.config
        return Stage(
            "stage2",
            c["stage2_epochs"],
            c["stage2_learning_rate"],
            c["stage2_batch_size"],
            checkpoint_name,
            validate=c["stage2_validate"],
            seed_offset=2,
        )

    def set_stage(self, stage):
        """Only what ``stage`` trains requires grad (``eval``: nothing). Base: the parameters stay as the model set
        them; multi-stage models override it (docs/development.md)."""

    def trained_parameters(self):
        """{stage: {module: parameters it trains}}, read from ``set_stage`` (LoRA layers inside the LLM:
        ``llm LoRA``)."""
        summary = {}
        for stage in self.stage_names():
            self.set_stage(stage)
            counts = {}
            for name, param in self.named_parameters():
                if param.requires_grad:
                    module = name.split(".")[0] + (" LoRA" if "lora_" in name else "")
                    counts[module] = counts.get(module, 0) + param.numel()
            summary[stage] = counts
        if summary:
            self.set_stage("eval")
        return summary

    def frozen_parts(self):
        """[(name, parameters)] of the model's frozen parts, for the log."""
        llm = sum(p.numel() for n, p in self.llm.named_parameters() if "lora_" not in n)
        return [(f"LLM {self.config['llm_path']}", llm)]

    def __str__(self):
        """The run log's model lines: the frozen parts, then each stage's trained modules and parameter counts
        (RecBole's own prints the module tree and the parameters requiring grad now: none between stages)."""
        frozen = ", ".join(f"{name} ({count:,} parameters)" for name, count in self.frozen_parts())
        lines = [f"{type(self).__name__}: frozen {frozen}"]
        for stage, counts in self.trained_parameters().items():
            modules = ", ".join(f"{name} {count:,}" for name, count in counts.items())
            lines.append(f"  {stage} trains {sum(counts.values()):,} parameters: {modules}")
        return "\n".join(lines if len(lines) > 1 else lines + ["  trains nothing"])

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
        return [seq[max(0, n - self.history_len) : n] for seq, n in zip(seqs, lengths)]

    def tokenize_prompts(self, prompts):
        prompts = [self.prompt_prefix + prompt for prompt in prompts]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = self.llm.get_input_embeddings().weight.device  # the LLM's first device (llm_device_map)
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)

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
        block, first_rows = user_blocks(interaction[self.USER_ID])
        self._check_whole_users(block, len(first_rows))
        return self.score_blocks(interaction)

    @torch.inference_mode()
    def score_blocks(self, interaction):
        """Scores of candidate rows given as one contiguous block per user (each block is one prompt)."""
        user_ids = interaction[self.USER_ID]  # [R]
        item_ids = interaction[self.ITEM_ID]  # [R] candidates (positive and negatives alike)
        block, first_rows = user_blocks(user_ids)
        if self.eval_quantization != "none":
            if self._eval_llm is None:
                self._eval_llm = eval_copy(self.llm, self.eval_quantization)
            self.scorer.llm = self._eval_llm
        scores = torch.empty(len(item_ids), device=item_ids.device)
        by_length = torch.argsort(self._token_estimate(interaction, block, first_rows))  # similar lengths share a pass
        for start in range(0, len(first_rows), self.eval_user_batch):
            users = by_length[start : start + self.eval_user_batch].sort().values  # [u] block indices
            local = torch.full((len(first_rows),), -1, dtype=torch.long, device=item_ids.device)
            local[users] = torch.arange(len(users), device=item_ids.device)
            rows = torch.isin(block, users).nonzero(as_tuple=True)[0]  # [r]
            scored = self._score_rows(interaction, rows, local[block[rows]], first_rows[users])  # [r]
            scores[rows] = scored.to(scores.device)  # an LLM spread by llm_device_map answers on its own device
        self.scorer.llm = self.llm
        return scores

    def _token_estimate(self, interaction, block, first_rows):
        """[U] tokens of each user's prompt and answers, from the answer-token table: users are scored in
        passes of similar length, so padding stays small."""
        seq, seq_len = interaction[self.ITEM_SEQ][first_rows], interaction[self.ITEM_SEQ_LEN][first_rows]
        history = self.history_tokens(seq, seq_len)  # [U]
        answers = torch.zeros(len(first_rows), dtype=torch.long, device=seq.device)
        answers.index_add_(0, block, self.answer_lengths[interaction[self.ITEM_ID]])
        shown = 1 if self.eval_mode == "index" else 2  # candidates in the prompt (and as answers)
        return history + shown * answers

    def on_evaluation_end(self):
        """Log the prompt tokens per evaluated user (the cost driver of LLM evaluation)."""
        tokens = self.token_stats()["prompt_tokens_per_user"]
        if tokens and self.eval_mode != "match":  # ranking by the CF match alone reads no prompt
            self.logger.info(f"evaluation: {tokens:.0f} prompt tokens per user")

    def _check_whole_users(self, block, n_users):
        """Every user's prompt must list all of its 1+N candidates: a call holding part of a user's rows
        would rank that user on a partial list. RecBole's sampled-evaluation loaders batch whole users;
        anything else calling ``predict`` must too."""
        if self.eval_negatives is None:
            return
        counts = torch.bincount(block, minlength=n_users)  # [U]
        if bool((counts != self.eval_negatives + 1).any()):
            raise ConfigValueError(
                f"predict() got users with {sorted(set(counts.tolist()))} candidate rows, expected "
                f"{self.eval_negatives + 1} (eval_args mode uni{self.eval_negatives}): pass each user's rows whole"
            )

    def prompt_inputs(self, interaction, rows, owner, first_rows):
        """Embedded prompts of the users owning ``rows``: ([U, Lp, H] embeddings, [U, Lp] mask, [r] place of each
        row in its user's candidate list)."""
        user_ids = interaction[self.USER_ID]
        item_ids = interaction[self.ITEM_ID]
        users = self.user_fields(interaction, first_rows)
        histories = self.recent_history(users["item_seq"], users["item_seq_len"])
        keys = prompt_order(user_ids[rows], item_ids[rows])
        order = torch.argsort(owner * 2147483647 + keys)  # group by user, then by the row-free key
        counts = torch.bincount(owner[order], minlength=len(first_rows)).tolist()
        candidates = [c.tolist() for c in torch.split(item_ids[rows][order], counts)]
        starts = torch.tensor([0] + counts[:-1], device=rows.device).cumsum(0)  # [U] first sorted row of each user
        slot = torch.empty_like(order)
        slot[order] = torch.arange(len(order), device=rows.device) - starts[owner[order]]  # [r]
        input_ids, attention_mask = self.tokenize_prompts(self.prompt_texts(histories, candidates))
        self.token_counts["eval_users"] += len(first_rows)
        self.token_counts["eval_tokens"] += int(attention_mask.sum())
        return self.prompt_embeddings(input_ids, users, histories, candidates), attention_mask, slot

    def _score_rows(self, interaction, rows, owner, first_rows):
        """Scores of ``rows`` (owner: 0..U-1 per row; first_rows: each user's first row)."""
        embeds, attention_mask, slot = self.prompt_inputs(interaction, rows, owner, first_rows)
        if self.eval_mode == "index":
            return self.scorer.label_logits(embeds, attention_mask, self.label_ids)[owner, slot]  # [r]
        row_items = interaction[self.ITEM_ID][rows]
        return self._score_answers(embeds, attention_mask, row_items, owner)

    def _score_answers(self, prompt, prompt_mask, items, owner):
        """[R] scores of the answers of ``items`` (one row each, ``owner``: its prompt), with each candidate's
        soft item token in its answer when ``prompt_answer`` has one."""
        soft = self.answer_soft(items)
        soft_id = self.tokenizer.convert_tokens_to_ids(self.answer_item_token) if soft is not None else None
        return self.scorer.score(
            prompt,
            prompt_mask,
            self.answer_ids[items],
            self.answer_lengths[items],
            owner,
            answer_soft=soft,
            soft_token_id=soft_id,
        )

    def answer_soft(self, items):
        """[N, H] soft token of each item inside its answer (``prompt_answer`` with {item_token}), or None.
        Models with CF item tokens (``answer_item_token``) override it."""
        return None

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
            chosen = np.random.default_rng(self.config["seed"]).choice(
                users, size=min(int(sample), len(users)), replace=False
            )
            keep &= np.isin(uid, chosen)
            getLogger().info(f"{stage.name}: training on a seeded sample of {len(chosen)} of {len(users)} users")
        subset = dataset.copy(inter[torch.from_numpy(keep)])
        saved_batch = self.config["train_batch_size"]
        self.config["train_batch_size"] = stage.batch_size
        try:
            with single_process_view(self.config):  # every process reads the same batches (trainer.shared_loss)
                loader = TrainDataLoader(self.config, subset, None, shuffle=True)
        finally:
            self.config["train_batch_size"] = saved_batch
        # shuffled by its own seeded generator, alike in every process; RecBole's trainer would otherwise call
        # set_epoch on the DistributedSampler of a loader built for data-parallel runs, which this one has not
        loader.shuffle = False
        return loader

    def random_items(self, shape, exclude):
        """[B, k] distinct uniform item ids per row, none in that row's ``exclude`` ([B, *] ids; 0 is padding)."""
        rows, k = shape
        keys = torch.rand(rows, self.n_items, device=exclude.device)  # [B, n_items]
        keys[:, 0] = -1.0
        keys.scatter_(1, exclude, -1.0)
        if k > self.n_items - 1 - exclude.shape[1]:
            allowed = int((keys >= 0).sum(1).min())
            if k > allowed:
                raise ConfigValueError(
                    f"stage2_candidates: {k + 1} needs {k} negatives but a user has only {allowed} unseen items"
                )
        return keys.topk(k, dim=1).indices  # distinct: topk of a random key per item

    def training_candidates(self, seq, target):
        """[B, n_candidates]: the target and distinct random negatives outside the history, shuffled."""
        exclude = torch.cat([seq, target[:, None]], 1)
        negatives = self.random_items((len(target), self.n_candidates - 1), exclude)
        candidates = torch.cat([target[:, None], negatives], 1)
        order = torch.argsort(torch.rand(candidates.shape, device=target.device), dim=1)
        return candidates.gather(1, order)

    # --- the random draws of a training batch ----------------------------------------------------
    def draw(self, stage, interaction):
        """Every random draw a training batch of ``stage`` needs, made here and nowhere else: {name: tensor with one
        row per example}. Base: stage 2's candidates [B, C]. The losses read them with ``drawn``; the trainer has
        them made (``training_batch``) before it splits a batch over processes and micro-batches, so each part reads
        the whole batch's draws and a split trains what the whole batch trains. A loss that drew for itself would
        draw other values in each part (``tests/test_draws.py`` checks that no loss does)."""
        if stage != "stage2" or not self.trains_stage2:
            return {}
        return {"candidates": self.training_candidates(interaction[self.ITEM_SEQ], interaction[self.ITEM_ID])}

    def add_draws(self, stage, interaction):
        """``interaction`` with the fields ``DRAWN + name`` of ``draw(stage, interaction)``."""
        for name, value in self.draw(stage, interaction).items():
            interaction[DRAWN + name] = value
        return interaction

    def drawn(self, stage, interaction, name):
        """The draw ``name`` of a batch of ``stage``: made by ``training_batch``, or by ``draw`` now for a batch that
        did not pass through it (a loss called on a batch of one's own)."""
        if DRAWN + name not in interaction:
            self.add_draws(stage, interaction)
        if DRAWN + name not in interaction:
            raise KeyError(f"{type(self).__name__}.draw('{stage}') makes no '{name}': add that draw there")
        return interaction[DRAWN + name]

    def training_batch(self, stage, interaction):
        """A training batch of ``stage`` with its random draws made (``draw``), as the trainer splits it: (the batch,
        [B] weight of each example in the loss or None for equal, [B] prompt-length estimate or None)."""
        interaction = self.add_draws(stage, interaction)
        if stage != "stage2" or not self.trains_stage2:
            return interaction, None, None
        seq, seq_len, target = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.ITEM_ID]
        candidates = self.drawn(stage, interaction, "candidates")  # [B, C]
        # the generation loss is a mean over answer tokens (NOTE: objective both mixes it with a mean over rows: a
        # split weights both by rows)
        weights = self.answer_lengths[target].float() if self.objective == "generate" else None
        lengths = self.history_tokens(seq, seq_len) + self.answer_lengths[candidates].sum(1)  # [B]
        return interaction, weights, lengths

    def history_tokens(self, seq, seq_len):
        """[B] tokens of the history items a prompt shows (their answer texts' lengths: a cheap estimate)."""
        positions = torch.arange(seq.shape[1], device=seq.device)[None, :]
        shown = (positions < seq_len[:, None]) & (positions >= seq_len[:, None] - self.history_len)  # [B, L]
        return (self.answer_lengths[seq] * shown).sum(1)  # [B]

    def training_prompts(self, interaction):
        """Prompts of a training batch: (target [B], candidates [B, C], embeddings [B, Lp, H], mask [B, Lp])."""
        target = interaction[self.ITEM_ID]  # [B]
        users = self.user_fields(interaction, torch.arange(len(target), device=target.device))
        histories = self.recent_history(users["item_seq"], users["item_seq_len"])
        candidates = self.drawn("stage2", interaction, "candidates")  # [B, C]
        input_ids, prompt_mask = self.tokenize_prompts(self.prompt_texts(histories, candidates.tolist()))
        self.token_counts["train_examples"] += len(target)
        self.token_counts["train_tokens"] += int(prompt_mask.sum())
        prompt = self.prompt_embeddings(input_ids, users, histories, candidates.tolist())  # [B, Lp, H]
        return target, candidates, prompt, prompt_mask

    def stage2_loss(self, interaction):
        """Loss of the LLM-facing stage under ``stage2_objective``: generate (the paper's next-title
        generation), rank (softmax cross-entropy over the candidates' scores), both (their sum) or index
        (cross-entropy over the candidate labels' logits after the prompt, as ``eval_mode: index`` ranks)."""
        target, candidates, prompt, prompt_mask = self.training_prompts(interaction)
        if self.objective == "index":
            loss = self.index_loss(target, candidates, prompt, prompt_mask)
        else:
            loss = 0.0
            if self.objective in ("generate", "both"):
                loss = loss + self.generation_loss(target, prompt, prompt_mask)
            if self.objective in ("rank", "both"):
                loss = loss + self.rank_loss(target, candidates, prompt, prompt_mask)
        extra = self.auxiliary_loss(interaction, target, candidates)
        return loss if extra is None else (loss, extra)  # a tuple: RecBole's trainer sums and logs the parts

    @staticmethod
    def total_loss(loss):
        """One scalar of ``calculate_loss``'s result (the sum of its parts when it is a tuple)."""
        return sum(loss) if isinstance(loss, tuple) else loss

    def auxiliary_loss(self, interaction, target, candidates):
        """A loss beside the LLM objective on the same training candidates (None: none). A-LLMRec's
        ``stage2_match_weight`` overrides it."""
        return None

    def generation_loss(self, target, prompt, prompt_mask):
        """Next-item title generation loss: prompt (history + shuffled candidates) -> target answer."""
        lengths = self.answer_lengths[target]  # [B]
        width = int(lengths.max())
        answer = self.answer_ids[target][:, :width]  # [B, La]
        answer_mask = torch.arange(width, device=target.device)[None, :] < lengths[:, None]  # [B, La]
        embeds = torch.cat([prompt, self.llm.get_input_embeddings()(answer)], 1)
        mask = torch.cat([prompt_mask, answer_mask.long()], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {self.scorer.keep_name: width + 1} if self.scorer.keep_name else {}
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs).logits
        logits = logits[:, -(width + 1) : -1].float()  # [B, La, V]: position t predicts answer token t
        return F.cross_entropy(logits[answer_mask], answer[answer_mask])

    def rank_loss(self, target, candidates, prompt, prompt_mask):
        """Softmax cross-entropy over each prompt's candidates, scored exactly as ``eval_mode: score``
        ranks them (length-normalised answer log-likelihood, shared prompt cache)."""
        rows, n = candidates.shape
        flat = candidates.reshape(-1)  # [B*C]
        owner = torch.arange(rows, device=flat.device).repeat_interleave(n)  # [B*C]
        scores = self._score_answers(prompt, prompt_mask, flat, owner)
        labels = (candidates == target[:, None]).float().argmax(1)  # [B]
        return F.cross_entropy(scores.view(rows, n), labels)

    def index_loss(self, target, candidates, prompt, prompt_mask):
        """Cross-entropy over the labels of each prompt's candidates (LlamaRec's verbalizer): one pass per prompt."""
        logits = self.scorer.label_logits(prompt, prompt_mask, self.label_ids[: candidates.shape[1]])  # [B, C]
        labels = (candidates == target[:, None]).float().argmax(1)  # [B] place of the target in the prompt
        return F.cross_entropy(logits, labels)

    def token_stats(self):
        """Training examples, and mean prompt tokens per training example and per evaluated user so far."""
        c = self.token_counts
        return {
            "train_examples": c["train_examples"],  # this process's (its share in a data-parallel run)
            "prompt_tokens_per_example": c["train_tokens"] / c["train_examples"] if c["train_examples"] else None,
            "prompt_tokens_per_user": c["eval_tokens"] / c["eval_users"] if c["eval_users"] else None,
        }

    @torch.no_grad()  # not inference mode: RecBole's trainer writes -inf into the returned scores
    def full_sort_predict(self, interaction):
        """Full ranking (RecBole's ``mode: full``): the retriever's top ``rerank_topk`` items of each user, as RecBole
        ranks them for the retriever's own row (for sequential models RecBole masks no history item), scored by this
        model's ranking as a sampled list of candidates is; every other item gets -inf, so a target that was not
        retrieved is a miss. Records for each user whether its target was retrieved (``retrieval_recall``)."""
        seq, seq_len, uid = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.USER_ID]
        cf_scores = self.retrieval_model().full_sort_scores(seq, seq_len, uid)  # [B, n_items]
        cf_scores[:, 0] = -torch.inf  # padding
        top = cf_scores.topk(min(self.rerank_topk, self.n_items - 1), dim=1).indices  # [B, K]
        if self.ITEM_ID in interaction.interaction:  # the test target of each row (RecBole's sequential loaders)
            self.retrieval_hits.append((top == interaction[self.ITEM_ID][:, None]).any(1).cpu())  # [B]
        k = top.shape[1]
        rows = Interaction(
            {
                self.USER_ID: uid.repeat_interleave(k),
                self.ITEM_SEQ: seq.repeat_interleave(k, 0),
                self.ITEM_SEQ_LEN: seq_len.repeat_interleave(k),
                self.ITEM_ID: top.reshape(-1),
            }
        )
        scores = torch.full_like(cf_scores, -torch.inf)
        scores.scatter_(1, top, self.score_blocks(rows).view(-1, k).to(scores.dtype).clone())
        return scores  # [B, n_items]

    def retrieval_recall(self):
        """{"at": rerank_topk, "recall", "se", "users"} of the retrieval since the last call (full ranking: the share
        of evaluated users whose target the retriever put in its top rerank_topk, the ceiling of every re-ranked
        metric), or None; the record is cleared."""
        hits, self.retrieval_hits = self.retrieval_hits, []
        if not hits:
            return None
        hits = torch.cat(hits).double().numpy()
        se = float(hits.std(ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else float("nan")
        return {"at": self.rerank_topk, "recall": float(hits.mean()), "se": se, "users": len(hits)}
