"""Paired comparisons on the same users: the figures against a direct scipy / statsmodels computation, identical rows,
pairing by user id, Holm's correction, and the compare command on run files."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from recbole_llmplugin.evaluator.paired import compare_rows, holm, paired_difference, paired_values
from recbole_llmplugin.tools import compare


def _vectors(n=200, seed=0):
    rng = np.random.default_rng(seed)
    reference = (rng.random(n) < 0.3).astype(float)
    other = reference.copy()
    flip = rng.random(n) < 0.15  # a model that mostly agrees with the reference, and is right more often
    other[flip] = (rng.random(flip.sum()) < 0.6).astype(float)
    return reference, other


def test_paired_se_and_p_match_scipy_on_fixed_vectors():
    reference, other = _vectors()
    got = paired_difference(reference, other, "ttest")
    d = other - reference
    assert got["n"] == len(d)
    assert got["diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert got["diff_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)), abs=1e-12)
    assert got["p_raw"] == pytest.approx(stats.ttest_rel(other, reference).pvalue, rel=1e-9)
    # the t statistic is the difference over its paired SE
    assert got["diff"] / got["diff_se"] == pytest.approx(stats.ttest_rel(other, reference).statistic, rel=1e-9)


def test_randomisation_p_matches_scipy_permutation_test():
    reference, other = _vectors(seed=3)
    got = paired_difference(reference, other, "permutation", seed=7)
    want = stats.permutation_test(
        (other, reference),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=9999,
        vectorized=True,
        random_state=7,
    ).pvalue
    assert got["p_raw"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("test", ["ttest", "permutation"])
def test_identical_rows_differ_by_exactly_zero_with_p_one(test):
    reference, _ = _vectors()
    got = paired_difference(reference, reference.copy(), test)
    assert got["diff"] == 0.0 and got["diff_se"] == 0.0 and got["p_raw"] == 1.0


def test_paired_se_is_tighter_than_unpaired_for_correlated_rows():
    reference, other = _vectors()
    got = paired_difference(reference, other)
    unpaired = math.sqrt(reference.var(ddof=1) / len(reference) + other.var(ddof=1) / len(other))
    assert got["diff_se"] < 0.7 * unpaired


def test_rows_are_paired_by_user_id_not_position():
    reference, other = _vectors(n=50)
    users = [f"u{i}" for i in range(50)]
    order = np.random.default_rng(1).permutation(50)
    ref = {"users": users, "hit@1": reference.tolist()}
    shuffled = {"users": [users[i] for i in order], "hit@1": other[order].tolist()}
    metrics, a, b = paired_values(ref, shuffled)
    assert metrics == ["hit@1"]
    np.testing.assert_array_equal(a[:, 0], reference)
    np.testing.assert_array_equal(b[:, 0], other)
    partial = {"users": users[:20], "hit@1": other[:20].tolist()}
    assert compare_rows([ref, partial], 0)[1]["n"] == 20
    assert paired_values(ref, None) is None


def test_holm_correction_is_statsmodels_and_counts_the_rows_compared():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(5)
    base = (rng.random(300) < 0.3).astype(float)
    rows = [{"users": list(range(300)), "hit@1": base.tolist()}]
    for shift in (0.02, 0.08, 0.15):
        values = np.where(rng.random(300) < shift, 1.0, base)
        rows.append({"users": list(range(300)), "hit@1": values.tolist()})
    out = compare_rows(rows, 0)
    raw = [out[i]["hit@1"]["p_raw"] for i in (1, 2, 3)]
    want = multipletests(raw, method="holm")[1]
    assert [out[i]["hit@1"]["p"] for i in (1, 2, 3)] == pytest.approx(list(want))
    assert min(out[i]["hit@1"]["p"] for i in (1, 2, 3)) == pytest.approx(min(1.0, 3 * min(raw)))
    assert out[0] is None
    np.testing.assert_array_equal(holm([np.nan, 0.01]), [np.nan, 0.01])


def _run_file(folder, model, values, users, label=None, groups=None):
    record = {
        "model": model,
        "label": label or model,
        "dataset": "toy",
        "seed": 2020,
        "test_result": {"hit@1": float(np.mean(values))},
        "test_se": {"hit@1": 0.01},
        "costs": {"test_users": len(values)},
        "test_user_values": {"users": users, "hit@1": list(values)},
    }
    if groups:
        record["test_groups"] = groups
    path = folder / f"toy-{model}-seed2020.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_compare_command_reads_run_files_and_reports_unpaired_old_ones(tmp_path, capsys):
    reference, other = _vectors(n=120)
    users = [str(i) for i in range(120)]
    (tmp_path / "runs").mkdir()
    _run_file(tmp_path / "runs", "SASRec", reference, users)
    _run_file(tmp_path / "runs", "ALLMRec", other, users)
    old = json.loads((tmp_path / "runs" / "toy-ALLMRec-seed2020.json").read_text())
    old.pop("test_user_values")
    old["model"] = old["label"] = "LLMOnly"
    (tmp_path / "runs" / "toy-LLMOnly-seed2020.json").write_text(json.dumps(old))
    assert compare.main([str(tmp_path), "--reference", "SASRec", "--csv", str(tmp_path / "paired.csv")]) == 0
    printed = capsys.readouterr().out
    want = paired_difference(reference, other)
    assert f"{want['diff']:+.4f} ± {want['diff_se']:.4f}" in printed
    assert "unpaired: no per-user values" in printed
    assert "paired.csv" in str(list(tmp_path.iterdir()))
    assert compare.main([str(tmp_path), "--reference", "Nobody"]) == 2
    assert "names no row" in capsys.readouterr().err


def test_item_group_rows_are_paired_within_their_group(tmp_path):
    reference, other = _vectors(n=60)
    users = [str(i) for i in range(60)]
    cold = {"users": users[:25], "hit@1": other[:25].tolist()}
    cold_ref = {"users": users[:25], "hit@1": reference[:25].tolist()}
    group = lambda values: {"cold": {"users": 25, "hit@1": float(np.mean(values["hit@1"])), "user_values": values}}
    a = _run_file(tmp_path, "SASRec", reference, users, groups=group(cold_ref))
    b = _run_file(tmp_path, "ALLMRec", other, users, groups=group(cold))
    rows = compare.paired_rows(compare.load_records([a, b]), "SASRec")
    cold_row = next(r for r in rows if r["group"] == "cold" and r["label"] == "ALLMRec")
    want = paired_difference(reference[:25], other[:25])
    assert cold_row["n"] == 25
    assert cold_row["hit@1_diff"] == pytest.approx(want["diff"])
    assert cold_row["hit@1_p"] == pytest.approx(want["p_raw"])  # one row compared: Holm leaves it
