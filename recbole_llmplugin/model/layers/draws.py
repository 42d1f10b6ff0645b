"""Random draws of a training batch: distinct uniform items outside each example's history (negatives and
training candidates). The model makes every draw of a batch in one place (``LLMRecommender.draw``)."""

import torch

from recbole_llmplugin.utils.errors import ConfigValueError


def random_items(n_items, shape, exclude):
    """[B, k] distinct uniform item ids per row, none in that row's ``exclude`` ([B, *] ids; 0 is padding)."""
    rows, k = shape
    keys = torch.rand(rows, n_items, device=exclude.device)  # [B, n_items]
    keys[:, 0] = -1.0
    keys.scatter_(1, exclude, -1.0)
    if k > n_items - 1 - exclude.shape[1]:
        allowed = int((keys >= 0).sum(1).min())
        if k > allowed:
            raise ConfigValueError(
                f"stage2_candidates: {k + 1} needs {k} negatives but a user has only {allowed} unseen items"
            )
    return keys.topk(k, dim=1).indices  # distinct: topk of a random key per item


def training_candidates(n_items, n_candidates, seq, target):
    """[B, n_candidates]: the target and distinct random negatives outside the history ``seq``, shuffled."""
    exclude = torch.cat([seq, target[:, None]], 1)
    negatives = random_items(n_items, (len(target), n_candidates - 1), exclude)
    candidates = torch.cat([target[:, None], negatives], 1)
    order = torch.argsort(torch.rand(candidates.shape, device=target.device), dim=1)
    return candidates.gather(1, order)
