"""Hi-LANDER schemas: the GNN, its meta-training, and hierarchical clustering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from autolabel.errors import ConfigError


@dataclass
class KnnConfig:
    # auto (exact up to exact_max points, IVF above; exact when IVF's recall check needs > 1/16 of the lists) | flat |
    # ivf | ivfpq (compressed lists + exact re-ranking: pools that do not fit in memory as float32, e.g. 100M points on
    # GPUs) | hnsw
    method: str = "auto"
    # IVF lists probed per query to start with; doubled until target_recall is measured. On the scaling benchmark's
    # mixture 8 gave recall@10 >= 0.98 from 80k to 1M points (benchmarks/README.md).
    nprobe: int = 8
    nlist: Optional[int] = None  # IVF inverted lists; default 8 sqrt(N) (finer lists: more k-means, fewer probes)
    exact_max: int = 50_000  # exact search up to here: above, IVF is 4-12x faster at recall@10 >= 0.95
    use_gpu: str = "auto"  # auto | true | false  (faiss-gpu, sharded over all GPUs)
    # Approximate indexes (ivf, hnsw) are checked at run time: recall@k on `recall_queries` sampled rows against exact
    # search; nprobe / efSearch are doubled until `target_recall` is reached (0: no check). Logged per level.
    target_recall: float = 0.95
    recall_queries: int = 1000
    pq_m: Optional[int] = None  # ivfpq: bytes per point (sub-quantizers); default feature width / 4

    def __post_init__(self) -> None:
        if self.method not in ("auto", "flat", "ivf", "ivfpq", "hnsw"):
            raise ConfigError(f"knn.method={self.method!r}: use auto, flat, ivf, ivfpq or hnsw")
        if self.pq_m is not None and self.pq_m < 1:
            raise ConfigError(f"knn.pq_m={self.pq_m} must be >= 1 (bytes per point; it must divide the feature width)")
        if str(self.use_gpu).lower() not in ("auto", "true", "false"):
            raise ConfigError(f"knn.use_gpu={self.use_gpu!r}: use auto, true or false")
        if self.nprobe < 1:
            raise ConfigError(
                f"knn.nprobe={self.nprobe} must be >= 1 (IVF lists probed per query to start with, e.g. 8)"
            )
        if not 0.0 <= self.target_recall <= 1.0 or self.recall_queries < 1:
            raise ConfigError(f"knn.target_recall={self.target_recall} must be in [0, 1] and knn.recall_queries="
                              f"{self.recall_queries} >= 1")  # fmt: skip
        if self.nlist is not None and self.nlist < 1:
            raise ConfigError(f"knn.nlist={self.nlist} must be >= 1 (IVF lists; leave it unset for 8 sqrt(N))")
        if self.exact_max < 0:
            raise ConfigError(f"knn.exact_max={self.exact_max} must be >= 0 (pools up to this size use exact search)")

    def kwargs(self) -> dict:
        gpu = str(self.use_gpu).lower()
        return {"method": self.method, "nprobe": self.nprobe, "nlist": self.nlist, "exact_max": self.exact_max,
                "use_gpu": "auto" if gpu == "auto" else gpu == "true", "target_recall": self.target_recall,
                "recall_queries": self.recall_queries, "pq_m": self.pq_m}  # fmt: skip


@dataclass
class LanderModelConfig:
    hidden: int = 512
    num_conv: int = 1
    conv: str = "graphconv"  # graphconv | gat
    gat_heads: int = 1
    dropout: float = 0.0
    use_cluster_feat: bool = True
    link_similarity: bool = True  # also feed a_ij to the link head (False: the reference head exactly)

    def __post_init__(self) -> None:
        if self.conv not in ("graphconv", "gat"):
            raise ConfigError(f"model.conv={self.conv!r}: use graphconv or gat")
        if self.hidden < 2 or self.num_conv < 1:
            raise ConfigError(f"model.hidden={self.hidden} must be >= 2 and model.num_conv={self.num_conv} >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        if self.gat_heads < 1:
            raise ConfigError(f"model.gat_heads={self.gat_heads} must be >= 1")


@dataclass
class HiLanderTrainConfig:
    k_list: list[int] = field(default_factory=lambda: [10, 5, 3])
    levels_list: list[int] = field(default_factory=lambda: [2, 3, 4])
    optimizer: str = "sgd"  # sgd (the reference: momentum 0.9, cosine LR) | adam (fits far faster; on small pools it
    # overfits the seen classes: Fashion-MNIST train link acc 0.93 but ~3.5k clusters on the unseen pool)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    balance: bool = False
    focal: bool = False
    focal_gamma: float = 2.0
    # 0 (default): every optimizer step is one whole level graph with full-graph message passing (DESIGN 3.7, one step
    # per level graph per epoch, round-robin). > 0: seed nodes per optimizer step, as the reference's sampled training
    # (train_subg.py, batch_size 4096): every level graph gets ceil(N/batch_nodes) steps per epoch (N = the largest
    # level graph, i.e. the pool), each on a fresh chunk of a random permutation of that graph's nodes; the loss covers
    # the seeds' densities and in-edges, the forward runs on their exact (num_conv + 1)-hop subgraph (more optimizer
    # steps per epoch, but the subgraphs overlap, so an epoch costs more). Graphs of <= batch_nodes nodes stay whole.
    batch_nodes: int = 0
    knn: KnnConfig = field(default_factory=KnnConfig)

    def __post_init__(self) -> None:
        if self.batch_nodes < 0:
            raise ConfigError(
                f"train.batch_nodes={self.batch_nodes} must be >= 0 (seed nodes per step; 0: whole graphs)"
            )
        if len(self.k_list) != len(self.levels_list) or not self.k_list:
            raise ConfigError(
                f"train.k_list {list(self.k_list)} and train.levels_list {list(self.levels_list)} must be non-empty "
                "and of equal length (one number of levels per k)"
            )
        if min(self.k_list) < 1 or min(self.levels_list) < 1:
            raise ConfigError("train.k_list and train.levels_list entries must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"train.optimizer={self.optimizer!r}: use sgd (the reference) or adam")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum={self.momentum} must be in [0, 1) (0.9 is the reference value)")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay={self.weight_decay} must be >= 0 (1e-5 is the reference value)")
        if self.focal_gamma < 0:
            raise ConfigError(f"train.focal_gamma={self.focal_gamma} must be >= 0 (2.0 is the usual value)")


DEFAULT_TAU = 0.8  # the reference's face setting: used only for checkpoints that carry no calibrated tau


def _default_tau_grid() -> list[float]:
    return [round(0.05 * i, 2) for i in range(1, 20)]  # 0.05, 0.10, ..., 0.95


@dataclass
class CalibrationConfig:
    """How ``fit hilander`` makes the checkpoint right by default: a share of the training *identities* (classes, not
    samples) is held out from the GNN; the link probabilities are calibrated on the held-out classes' graph and tau
    is chosen there on the calibrated scale, then both are stored in the checkpoint."""

    fraction: float = 0.2  # share of the training classes held out from the GNN (0: no calibration, tau = DEFAULT_TAU)
    method: str = "platt"  # platt (logistic a*z+b on the link logit z) | temperature (z/T) | none (raw probabilities)
    candidates: list[float] = field(default_factory=_default_tau_grid)  # taus tried, on the calibrated scale
    # Also try taus at quantiles of the held-out edges' calibrated probabilities (same-class and other-class edges
    # separately, plus the other-class upper tail): trained link heads saturate, and the decisive thresholds then sit
    # between 0.95 and 1, where a fixed grid has no points.
    adaptive: bool = True
    # Cluster the held-out classes among the GNN's training samples (scored on pairs with a held-out member): the best
    # tau grows with the number of look-alike identities in the pool, which the small held-out pool alone understates.
    distractors: bool = True
    metric: str = "pairwise_f"  # pairwise_f | bcubed_f | nmi: what tau maximizes on the held-out classes
    seed: int = 0  # which classes are held out

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"calibration.fraction={self.fraction} must be in [0, 1) (share of classes held out)")
        if self.method not in ("platt", "temperature", "none"):
            raise ConfigError(f"calibration.method={self.method!r}: use platt, temperature or none")
        if not self.candidates or any(not 0.0 <= t <= 1.0 for t in self.candidates):
            raise ConfigError(f"calibration.candidates={list(self.candidates)}: give taus in [0, 1], e.g. [0.1,0.2]")
        if self.metric not in ("bcubed_f", "pairwise_f", "nmi"):
            raise ConfigError(f"calibration.metric={self.metric!r}: use pairwise_f, bcubed_f or nmi")


@dataclass
class HiLanderClusterConfig:
    k: int = 10
    # Keep edge j->i only if P(same class) > tau. Unset (default): the tau calibrated by `fit hilander` on held-out
    # identities and stored in the checkpoint (DEFAULT_TAU for checkpoints without one). A checkpoint's calibrated
    # link probabilities are what tau is compared with, given or not.
    tau: Optional[float] = None
    # With a labeled calibration pool (`calibrate=`): recalibrate the link probabilities on it and choose tau among
    # these candidates by `tau_metric` (empty: the checkpoint's CalibrationConfig.candidates).
    tau_candidates: list[float] = field(default_factory=list)
    tau_metric: str = "bcubed_f"  # bcubed_f | pairwise_f | nmi
    # When the calibrated (or default) tau leaves the pool degenerate -- 90% of it in one cluster, or half singletons,
    # which happens when the pool's classes are harder than the held-out ones, e.g. classes the feature encoder never
    # trained on -- `nearest` reclusters at the nearest tau (in logit) among quantiles of the pool's own link
    # probabilities that is not degenerate, and says so; `keep` keeps the result (with the same warning). A given
    # cluster.tau is always kept.
    degenerate: str = "nearest"  # nearest | keep
    levels: int = 3  # hierarchy depth limit
    early_stop: bool = True  # stop when a level adds nearly as many edges as the previous one (reference rule)
    device: str = "auto"  # auto | cpu | cuda
    knn: KnnConfig = field(default_factory=KnnConfig)

    def __post_init__(self) -> None:
        if self.tau is not None and not 0.0 <= self.tau <= 1.0:
            raise ConfigError(f"cluster.tau={self.tau} must be in [0, 1] (a probability threshold)")
        if any(not 0.0 <= t <= 1.0 for t in self.tau_candidates):
            raise ConfigError(f"cluster.tau_candidates={list(self.tau_candidates)}: every tau must be in [0, 1]")
        if self.tau_metric not in ("bcubed_f", "pairwise_f", "nmi"):
            raise ConfigError(f"cluster.tau_metric={self.tau_metric!r}: use bcubed_f, pairwise_f or nmi")
        if self.degenerate not in ("nearest", "keep"):
            raise ConfigError(f"cluster.degenerate={self.degenerate!r}: use nearest (recluster at the nearest usable "
                              "tau) or keep")  # fmt: skip
        if self.k < 1 or self.levels < 1:
            raise ConfigError(f"cluster.k={self.k} and cluster.levels={self.levels} must be >= 1")
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ConfigError(f"cluster.device={self.device!r}: use auto, cpu, cuda or cuda:<index>")

    def pool_kwargs(self) -> dict:
        """The keyword arguments of :func:`autolabel.hilander.hierarchy.cluster_pool` these settings mean (tau aside)."""
        return {"k": self.k, "levels": self.levels, "early_stop": self.early_stop, "device": self.device,
                "knn_kwargs": self.knn.kwargs()}  # fmt: skip
