"""Extra Hi-LANDER engine checks: decode edge cases, graph helpers, config validation, determinism (all tiny, no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolabel.config.hilander import HiLanderClusterConfig, HiLanderTrainConfig, KnnConfig, LanderModelConfig
from autolabel.errors import ConfigError
from autolabel.hilander.gnn import LANDER
from autolabel.hilander.graphs import build_level_graph, knn_edges, row_normalized
from autolabel.hilander.hierarchy import best_parent, build_training_levels, cluster_pool, decode_level, find_roots
from autolabel.hilander.search import knn_recall, knn_search


def _blobs(classes: int, per: int, dim: int, seed: int, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    x = np.repeat(centers, per, axis=0) + spread * rng.normal(size=(classes * per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(classes), per).astype(np.int64)


def test_find_roots_deep_chain_and_cycle():
    n = 1000  # chain 999 -> 998 -> ... -> 0: pointer jumping needs only ~10 rounds
    parent = np.maximum(np.arange(n) - 1, 0)
    assert np.array_equal(find_roots(parent), np.zeros(n, dtype=np.int64))
    with pytest.raises(RuntimeError, match="cycle"):
        find_roots(np.array([1, 0, 2]))


def test_best_parent_picks_highest_score_and_keeps_orphans():
    # in-edges of node 0: from 1 (score .3) and from 2 (score .9); node 3 has only a masked-out edge
    edge_index = np.array([[1, 2, 0], [0, 0, 3]])
    score = np.array([0.3, 0.9, 0.99])
    parent = best_parent(edge_index, score, np.array([True, True, False]), 4)
    assert parent.tolist() == [2, 1, 2, 3]


def test_decode_level_ties_and_threshold_add_no_edges():
    edge_index = torch.tensor([[1, 0, 2], [0, 1, 1]])
    equal = torch.tensor([0.5, 0.5, 0.5])  # equal density: strict d_j > d_i keeps nothing, no cycle can form
    cid, peaks, added = decode_level(edge_index, equal, torch.ones(3), 0.5, 3)
    assert added == 0 and len(peaks) == 3 and len(np.unique(cid)) == 3
    dens = torch.tensor([0.1, 0.2, 0.9])  # 2 -> 1 -> 0 by density, but score 0.5 is not > tau=0.5
    cid, peaks, added = decode_level(edge_index, dens, torch.tensor([1.0, 1.0, 0.5]), 0.5, 3)
    assert added == 1 and cid[0] == cid[1] != cid[2]


def test_knn_edges_drop_missing_and_clamp():
    nbrs = np.array([[1, -1], [0, 1]])
    sims = np.array([[-0.4, -np.inf], [0.7, 1.2]], dtype=np.float32)
    ei, s = knn_edges(nbrs, sims)
    assert ei.tolist() == [[1, 0, 1], [0, 1, 1]]
    assert s.tolist() == pytest.approx([0.0, 0.7, 1.0])
    w = row_normalized(ei, s, 2)  # node 0's only in-edge has sim 0 -> uniform weight 1
    assert w.tolist() == pytest.approx([1.0, 0.7 / 1.7, 1.0 / 1.7])


def test_knn_recall_known_answer():
    exact = np.array([[1, 2], [0, 2]])
    approx = np.array([[2, 3], [-1, -1]])
    assert knn_recall(approx, exact) == pytest.approx(0.25)
    assert knn_recall(exact, exact) == 1.0


def test_training_levels_are_sparse_and_density_bounded():
    x, y = _blobs(4, 12, 8, seed=3)
    graphs = build_training_levels(x, y, [4], [3])
    assert graphs[0].num_nodes == 48
    for g in graphs:
        assert g.edge_index.shape[1] <= g.num_nodes * 4  # O(N*k)
        assert float(g.density.abs().max()) <= 1.0 + 1e-6
        assert g.edge_label.shape[0] == g.edge_index.shape[1]


def test_cluster_pool_deterministic_and_maps_every_sample():
    x, _ = _blobs(3, 10, 8, seed=5)
    torch.manual_seed(0)
    model = LANDER(8, hidden=16)
    a = cluster_pool(model, x, k=4, tau=0.0, levels=3, device="cpu", progress=False)
    b = cluster_pool(model, x, k=4, tau=0.0, levels=3, device="cpu", progress=False)
    assert a.labels.shape == (30,) and a.labels.dtype == np.int64
    assert np.array_equal(a.labels, b.labels)
    assert set(np.unique(a.labels)) == set(range(a.n_clusters))  # contiguous ids
    assert a.levels[0]["nodes"] == 30 and all(s["edges_added"] >= 0 for s in a.levels)


def test_gat_two_layers_eval_is_deterministic():
    x, y = _blobs(2, 6, 4, seed=1)
    nbrs, sims = knn_search(x, 3)
    g = build_level_graph(x, nbrs, sims, labels=y)
    torch.manual_seed(0)
    model = LANDER(4, hidden=8, num_conv=2, conv="gat", gat_heads=2, dropout=0.5).eval()
    l1, d1 = model(g)
    l2, d2 = model(g)
    assert l1.shape == (g.edge_index.shape[1], 2) and d1.shape == (12,)
    assert torch.equal(l1, l2) and torch.equal(d1, d2)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: KnnConfig(nprobe=0), "knn.nprobe"),
        (lambda: KnnConfig(exact_max=-1), "knn.exact_max"),
        (lambda: KnnConfig(method="lsh"), "knn.method"),
        (lambda: LanderModelConfig(gat_heads=0), "model.gat_heads"),
        (lambda: LanderModelConfig(dropout=1.0), "model.dropout"),
        (lambda: HiLanderTrainConfig(momentum=1.5), "train.momentum"),
        (lambda: HiLanderTrainConfig(weight_decay=-1.0), "train.weight_decay"),
        (lambda: HiLanderTrainConfig(focal_gamma=-0.5), "train.focal_gamma"),
        (lambda: HiLanderTrainConfig(k_list=[10, 5], levels_list=[2]), "equal length"),
        (lambda: HiLanderClusterConfig(device="tpu"), "cluster.device"),
        (lambda: HiLanderClusterConfig(tau=1.5), "cluster.tau"),
    ],
)
def test_config_rejects_bad_values(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_config_accepts_cuda_index():
    assert HiLanderClusterConfig(device="cuda:1").device == "cuda:1"


def test_ground_truth_decode_hand_case_middle_point_is_the_peak():
    ang = np.deg2rad([0.0, 10.0, 20.0])
    x = np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)
    nbrs, sims = knn_search(x, 2)
    g = build_level_graph(x, nbrs, sims, labels=np.zeros(3, dtype=np.int64))
    # b (the middle point) is cos(10°) from both others: highest density; a and c tie below it
    expected = np.array([np.cos(ang[1]) + np.cos(ang[2]), 2 * np.cos(ang[1]), np.cos(ang[1]) + np.cos(ang[2])]) / 2
    assert g.density.numpy() == pytest.approx(expected, abs=1e-6)
    cid, peaks, added = decode_level(g.edge_index, g.density, g.edge_sim, 0.0, 3)
    assert peaks.tolist() == [1] and added == 2 and cid.tolist() == [0, 0, 0]


class _SimilarityOracle(torch.nn.Module):
    """Stands in for a trained LANDER: P(same) = the edge's cosine similarity, density = mean in-edge similarity."""

    def forward(self, g):
        from torch_geometric.utils import scatter

        p = g.edge_sim.clamp(0, 1)
        density = scatter(g.edge_sim, g.edge_index[1], dim=0, dim_size=g.num_nodes, reduce="mean")
        return torch.stack([torch.log1p(-p + 1e-6), torch.log(p + 1e-6)], dim=1), density


