"""Clustering metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.errors import DataError
from autolabel.metrics.clustering import bcubed_fscore, cluster_stats, evaluate_clustering, nmi, pairwise_fscore


def test_pairwise_hand_case():
    # gt:   A A A B B      pred: 0 0 1 1 1
    # contingency rows (A,B) x cols (0,1): [[2,1],[0,2]]
    # tk = (4+1+0+4) - 5 = 4 ; pk = cols (2,3): 4+9-5 = 8 ; qk = rows (3,2): 9+4-5 = 8
    # pairs counted ordered: P = 4/8 = 0.5, R = 4/8 = 0.5, F = 0.5
    gt = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1, 1])
    assert pairwise_fscore(gt, pred) == pytest.approx((0.5, 0.5, 0.5))


def test_bcubed_hand_case():
    # same case: overlaps n: (A,0)=2, (A,1)=1, (B,1)=2; |pred| 0:2, 1:3 ; |gt| A:3, B:2
    # P = (4/2 + 1/3 + 4/3) / 5 = (2 + 5/3)/5 = 11/15 ; R = (4/3 + 1/3 + 4/2)/5 = (5/3 + 2)/5 = 11/15
    gt = np.array([0, 0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1, 1])
    p, r, f = bcubed_fscore(gt, pred)
    assert p == pytest.approx(11 / 15) and r == pytest.approx(11 / 15) and f == pytest.approx(11 / 15)


def test_identical_and_permuted_partitions_are_perfect():
    gt = np.array([3, 3, 7, 7, 7, 1])
    pred = np.array([10, 10, 2, 2, 2, 5])
    m = evaluate_clustering(gt, pred)
    for key in ("pairwise_f", "bcubed_f", "nmi", "pairwise_precision", "bcubed_recall"):
        assert m[key] == pytest.approx(1.0)
    assert m["n_clusters"] == 3 and m["n_true_clusters"] == 3


def test_all_singletons_and_all_in_one_never_nan():
    gt = np.array([0, 0, 1, 1])
    single = np.arange(4)
    p, r, f = pairwise_fscore(gt, single)
    assert (p, r, f) == (1.0, 0.0, 0.0)
    assert cluster_stats(single)["singleton_share"] == 1.0
    one = np.zeros(4, int)
    # tk = (4+4) - 4 = 4 ; pk = 16 - 4 = 12 ; qk = 4+4-4 = 4 -> P = 1/3, R = 1
    assert pairwise_fscore(gt, one) == pytest.approx((1 / 3, 1.0, 0.5))
    assert bcubed_fscore(gt, one)[1] == pytest.approx(1.0)
    assert np.isfinite(nmi(gt, one))


def test_string_labels_and_errors():
    assert pairwise_fscore(np.array(["a", "a", "b"]), np.array([1, 1, 2]))[2] == pytest.approx(1.0)
    with pytest.raises(DataError, match="must align"):
        pairwise_fscore(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(DataError, match="empty"):
        pairwise_fscore(np.zeros(0, int), np.zeros(0, int))
    with pytest.raises(DataError, match="integers"):
        pairwise_fscore(np.zeros(3), np.zeros(3, int))
    with pytest.raises(DataError, match="1-D"):
        pairwise_fscore(np.zeros((3, 1), int), np.zeros(3, int))


def test_asymmetric_hand_case():
    # gt: A A A A B B   pred: 0 0 1 1 1 1
    # contingency rows (A,B) x cols (0,1): [[2,2],[0,2]] ; N = 6
    # tk = 4+4+0+4 - 6 = 6 ; pk = cols (2,4): 4+16-6 = 14 ; qk = rows (4,2): 16+4-6 = 14
    # -> P = R = 6/14 = 3/7 ; F = 3/7
    # BCubed P: (4/2 + 4/4 + 4/4)/6 = 4/6 = 2/3 ; R: (4/4 + 4/4 + 4/2)/6 = 2/3
    gt = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 1])
    assert pairwise_fscore(gt, pred) == pytest.approx((3 / 7, 3 / 7, 3 / 7))
    assert bcubed_fscore(gt, pred) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # gt: A A B B  pred: 0 0 0 1 -> C = [[2,0],[1,1]]: tk = 4+1+1-4 = 2 ; pk = (3,1): 9+1-4 = 6 ; qk = (2,2): 4
    # P = 2/6 = 1/3, R = 2/4 = 1/2, F = 2*(1/6)/(5/6) = 0.4
    assert pairwise_fscore(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx((1 / 3, 0.5, 0.4))


def test_label_permutation_and_swap_symmetry():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, 200)
    pred = rng.integers(0, 7, 200)
    relabel = rng.permutation(7)[pred] * 13 + 1000  # arbitrary ids, same partition
    a, b = evaluate_clustering(gt, pred), evaluate_clustering(gt, relabel)
    assert a == pytest.approx(b)
    # swapping truth and prediction swaps precision and recall
    p, r, _ = pairwise_fscore(gt, pred)
    assert pairwise_fscore(pred, gt)[:2] == pytest.approx((r, p))
    bp, br, _ = bcubed_fscore(gt, pred)
    assert bcubed_fscore(pred, gt)[:2] == pytest.approx((br, bp))


def test_all_singletons_bcubed_and_single_sample():
    gt = np.array([0, 0, 1, 1])
    # every sample alone: BCubed P = 1 (each cluster is pure), R = (1/2 * 4)/4 = 1/2 -> F = 2/3
    assert bcubed_fscore(gt, np.arange(4)) == pytest.approx((1.0, 0.5, 2 / 3))
    # N = 1: no pairs anywhere -> P = R = 1 by convention, never NaN
    m = evaluate_clustering(np.array([4]), np.array([9]))
    assert all(np.isfinite(v) for v in m.values())
    assert m["pairwise_f"] == 1.0 and m["bcubed_f"] == 1.0


def test_cluster_stats_and_evaluate_keys():
    s = cluster_stats(np.array([5, 5, 5, 2, 9]))
    assert s["n_clusters"] == 3 and s["largest"] == 3 and s["singleton_share"] == pytest.approx(2 / 5)
    m = evaluate_clustering(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]))
    assert set(m) == {
        "pairwise_precision", "pairwise_recall", "pairwise_f", "bcubed_precision", "bcubed_recall", "bcubed_f",
        "nmi", "n_clusters", "n_true_clusters", "singleton_share",
    }  # fmt: skip
    assert m["n_clusters"] == 3 and m["n_true_clusters"] == 2 and m["singleton_share"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="non-empty 1-D"):
        cluster_stats(np.zeros(0, int))


def test_large_input_is_linear_time():
    # 1M samples would need ~10^12 pair checks if done O(N^2); the sparse contingency takes well under a second
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 1000, 1_000_000)
    p, r, f = pairwise_fscore(gt, gt.copy())
    assert (p, r, f) == pytest.approx((1.0, 1.0, 1.0))
    assert 0.0 <= nmi(gt, rng.integers(0, 1000, 1_000_000)) < 0.1


def test_nmi_hand_cases():
    # gt A A A B B, pred 0 0 1 1 1: joint counts [[2,1],[0,2]] / 5, marginals (3/5, 2/5) and (2/5, 3/5)
    # MI = 2/5 ln((2/5)/(3/5*2/5)) + 1/5 ln((1/5)/(3/5*3/5)) + 2/5 ln((2/5)/(2/5*3/5)) = 4/5 ln(5/3) + 1/5 ln(5/9)
    # H(gt) = H(pred) = -(3/5 ln 3/5 + 2/5 ln 2/5); arithmetic normalization: NMI = MI / ((H + H) / 2)
    mi = 0.8 * np.log(5 / 3) + 0.2 * np.log(5 / 9)
    h = -(0.6 * np.log(0.6) + 0.4 * np.log(0.4))
    assert nmi(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 1])) == pytest.approx(mi / h)
    assert mi / h == pytest.approx(0.43254, abs=1e-5)
    # gt A A B B, pred 0 0 0 1: joint (A,0)=2, (B,0)=1, (B,1)=1 over 4; marginals (1/2, 1/2) and (3/4, 1/4)
    # MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2 ; H(gt) = ln 2 ; H(pred) = -(3/4 ln 3/4 + 1/4 ln 1/4)
    mi = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
    hg, hp = np.log(2), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(mi / ((hg + hp) / 2))
    assert mi / ((hg + hp) / 2) == pytest.approx(0.343711, abs=1e-5)
    # independent partitions share no information; identical ones all of it
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    assert evaluate_clustering(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))["nmi"] == pytest.approx(0.0, abs=1e-12)
