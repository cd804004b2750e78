"""Hi-LANDER right by default: identity hold-out, link calibration, tau stored in the checkpoint; density ties."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from autolabel.config import TrainerConfig
from autolabel.config.hilander import CalibrationConfig, HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.data.pools import FeaturePool
from autolabel.data.synthetic import make_blob_features
from autolabel.hilander.calibration import (
    Calibration,
    CalibrationWarning,
    calibrate,
    fit_link_map,
    identity_split,
    read_calibration,
    resolve_tau,
)
from autolabel.hilander.hierarchy import cluster_pool, clusters_table, decode_level
from autolabel.metrics.clustering import evaluate_clustering


class _SimilarityOracle(torch.nn.Module):
    """Stands in for a trained LANDER: P(same) = the edge's cosine similarity, density = mean in-edge similarity."""

    def forward(self, g):
        from torch_geometric.utils import scatter

        p = g.edge_sim.clamp(0, 1)
        density = scatter(g.edge_sim, g.edge_index[1], dim=0, dim_size=g.num_nodes, reduce="mean")
        return torch.stack([torch.log1p(-p + 1e-6), torch.log(p + 1e-6)], dim=1), density


# ---------------------------------------------------------------- identity hold-out


def test_identity_split_holds_out_whole_classes():
    y = np.repeat(np.arange(10), [3, 5, 2, 8, 4, 4, 6, 2, 9, 7])
    fit_idx, cal_idx = identity_split(y, 0.3, seed=1)
    assert set(y[fit_idx]).isdisjoint(set(y[cal_idx]))  # no identity on both sides
    assert sorted(np.concatenate([fit_idx, cal_idx]).tolist()) == list(range(len(y)))  # every sample on one side
    assert len(set(y[cal_idx])) == 3
    again = identity_split(y, 0.3, seed=1)
    assert np.array_equal(again[1], cal_idx)  # seeded
    assert identity_split(y[:10], 0.5) is None  # 3 classes: nothing meaningful to hold out
    assert identity_split(y, 0.0) is None
    assert len(set(y[identity_split(y, 0.01)[1]])) == 2  # at least 2 classes held out ...
    assert len(set(y[identity_split(y, 0.99)[0]])) == 2  # ... and at least 2 left to train on


def _capture_meta_train(tmp_path, monkeypatch, x, y, val=None):
    """Run meta_train on tiny settings, recording the pool the GNN trained on and the pool calibration saw."""
    import autolabel.hilander.fitting as F
    import autolabel.hilander.lander_module as L

    seen: dict[str, FeaturePool] = {}
    real_dm, real_cal = L.LevelGraphDataModule, F.calibrate

    def spy_dm(train_pool, *a, **kw):
        seen["gnn"] = train_pool
        return real_dm(train_pool, *a, **kw)

    def spy_cal(model, features, labels, **kw):
        seen.setdefault("calibration", FeaturePool(np.asarray(features), np.asarray(labels)))
        return real_cal(model, features, labels, **kw)

    monkeypatch.setattr(L, "LevelGraphDataModule", spy_dm)
    monkeypatch.setattr(F, "calibrate", spy_cal)
    trainer = TrainerConfig(max_epochs=3, accelerator="cpu", enable_progress_bar=False)
    out = F.meta_train(FeaturePool(x, y), val, LanderModelConfig(hidden=16), HiLanderTrainConfig(k_list=[4],
                       levels_list=[2]), trainer, tmp_path, CalibrationConfig(fraction=0.25),
                       HiLanderClusterConfig(k=4), val_cluster_every=2)  # fmt: skip
    return out, seen


