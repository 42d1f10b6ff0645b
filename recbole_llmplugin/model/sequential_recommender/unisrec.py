"""UniSRec: "Towards Universal Sequence Representation Learning for Recommender Systems" (Hou et al., KDD 2022,
arXiv 2206.05941). The text-based sequential baseline without an LLM, beside A-LLMRec's text path.

Each item is its frozen sentence-encoder embedding of its text (the same encoder and the same item texts as
A-LLMRec's stage 1, so the same cached table), turned into the model's space by a mixture-of-experts adaptor with
parametric whitening (section 3.1: expert k maps (x - b_k) W_k, a gate softmax(x W_g + noise) mixes the experts). A
SASRec encoder (RecBole's own layers: this class extends RecBole's ``SASRec``) reads the adapted history, and the
next item is scored by the cosine of the sequence and item representations over a temperature: the sequence-item
contrastive loss with every item of the catalogue as a negative, the paper's fine-tuning objective (section 3.3).

``unisrec_mode``:
- ``inductive``: items are their text alone. It ranks items that no training interaction names (cold items, a new
  domain's items: zero-shot cross-domain) through their text.
- ``transductive``: an ID embedding per item is added to its adapted text embedding (the paper's fine-tuning form for
  a known catalogue).

``unisrec_pretrained``: a checkpoint of UniSRec trained on other domains (any RecBole checkpoint of this class):
its adaptor and encoder initialise this model, which then trains on this dataset; the ID table, which names another
catalogue, is not loaded. Without it the row label says ``no pre-training``.

NOTE: differences from the paper:
- The paper pre-trains on five Amazon domains with a sequence-sequence contrastive loss beside the sequence-item one;
  here pre-training is optional and is any earlier UniSRec run's checkpoint (the sequence-item loss alone).
- The text encoder is all-MiniLM-L6-v2 (384-d) by default, not BERT-base (768-d); the item text is the plugin's item
  text (``item_text_template``, cut to ``item_text_max_tokens`` of the LLM's tokenizer as A-LLMRec's stage 1 reads it).
"""

import os

import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch import nn

from recbole_llmplugin.data.item_text import ItemTextStore
from recbole_llmplugin.model.layers.llm_loading import check_llm
from recbole_llmplugin.model.layers.text_encoder import embedding_dimension, frozen_embeddings, load_text_encoder
from recbole_llmplugin.utils.checkpoints import load_checkpoint
from recbole_llmplugin.utils.errors import ConfigValueError


class WhitenedExperts(nn.Module):
    """The MoE adaptor with parametric whitening: ``n_experts`` maps (x - b_k) W_k [t -> d], mixed by a gate
    softmax(x W_g + eps * softplus(x W_n)), eps ~ N(0, 1) while training (noisy top-all gating)."""

    def __init__(self, text_size, hidden_size, n_experts, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(n_experts, text_size))  # b_k
        self.weight = nn.Parameter(torch.empty(n_experts, text_size, hidden_size))  # W_k
        nn.init.normal_(self.weight, std=0.02)
        self.gate = nn.Parameter(torch.zeros(text_size, n_experts))  # W_g
        self.noise = nn.Parameter(torch.zeros(text_size, n_experts))  # W_n

    def forward(self, x):
        """[..., t] text embeddings -> [..., d]."""
        x = self.dropout(x)
        logits = x @ self.gate  # [..., K]
        if self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(x @ self.noise)
        gates = torch.softmax(logits, dim=-1)  # [..., K]
        experts = torch.einsum("...t,ktd->...kd", x, self.weight) - torch.einsum("kt,ktd->kd", self.bias, self.weight)
        return (gates.unsqueeze(-1) * experts).sum(-2)  # [..., d]


