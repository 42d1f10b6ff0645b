"""Standard errors of RecBole's top-k metrics over the evaluated users.

RecBole's top-k metrics (hit, ndcg, mrr, recall, precision, map, averagepopularity at K) are means over users of a
per-user value, and its ``Evaluator`` returns the means only. ``StandardErrorEvaluator`` is that evaluator, keeping,
for its last evaluation, each top-k metric's standard error (sample standard deviation over users / sqrt(n)) and n,
so that every table can state them, and each top-k metric's per-user values (``user_values``) in the order the
users were collected, with the internal id of each of those users (``user_ids``), for the per-group figures of
``evaluator.item_groups`` and for paired comparisons of two models on the same users (``evaluator.paired``). The metric
values themselves are RecBole's, unchanged.
"""

import math

import numpy as np
import torch
from recbole.evaluator import Evaluator


class StandardErrorEvaluator(Evaluator):
    """RecBole's ``Evaluator``; after ``evaluate`` it also holds ``standard_errors`` ({``hit@1``: SE, ...}) and
    ``users`` (n) and ``user_values`` ({``hit@1``: [n]}) of the per-user values its top-k metrics averaged, and
    ``user_ids`` ([n] internal user ids in the same order, once ``use_standard_errors`` records them; None before)."""

    def __init__(self, config):
        super().__init__(config)
        self.standard_errors, self.users, self.user_values = {}, None, {}
        self.user_ids, self._recorded_ids = None, []
        for metric in self.metric_class.values():
            if hasattr(metric, "topk_result") and hasattr(metric, "topk"):
                metric.topk_result = self._recording(metric)

    def _recording(self, metric):
        """``metric.topk_result`` (the step that averages its [n_users, max_k] per-user values), recording the SE."""
        original = metric.topk_result

        def topk_result(name, value):
            value = np.asarray(value, dtype=float)  # [n_users, max_k]
            self.users = len(value)
            for k in metric.topk:
                self.standard_errors[f"{name}@{k}"] = standard_error(value[:, k - 1])
                self.user_values[f"{name}@{k}"] = value[:, k - 1]
            return original(name, value)

        return topk_result

    def evaluate(self, dataobject):
        self.standard_errors, self.users, self.user_values = {}, None, {}
        result = super().evaluate(dataobject)
        ids = torch.cat(self._recorded_ids).numpy() if self._recorded_ids else np.empty(0, dtype=np.int64)
        self._recorded_ids = []
        # a data-parallel evaluation gathers users this process never collected: no ids, so no pairing
        self.user_ids = ids if self.users is not None and len(ids) == self.users else None
        return result


def standard_error(values):
    """Sample standard deviation of per-user values / sqrt(n) (NaN for fewer than 2 users)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def use_standard_errors(trainer, config):
    """Give a RecBole (or plugin) trainer the evaluator that keeps standard errors and records the user id of each
    row RecBole's collector receives; returns it."""
    evaluator = StandardErrorEvaluator(config)
    trainer.evaluator = evaluator
    collect = trainer.eval_collector.eval_batch_collect
    uid_field = config["USER_ID_FIELD"]

    def eval_batch_collect(scores_tensor, interaction, positive_u, positive_i):
        evaluator._recorded_ids.append(row_users(scores_tensor.shape[0], interaction, uid_field))
        return collect(scores_tensor, interaction, positive_u, positive_i)

    trainer.eval_collector.eval_batch_collect = eval_batch_collect
    return evaluator


def row_users(rows, interaction, uid_field):
    """[rows] user id of each score row of an evaluation batch: one row per user under full ranking; under sampled
    ranking RecBole's interaction lists each user's 1 + N candidate rows contiguously, one user after another. -1
    where the batch does not say (no user field, or a layout that does not match ``rows``)."""
    if uid_field not in interaction.interaction:
        return torch.full((rows,), -1, dtype=torch.long)
    users = interaction[uid_field].long().cpu()
    if len(users) != rows:
        users = torch.unique_consecutive(users)
    if len(users) != rows:
        return torch.full((rows,), -1, dtype=torch.long)
    return users
