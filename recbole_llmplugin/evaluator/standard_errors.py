"""Standard errors of RecBole's top-k metrics over the evaluated users.

RecBole's top-k metrics (hit, ndcg, mrr, recall, precision, map, averagepopularity at K) are means over users of a
per-user value, and its ``Evaluator`` returns the means only. ``StandardErrorEvaluator`` is that evaluator, keeping,
for its last evaluation, each top-k metric's standard error (sample standard deviation over users / sqrt(n)) and n,
so that every table can state them, and each top-k metric's per-user values (``user_values``) in the order the
users were collected, for the per-group figures of ``evaluator.item_groups``. The metric values themselves are
RecBole's, unchanged.
"""

import math

import numpy as np
from recbole.evaluator import Evaluator


class StandardErrorEvaluator(Evaluator):
    """RecBole's ``Evaluator``; after ``evaluate`` it also holds ``standard_errors`` ({``hit@1``: SE, ...}) and
    ``users`` (n) and ``user_values`` ({``hit@1``: [n]}) of the per-user values its top-k metrics averaged."""

    def __init__(self, config):
        super().__init__(config)
        self.standard_errors, self.users, self.user_values = {}, None, {}
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
        return super().evaluate(dataobject)


def standard_error(values):
    """Sample standard deviation of per-user values / sqrt(n) (NaN for fewer than 2 users)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def use_standard_errors(trainer, config):
    """Give a RecBole (or plugin) trainer the evaluator that keeps standard errors; returns it."""
    trainer.evaluator = StandardErrorEvaluator(config)
    return trainer.evaluator
