"""The stage-2 base of A-LLMRec and MLP-LLM: a frozen RecBole sequential model (the CF backbone) and a frozen LLM
joined by F_U and F_I (Kim et al., KDD 2024, arXiv 2404.11343, Eq. 7-8).

F_U (d -> LLM hidden) gives one soft user token before the prompt and F_I one soft item token after each history and
candidate title, trained on the LLM's loss (``stage2_objective``) with everything else frozen. What F_I projects is
the subclass's item path (``item_inputs``): A-LLMRec's stage-1 joint embeddings, or MLP-LLM's raw CF embeddings.

Evaluation ranks RecBole's candidates with the shared candidate scorer (soft tokens included); ``full_sort_predict``
re-ranks the backbone's top ``rerank_topk`` items (the base's ``full_sort_predict``). The plugin's options beside the paper's form (``token space``,
``match``, ``{item_token}`` answers) are described in ``recbole_llmplugin/model/llm_recommender/allmrec.py`` and
docs/allmrec.md.
"""

from logging import getLogger

import torch
from torch import nn

from recbole_llmplugin.config.properties import choices
from recbole_llmplugin.data.prompts import item_vocabulary_tokens
from recbole_llmplugin.model.abstract_llm_recommender import LLMRecommender
from recbole_llmplugin.model.layers.candidate_ranking import generate_texts, generated_title_scores, user_blocks
from recbole_llmplugin.model.layers.cf_backbone import CFBackbone
from recbole_llmplugin.model.layers.objectives import candidate_loss
from recbole_llmplugin.model.layers.prompt_encoder import place_soft_tokens
from recbole_llmplugin.utils.errors import ConfigValueError

USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN = "[UserRep]", "[HistoryEmb]", "[CandidateEmb]"


def mlp(in_size, hidden, out_size, dropout=0.0):
    return nn.Sequential(nn.Linear(in_size, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_size))


def projection(architecture, in_size, hidden, out_size, activation):
    """F_U / F_I into the LLM's token space. official: Linear-LayerNorm-activation-Linear with
    xavier-normal weights (the reference code's ``log_emb_proj`` / ``item_emb_proj``); paper: a GELU MLP."""
    if architecture != "official":
        return mlp(in_size, hidden, out_size)
    layers = nn.Sequential(nn.Linear(in_size, hidden), nn.LayerNorm(hidden), activation, nn.Linear(hidden, out_size))
    nn.init.xavier_normal_(layers[0].weight)
    nn.init.xavier_normal_(layers[3].weight)
    return layers


