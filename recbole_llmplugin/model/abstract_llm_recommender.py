"""Shared base of the plugin's LLM recommenders: RecBole's contract and what binds the parts.

The parts live in ``model/layers/``: the LLM (``llm_loading``), a batch's prompts as tokens (``prompt_encoder``),
ranking RecBole's candidates (``candidate_ranking``), scoring them with the LLM (``candidate_scorer``), the training
losses (``objectives``) and random draws (``draws``); the wording of prompts is ``data.prompts``. A subclass sets
``special_tokens`` and overrides ``prompt_embeddings`` to inject soft tokens; the candidate-ranking ``predict``
(RecBole's sampled evaluation: one contiguous block of 1+N rows per user, same history) is shared.
"""

from logging import getLogger

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
import torch

from recbole_llmplugin.config.options import CF_TOKEN_ONLY, check_ranking
from recbole_llmplugin.config.properties import choices
from recbole_llmplugin.data.item_text import ItemTextStore
from recbole_llmplugin.data.prompts import PromptBuilder, check_prompt_templates
from recbole_llmplugin.data.stage_examples import stage_train_loader
from recbole_llmplugin.model.layers import objectives as losses
from recbole_llmplugin.model.layers.candidate_ranking import (
    Retrieval,
    check_whole_users,
    eval_negatives,
    rank_in_passes,
    user_blocks,
)
from recbole_llmplugin.model.layers.candidate_scorer import CandidateScorer
from recbole_llmplugin.model.layers.cf_backbone import CFBackbone
from recbole_llmplugin.model.layers.draws import random_items, training_candidates
from recbole_llmplugin.model.layers.llm_loading import eval_copy, load_recommender_llm
from recbole_llmplugin.model.layers.prompt_encoder import PromptEncoder
from recbole_llmplugin.model.stage import Stage
from recbole_llmplugin.utils.errors import ConfigValueError

DRAWN = "drawn_"  # prefix of the fields that ``add_draws`` adds to a training batch: its random draws
# how a row was ranked, when not by the paper's answer (its likelihood, ``score``, or its generation, ``generate``)
RANKING_NAMES = {"index": "index ranking", "match": "CF match alone, no LLM"}


