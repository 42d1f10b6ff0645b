"""Paired comparison of result rows that ranked the same users: each row against a reference row.

Every row of one benchmark (or one multi-model run) ranks the same test users on the same fixed candidates, so a
difference between two rows is best judged on the per-user differences, not on two unpaired standard errors: the
users that are easy for one model are mostly easy for the other, and the paired standard error removes that shared
part. For each metric and each row compared with the reference:

- ``diff``: the mean over the shared users of (row - reference);
- ``diff_se``: the sample standard deviation of the per-user differences / sqrt(n) (the paired SE);
- ``p_raw``: the two-sided p-value of a paired test on the same users, ``scipy.stats.ttest_rel`` (paired t-test,
  ``paired_test: ttest``) or ``scipy.stats.permutation_test`` with ``permutation_type="samples"`` (Fisher's
  randomisation test: each user's two values swapped at random, ``paired_test: permutation``);
- ``p``: ``p_raw`` corrected for the number of rows compared with the reference on that metric, by Holm's method
  (``statsmodels.stats.multitest.multipletests``).

Rows are paired by user id (a result's ``test_user_values``, written by ``quick_start.record.evaluation_record``); with several
seeds, by (seed, user). Two rows with identical values differ by exactly 0, with p = 1. A row whose run file keeps no
per-user values (written before they were kept) is reported as unpaired: no difference is claimed for it.
"""

import math

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

TESTS = ("ttest", "permutation")
PERMUTATIONS = 9999  # resamples of the randomisation test (its smallest p is 1 / 10,000)


def paired_values(reference, other):
    """Per-user values of two rows on their shared users: (metrics, [n, n_metrics] reference, [n, n_metrics] other),
    rows ordered by user; None when either keeps no per-user values or they share no user. ``reference`` and
    ``other`` are {"users": [...], metric: [...]} (keys: a user id, or (seed, user) for several seeds)."""
    if not reference or not other:
        return None
    metrics = [m for m in reference if m != "users" and m in other]
    position = {user: i for i, user in enumerate(other["users"])}
    shared = [(i, position[user]) for i, user in enumerate(reference["users"]) if user in position]
    if not shared or not metrics:
        return None
    mine, theirs = (np.array(index) for index in zip(*shared))
    ref = np.array([np.asarray(reference[m], dtype=float)[mine] for m in metrics]).T  # [n, n_metrics]
    row = np.array([np.asarray(other[m], dtype=float)[theirs] for m in metrics]).T  # [n, n_metrics]
    return metrics, ref, row


def paired_difference(reference, values, test="ttest", seed=0):
    """{"diff", "diff_se", "p_raw", "n"} of ``values`` - ``reference`` (two equal-length vectors of per-user values,
    paired by position). Identical vectors give diff 0, SE 0, p 1."""
    if test not in TESTS:
        raise ValueError(f"paired_test: '{test}' is not one of {', '.join(TESTS)}")
    reference, values = np.asarray(reference, dtype=float), np.asarray(values, dtype=float)
    differences = values - reference  # [n]
    n = len(differences)
    diff = float(differences.mean()) if n else float("nan")
    se = float(differences.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    if n < 2:
        p = float("nan")
    elif not differences.any():  # the same values: no difference, nothing to test (the t statistic would be 0 / 0)
        p = 1.0
    elif test == "ttest":
        p = float(stats.ttest_rel(values, reference).pvalue)
        p = 0.0 if se == 0 else p  # every user differs by the same non-zero amount: t is infinite
    else:
        p = float(
            stats.permutation_test(
                (values, reference),
                lambda x, y, axis: np.mean(x - y, axis=axis),
                permutation_type="samples",
                n_resamples=PERMUTATIONS,
                vectorized=True,
                random_state=seed,
            ).pvalue
        )
    return {"diff": diff, "diff_se": se, "p_raw": p, "n": n}


def holm(p_values):
    """Holm-corrected p-values (NaN entries stay NaN and are not counted)."""
    p_values = np.asarray(p_values, dtype=float)
    corrected = np.full(len(p_values), np.nan)
    known = ~np.isnan(p_values)
    if known.any():
        corrected[known] = multipletests(p_values[known], method="holm")[1]
    return corrected


def compare_rows(rows, reference_index, test="ttest"):
    """The paired comparison of every row of ``rows`` with ``rows[reference_index]``, Holm-corrected per metric over
    the rows compared. ``rows``: each a {"users", metric: values} dict or None. Returns one entry per row: None for
    the reference itself, {"paired": False} for a row that cannot be paired, else {"paired": True, "n": shared users,
    metric: {"diff", "diff_se", "p_raw", "p"}}."""
    reference = rows[reference_index]
    out = [None] * len(rows)
    raw = {}  # metric -> [(row index, p_raw)]
    for index, row in enumerate(rows):
        if index == reference_index:
            continue
        pairs = paired_values(reference, row)
        if pairs is None:
            out[index] = {"paired": False}
            continue
        metrics, ref, other = pairs
        entry = {"paired": True, "n": len(ref)}
        for column, metric in enumerate(metrics):
            entry[metric] = paired_difference(ref[:, column], other[:, column], test)
            raw.setdefault(metric, []).append((index, entry[metric]["p_raw"]))
        out[index] = entry
    for metric, found in raw.items():
        for (index, _), corrected in zip(found, holm([p for _, p in found])):
            out[index][metric]["p"] = float(corrected)
    return out


def difference_cell(entry):
    """``+0.0123 ± 0.0045 (p 0.012)``: a paired difference, its paired SE and its Holm-corrected p."""
    if entry is None:
        return ""
    return f"{entry['diff']:+.4f} ± {entry['diff_se']:.4f} (p {_p(entry['p'] if entry.get('p') is not None else entry.get('p_raw', float('nan')))})"


def _p(p):
    if p != p:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
