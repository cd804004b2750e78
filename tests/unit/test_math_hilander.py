"""Known answers for Hi-LANDER's math on hand-built graphs: predicted density, the LANDER loss, best-parent choice
and its tie rule, the decode keep rule, supernode features, training levels, and clustering floors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from autolabel.hilander.graphs import build_level_graph, gt_density, row_normalized
from autolabel.hilander.hierarchy import (
    best_parent,
    build_training_levels,
    decode_level,
    forest_clusters,
    supernode_features,
)
from autolabel.hilander.lander import LANDER, lander_loss


def _graph() -> Data:
    # 3 nodes; edges j -> i: 1->0 (sim .8), 2->0 (.4), 0->1 (.8), 0->2 (.5), 1->2 (.2); labels 0, 0, 1
    ei = torch.tensor([[1, 2, 0, 0, 1], [0, 0, 1, 2, 2]])
    sim = torch.tensor([0.8, 0.4, 0.8, 0.5, 0.2])
    y = torch.tensor([0, 0, 1])
    return Data(x=torch.eye(3).repeat(1, 2), edge_index=ei, edge_sim=sim, edge_weight=row_normalized(ei, sim, 3),
                num_nodes=3, y=y, density=gt_density(ei, sim, y, 3),
                edge_label=(y[ei[0]] == y[ei[1]]).long())  # fmt: skip


def test_ground_truth_density_and_weights_known_answer():
    g = _graph()
    # d0 = (.8 - .4)/2 ; d1 = .8 (same class) ; d2 = (-.5 - .2)/2
    assert g.density.tolist() == pytest.approx([0.2, 0.8, -0.35])
    assert g.edge_weight.tolist() == pytest.approx([2 / 3, 1 / 3, 1.0, 0.5 / 0.7, 0.2 / 0.7])
    assert g.edge_label.tolist() == [1, 0, 1, 0, 0]


@pytest.mark.parametrize("bias", [0.0, 1.5, -2.0])
def test_predicted_density_is_mean_similarity_times_p1_minus_p0(bias):
    """With a link head that outputs the same logits (0, b) on every edge, p1 - p0 = tanh(b/2) and
    d̂_i = tanh(b/2) * mean_j a_ij over i's in-edges."""
    torch.manual_seed(0)
    model = LANDER(3, hidden=4, link_similarity=False)
    last = model.link_head[-1]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(torch.tensor([0.0, bias]))
    logits, density = model(_graph())
    assert torch.allclose(logits, torch.tensor([0.0, bias]).expand(5, 2))
    t = math.tanh(bias / 2)
    assert density.tolist() == pytest.approx([t * 0.6, t * 0.8, t * 0.35], abs=1e-6)


def test_lander_loss_known_answer():
    g = _graph()
    pred_density = torch.tensor([0.0, 1.0, 0.0])
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    loss, parts = lander_loss(logits, pred_density, g)
    mse = ((0.0 - 0.2) ** 2 + (1.0 - 0.8) ** 2 + (0.0 + 0.35) ** 2) / 3
    # link edges: those with d_src > d_dst: 1->0 (.8 > .2, label 1), 0->2 (.2 > -.35, label 0), 1->2 (label 0);
    # 2->0 and 0->1 are left out
    ce = [F.cross_entropy(logits[i : i + 1], torch.tensor([c])).item() for i, c in ((0, 1), (3, 0), (4, 0))]
    assert parts["density_loss"].item() == pytest.approx(mse, rel=1e-6)
    assert parts["link_loss"].item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    assert loss.item() == pytest.approx(mse + sum(ce) / 3, rel=1e-6)  # equal weights
    assert parts["link_edges"].item() == 3
    assert parts["link_acc"].item() == pytest.approx(2 / 3)  # edge 1->2 predicted "same" wrongly
    # focal loss with gamma=0 is the cross-entropy; gamma=2 down-weights the easy edges
    f0, p0 = lander_loss(logits, pred_density, g, focal=True, gamma=0.0)
    assert p0["link_loss"].item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    _, p2 = lander_loss(logits, pred_density, g, focal=True, gamma=2.0)
    want = np.mean([(1 - math.exp(-c)) ** 2 * c for c in ce])
    assert p2["link_loss"].item() == pytest.approx(want, rel=1e-5)
    # seed mask: only node 2's density and in-edges
    g.seed_mask = torch.tensor([False, False, True])
    _, ps = lander_loss(logits, pred_density, g)
    assert ps["density_loss"].item() == pytest.approx(0.35**2, rel=1e-6)
    assert ps["link_loss"].item() == pytest.approx((ce[1] + ce[2]) / 2, rel=1e-6)


