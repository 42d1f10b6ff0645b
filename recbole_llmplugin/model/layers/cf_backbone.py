"""Adapter over a trained, frozen RecBole sequential model (the CF backbone of A-LLMRec).

From any RecBole sequential checkpoint it gives the item embedding table ``[n_items, d]`` and the
user representation ``[B, d]`` (the model's sequence output for a history, what its own
``full_sort_predict`` multiplies with the item table). Generic over ``forward`` signatures:
``(item_seq, item_seq_len)`` (SASRec, GRU4Rec, ...), ``(item_seq)`` (NextItNet; BERT4Rec after
its mask token is appended) and ``(user, item_seq)`` (Caser).
"""

import inspect
import os

import torch
from recbole.utils import ModelType
from torch import nn

from recbole_llmplugin.utils.checkpoints import load_checkpoint
from recbole_llmplugin.utils.errors import ConfigValueError
from recbole_llmplugin.utils.registry import get_model_class


def load_backbone_checkpoint(path, dataset_name, trust=False):
    """The checkpoint dict of a CF backbone, checked before any work: a RecBole sequential model's checkpoint
    trained on ``dataset_name``."""
    if not path or not os.path.isfile(path):
        raise ConfigValueError(f"cf_checkpoint: '{path}' is not a file; give a RecBole checkpoint (.pth) or 'auto'")
    checkpoint = load_checkpoint(path, trust=trust)
    cf_config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if cf_config is None or "state_dict" not in checkpoint:
        raise ConfigValueError(f"cf_checkpoint '{path}' is not a RecBole checkpoint (no config / state_dict)")
    if cf_config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        raise ConfigValueError(
            f"cf_checkpoint '{path}' holds {cf_config['model']}, not a sequential model; A-LLMRec needs a RecBole "
            f"sequential model (SASRec, GRU4Rec, ...) trained on this dataset"
        )
    if cf_config["dataset"] != dataset_name:
        raise ConfigValueError(f"cf_checkpoint '{path}' was trained on '{cf_config['dataset']}', not '{dataset_name}'")
    return checkpoint


class CFBackbone(nn.Module):
    """A frozen RecBole sequential model: ``item_embeddings()`` and ``user_representation()``.

    ``trained_on``: the dataset the checkpoint was trained on when it is not ``dataset`` (cross-domain): its
    sequence encoder is kept and its item table, which names the other dataset's items, is left for
    ``set_item_table`` (rows for ``dataset``'s items, e.g. mapped from their text)."""

    def __init__(self, checkpoint_path, dataset, device="cpu", trust=False, trained_on=None):
        super().__init__()
        checkpoint = load_backbone_checkpoint(checkpoint_path, trained_on or dataset.dataset_name, trust)
        cf_config = checkpoint["config"]
        model_class = get_model_class(cf_config["model"])
        state = checkpoint["state_dict"]
        item_table = next((v for k, v in state.items() if k == "item_embedding.weight"), None)
        if item_table is None:
            raise ConfigValueError(
                f"cf_checkpoint '{checkpoint_path}': {cf_config['model']} has no item_embedding table"
            )
        if trained_on is None and item_table.shape[0] not in (dataset.item_num, dataset.item_num + 1):
            raise ConfigValueError(
                f"cf_checkpoint '{checkpoint_path}' was trained on {cf_config['dataset']} with {item_table.shape[0]} items, "
                f"this dataset has {dataset.item_num}; train the backbone on this dataset (cf_checkpoint: auto)"
            )
        cf_config["device"] = device
        self.model = model_class(cf_config, dataset)
        if trained_on is not None:  # the other dataset's item (and user) tables stay out; the encoder is kept
            own = self.model.state_dict()
            state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            state["item_embedding.weight"] = torch.zeros_like(own["item_embedding.weight"])
            state = {**own, **state}
        self.model.load_state_dict(state)
        self.model.to(device).eval()
        self.model.requires_grad_(False)
        self.name = cf_config["model"]
        self.n_items = dataset.item_num
        self._params = list(inspect.signature(self.model.forward).parameters)

    def train(self, mode=True):  # the backbone never leaves eval mode (no dropout)
        return super().train(False)

    @property
    def hidden_size(self):
        return self.item_embeddings().shape[1]

    def item_embeddings(self):
        """[n_items, d] item table (BERT4Rec's extra mask row dropped)."""
        return self.model.item_embedding.weight[: self.n_items]

    def set_item_table(self, table):
        """Replace the item embeddings of this dataset's items [n_items, d] (cross-domain; rows beyond them, e.g.
        BERT4Rec's mask token, stay)."""
        weight = self.model.item_embedding.weight
        with torch.no_grad():
            weight[: self.n_items] = table.to(weight.device, weight.dtype)

    def user_representation(self, item_seq, item_seq_len, user_ids=None):
        """[B, d] sequence representation of each history."""
        model = self.model
        if self._params[:2] == ["item_seq", "item_seq_len"]:
            return model.forward(item_seq, item_seq_len)
        if self._params[:2] == ["user", "item_seq"]:
            return model.forward(user_ids, item_seq)
        if self._params[:1] == ["item_seq"]:
            if hasattr(model, "reconstruct_test_data"):  # BERT4Rec: predict at an appended [mask]
                item_seq = model.reconstruct_test_data(item_seq, item_seq_len)
            output = model.forward(item_seq)
            if output.dim() == 3:  # [B, L, d]: take the last position of each history
                output = model.gather_indexes(output, item_seq_len - 1)
            return output
        raise ConfigValueError(
            f"cf_model {self.name}: unsupported forward{tuple(self._params)}; add an adapter in cf_backbone.py"
        )

    def full_sort_scores(self, item_seq, item_seq_len, user_ids=None):
        """[B, n_items] the backbone's own scores for every item."""
        return self.user_representation(item_seq, item_seq_len, user_ids) @ self.item_embeddings().T