class LLMRanker(SequentialRecommender):
    """Ranks RecBole's candidates with a (mostly frozen) LLM: the LLM, the prompts, RecBole's ``predict`` and
    ``full_sort_predict``. Not a model by itself: ``LLMRecommender`` adds its options and what trains."""

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

        # load parameters info
        self.llm_path = config["llm_path"]
        self.eval_mode = config["eval_mode"]
        self.eval_user_batch = config["llm_eval_user_batch"]
        self.eval_quantization = config["llm_eval_quantization"]
        self.eval_negatives = eval_negatives(config)
        self.rerank_topk = config["rerank_topk"]
        self.gradient_checkpointing = bool(config["llm_gradient_checkpointing"])
        self.objective = config["stage2_objective"] if self.trains_stage2 else None
        self.n_candidates = config["stage2_candidates"] if self.trains_stage2 else None

        # define layers
        self.llm, self.tokenizer = load_recommender_llm(config, self.special_tokens)
        # accelerate spread its layers over devices (transformers records the map only then): moving the model
        # leaves them where they are
        self.llm_dispatched = bool(getattr(self.llm, "hf_device_map", None))
        # the LLM's BOS token first, as OPT's tokenizer adds in the official code: without it a soft user token would
        # sit at position 0, the attention sink, whose hidden state the LLM overwrites (docs/allmrec.md, "Item text
        # and prompts")
        prefix = (self.tokenizer.bos_token or "") if config["prompt_bos"] else ""
        self.prompts = PromptEncoder(self.tokenizer, config["prompt_history_len"], prefix)
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
        self._eval_llm = None  # the int8 copy of the frozen LLM, made on the first evaluation that needs it
        if self.eval_mode == "index":
            full = self.full_sort and self.eval_negatives is None  # full-sort evaluation lists the top rerank_topk
            reranked = self.rerank_topk if full else 0
            shown = max(self.n_candidates or 0, (self.eval_negatives or 0) + 1, reranked)
            self.register_buffer(
                "label_ids", self.prompt_builder.label_token_ids(self.tokenizer, shown), persistent=False
            )
        fields = (self.USER_ID, self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.ITEM_ID)
        self.reranking = Retrieval(self.rerank_topk, self.n_items, fields)  # full ranking: the retrieved top items
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

    def frozen_parts(self):
        """[(name, parameters)] of the model's frozen parts, for the log."""
        llm = sum(p.numel() for n, p in self.llm.named_parameters() if "lora_" not in n)
        return [(f"LLM {self.llm_path}", llm)]

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

    # --- prompts -----------------------------------------------------------------------------
    def tokenize_prompts(self, prompts):
        """([U, Lp] ids, [U, Lp] mask) of ``prompts`` on the LLM's first device (``llm_device_map``)."""
        return self.prompts.tokenize(prompts, self.llm.get_input_embeddings().weight.device)

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

    def prompt_inputs(self, interaction, rows, owner, first_rows):
        """Embedded prompts of the users owning ``rows``: ([U, Lp, H] embeddings, [U, Lp] mask, [r] place of each
        row in its user's candidate list)."""
        users = self.user_fields(interaction, first_rows)
        histories = self.prompts.recent_history(users["item_seq"], users["item_seq_len"])
        user_ids, item_ids = interaction[self.USER_ID][rows], interaction[self.ITEM_ID][rows]
        candidates, slot = self.prompts.candidate_lists(user_ids, item_ids, owner, len(first_rows))
        input_ids, attention_mask = self.tokenize_prompts(self.prompt_texts(histories, candidates))
        self.prompts.count("eval", len(first_rows), attention_mask)
        return self.prompt_embeddings(input_ids, users, histories, candidates), attention_mask, slot

    # --- ranking RecBole's candidates -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, interaction):
        block, first_rows = user_blocks(interaction[self.USER_ID])
        check_whole_users(block, len(first_rows), self.eval_negatives)
        return self.score_blocks(interaction)

    @torch.inference_mode()
    def score_blocks(self, interaction):
        """Scores of candidate rows given as one contiguous block per user (each block is one prompt)."""
        block, first_rows = user_blocks(interaction[self.USER_ID])
        if self.eval_quantization != "none":
            if self._eval_llm is None:
                self._eval_llm = eval_copy(self.llm, self.eval_quantization)
            self.scorer.llm = self._eval_llm
        scores = rank_in_passes(
            block,
            first_rows,
            self._token_estimate(interaction, block, first_rows),
            self.eval_user_batch,
            lambda rows, owner, users: self._score_rows(interaction, rows, owner, users),
        )
        self.scorer.llm = self.llm
        return scores

    def _token_estimate(self, interaction, block, first_rows):
        """[U] tokens of each user's prompt and answers, from the answer-token table."""
        seq, seq_len = interaction[self.ITEM_SEQ][first_rows], interaction[self.ITEM_SEQ_LEN][first_rows]
        history = self.prompts.history_tokens(seq, seq_len, self.answer_lengths)  # [U]
        answers = torch.zeros(len(first_rows), dtype=torch.long, device=seq.device)
        answers.index_add_(0, block, self.answer_lengths[interaction[self.ITEM_ID]])
        shown = 1 if self.eval_mode == "index" else 2  # candidates in the prompt (and as answers)
        return history + shown * answers

    def on_evaluation_end(self):
        """Log the prompt tokens per evaluated user (the cost driver of LLM evaluation)."""
        tokens = self.token_stats()["prompt_tokens_per_user"]
        if tokens and self.eval_mode != "match":  # ranking by the CF match alone reads no prompt
            self.logger.info(f"evaluation: {tokens:.0f} prompt tokens per user")

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

    @torch.no_grad()  # not inference mode: RecBole's trainer writes -inf into the returned scores
    def full_sort_predict(self, interaction):
        """Full ranking (RecBole's ``mode: full``): the retriever's top ``rerank_topk`` items of each user, scored by
        this model's ranking as a sampled list of candidates is (``candidate_ranking.Retrieval``)."""
        cf_scores, top, rows = self.reranking.candidates(self.retrieval_model(), interaction)
        return self.reranking.scores(cf_scores, top, self.score_blocks(rows))  # [B, n_items]

    def retrieval_recall(self):
        """The retriever's recall at ``rerank_topk`` since the last call (``Retrieval.recall``), or None."""
        return self.reranking.recall()

    def token_stats(self):
        """Training examples, and mean prompt tokens per training example and per evaluated user so far."""
        return self.prompts.stats()