def test_lander_loss_balance_drops_the_surplus_class():
    g = _graph()
    logits = torch.zeros(5, 2)
    _, parts = lander_loss(logits, torch.zeros(3), g, balance=True, generator=torch.Generator().manual_seed(0))
    assert parts["link_edges"].item() == 2  # 1 positive, 2 negatives -> one negative dropped


def test_best_parent_highest_score_and_first_listed_on_ties():
    # node 0: in-edges from 1 (.5), 2 (.9), 3 (.9) -> the first listed of the tied best (2); node 4: 1 (.3) but not kept
    ei = np.array([[1, 2, 3, 1, 0], [0, 0, 0, 4, 1]])
    score = np.array([0.5, 0.9, 0.9, 0.3, 0.2])
    keep = np.array([True, True, True, False, True])
    assert best_parent(ei, score, keep, 5).tolist() == [2, 0, 2, 3, 4]
    ei2 = np.array([[3, 2, 1], [0, 0, 0]])  # the same tie listed the other way round picks 3
    assert best_parent(ei2, np.array([0.9, 0.9, 0.5]), np.ones(3, bool), 4).tolist() == [3, 1, 2, 3]
    assert best_parent(ei, score, np.zeros(5, bool), 5).tolist() == [0, 1, 2, 3, 4]


def test_decode_keeps_only_edges_up_the_density_and_above_tau():
    # chain 0 <- 1 <- 2 by density; edge 2->1 has score exactly tau (dropped: strict), edge 3->0 has equal density
    ei = torch.tensor([[1, 2, 3, 2], [0, 1, 0, 0]])
    density = torch.tensor([0.1, 0.5, 0.9, 0.1])
    score = torch.tensor([0.9, 0.5, 0.95, 0.6])
    cid, peaks, added = decode_level(ei, density, score, 0.5, 4)
    # 1->0 kept (d 0.5 > 0.1, .9 > .5); 2->1 score == tau dropped; 3->0 equal density dropped; 2->0 kept (.6 > .5)
    # node 0 keeps its best kept in-edge: from 1 (.9) over 2 (.6)
    assert added == 1
    assert peaks.tolist() == [1, 2, 3] and cid.tolist() == [0, 0, 1, 2]
    cid2, peaks2, added2 = decode_level(ei, density, score, 0.0, 4)
    assert added2 == 2 and peaks2.tolist() == [2, 3] and cid2.tolist() == [0, 0, 0, 1]


def test_supernode_features_known_answer():
    x = np.array([[1, 0, 2], [3, 4, 0], [0, 0, 1], [5, 5, 5]], np.float32)
    got = supernode_features(x, np.array([1, 0, 1, 1]), 3)
    np.testing.assert_allclose(got, [[3, 4, 0], [2, 5 / 3, 8 / 3], [0, 0, 0]], rtol=1e-6)


def test_forest_clusters_of_a_deep_chain():
    parent = np.array([0, 0, 1, 2, 3, 4, 5, 6, 8])  # a chain 7 -> ... -> 0 and a singleton 8
    cid, peaks = forest_clusters(parent)
    assert peaks.tolist() == [0, 8] and cid.tolist() == [0] * 8 + [1]


def test_training_levels_follow_ground_truth():
    # three tight triples 120 degrees apart (k=2: a node's neighbours are its classmates); the middle point of each
    # triple is the densest, so level 1 has three supernodes: identity = the middle point, cluster = the triple's mean
    ang = np.deg2rad(np.concatenate([[b, b + 3.0, b + 8.0] for b in (0.0, 120.0, 240.0)]))
    x = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    y = np.repeat(np.arange(3), 3)
    graphs = build_training_levels(x, y, k_list=[2], levels_list=[2])
    assert len(graphs) == 2
    g0, g1 = graphs
    assert g0.num_nodes == 9 and g1.num_nodes == 3
    np.testing.assert_allclose(g1.x[:, :2].numpy(), x[[1, 4, 7]], atol=1e-6)
    np.testing.assert_allclose(g1.x[:, 2:].numpy(), x.reshape(3, 3, 2).mean(1), atol=1e-6)
    assert g1.y.tolist() == [0, 1, 2]
    assert int(g0.level) == 0 and int(g1.level) == 1