class CFTokenRecommender(LLMRecommender):
    """Base of the LLM recommenders that feed a frozen LLM the CF backbone's user and item representations."""

    trainer_type = "staged"
    needs_cf_backbone = True  # cf_checkpoint: auto -> the runner trains or reuses it first (quick_start.backbones)
    special_tokens = (USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN)
    stage2_modules = ("user_projection", "item_projection")
    eval_modes = choices("eval_mode")  # match: the trained CF match alone, no LLM pass
    answer_item_token = CANDIDATE_TOKEN
    objectives = choices("stage2_objective")  # match: the CF match alone, no LLM pass (allmrec_token_space vocabulary)

    @classmethod
    def check_config(cls, config, n_items=None):
        super().check_config(config, n_items)
        vocabulary = config["allmrec_token_space"] == "vocabulary"
        if vocabulary and not config["prompt_template"].rstrip().endswith("{user_token}"):
            raise ConfigValueError(
                "allmrec_token_space: vocabulary reads the user token where the answer starts: end prompt_template "
                "with {user_token} (e.g. '... Answer:{user_token}')"
            )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.architecture = config["allmrec_architecture"]
        self.match_weight = self.match_weight_of(config)
        self.query_temperature = float(config["allmrec_query_temperature"])
        self.token_space = config["allmrec_token_space"]
        self.match_row = bool(config["eval_match_row"])
        self.reranks_backbone = self.retrieves_with_backbone(config)  # full ranking: the backbone's own top items
        self.trains_match = self.ranking_options(config)["match_trained"]
        # cross-domain: the backbone was trained on cross_domain_source; without a user token the prompt has none
        self.trained_on = config["cross_domain_source"]
        self.user_token_off = bool(self.trained_on) and config["cross_domain_user"] == "none"

        self.backbone = CFBackbone(
            config["cf_checkpoint"],
            dataset,
            device=config["device"],
            trust=config["trust_checkpoint"],
            trained_on=self.trained_on,
        )
        d = self.backbone.hidden_size
        d_item = self.build_item_path(config, d)
        h_llm = self.llm.get_input_embeddings().weight.shape[1]
        hidden2 = config["projection_hidden_size"] or h_llm
        self.user_projection = projection(self.architecture, d, hidden2, h_llm, nn.LeakyReLU())  # F_U
        self.item_projection = projection(self.architecture, d_item, hidden2, h_llm, nn.GELU())  # F_I
        self.token_ids = {tok: self.tokenizer.convert_tokens_to_ids(tok) for tok in self.special_tokens}
        if self.token_space == "vocabulary":
            reserved = self.label_ids.tolist() if self.eval_mode == "index" else []  # match: no LLM, no labels
            ids = item_vocabulary_tokens(self.tokenizer, self.n_items, config["item_vocabulary_offset"], reserved)
            self.register_buffer("item_vocab_ids", ids.to(config["device"]), persistent=False)  # [n_items]
        self.generate_counts = [0, 0]  # eval_mode generate: [outputs matching no candidate, outputs]
        self.set_stage("eval")

    @classmethod
    def retrieves_with_backbone(cls, config):
        """Full ranking re-ranks the backbone's own top items unless another retriever (or its checkpoint) is named."""
        return config["rerank_checkpoint"] in ("auto", config["cf_checkpoint"]) and config["rerank_retriever"] in (
            "backbone",
            config["cf_model"],
        )

    def retrieval_model(self):
        return self.backbone if self.reranks_backbone else self.retriever

    def build_item_path(self, config, d):
        """Modules between the backbone's item embeddings [n_items, d] and F_I; returns the size F_I reads. None here:
        F_I reads the CF embeddings."""
        return d

    def item_inputs(self, items):
        """[N, d_item] what F_I projects for each item: the raw CF item embeddings here."""
        return self.backbone.item_embeddings()[items]

    @classmethod
    def form_parts(cls, config):
        """The paper's form: projected soft tokens, title generation, a SASRec backbone (and ``item_path_parts``).
        Each other choice is named (``LLMRecommender.variant``)."""
        parts = ["vocabulary"] if config["allmrec_token_space"] == "vocabulary" else []
        parts += cls.item_path_parts(config)
        parts += super().form_parts(config)
        weight = cls.match_weight_of(config)
        parts += [f"+ match loss x{weight:g}"] if weight else []
        parts += [f"{config['cf_model']} backbone"] if config["cf_model"] != "SASRec" else []
        return parts

    @classmethod
    def item_path_parts(cls, config):
        """Names of the item-path choices that differ from the paper's (none here)."""
        return []

    @classmethod
    def ranking_options(cls, config):
        """The token space and whether stage 2 trains the CF match, for ``config.options.check_ranking``."""
        return {
            "token_space": config["allmrec_token_space"],
            "match_trained": config["stage2_objective"] == "match" or cls.match_weight_of(config) > 0,
        }

    @staticmethod
    def match_weight_of(config):
        """``stage2_match_weight`` as a number (a YAML integer, e.g. 1, included): the one place it is read."""
        return float(config["stage2_match_weight"])

    def match_trained(self):
        """Whether stage 2 trains the CF match <F_U(u), F_I(item)> (``stage2_objective: match`` or a match loss)."""
        return self.trains_match

    def other_rankings(self):
        """The CF match alone (``eval_match_row``), beside the LLM-ranked row, when stage 2 trains it (and a user
        token exists to match)."""
        on = self.match_row and self.match_trained() and not self.user_token_off
        return ["match"] if on and self.eval_mode != "match" else []

    @classmethod
    def cross_domain_problem(cls, config):
        """Why this model cannot rank another dataset's items: F_I reads the backbone's item table here (MLP-LLM)."""
        return (
            f"{cls.__name__} reads the CF backbone's item embeddings, which target_domain's items do not have; "
            f"cross-domain needs a text path: ALLMRec with joint_embedding: text"
        )

    def trainable_state_dict(self):
        """Stage-1 and stage-2 modules (and a trainable text encoder); never the LLM or backbone."""
        return {
            f"{name}.{key}": value
            for name in self._trained_module_names()
            for key, value in getattr(self, name).state_dict().items()
        }

    def frozen_parts(self):
        backbone = sum(p.numel() for p in self.backbone.parameters())
        return super().frozen_parts() + [(f"CF backbone {self.backbone.name}", backbone)]

    def user_representation(self, users):
        with torch.no_grad():
            return self.backbone.user_representation(users["item_seq"], users["item_seq_len"], users["user_id"])

    # --- stages ----------------------------------------------------------------------------
    def _trained_module_names(self):
        return list(self.stage2_modules)

    def set_stage(self, stage):
        """Only the modules of ``stage`` require grad (``eval``: none)."""
        self.requires_grad_(False)
        if stage == "stage2":
            for name in self.stage2_modules:
                getattr(self, name).requires_grad_(True)

    def training_stages(self):
        return [self.stage2()]

    # --- stage 2 ---------------------------------------------------------------------------------
    def prompt_texts(self, histories, candidates):
        # no spaces around the soft tokens: a lone space would cost one LLM token per item
        user = "" if self.user_token_off else USER_TOKEN  # cross_domain_user none: the prompt's text alone
        return self.prompt_builder.prompts(histories, candidates, user, HISTORY_TOKEN, CANDIDATE_TOKEN)

    def prompt_embeddings(self, input_ids, users, histories, candidates):
        """Token embeddings with the user token at [UserRep] and an item token after each title: F_U(user) and
        F_I(item) (``allmrec_token_space: projected``), or the items' vocabulary tokens and the candidate query
        (``vocabulary``)."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # [U, Lp, H]
        device = input_ids.device
        soft = {  # computed only for the placeholders the templates use
            USER_TOKEN: lambda: (
                self._candidate_query(users, candidates)
                if self.token_space == "vocabulary"
                else self._user_token(users)
            ),  # [U, H]
            HISTORY_TOKEN: lambda: self._item_tokens([i for h in histories for i in h], device),  # [sum |h|, H]
            CANDIDATE_TOKEN: lambda: self._item_tokens([i for c in candidates for i in c], device),  # [sum |c|, H]
        }
        return place_soft_tokens(embeds, input_ids, {t: (self.token_ids[t], make) for t, make in soft.items()})

    def _user_token(self, users):
        return self.user_projection(self.user_representation(users))  # [U, H] F_U(u)

    def _projected_items(self, items, device):
        items = torch.as_tensor(items, dtype=torch.long, device=device)
        return self.item_projection(self.item_inputs(items))  # [N, H] F_I(item)

    def _item_tokens(self, items, device):
        """[N, H] the token shown for each item: F_I(item), or its vocabulary token (``vocabulary``)."""
        if self.token_space == "vocabulary":
            items = torch.as_tensor(items, dtype=torch.long, device=device)
            return self.llm.get_input_embeddings()(self.item_vocab_ids[items])
        return self._projected_items(items, device)

    def candidate_match(self, users, candidates):
        """[U, C] <F_U(u), F_I(z_j)> / sqrt(H) of each prompt's candidates: the trained CF match of the user
        with each candidate (``vocabulary`` mixes the candidates' tokens by its softmax)."""
        c = torch.as_tensor(candidates, dtype=torch.long, device=self.device)  # [U, C]
        user = self._user_token(users)  # [U, H]
        items = self._projected_items(c.reshape(-1), c.device).view(*c.shape, -1)  # [U, C, H]
        return (items @ user[:, :, None]).squeeze(-1) / user.shape[-1] ** 0.5  # [U, C]

    def candidate_weights(self, users, candidates):
        """[U, C] softmax over each prompt's candidates of ``candidate_match`` / ``allmrec_query_temperature`` (below
        1: a sharper mixture, closer to the one token whose label the LLM copies best)."""
        return torch.softmax(self.candidate_match(users, candidates) / self.query_temperature, dim=1)  # [U, C]

    def match_loss(self, interaction, target, candidates):
        """Cross-entropy of ``candidate_match`` over each example's candidates [B, C] against its target [B]."""
        users = self.user_fields(interaction, torch.arange(len(target), device=target.device))
        return candidate_loss(self.candidate_match(users, candidates), candidates, target)

    def auxiliary_loss(self, interaction, target, candidates):
        """``stage2_match_weight`` x ``match_loss`` on the training prompt's candidates (plugin option; 0 = the
        paper: F_U / F_I learn only through the LLM's loss)."""
        return self.match_weight * self.match_loss(interaction, target, candidates) if self.match_weight else None

    def stage2_loss(self, interaction):
        """``stage2_objective: match`` trains F_U / F_I on ``match_loss`` alone, with no LLM pass (the frozen LLM
        reads their candidate mixture only when ranking); every other objective is the base class's."""
        if self.objective != "match":
            return super().stage2_loss(interaction)
        target = interaction[self.ITEM_ID]  # [B]
        candidates = self.drawn("stage2", interaction, "candidates")  # [B, C]
        self.prompts.count("train", len(target))
        return self.match_loss(interaction, target, candidates)

    def _candidate_query(self, users, candidates):
        """[U, H] ``vocabulary``: the candidates' vocabulary tokens mixed by ``candidate_weights``. Read where the
        answer starts, it makes the LLM copy the label that follows the best-matching candidate's token (its
        induction heads match repeated tokens; they do not match F_I's free vectors, docs/allmrec.md)."""
        c = torch.as_tensor(candidates, dtype=torch.long, device=self.device)  # [U, C]
        tokens = self.llm.get_input_embeddings()(self.item_vocab_ids[c])  # [U, C, H]
        weights = self.candidate_weights(users, candidates).to(tokens.device)  # [U, C] (llm_device_map: its device)
        return (weights[:, :, None] * tokens).sum(1)  # [U, H]

    def answer_soft(self, items):
        """F_I(item) inside each candidate's scored answer when ``prompt_answer`` has {item_token}."""
        return self._projected_items(items, items.device) if self.prompt_builder.answer_item_token else None

    # --- evaluation ------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_blocks(self, interaction):
        """``eval_mode: match`` scores each row by the CF match alone; every other mode through the LLM."""
        if self.eval_mode == "match":
            return self.match_scores(interaction)
        return super().score_blocks(interaction)

    def match_scores(self, interaction):
        """[R] <F_U(u), F_I(z_item)> / sqrt(H) of each candidate row with its user: ``candidate_match`` without
        a prompt or an LLM pass (the ranking the vocabulary user token hands to the LLM)."""
        item_ids = interaction[self.ITEM_ID]  # [R]
        block, first_rows = user_blocks(interaction[self.USER_ID])  # [R], [U]
        user = self._user_token(self.user_fields(interaction, first_rows))  # [U, H]
        items = self._projected_items(item_ids, item_ids.device)  # [R, H]
        return (items * user[block]).sum(-1) / user.shape[-1] ** 0.5  # [R]

    def _score_rows(self, interaction, rows, owner, first_rows):
        if self.eval_mode != "generate":
            return super()._score_rows(interaction, rows, owner, first_rows)
        return self._generate_rows(interaction, rows, owner, first_rows)

    def _generate_rows(self, interaction, rows, owner, first_rows):
        """Paper protocol: greedy-generate one title per user, scored by ``generated_title_scores`` (hit@1 counts
        exact matches only; only hit@1 is meaningful in this mode)."""
        user_ids, item_ids = interaction[self.USER_ID], interaction[self.ITEM_ID]
        embeds, mask, _ = self.prompt_inputs(interaction, rows, owner, first_rows)
        width = int(self.answer_lengths.max()) + 2
        texts = generate_texts(self.scorer.llm, self.tokenizer, embeds, mask, width, self.prompt_builder.answer)
        answers = [self.prompt_builder.answer_text(i) for i in item_ids[rows].tolist()]
        scores, unmatched = generated_title_scores(texts, answers, rows, owner, first_rows, user_ids, item_ids)
        self.generate_counts = [self.generate_counts[0] + unmatched, self.generate_counts[1] + len(first_rows)]
        getLogger().info(
            f"eval_mode generate: {self.generate_counts[0]} of {self.generate_counts[1]} generated titles so far "
            f"matched no candidate"
        )
        return scores