def test_calibration_features_never_overlap_the_gnn_training_features(tmp_path, monkeypatch):
    x, y = make_blob_features(8, 10, 8, spread=0.2, seed=0)
    val = FeaturePool(*make_blob_features(3, 10, 8, spread=0.2, seed=5))
    out, seen = _capture_meta_train(tmp_path, monkeypatch, x, y, val)
    gnn, cal = seen["gnn"], seen["calibration"]
    assert set(gnn.labels.tolist()).isdisjoint(cal.labels.tolist())  # identities, not samples, are held out
    rows = lambda f: {r.tobytes() for r in np.asarray(f, np.float32)}  # noqa: E731
    assert rows(gnn.features).isdisjoint(rows(cal.features))  # no calibration feature was trained on
    assert gnn.n + cal.n == len(x) and len(set(cal.labels.tolist())) == 2  # 25% of 8 classes
    # the checkpoint carries the calibration, with the held-out classes the calibration actually saw
    ckpt = torch.load(out["outputs"]["checkpoint"], map_location="cpu", weights_only=False)
    stored = read_calibration(ckpt)
    assert stored is not None and stored.held_out_classes == sorted(set(cal.labels.tolist()))
    assert stored.n_samples == cal.n
    on_disk = json.loads(out["outputs"]["calibration"].read_text())
    assert on_disk["tau"] == stored.tau == out["metrics"]["tau"] and on_disk["gnn_samples"] == gnn.n
    assert stored.curve[f"{stored.tau:g}"] == max(stored.curve.values())  # the chosen tau is a best one
    assert out["figures"] and out["figures"][0].endswith("tau_curve.png")
    # with a validation pool: clustering metrics at the calibrated tau, at the end and every N epochs (logs)
    for name in ("pairwise_f", "bcubed_f", "nmi", "n_clusters"):
        assert f"val/{name}" in out["metrics"]
    assert "val/pairwise_f" in (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]


def test_fit_link_map_recovers_a_known_logistic():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(0, 3, 20000))
    same = torch.from_numpy((rng.random(20000) < 1 / (1 + np.exp(-(0.5 * z.numpy() - 1.0)))).astype(np.int64))
    logits = torch.stack([torch.zeros_like(z), z], 1)  # z = l1 - l0
    a, b = fit_link_map(logits, same, "platt")
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-1.0, abs=0.1)
    a_t, b_t = fit_link_map(logits, same, "temperature")
    assert b_t == 0.0 and a_t > 0
    assert fit_link_map(logits, same, "none") == (1.0, 0.0)
    with pytest.warns(CalibrationWarning, match="do not rank"):
        assert fit_link_map(-logits, same, "platt") == (1.0, 0.0)  # a head that ranks backwards: left alone
    with pytest.warns(CalibrationWarning, match="all same-class"):
        assert fit_link_map(logits, torch.ones_like(same), "platt") == (1.0, 0.0)
    cal = Calibration(tau=0.5, a=2.0, b=-1.0)
    assert cal.prob(torch.tensor([[0.0, 0.5]])).item() == pytest.approx(0.5)  # sigmoid(2 * 0.5 - 1)


def test_calibrate_chooses_the_best_tau_on_the_held_out_pool():
    x, y = make_blob_features(5, 12, 16, spread=0.15, seed=0)
    cal = calibrate(_SimilarityOracle(), x, y, candidates=[0.2, 0.5, 0.8, 0.9999], metric="pairwise_f", k=5,
                    levels=3, device="cpu", method="none", adaptive=False)  # fmt: skip
    assert set(cal.curve) == {"0.2", "0.5", "0.8", "0.9999"}
    assert cal.curve["0.9999"] < 0.2  # nothing links: singletons
    assert cal.curve[f"{cal.tau:g}"] == max(cal.curve.values()) > 0.9
    for t in ("0.2", "0.5", "0.8"):  # every candidate was scored as the chosen one would be
        res = cluster_pool(_SimilarityOracle(), x, tau=float(t), k=5, levels=3, device="cpu", progress=False)
        assert cal.curve[t] == pytest.approx(evaluate_clustering(y, res.labels)["pairwise_f"])