class LLMRecommender(LLMRanker):
    """Base for LLM recommenders: the ranker (``LLMRanker``), the checks and names of its options, and what trains
    (stages, random draws, losses, checkpoints of the trained weights)."""

    def __init__(self, config, dataset):
        self.check_config(config, dataset.item_num - 1)  # before the LLM loads
        super().__init__(config, dataset)

        # load parameters info
        if self.trains_stage2:
            self.stage2_settings = {
                "epochs": config["stage2_epochs"],
                "learning_rate": config["stage2_learning_rate"],
                "batch_size": config["stage2_batch_size"],
                "validate": config["stage2_validate"],
            }
        self.stage1_all_positions = bool(config["stage1_all_positions"])
        self.stage2_user_sample = config["stage2_user_sample"]

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
        s = self.stage2_settings
        return Stage(
            "stage2",
            s["epochs"],
            s["learning_rate"],
            s["batch_size"],
            checkpoint_name,
            validate=s["validate"],
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

    # --- training on next-item title generation (A-LLMRec stage 2, TALLRec, MLP-LLM) ----------
    def stage_train_loader(self, stage, train_data):
        """Training examples of a stage: each user's last training position (or all positions with
        ``stage1_all_positions`` in stage 1); stage 2 optionally on a seeded ``stage2_user_sample`` of users."""
        all_positions = stage.name == "stage1" and self.stage1_all_positions
        sample = self.stage2_user_sample if stage.name != "stage1" else None
        return stage_train_loader(self.config, train_data, stage, all_positions=all_positions, user_sample=sample)

    def random_items(self, shape, exclude):
        """[B, k] distinct uniform item ids per row, none in that row's ``exclude`` (``draws.random_items``)."""
        return random_items(self.n_items, shape, exclude)

    def training_candidates(self, seq, target):
        """[B, n_candidates]: the target and distinct random negatives outside the history, shuffled."""
        return training_candidates(self.n_items, self.n_candidates, seq, target)

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
        lengths = self.prompts.history_tokens(seq, seq_len, self.answer_lengths) + self.answer_lengths[candidates].sum(
            1
        )
        return interaction, weights, lengths  # lengths: [B]

    def training_prompts(self, interaction):
        """Prompts of a training batch: (target [B], candidates [B, C], embeddings [B, Lp, H], mask [B, Lp])."""
        target = interaction[self.ITEM_ID]  # [B]
        users = self.user_fields(interaction, torch.arange(len(target), device=target.device))
        histories = self.prompts.recent_history(users["item_seq"], users["item_seq_len"])
        candidates = self.drawn("stage2", interaction, "candidates")  # [B, C]
        input_ids, prompt_mask = self.tokenize_prompts(self.prompt_texts(histories, candidates.tolist()))
        self.prompts.count("train", len(target), prompt_mask)
        prompt = self.prompt_embeddings(input_ids, users, histories, candidates.tolist())  # [B, Lp, H]
        return target, candidates, prompt, prompt_mask

    def stage2_loss(self, interaction):
        """Loss of the LLM-facing stage under ``stage2_objective`` (``layers.objectives``): generate (the paper's
        next-title generation), rank, both (their sum) or index."""
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

    def generation_loss(self, target, prompt, prompt_mask):
        """``losses.generation_loss``: prompt -> the target's answer tokens."""
        args = (self.answer_ids, self.answer_lengths, target, prompt, prompt_mask)
        return losses.generation_loss(self.llm, self.scorer.keep_name, *args)

    def rank_loss(self, target, candidates, prompt, prompt_mask):
        """``losses.rank_loss``: the candidates scored as ``eval_mode: score`` ranks them."""
        return losses.rank_loss(self._score_answers, target, candidates, prompt, prompt_mask)

    def index_loss(self, target, candidates, prompt, prompt_mask):
        """``losses.index_loss``: the candidates' label logits, as ``eval_mode: index`` ranks them."""
        return losses.index_loss(self.scorer, self.label_ids, target, candidates, prompt, prompt_mask)

    def auxiliary_loss(self, interaction, target, candidates):
        """A loss beside the LLM objective on the same training candidates (None: none). A-LLMRec's
        ``stage2_match_weight`` overrides it."""
        return None

    @staticmethod
    def total_loss(loss):
        """One scalar of ``calculate_loss``'s result (the sum of its parts when it is a tuple)."""
        return sum(loss) if isinstance(loss, tuple) else loss