def test_select_tau_picks_the_best_calibration_threshold():
    from autolabel.data.synthetic import make_blob_features
    from autolabel.hilander.hierarchy import select_tau

    x, y = make_blob_features(4, 25, 16, spread=0.15, seed=0)
    best, scores = select_tau(_SimilarityOracle(), x, y, [0.999, 0.5, 0.6], k=5, levels=3, device="cpu")
    assert set(scores) == {0.999, 0.5, 0.6}
    assert scores[0.999] < 0.2  # no edge survives: singletons
    assert best in (0.5, 0.6) and scores[best] == max(scores.values()) > 0.9
    if scores[0.5] == scores[0.6]:
        assert best == 0.6  # ties go to the larger (surer) threshold
    with pytest.raises(ConfigError, match="candidate"):
        select_tau(_SimilarityOracle(), x, y, [])


def test_cluster_config_validates_tau_candidates():
    with pytest.raises(ConfigError, match="tau_candidates"):
        HiLanderClusterConfig(tau_candidates=[0.5, 1.5])
    with pytest.raises(ConfigError, match="tau_metric"):
        HiLanderClusterConfig(tau_metric="accuracy")


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_lander_module_optimizer_choice_fits_blobs(name):
    from types import SimpleNamespace

    from autolabel.data.synthetic import make_blob_features
    from autolabel.hilander.lightning import LanderModule

    x, y = make_blob_features(4, 20, 8, spread=0.1, seed=0)
    graphs = build_training_levels(x, y, [5], [1])
    module = LanderModule(LanderModelConfig(hidden=16), HiLanderTrainConfig(optimizer=name, lr=0.01), feature_dim=8)
    module.trainer = SimpleNamespace(estimated_stepping_batches=60)  # what configure_optimizers reads
    opt = module.configure_optimizers()["optimizer"]
    assert type(opt).__name__ == {"sgd": "SGD", "adam": "Adam"}[name]
    module.log = lambda *a, **k: None  # no trainer to log to
    first = None
    for _ in range(60):
        loss = module.training_step(graphs[0], 0)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first  # the loss drops
    with pytest.raises(ConfigError, match="optimizer"):
        HiLanderTrainConfig(optimizer="lbfgs")