def test_adaptive_candidates_sit_where_the_edges_are():
    from autolabel.hilander.calibration import adaptive_candidates

    pos = np.linspace(0.99, 1.0, 101)  # a saturated head: every same-class edge above 0.99
    neg = np.linspace(0.0, 0.995, 200)
    prob, same = np.concatenate([pos, neg]), np.concatenate([np.ones(101), np.zeros(200)])
    c = adaptive_candidates(prob, same)
    assert sum(t > 0.99 for t in c) >= 10  # the fixed 0.05 grid has none there
    assert max(c) <= 0.999999 and min(c) >= 0.0
    assert round(float(np.quantile(neg, 0.999)), 6) in c


def test_resolve_tau_names_its_source():
    cal = Calibration(tau=0.35, a=2.0, b=0.1, method="platt", n_classes=4, n_samples=40)
    tau, where = resolve_tau(None, cal, 0.8)
    assert tau == 0.35 and "calibrated by fit" in where and "4 held-out classes" in where
    tau, where = resolve_tau(0.6, cal, 0.8)
    assert tau == 0.6 and "cluster.tau given" in where and "calibrated" in where
    tau, where = resolve_tau(None, None, 0.8)
    assert tau == 0.8 and "no calibrated tau" in where
    assert read_calibration({}) is None
    assert read_calibration({"hilander_calibration": cal.to_dict()}) == cal


def test_a_calibration_on_few_classes_carries_a_caution():
    from autolabel.hilander.calibration import FEW_HELD_OUT_CLASSES, few_classes_caution

    few = Calibration(tau=0.9, a=2.0, method="platt", n_classes=2, n_samples=40)
    many = Calibration(tau=0.9, a=2.0, method="platt", n_classes=FEW_HELD_OUT_CLASSES, n_samples=400)
    assert "only 2 held-out classes" in few_classes_caution(few) and "calibrate=" in few_classes_caution(few)
    assert few_classes_caution(many) is None and few_classes_caution(None) is None
    assert few_classes_caution(Calibration(tau=0.9)) is None  # n_classes not recorded (older checkpoints)
    assert resolve_tau(None, few, 0.8)[1].endswith("only 2 classes, a rough guess")
    assert "rough guess" not in resolve_tau(None, many, 0.8)[1]
    assert "rough guess" not in resolve_tau(0.5, few, 0.8)[1]  # a given tau is the user's


def test_degenerate_results_are_named_and_useful_ones_are_not():
    from autolabel.hilander.clustering import degenerate

    assert degenerate(np.zeros(40, dtype=int)) == "40 of 40 points are in one cluster"
    assert degenerate(np.arange(40)) == "40 of 40 points are singletons"
    assert degenerate(np.r_[np.zeros(37, dtype=int), [1, 2, 3]]) == "37 of 40 points are in one cluster"
    assert degenerate(np.r_[np.zeros(20, dtype=int), np.arange(1, 21)]) == "20 of 40 points are singletons"
    assert degenerate(np.r_[np.zeros(21, dtype=int), np.arange(1, 20)]) is None  # 19 alone: most are grouped
    assert degenerate(np.r_[np.zeros(35, dtype=int), np.ones(5, dtype=int)]) is None  # 88/12: two real classes
    assert degenerate(np.repeat(np.arange(4), 10)) is None  # four clusters of ten
    assert degenerate(np.zeros(10, dtype=int)) is None  # too few points to call it


def test_tau_ladder_rungs_equal_direct_clustering_at_their_tau():
    """Each rung is a tau at a quantile of the pool's own level-0 link probabilities, and its counts are those of
    clustering the pool at that tau directly (the ladder reuses level 0's graph and GNN outputs)."""
    from autolabel.hilander.clustering import tau_ladder

    x, _ = make_blob_features(4, 15, 8, spread=0.3, seed=2)
    model = _SimilarityOracle()
    kwargs = {"k": 5, "levels": 2, "early_stop": True, "device": "cpu", "knn_kwargs": {}}
    ladder = tau_ladder(model, x, None, kwargs)
    taus = [r["tau"] for r in ladder]
    assert len(ladder) >= 3 and taus == sorted(taus) and 0 < taus[0] < taus[-1] < 1
    for r in ladder:
        labels = cluster_pool(model, x, tau=r["tau"], progress=False, **kwargs).labels
        counts = np.bincount(np.unique(labels, return_inverse=True)[1])
        assert r["clusters"] == len(counts)
        assert r["largest_share"] == round(counts.max() / len(x), 4)
        assert r["singleton_share"] == round((counts == 1).sum() / len(x), 4)
    assert ladder[0]["clusters"] < ladder[-1]["clusters"]  # fewer edges pass a higher tau: more clusters


