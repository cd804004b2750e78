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