class UniSRec(SASRec):
    """UniSRec (inductive or transductive) on frozen item-text embeddings; trained and evaluated by RecBole."""

    input_type = InputType.POINTWISE
    reads_text_encoder = True  # the runner checks that the text encoder loads before anything trains

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.mode = config["unisrec_mode"]
        self.temperature = config["unisrec_temperature"]
        n_experts = config["unisrec_n_experts"]
        adaptor_dropout = config["unisrec_adaptor_dropout"]
        pretrained = config["unisrec_pretrained"]
        max_tokens = config["item_text_max_tokens"]
        text_encoder = config["text_encoder"]
        llm_path = config["llm_path"]
        cache = os.path.join(config["checkpoint_dir"], "text_cache")
        if self.loss_type != "CE":
            raise ConfigValueError(
                f"loss_type: {self.loss_type}; UniSRec trains the sequence-item contrastive loss over all items: set "
                f"loss_type: CE (and train_neg_sample_args: ~)"
            )

        # the frozen item-text table: A-LLMRec's stage-1 texts and encoder, hence its cached table
        tokenizer = check_llm(llm_path)[1] if max_tokens else None
        texts = ItemTextStore(config, dataset, tokenizer).texts
        encoder = load_text_encoder(text_encoder)
        table = frozen_embeddings(encoder, texts, cache, text_encoder, show_progress=config["show_progress"])
        table[0] = 0.0  # padding
        self.register_buffer("text_table", table.float(), persistent=False)  # [n_items, t]
        self.adaptor = WhitenedExperts(embedding_dimension(encoder), self.hidden_size, n_experts, adaptor_dropout)
        if self.mode == "inductive":
            del self.item_embedding  # items are their text alone: no table that names this catalogue
        if pretrained:
            self.load_pretrained(pretrained, config["trust_checkpoint"])

    def load_pretrained(self, path, trust=False):
        """The adaptor and encoder of a UniSRec checkpoint trained elsewhere (its ID table is not read)."""
        if not os.path.isfile(path):
            raise ConfigValueError(f"unisrec_pretrained: '{path}' is not a file; give a UniSRec checkpoint (.pth)")
        checkpoint = load_checkpoint(path, trust=trust)
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if not state or not any(k.startswith("adaptor.") for k in state):
            raise ConfigValueError(f"unisrec_pretrained: '{path}' is not a UniSRec checkpoint (no adaptor weights)")
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if k in own and k != "item_embedding.weight" and own[k].shape == v.shape}
        self.load_state_dict({**own, **kept})

    @classmethod
    def variant(cls, config, eval_mode=None):
        """The row's form: ``inductive, no pre-training``, ``transductive, pre-trained``..."""
        trained = "pre-trained" if config["unisrec_pretrained"] else "no pre-training"
        return f"{config['unisrec_mode']}, {trained}"

    @classmethod
    def cross_domain_problem(cls, config):
        if config["unisrec_mode"] != "inductive":
            return (
                "UniSRec transductive adds ID embeddings of the source's items, which name none of target_domain's "
                "items: set unisrec_mode: inductive"
            )
        return None

    def adopt_target_items(self):
        """Cross-domain: nothing to do; the target's items are their text (``text_table`` is built on the target)."""

    def other_rankings(self):
        return []

    # --- representations -------------------------------------------------------------------------
    def item_table(self):
        """[n_items, d] every item's representation: its adapted text embedding (+ its ID embedding)."""
        items = self.adaptor(self.text_table)  # [n_items, d]
        if self.mode == "transductive":
            items = items + self.item_embedding.weight
        return items

    def forward(self, item_seq, item_seq_len, table=None):
        """[B, d] the SASRec encoder's output at each history's last position, over the items' representations
        (``table``: ``item_table()``, made here when not given)."""
        table = self.item_table() if table is None else table  # [n_items, d]
        positions = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        position_embedding = self.position_embedding(positions).unsqueeze(0)  # [1, L, d]
        hidden = self.dropout(self.LayerNorm(table[item_seq] + position_embedding))  # [B, L, d]
        mask = self.get_attention_mask(item_seq)
        output = self.trm_encoder(hidden, mask, output_all_encoded_layers=True)[-1]  # [B, L, d]
        return self.gather_indexes(output, item_seq_len - 1)  # [B, d]

    def _normalised(self, interaction):
        """([B, d] unit sequence representations, [n_items, d] unit item representations)."""
        table = self.item_table()
        sequence = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        return F.normalize(sequence, dim=-1), F.normalize(table, dim=-1)

    def calculate_loss(self, interaction):
        """Sequence-item contrastive loss: softmax over every item of cos(s, v_i) / temperature."""
        sequence, items = self._normalised(interaction)  # [B, d], [n_items, d]
        logits = sequence @ items.T / self.temperature  # [B, n_items]
        return self.loss_fct(logits, interaction[self.POS_ITEM_ID])

    def predict(self, interaction):
        sequence, items = self._normalised(interaction)
        return (sequence * items[interaction[self.ITEM_ID]]).sum(-1) / self.temperature  # [B]

    def full_sort_predict(self, interaction):
        sequence, items = self._normalised(interaction)
        return sequence @ items.T / self.temperature  # [B, n_items]
