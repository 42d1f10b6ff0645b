"""A-LLMRec: "Large Language Models meet Collaborative Filtering: An Efficient All-round LLM-based
Recommender System" (Kim et al., KDD 2024, arXiv 2404.11343).

A frozen, trained RecBole sequential model (the CF backbone) and a frozen LLM are joined by a small
alignment network, the only thing trained:

- Stage 1 (Eq. 2-6): an item autoencoder (d -> d' -> d) over the backbone's item embeddings and a
  text autoencoder (t -> d' -> t) over sentence-encoder embeddings of item text, trained with
  matching MSE + alpha * item reconstruction + beta * text reconstruction + a recommendation BCE of
  the backbone's user representation against decoded positive / negative item embeddings.
- Stage 2 (Eq. 7-8): F_U (d -> LLM hidden) gives one soft user token before the prompt and F_I
  (d' -> LLM hidden) one soft item token after each history and candidate title; trained on the
  next-item title generation loss with everything else frozen.

Stage 2, evaluation and the plugin's options beside the paper's form live in the shared base
(``model.cf_token_recommender.CFTokenRecommender``), which MLP-LLM shares too.

Reference code: https://github.com/ghdtjr/A-LLMRec

NOTE: differences from the paper and the reference code (docs/allmrec.md, "Here, in the paper and in
the official code"):
- ``allmrec_architecture: official`` (default) builds the reference code's modules, which the paper does not
  specify: Linear+Sigmoid encoders and Linear decoders in stage 1 (BCE on the mean of user x decoded item),
  Linear-LayerNorm-LeakyReLU/GELU-Linear F_U / F_I with xavier-normal weights; ``paper`` builds 2-layer GELU
  MLPs. Answers end with EOS and Adam uses betas (0.9, 0.98), as in the reference code.
- The LLM (SmolLM2-135M by default) and text encoder (all-MiniLM-L6-v2, frozen and cached unless
  ``text_encoder_trainable``) are smaller than OPT-6.7B and the fine-tuned SBERT.
- ``stage2_objective: rank`` / ``both`` (softmax cross-entropy over the candidates' scores) and ``index``
  (LlamaRec's label verbalizer, with ``eval_mode: index``) are this plugin's options beside the paper's title
  generation; ``eval_mode: score`` ranks by answer likelihood, ``generate`` is the paper's protocol (exact
  match, where the reference code accepts a substring).
- ``allmrec_token_space: vocabulary`` (plugin option, ``eval_mode: index``): items are shown as ordinary LLM
  tokens and the user token ending the prompt is the candidates' tokens mixed by softmax <F_U(u), F_I(z_j)>,
  so the frozen LLM's copy (induction) circuit answers the best-matching candidate's label; the paper's free
  soft tokens (``projected``, default) are not read by SmolLM2 within a CPU budget (docs/allmrec.md, "Token spaces").
  In that form with ``stage2_objective: match`` the trained part is a CF two-tower match that the frozen LLM copies;
  ``eval_mode: match`` ranks by that match alone, and ``eval_match_row`` reports it beside the LLM-ranked row.
  ``allmrec_query_temperature`` sharpens that mixture; ``stage2_objective: match`` trains F_U / F_I on the
  CF match alone (no LLM pass) and ``stage2_match_weight`` adds it beside another objective (plugin options).
- ``prompt_answer`` may hold ``{item_token}``: the candidate's F_I token inside its own scored answer (rank
  objective, score mode), a plugin option that the paper does not have.
- Candidates are RecBole's ``uniN`` (``eval_candidates: fixed``: drawn once, shared by every model).
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

from recbole_llmplugin.model.cf_token_recommender import CFTokenRecommender, mlp
from recbole_llmplugin.model.layers.text_encoder import (
    embedding_dimension,
    encode,
    frozen_embeddings,
    load_text_encoder,
    set_trainable,
)
from recbole_llmplugin.model.stage import Stage


def autoencoder(architecture, in_size, hidden, joint_size):
    """(encoder, decoder) of one stage-1 autoencoder. official: the reference code's ``two_layer_mlp``
    (Linear + Sigmoid encoder, Linear decoder); paper: 2-layer GELU MLPs of width ``hidden`` each way."""
    if architecture == "official":
        return nn.Sequential(nn.Linear(in_size, joint_size), nn.Sigmoid()), nn.Linear(joint_size, in_size)
    return mlp(in_size, hidden, joint_size), mlp(joint_size, hidden, in_size)


class ALLMRec(CFTokenRecommender):
    """A-LLMRec: stage 1 aligns the CF item embeddings with item text; stage 2 (``CFTokenRecommender``) projects
    the CF user representation and the aligned item embeddings into the LLM."""

    stage1_modules = ("item_to_joint", "joint_to_item", "text_to_joint", "joint_to_text")

    def build_item_path(self, config, d):
        """Stage 1: the sentence encoder (or its cached item table) and the two autoencoders; F_I reads their joint
        embeddings of size d'."""
        self.alpha = config["stage1_alpha"]
        self.beta = config["stage1_beta"]
        self.joint_embedding = config["joint_embedding"]
        self.text_trainable = config["text_encoder_trainable"]
        d_joint = config["stage1_embedding_size"]
        self.stage1_settings = {
            "epochs": config["stage1_epochs"],
            "learning_rate": config["stage1_learning_rate"],
            "batch_size": config["stage1_batch_size"],
        }
        self._build_stage1(config, d, d_joint)
        return d_joint

    @classmethod
    def item_path_parts(cls, config):
        """Stage-1 choices other than the paper's CF joint embedding of each user's last position."""
        parts = ["text joint"] if config["joint_embedding"] == "text" else []
        return parts + (["all positions"] if config["stage1_all_positions"] else [])

    def _build_stage1(self, config, d, d_joint):
        """Sentence encoder (or its cached item table) and the two stage-1 autoencoders."""
        self.sentence_encoder = load_text_encoder(config["text_encoder"], device=config["device"])
        set_trainable(self.sentence_encoder, self.text_trainable)
        t = embedding_dimension(self.sentence_encoder)
        if self.text_trainable == "none":
            table = frozen_embeddings(
                self.sentence_encoder,
                self.item_texts.texts,
                os.path.join(config["checkpoint_dir"], "text_cache"),
                config["text_encoder"],
                show_progress=config["show_progress"],
            )
            self.register_buffer("text_table", table.to(config["device"]), persistent=False)  # [n_items, t]
            self.sentence_encoder = None  # not needed any more: every item's text is encoded
        hidden1 = config["stage1_hidden_size"]
        self.item_to_joint, self.joint_to_item = autoencoder(self.architecture, d, hidden1, d_joint)
        self.text_to_joint, self.joint_to_text = autoencoder(self.architecture, t, hidden1, d_joint)

    # --- stages ----------------------------------------------------------------------------
    def _trained_module_names(self):
        names = list(self.stage1_modules) + super()._trained_module_names()
        return names + (["sentence_encoder"] if self.sentence_encoder is not None else [])

    def set_stage(self, stage):
        super().set_stage(stage)
        if stage == "stage1":
            for name in self.stage1_modules:
                getattr(self, name).requires_grad_(True)
            if self.sentence_encoder is not None:
                set_trainable(self.sentence_encoder, self.text_trainable)

    def stage_names(self):
        return ("stage1",) + super().stage_names()

    def training_stages(self):
        s = self.stage1_settings
        stage1 = Stage("stage1", s["epochs"], s["learning_rate"], s["batch_size"], "stage1", seed_offset=1)
        return [stage1] + super().training_stages()

    # --- embeddings ----------------------------------------------------------------------------
    def text_embeddings(self, items):
        """[N, t] sentence embeddings of items (cached table when the encoder is frozen)."""
        if self.sentence_encoder is None:
            return self.text_table[items]
        return encode(self.sentence_encoder, [self.item_texts[i] for i in items.tolist()])

    def item_inputs(self, items):
        """[N, d'] aligned embeddings used for item tokens (CF or text path)."""
        if self.joint_embedding == "cf":
            return self.item_to_joint(self.backbone.item_embeddings()[items])
        return self.text_to_joint(self.text_embeddings(items))

    @classmethod
    def cross_domain_problem(cls, config):
        if config["joint_embedding"] != "text":
            return "ALLMRec's CF joint embedding has no value for target_domain's items; set joint_embedding: text"
        return None

    def adopt_target_items(self):
        """Cross-domain: F_I reads the target's items through the text path; the backbone's item table becomes their
        text mapped into its item space (text encoder -> text-to-joint -> joint-to-item), so that its frozen sequence
        encoder forms a target user's representation from the history's text (``cross_domain_user: text``)."""
        with torch.no_grad():
            items = torch.arange(self.n_items, device=self.device)
            table = self.joint_to_item(self.text_to_joint(self.text_embeddings(items)))  # [n_items, d]
            table[0] = 0  # padding
        self.backbone.set_item_table(table)

    # --- stage 1 ---------------------------------------------------------------------------------
    def draw(self, stage, interaction):
        """Stage 1 draws one negative item [B] per example, outside its history and target; stage 2 as the base."""
        if stage != "stage1":
            return super().draw(stage, interaction)
        seq, pos = interaction[self.ITEM_SEQ], interaction[self.ITEM_ID]
        return {"negative": self.random_items((len(pos), 1), torch.cat([seq, pos[:, None]], 1))[:, 0]}  # [B]

    def stage1_losses(self, interaction):
        seq, seq_len, pos = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.ITEM_ID]
        neg = self.drawn("stage1", interaction, "negative")  # [B]
        items = torch.cat([pos, neg])  # [2B]
        with torch.no_grad():
            e = self.backbone.item_embeddings()[items]  # [2B, d]
            user = self.backbone.user_representation(seq, seq_len, interaction[self.USER_ID])  # [B, d]
        q = self.text_embeddings(items)  # [2B, t]
        z_item, z_text = self.item_to_joint(e), self.text_to_joint(q)  # [2B, d']
        e_rec, q_rec = self.joint_to_item(z_item), self.joint_to_text(z_text)
        product = user.repeat(2, 1) * e_rec  # [2B, d]
        logits = product.mean(-1) if self.architecture == "official" else product.sum(-1)  # [2B]
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float()
        return {
            "matching": F.mse_loss(z_item, z_text),
            "item_reconstruction": F.mse_loss(e_rec, e),
            "text_reconstruction": F.mse_loss(q_rec, q.detach()),  # the target, not a path to the encoder
            "recommendation": F.binary_cross_entropy_with_logits(logits, labels),
        }

    def stage1_loss(self, interaction):
        """Stage-1 loss as its four weighted parts (RecBole's trainer sums them and logs each)."""
        losses = self.stage1_losses(interaction)
        return (
            losses["matching"],
            self.alpha * losses["item_reconstruction"],
            self.beta * losses["text_reconstruction"],
            losses["recommendation"],
        )