def test_fit_validation_scores_the_clustering_users_get_from_a_degenerate_tau():
    """`fit`'s validation clusters like `cluster` does: a calibrated tau that leaves the pool all singletons is
    replaced by the nearest usable one, so sweeps rank what users get."""
    from autolabel.hilander.fitting import score_pool

    x, y = make_blob_features(4, 15, 8, spread=0.3, seed=2)
    pool = FeaturePool(x, y)
    cluster = HiLanderClusterConfig(k=5, levels=2, device="cpu")
    scores = score_pool(_SimilarityOracle(), pool, Calibration(tau=1.0), cluster)
    kept = score_pool(_SimilarityOracle(), pool, Calibration(tau=1.0), HiLanderClusterConfig(k=5, levels=2,
                      device="cpu", degenerate="keep"))  # fmt: skip
    assert kept["tau"] == 1.0 and kept["n_clusters"] == len(x) and kept["pairwise_f"] == 0.0
    assert scores["tau"] < 1.0 and scores["n_clusters"] < len(x) and scores["pairwise_f"] > 0.0


def test_a_degenerate_pool_is_searched_once(monkeypatch):
    """The first clustering, the tau ladder and the reclustering at the replacement tau share one level-0 kNN search
    and GNN pass, and the replaced result is the pool clustered directly at that tau, reporting the search it used."""
    import autolabel.hilander.hierarchy as hierarchy
    from autolabel.hilander.clustering import cluster_usable

    x, _ = make_blob_features(4, 15, 8, spread=0.3, seed=2)
    searched, passes = [], []
    search = hierarchy.knn_search
    monkeypatch.setattr(hierarchy, "knn_search", lambda f, *a, **kw: searched.append(len(f)) or search(f, *a, **kw))
    model = _SimilarityOracle()
    model.register_forward_hook(lambda m, i, o: passes.append(i[0].num_nodes))
    cfg = HiLanderClusterConfig(k=5, levels=2, device="cpu")
    result, extra = cluster_usable(model, x, 1.0, None, cfg, progress=False)
    assert extra["calibrated_tau"] == 1.0 and extra["tau"] < 1.0 and extra["tau_ladder"]
    assert searched.count(len(x)) == 1 and passes.count(len(x)) == 1  # upper levels (supernodes) are smaller
    direct = cluster_pool(model, x, tau=extra["tau"], progress=False, **cfg.pool_kwargs())
    np.testing.assert_array_equal(result.labels, direct.labels)
    assert result.seconds["knn"] > 0 and result.levels[0]["seconds"] > 0


def test_a_useful_result_gets_the_ladder_only_when_asked(monkeypatch):
    """For a tau calibrated on few classes `cluster` shows what other taus give: the ladder of a useful result, from
    the same single level-0 search; not asked, nothing extra."""
    import autolabel.hilander.hierarchy as hierarchy
    from autolabel.hilander.clustering import cluster_usable

    x, _ = make_blob_features(4, 15, 8, spread=0.3, seed=2)
    searched = []
    search = hierarchy.knn_search
    monkeypatch.setattr(hierarchy, "knn_search", lambda f, *a, **kw: searched.append(len(f)) or search(f, *a, **kw))
    cfg = HiLanderClusterConfig(k=5, levels=2, device="cpu")
    _, plain = cluster_usable(_SimilarityOracle(), x, 0.5, None, cfg, progress=False)
    assert plain == {}
    searched.clear()
    result, extra = cluster_usable(_SimilarityOracle(), x, 0.5, None, cfg, progress=False, ladder=True)
    assert set(extra) == {"tau_ladder"} and len(extra["tau_ladder"]) >= 3 and searched.count(len(x)) == 1
    np.testing.assert_array_equal(result.labels, cluster_pool(_SimilarityOracle(), x, tau=0.5, progress=False,
                                                              **cfg.pool_kwargs()).labels)  # fmt: skip


