"""Metrics per group of test targets: warm items and cold items (A-LLMRec, section 5.2).

With ``eval_item_groups: True`` every model's evaluation (RecBole's models and the plugin's) also reports each
top-k metric over the users whose target item is warm (the ``warm_item_ratio`` most-interacted items) and over those
whose target is cold (the ``cold_item_ratio`` least-interacted), each with its n and standard error. Items are ranked
by their interactions in the TRAINING split only (each training user's first item included, which RecBole's
sequential split keeps in histories alone); ties are broken by internal item id, so the groups hold exactly the
ratios of the items. Items no training interaction names are the coldest. The figures come from the same per-user
values as the overall metric (``StandardErrorEvaluator.user_values``), so a group's figure and the overall one can
never disagree about a user.
"""

from logging import getLogger

import numpy as np
import torch

from recbole_llmplugin.evaluator.standard_errors import standard_error
from recbole_llmplugin.utils.errors import ConfigValueError

GROUPS = ("warm", "cold")


def training_item_counts(train_dataset):
    """Interactions per internal item id [item_num] in a built training split: its targets, plus for a
    sequential split each user's first item (row of history length 1), which is never a target."""
    inter = train_dataset.inter_feat
    iid = train_dataset.iid_field
    counts = np.bincount(inter[iid].numpy(), minlength=train_dataset.item_num)  # [item_num]
    length_field = getattr(train_dataset, "item_list_length_field", None)
    if length_field and length_field in inter.columns:
        first_rows = inter[length_field].numpy() == 1
        firsts = inter[iid + train_dataset.config["LIST_SUFFIX"]][:, 0].numpy()[first_rows]
        counts += np.bincount(firsts, minlength=train_dataset.item_num)
    return counts


def item_groups(config, train_dataset):
    """{"warm": sorted internal ids, "cold": sorted internal ids} from the training split, or None when
    ``eval_item_groups`` is off."""
    if not config["eval_item_groups"]:
        return None
    warm_ratio, cold_ratio = config["warm_item_ratio"], config["cold_item_ratio"]
    if warm_ratio + cold_ratio > 1:
        raise ConfigValueError(
            f"warm_item_ratio {warm_ratio} + cold_item_ratio {cold_ratio} > 1 would put items in both groups; "
            f"give ratios that add up to at most 1 (the paper: 0.35 and 0.35)"
        )
    counts = training_item_counts(train_dataset)[1:]  # [item_num - 1], id 0 is padding
    items = np.arange(1, train_dataset.item_num)
    order = items[np.lexsort((items, counts))]  # least interacted first
    n_cold, n_warm = int(round(cold_ratio * len(items))), int(round(warm_ratio * len(items)))
    sorted_counts = counts[order - 1]
    for group, cut, inside in (
        ("cold", n_cold, sorted_counts[:n_cold]),
        ("warm", n_warm, sorted_counts[::-1][:n_warm]),
    ):
        if not 0 < cut < len(items):
            continue
        edge = inside[-1]  # the count at the group's cut: items of that count on both sides are split by id alone
        tied_in, tied_total = int((inside == edge).sum()), int((counts == edge).sum())
        if tied_total > tied_in:
            getLogger().warning(
                f"eval_item_groups: {tied_in} of the {tied_total} items with {int(edge)} training interactions are "
                f"put in the {group} group by item id alone (their counts tie at the cut of {group}_item_ratio "
                f"{cold_ratio if group == 'cold' else warm_ratio}); with many ties the groups say little"
            )
    return {"warm": np.sort(order[len(items) - n_warm :]), "cold": np.sort(order[:n_cold])}


def use_item_groups(trainer, evaluator, groups):
    """Record each evaluated user's target item as RecBole's collector receives it, and after each evaluation
    leave ``evaluator.group_results`` ({group: {"users": n, "hit@1": mean, "hit@1_se": SE, ...}}); no-op without
    groups."""
    evaluator.group_results = {}
    if groups is None:
        return
    targets = []
    collect = trainer.eval_collector.eval_batch_collect

    def eval_batch_collect(scores_tensor, interaction, positive_u, positive_i):
        rows = scores_tensor.shape[0]
        positive_u, positive_i = positive_u.long().cpu(), positive_i.long().cpu()
        target = torch.full((rows,), -1, dtype=torch.long)  # [rows]
        target[positive_u] = positive_i
        target[torch.bincount(positive_u, minlength=rows) != 1] = -1  # no single target: in no group
        targets.append(target)
        return collect(scores_tensor, interaction, positive_u, positive_i)

    trainer.eval_collector.eval_batch_collect = eval_batch_collect
    evaluate = evaluator.evaluate

    def evaluate_with_groups(dataobject):
        result = evaluate(dataobject)
        rows = torch.cat(targets).numpy() if targets else np.empty(0, dtype=np.int64)
        targets.clear()
        evaluator.group_results = group_results(evaluator.user_values, rows, groups, evaluator.user_ids)
        return result

    evaluator.evaluate = evaluate_with_groups


def group_results(user_values, targets, groups, user_ids=None):
    """Each group's mean and standard error of every per-user metric value, over the users whose target it holds;
    with ``user_ids`` ([n] ids of the evaluated users) also its per-user values (``user_values``: {"users": ids,
    metric: values}), for paired comparisons within the group."""
    if not user_values:
        return {}
    n_users = len(next(iter(user_values.values())))
    if n_users != len(targets):  # a data-parallel evaluation gathers users this process never collected
        getLogger().warning(
            f"item groups: {n_users} evaluated users but {len(targets)} recorded targets (evaluation split over "
            f"processes); no group figures"
        )
        return {}
    results = {}
    for name, items in groups.items():
        member = np.isin(targets, items)  # [n_users]
        row = {"users": int(member.sum())}
        for metric, values in user_values.items():
            chosen = values[member]
            row[metric] = float(chosen.mean()) if len(chosen) else float("nan")
            row[metric + "_se"] = standard_error(chosen)
        if user_ids is not None:
            row["user_values"] = {"users": user_ids[member], **{m: v[member] for m, v in user_values.items()}}
        results[name] = row
    return results


def group_rows(row):
    """One result row per item group of a run's result ``row`` (``test_groups``): the group's metrics, SEs and user
    count in the places the row has them (``test_result``, ``test_se``, ``costs["test_users"]``), and ``group``."""
    rows = []
    for group, values in (row.get("test_groups") or {}).items():
        kept = ("users", "user_values")
        metrics = {k: v for k, v in values.items() if k not in kept and not k.endswith("_se")}
        errors = {k[: -len("_se")]: v for k, v in values.items() if k.endswith("_se")}
        costs = dict(row.get("costs") or {}, test_users=values["users"])
        grouped = {**row, "group": group, "test_result": metrics, "test_se": errors, "costs": costs}
        grouped["test_user_values"] = values.get("user_values")
        rows.append(grouped)
    for kept in rows:
        kept.pop("test_groups", None)
    return rows
