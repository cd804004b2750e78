"""Extra Hi-LANDER engine checks: decode edge cases, graph helpers, config validation, determinism (all tiny, no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolabel.config.hilander import HiLanderClusterConfig, HiLanderTrainConfig, KnnConfig, LanderModelConfig
from autolabel.errors import ConfigError
from autolabel.hilander.graphs import build_level_graph, knn_edges, row_normalized
from autolabel.hilander.hierarchy import best_parent, build_training_levels, cluster_pool, decode_level, find_roots
from autolabel.hilander.lander import LANDER
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


def test_decode_level_ties_break_by_index_and_threshold_adds_no_edges():
    edge_index = torch.tensor([[1, 0, 2], [0, 1, 1]])
    equal = torch.tensor([0.5, 0.5, 0.5])  # equal density: the lower index is uphill (0 -> 1 kept), no cycle
    cid, peaks, added = decode_level(edge_index, equal, torch.ones(3), 0.5, 3)
    assert added == 1 and peaks.tolist() == [0, 2] and cid.tolist() == [0, 0, 1]
    dens = torch.tensor([0.1, 0.2, 0.9])  # 2 -> 1 -> 0 by density, but score 0.5 is not > tau=0.5
    cid, peaks, added = decode_level(edge_index, dens, torch.tensor([1.0, 1.0, 0.5]), 0.5, 3)
    assert added == 1 and cid[0] == cid[1] != cid[2]


def test_knn_edges_drop_missing_and_negative_and_clip():
    nbrs = np.array([[1, -1], [0, 1]])
    sims = np.array([[-0.4, -np.inf], [0.7, 1.2]], dtype=np.float32)
    ei, s = knn_edges(nbrs, sims)
    assert ei.tolist() == [[0, 1], [1, 1]]  # node 0's neighbours: one negative, one missing -> no in-edge
    assert s.tolist() == pytest.approx([0.7, 1.0])
    w = row_normalized(ei, s, 2)
    assert w.tolist() == pytest.approx([0.7 / 1.7, 1.0 / 1.7])
    g = build_level_graph(np.eye(2, dtype=np.float32), nbrs, sims, labels=np.array([0, 0]))
    assert g.density.tolist() == pytest.approx([0.0, 0.85])  # no in-edge: density 0


def test_batched_knn_queries_equal_one_batch():
    x, _ = _blobs(5, 20, 8, seed=4)
    for method in ("flat", "hnsw"):
        n1, s1 = knn_search(x, 6, method=method, batch_size=100_000)
        n2, s2 = knn_search(x, 6, method=method, batch_size=7)  # 15 query batches, the last one short
        assert np.array_equal(n1, n2) and np.array_equal(s1, s2)


class _FakeClonerOptions:
    shard = False
    useFloat16 = False


def test_gpu_path_shards_the_index_over_all_gpus(monkeypatch):
    import faiss

    from autolabel.hilander import search

    seen = []

    def fake_to_all_gpus(index, co=None):
        seen.append((type(index).__name__, co.shard, co.useFloat16))
        return index  # search on the CPU index: results must equal the CPU path

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2, raising=False)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", _FakeClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", fake_to_all_gpus, raising=False)
    x, _ = _blobs(4, 30, 8, seed=0)
    gpu_n, _ = knn_search(x, 5, method="flat", use_gpu=True)
    knn_search(x, 5, method="ivf", use_gpu="auto")  # auto: GPUs seen -> used
    knn_search(x, 5, method="hnsw", use_gpu=True)  # faiss has no GPU HNSW: stays on the CPU
    assert seen == [("IndexFlatIP", True, False), ("IndexIVFFlat", True, True)]
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    cpu_n, _ = knn_search(x, 5, method="flat", use_gpu="auto")
    assert np.array_equal(gpu_n, cpu_n) and len(seen) == 2 and search.num_gpus() == 0


def test_use_gpu_true_without_a_gpu_is_a_clear_error(monkeypatch):
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    x, _ = _blobs(2, 5, 4, seed=0)
    with pytest.raises(ConfigError, match="use_gpu=true but faiss sees no GPU; install faiss-gpu"):
        knn_search(x, 3, **KnnConfig(use_gpu="true").kwargs())


def test_faiss_cpu_and_gpu_wheels_both_installed_is_named_with_the_fix():
    from autolabel.hilander.search import faiss_install_conflict

    both = {"faiss-cpu": "1.9.0", "faiss-gpu-cu12": "1.9.0"}
    msg = faiss_install_conflict(both.get)
    assert msg is not None and "faiss-cpu and faiss-gpu-cu12 are both installed" in msg
    assert "pip uninstall -y faiss-cpu" in msg and "\n" not in msg
    assert faiss_install_conflict({"faiss-cpu": "1.9.0"}.get) is None
    assert faiss_install_conflict({"faiss-gpu-cu12": "1.9.0"}.get) is None


class _PairMerger:
    """Scripted decode: every level merges nodes (2i, 2i+1), i.e. adds n/2 edges and halves the nodes."""

    def __call__(self, edge_index, density, score, threshold, n):
        cid = np.arange(n) // 2
        parent = np.arange(n) // 2 * 2  # 2i+1 -> 2i
        edge = np.where(parent != np.arange(n), 0, -1)  # joined by some edge (its probability is not checked here)
        return cid, np.arange(0, n, 2), parent, edge


@pytest.mark.parametrize(
    ("k", "early_stop", "levels_run"),
    [
        (5, True, 2),  # level 1 adds 8 edges after 16: 16/8 = 2 < k-1 = 4 -> stop after level 1
        (3, True, 4),  # 2 is not < k-1 = 2: keep going to the level limit
        (5, False, 4),
    ],
)
def test_early_stop_when_new_edges_fall_below_the_ratio(monkeypatch, k, early_stop, levels_run):
    from autolabel.hilander import hierarchy

    monkeypatch.setattr(hierarchy, "decode_level_edges", _PairMerger())
    x, _ = _blobs(4, 8, 8, seed=0)  # N = 32
    res = cluster_pool(LANDER(8, hidden=8), x, k=k, tau=0.5, levels=4, early_stop=early_stop, progress=False)
    assert [s["edges_added"] for s in res.levels] == [16, 8, 4, 2][:levels_run]
    assert res.n_clusters == 32 // 2**levels_run
    # merges compose over levels: sample i ends in cluster i // 2^levels
    assert res.labels.tolist() == (np.arange(32) // 2**levels_run).tolist()


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
        (lambda: KnnConfig(method="ivfpq", pq_m=0), "knn.pq_m"),
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
        assert best == 0.6  # two tied: the upper middle one (the larger, surer threshold)
    with pytest.raises(ConfigError, match="candidate"):
        select_tau(_SimilarityOracle(), x, y, [])


def test_select_tau_takes_the_middle_of_a_tied_plateau(monkeypatch):
    from types import SimpleNamespace

    import autolabel.hilander.hierarchy as H

    # calibration clusters identical for tau 0.2..0.6 (scores tie), worse outside: the middle of the plateau wins
    table = {0.1: 0.5, 0.2: 0.8, 0.3: 0.8, 0.4: 0.8, 0.5: 0.8, 0.6: 0.8, 0.7: 0.6, 0.8: 0.4}
    monkeypatch.setattr(H, "cluster_pool", lambda model, x, *, tau, **kw: SimpleNamespace(labels=np.array([tau])))
    monkeypatch.setattr("autolabel.metrics.clustering.evaluate_clustering",
                        lambda truth, pred: {"bcubed_f": table[round(float(pred[0]), 1)]})  # fmt: skip
    best, scores = H.select_tau(None, np.zeros((2, 2)), np.zeros(2), list(table))
    assert best == 0.4 and scores == table
    table[0.6] = 0.9  # a unique best is taken as it is
    assert H.select_tau(None, np.zeros((2, 2)), np.zeros(2), list(table))[0] == 0.6


def test_lander_trains_under_bf16_autocast_on_cpu():
    # torch.sparse.mm has no bf16 CPU kernel: the aggregation runs in fp32 inside bf16 autocast (trainer precision)
    from autolabel.hilander.lander import lander_loss

    x, y = _blobs(3, 8, 8, seed=2)
    g = build_training_levels(x, y, [4], [1])[0]
    torch.manual_seed(0)
    model = LANDER(8, hidden=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, density = model(g)
        loss, _ = lander_loss(logits, density, g)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    with torch.no_grad():
        ref_logits, _ = model(g)
    assert torch.allclose(logits.float(), ref_logits, atol=0.05, rtol=0.05)  # bf16 rounding only


def test_cluster_config_validates_tau_candidates():
    with pytest.raises(ConfigError, match="tau_candidates"):
        HiLanderClusterConfig(tau_candidates=[0.5, 1.5])
    with pytest.raises(ConfigError, match="tau_metric"):
        HiLanderClusterConfig(tau_metric="accuracy")


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_lander_module_optimizer_choice_fits_blobs(name):
    from types import SimpleNamespace

    from autolabel.data.synthetic import make_blob_features
    from autolabel.hilander.lander_module import LanderModule

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


# ---------------------------------------------------------------- mini-batch (seed-node) training


def test_seed_batches_follow_the_reference_schedule():
    from autolabel.hilander.lander_module import SeedBatches

    x, y = _blobs(2, 5, 4, seed=0)
    big = build_level_graph(x, *knn_search(x, 3), labels=y)  # 10 nodes
    small = build_level_graph(x[:4], *knn_search(x[:4], 2), labels=y[:4])  # 4 nodes
    ds = SeedBatches([big, small], batch_nodes=4, num_hops=2)
    assert ds.rounds == 3 and len(ds) == 6  # ceil(10 / 4) steps per graph per epoch, for both graphs
    for epoch in range(3):
        # the big graph: one pass per epoch, chunks 4 + 4 + 2 that partition its nodes, fresh order every epoch
        chunks = [ds.seeds(0, epoch * 3 + r) for r in range(3)]
        assert [len(c) for c in chunks] == [4, 4, 2]
        assert sorted(torch.cat(chunks).tolist()) == list(range(10))
        # the small graph fits one batch: served whole, every step
        assert ds[epoch * len(ds) + 1] is small
    assert not torch.equal(ds.seeds(0, 0), ds.seeds(0, 3))
    assert torch.equal(ds.seeds(0, 4), SeedBatches([big, small], 4, 2).seeds(0, 4))  # a pure function of the step
    step = ds[len(ds) * 2 + 0]  # epoch 2, round 0, graph 0
    assert step.seed_mask.sum().item() == 4 and step.num_nodes <= 10
    whole = SeedBatches([big, small], batch_nodes=0, num_hops=2)
    assert len(whole) == 2 and whole[0] is big  # batch_nodes=0: one whole-graph step per graph


def test_seed_subgraph_loss_equals_the_full_graph_loss_on_the_seeds():
    from autolabel.hilander.lander import lander_loss
    from autolabel.hilander.lander_module import seed_subgraph

    x, y = _blobs(6, 20, 8, seed=2, spread=0.3)
    g = build_level_graph(x, *knn_search(x, 5), labels=y)
    seeds = torch.tensor([0, 7, 33, 64, 90, 119])
    torch.manual_seed(0)
    for conv, num_conv in (("graphconv", 2), ("gat", 1)):
        model = LANDER(8, hidden=16, num_conv=num_conv, conv=conv).eval()
        sub = seed_subgraph(g, seeds, num_conv + 1)
        assert sub.num_nodes < g.num_nodes and sub.seed_mask.sum().item() == len(seeds)
        logits, density = model(g)
        sub_logits, sub_density = model(sub)
        order = torch.argsort(seeds)  # k_hop_subgraph keeps nodes in increasing global id
        assert torch.allclose(sub_density[sub.seed_mask], density[seeds[order]], atol=1e-5)
        # full-graph loss restricted to the seeds: mask the rest out
        masked = g.clone()
        masked.seed_mask = torch.zeros(g.num_nodes, dtype=torch.bool)
        masked.seed_mask[seeds] = True
        full_loss, full_parts = lander_loss(logits, density, masked)
        sub_loss, sub_parts = lander_loss(sub_logits, sub_density, sub)
        assert sub_loss.item() == pytest.approx(full_loss.item(), abs=1e-5)
        assert sub_parts["link_edges"].item() == full_parts["link_edges"].item() > 0


def test_datamodule_steps_per_epoch_match_the_reference():
    from autolabel.data.pools import FeaturePool
    from autolabel.hilander.lander_module import LevelGraphDataModule

    x, y = _blobs(4, 25, 8, seed=0)  # N = 100
    cfg = HiLanderTrainConfig(k_list=[5, 3], levels_list=[1, 1], batch_nodes=30)
    dm = LevelGraphDataModule(FeaturePool(x, y), cfg)
    dm.setup()
    loader = dm.train_dataloader()
    assert len(dm.train_graphs) == 2 and len(loader) == 2 * 4  # ceil(100 / 30) = 4 steps per graph
    loader.sampler.set_epoch(1)
    steps = list(loader)
    assert sum(int(s.seed_mask.sum()) for s in steps) == 2 * 100  # each graph's nodes seeded once per epoch
    # the default trains on whole level graphs (full-graph message passing): one step per graph per epoch
    whole = LevelGraphDataModule(FeaturePool(x, y), HiLanderTrainConfig(k_list=[5, 3], levels_list=[1, 1]))
    whole.setup()
    graphs = list(whole.train_dataloader())
    assert len(graphs) == 2 and all(g.num_nodes == 100 and getattr(g, "seed_mask", None) is None for g in graphs)
    with pytest.raises(ConfigError, match="train.batch_nodes"):
        HiLanderTrainConfig(batch_nodes=-1)