def test_calibration_config_validation():
    from autolabel.errors import ConfigError

    with pytest.raises(ConfigError, match="fraction"):
        CalibrationConfig(fraction=1.0)
    with pytest.raises(ConfigError, match="method"):
        CalibrationConfig(method="isotonicish")
    with pytest.raises(ConfigError, match="candidates"):
        CalibrationConfig(candidates=[])
    with pytest.raises(ConfigError, match="cluster.degenerate='drop': use nearest"):
        HiLanderClusterConfig(degenerate="drop")


# ---------------------------------------------------------------- density ties (duplicates)


def test_equal_density_links_by_index_and_stays_a_forest():
    edge_index = torch.tensor([[1, 0, 2, 1], [0, 1, 1, 2]])
    equal = torch.full((3,), 0.5)
    cid, peaks, added = decode_level(edge_index, equal, torch.ones(4), 0.5, 3)
    # equal density: the lower index is uphill -> 0 <- 1 <- 2 (edge 1->2 kept, 2->1 not): one tree rooted at 0
    assert peaks.tolist() == [0] and added == 2 and cid.tolist() == [0, 0, 0]
    # a fully connected group of equals: still a forest (no cycle), whatever the edge order
    n = 6
    src, dst = np.nonzero(~np.eye(n, dtype=bool))
    cid, peaks, added = decode_level(torch.tensor(np.stack([src, dst])), torch.zeros(n), torch.ones(len(src)), 0.1, n)
    assert peaks.tolist() == [0] and added == n - 1


def _dedup_vs_dup(x: np.ndarray, y: np.ndarray, copies: int, noise: float = 0.0, k: int = 10):
    rng = np.random.default_rng(0)
    xd = np.repeat(x, copies, axis=0) + noise * rng.normal(size=(len(x) * copies, x.shape[1])).astype(np.float32)
    xd /= np.linalg.norm(xd, axis=1, keepdims=True)
    yd = np.repeat(y, copies)
    kw = dict(k=k, tau=0.5, levels=3, device="cpu", progress=False)
    base = evaluate_clustering(y, cluster_pool(_SimilarityOracle(), x, **kw).labels)
    dup = cluster_pool(_SimilarityOracle(), xd.astype(np.float32), **kw)
    return base, evaluate_clustering(yd, dup.labels), dup


def test_exact_duplicates_form_one_cluster():
    x = np.tile(np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32), (100, 1))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    res = cluster_pool(_SimilarityOracle(), x, k=10, tau=0.5, levels=3, device="cpu", progress=False)
    assert res.n_clusters == 1  # was 100 singletons with a strict density comparison
    rows = np.random.default_rng(2).normal(size=(5, 64)).astype(np.float32)  # 5 distinct rows x 20 copies
    groups = np.repeat(rows / np.linalg.norm(rows, axis=1, keepdims=True), 20, axis=0)
    res = cluster_pool(_SimilarityOracle(), groups, k=10, tau=0.5, levels=3, device="cpu", progress=False)
    assert evaluate_clustering(np.repeat(np.arange(5), 20), res.labels)["pairwise_f"] == 1.0


@pytest.mark.parametrize("noise", [0.0, 1e-4])
def test_duplicated_pool_scores_like_the_deduplicated_pool(noise):
    x, y = make_blob_features(4, 10, 16, spread=0.15, seed=3)
    base, dup, res = _dedup_vs_dup(x, y, copies=3, noise=noise, k=5)
    assert base["pairwise_f"] > 0.7
    assert dup["pairwise_f"] == pytest.approx(base["pairwise_f"], abs=0.02)
    assert dup["bcubed_f"] == pytest.approx(base["bcubed_f"], abs=0.02)
    copies_together = res.labels.reshape(-1, 3)
    assert (copies_together == copies_together[:, :1]).all()  # every sample's copies share its cluster