def test_cluster_pool_with_a_perfect_link_oracle_beats_both_constant_partitions():
    """A LANDER whose link head says "same" exactly for same-blob edges recovers the blobs, and the pairwise F-score
    beats both constant baselines (all-in-one and all-singletons)."""
    from autolabel.hilander.hierarchy import cluster_pool
    from autolabel.metrics.clustering import evaluate_clustering

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 8))
    y = np.repeat(np.arange(4), 10)
    x = centers[y] + 0.05 * rng.standard_normal((40, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    class Oracle(torch.nn.Module):
        feature_dim = 8

        def forward(self, data):
            src, dst = data.edge_index
            # identify blobs by nearest centre (the oracle knows the centres, not the labels)
            c = torch.as_tensor(centers, dtype=torch.float32)
            blob = (data.x[:, :8] @ c.T).argmax(1)
            same = (blob[src] == blob[dst]).float()
            logits = torch.stack([1 - same, same], 1) * 10
            prob = logits.softmax(-1)
            from torch_geometric.utils import scatter

            dens = scatter(data.edge_sim * (prob[:, 1] - prob[:, 0]), dst, dim=0, dim_size=data.num_nodes,
                           reduce="mean")  # fmt: skip
            return logits, dens

    res = cluster_pool(Oracle(), x, k=5, tau=0.5, levels=3, device="cpu", progress=False)
    m = evaluate_clustering(y, res.labels)
    one = evaluate_clustering(y, np.zeros(40, int))
    single = evaluate_clustering(y, np.arange(40))
    assert m["pairwise_f"] > max(one["pairwise_f"], single["pairwise_f"]) + 0.3
    assert m["bcubed_f"] > max(one["bcubed_f"], single["bcubed_f"]) + 0.3


def test_build_level_graph_feeds_identity_and_cluster_features():
    ident = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    clus = np.array([[0.5, 0.5], [0, 1], [1, 1]], np.float32)
    nbrs = np.array([[2], [2], [1]])
    sims = np.array([[0.6], [0.8], [0.8]], np.float32)
    g = build_level_graph(ident, nbrs, sims, cluster=clus)
    assert torch.equal(g.x, torch.cat([torch.from_numpy(ident), torch.from_numpy(clus)], 1))
    assert g.edge_index.tolist() == [[2, 2, 1], [0, 1, 2]] and not hasattr(g, "density")


def test_clustering_metric_edge_cases_found_by_mutation_testing():
    from autolabel.metrics.clustering import bcubed_fscore, cluster_stats

    # five true pairs spread crosswise over two predicted clusters of five: precision 1/5, recall 1/2 (sum < 1)
    truth = np.repeat(np.arange(5), 2)
    pred = np.tile([0, 1], 5)
    p, r, f = bcubed_fscore(truth, pred)
    assert (p, r) == pytest.approx((0.2, 0.5)) and f == pytest.approx(2 * 0.2 * 0.5 / 0.7)
    stats = cluster_stats(np.array([0, 0, 0, 1, 2, 2]))
    assert stats["largest_cluster"] == 3


def test_best_parent_with_several_targets_and_two_samples():
    # targets 0, 1, 2 each with in-edges listed best-last: every node keeps its own best, not a neighbour's
    ei = np.array([[3, 4, 5, 6, 7], [0, 0, 1, 1, 2]])
    assert best_parent(ei, np.array([0.1, 0.9, 0.2, 0.8, 0.5]), np.ones(5, bool), 8).tolist() == [4, 6, 7, 3, 4, 5,
                                                                                                    6, 7]  # fmt: skip
    x = np.array([[1.0, 0.0], [0.8, 0.6]], np.float32)  # the smallest pool meta-training accepts
    graphs = build_training_levels(x, np.array([0, 0]), k_list=[1], levels_list=[1])
    assert len(graphs) == 1 and graphs[0].num_nodes == 2