# ---------------------------------------------------------------- clusters.csv columns


def test_cluster_result_confidence_and_join_level():
    x, y = make_blob_features(3, 8, 16, spread=0.1, seed=0)
    res = cluster_pool(_SimilarityOracle(), x, k=4, tau=0.5, levels=3, device="cpu", progress=False)
    assert res.confidence.shape == res.join_level.shape == res.density.shape == (len(x),)
    for c in np.unique(res.labels):
        members = res.labels == c
        if members.sum() > 1:
            assert (res.join_level[members] == -1).sum() == 1  # one peak per cluster, every other member joined
    joined = res.join_level >= 0
    assert (res.confidence[joined] > 0.5).all() and (res.confidence <= 1.0 + 1e-6).all()  # linked above tau
    lone = cluster_pool(_SimilarityOracle(), x, k=4, tau=0.99999, levels=3, device="cpu", progress=False)
    assert lone.n_clusters == len(x) and (lone.confidence == 0).all() and (lone.join_level == -1).all()
    text = clusters_table(["a", "b"], [1, 0], {"confidence": np.array([0.5, 0.25], np.float32),
                                               "level": np.array([0, -1])})  # fmt: skip
    assert text.splitlines() == ["id,cluster,confidence,level", "a,1,0.5000,0", "b,0,0.2500,-1"]


def test_duplicates_in_training_levels_link_too():
    from autolabel.hilander.hierarchy import build_training_levels

    x = np.repeat(make_blob_features(4, 1, 8, seed=0)[0], 6, axis=0)
    y = np.repeat(np.arange(4), 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphs = build_training_levels(x, y, [3], [2])
    assert len(graphs) == 2 and graphs[1].num_nodes == 4  # each group of copies became one supernode


# ---------------------------------------------------------------- honest approximate kNN


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_knn_raises_effort_until_the_target_recall(method):
    from autolabel.data.synthetic import random_unit_features
    from autolabel.hilander.search import knn_recall, knn_search

    x = random_unit_features(2000, 24, seed=0)  # no structure: the hardest case for an approximate index
    exact, _ = knn_search(x, 10, method="flat")
    kw = dict(method=method, nprobe=1, nlist=32, ef_search=2, hnsw_m=4)
    low: dict = {}
    knn_search(x, 10, target_recall=0.0, info=low, **kw)
    assert "recall_at_k" not in low  # no check asked for
    info: dict = {}
    nbrs, _ = knn_search(x, 10, target_recall=0.95, recall_queries=300, info=info, **kw)
    effort = info["nprobe" if method == "ivf" else "ef_search"]
    assert info["recall_at_k"] >= 0.95 and effort > (1 if method == "ivf" else 2)  # effort was raised
    assert knn_recall(nbrs, exact) >= 0.93  # the sampled recall holds for the whole search
    assert info["recall_queries"] == 300 and info["method"] == method


def test_exact_knn_uses_torch_on_cuda_without_a_faiss_gpu_build(monkeypatch):
    import autolabel.hilander.search as S
    import autolabel.hilander.torch_knn as T

    calls = []
    real = T.knn_search_torch

    def spy(x, k, device="auto", **kw):
        calls.append(device)
        return real(x, k, device="cpu", **kw)  # no CUDA here: run the same code on the CPU

    monkeypatch.setattr(S, "_torch_cuda", lambda: True)
    monkeypatch.setattr(S, "num_gpus", lambda: 0)
    monkeypatch.setattr(T, "knn_search_torch", spy)
    x, _ = make_blob_features(3, 10, 8, seed=0)
    info: dict = {}
    nbrs, sims = S.knn_search(x, 4, method="flat", info=info)
    assert calls == ["cuda"] and info["method"] == "torch-flat"
    exact = S.knn_search(x, 4, method="flat", use_gpu=False)
    assert np.array_equal(nbrs, exact[0]) and np.allclose(sims, exact[1], atol=1e-6)
