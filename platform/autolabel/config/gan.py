"""StyleGAN2 schemas: generator/discriminator architecture and GAN training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from autolabel.errors import ConfigError

DISCRIMINATORS = ("stylegan2", "projected")
D_LOSSES = ("auto", "logistic", "hinge")


@dataclass
class GeneratorConfig:
    resolution: int = 64
    z_dim: int = 512
    w_dim: int = 512
    n_mapping: int = 8
    channel_base: int = 16384  # channels(res) = min(channel_max, channel_base * channel_multiplier // res)
    channel_max: int = 512
    channel_multiplier: int = 2
    img_channels: int = 3
    lr_mlp: float = 0.01
    # modulated convs: true = grouped per-sample convs, false = unfused (one batched conv; the same numbers; 1.27x
    # faster per CPU step at 16 px, 1.45x at 32 px in benchmarks/gan_step_cpu.py), null = unfused on the CPU only,
    # grouped on GPUs. A run-time choice: not stored with the weights.
    fused_modconv: Optional[bool] = None
    mbstd_group: int = 4  # discriminator minibatch-stddev group
    # stylegan2: StyleGAN2's residual D on pixels | projected: trainable heads on a frozen ImageNet backbone (Projected
    # GAN / Vision-aided GAN; weights from `autolabel weights lpips`, never downloaded)
    discriminator: str = "stylegan2"
    d_backbone: str = "vgg"  # projected: vgg (VGG16) | alex
    d_scales: int = 4  # projected: backbone taps judged (VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
    d_head_channels: int = 64  # projected: width of each scale's head
    d_project: bool = True  # projected: fixed random 1x1 projection before each head (Projected GAN's CCM)

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 8 or (r & (r - 1)) != 0:
            raise ConfigError(f"gan.resolution={r} must be a power of two >= 8 (e.g. 64, 256, 1024)")
        for k in ("z_dim", "w_dim", "n_mapping", "channel_base", "channel_max", "channel_multiplier", "img_channels"):
            if getattr(self, k) < 1:
                raise ConfigError(f"gan.{k}={getattr(self, k)} must be >= 1")
        if self.discriminator not in DISCRIMINATORS:
            raise ConfigError(f"gan.discriminator={self.discriminator!r}: use one of {DISCRIMINATORS}")
        if self.d_backbone not in ("vgg", "alex"):
            raise ConfigError(f"gan.d_backbone={self.d_backbone!r}: use 'vgg' or 'alex'")
        if not 1 <= self.d_scales <= 5 or self.d_head_channels < 1:
            raise ConfigError(f"gan.d_scales={self.d_scales} must be in 1..5 and d_head_channels >= 1")
        if self.lr_mlp <= 0 or self.mbstd_group < 1:
            raise ConfigError(f"gan.lr_mlp={self.lr_mlp} must be > 0 and gan.mbstd_group={self.mbstd_group} >= 1")

    def generator_kwargs(self) -> dict:
        """Keyword arguments of :class:`autolabel.gan.Generator`."""
        d = asdict(self)
        for k in DISCRIMINATOR_KEYS:
            d.pop(k)
        return d

    def discriminator_kwargs(self) -> dict:
        """Keyword arguments of :class:`autolabel.gan.Discriminator`."""
        return dict(resolution=self.resolution, channel_base=self.channel_base, channel_max=self.channel_max,
                    img_channels=self.img_channels, mbstd_group=self.mbstd_group,
                    channel_multiplier=self.channel_multiplier)  # fmt: skip

    def projected_kwargs(self) -> dict:
        """Keyword arguments of :class:`autolabel.gan.projected.ProjectedDiscriminator` (less the weights file)."""
        return dict(resolution=self.resolution, img_channels=self.img_channels, backbone=self.d_backbone,
                    n_scales=self.d_scales, head_channels=self.d_head_channels, project=self.d_project)  # fmt: skip


# GeneratorConfig fields that configure the discriminator only (not Generator keyword arguments)
DISCRIMINATOR_KEYS = ("mbstd_group", "discriminator", "d_backbone", "d_scales", "d_head_channels", "d_project")


def r1_gamma_heuristic(resolution: int, batch_size: int) -> float:
    """StyleGAN2-ADA's 'auto' R1 weight: ``gamma = 0.0002 * resolution**2 / batch_size`` (0.0512 at 64 px, batch 16;
    0.41 at 256 px, batch 32). NVIDIA divides by the total batch over all GPUs; here ``batch_size`` is the configured
    per-device batch, so the value does not change with the number of devices."""
    return 0.0002 * float(resolution) ** 2 / max(int(batch_size), 1)


@dataclass
class GANTrainConfig:
    lr: float = 0.002
    batch_size: int = 16  # per device
    # R1 weight; None = r1_gamma_heuristic(resolution, batch_size) = 0.0002 * res^2 / batch (StyleGAN2-ADA 'auto').
    # Paper values: 10 (FFHQ 1024), 1 (256 px transfer), 0.01 (CIFAR-10); small pools at 64 px often want 0.05-1.
    r1_gamma: Optional[float] = None
    r1_interval: int = 16
    ema_kimg: float = 10.0  # EMA half-life of g_ema in thousands of images
    ema_rampup: float = 0.05  # half-life <= this x images seen so far (StyleGAN2-ADA); 0 = fixed half-life
    augment: str = "diffaugment"  # diffaugment | none
    augment_policy: str = "color,translation,cutout"
    augment_p: float = 1.0  # probability per policy and sample (start value when adaptive)
    # Mirror each real image left-right with probability 0.5 before D sees it (StyleGAN2-ADA's --mirror): the pool
    # counts twice. Off by default: only where both orientations occur (not text or digits; on the Weizmann horses,
    # nearly all facing left, it cost 0.06 synthetic-only mIoU -- benchmarks/README.md).
    mirror: bool = False
    ada_target: float = 0.0  # > 0: adapt augment_p towards E[sign(D(real))] = ada_target (ADA uses 0.6)
    ada_kimg: float = 100.0  # images (thousands) for p to move 0 -> 1
    ada_interval: int = 4  # steps between p updates (NVIDIA: 4)
    style_mixing_prob: float = 0.9  # probability per step of mixing two latents at a random layer (StyleGAN2: 0.9)
    pl_weight: float = 0.0  # path-length regularization weight (0 = off; StyleGAN2 uses 2)
    pl_interval: int = 4
    pl_decay: float = 0.01
    num_workers: int = 0
    d_loss: str = "auto"  # auto (logistic for the StyleGAN2 D, hinge for the projected D) | logistic | hinge
    # the ImageNet backbone file of the projected D and the quality metric; None = torchvision's cache file
    # ($TORCH_HOME/hub/checkpoints/vgg16-397923af.pth, written by `autolabel weights lpips`)
    backbone_weights: Optional[str] = None
    random_backbone: bool = False  # tests only: random backbone weights when no file is found (metric = noise)
    # Quality metric: Frechet distance (and KID) on VGG16 features (not Inception FID) of g_ema samples vs half the real
    # images, every quality_every_kimg (0 = off); beside it the same distance between the two real halves.
    quality_every_kimg: float = 0.0
    quality_samples: int = 500  # real images per half (and g_ema samples), at most half the training set
    keep_best: bool = True  # with the metric on: the stage's generator is the best-scoring snapshot (best.ckpt)
    # Several starts: train `candidates` GANs (seeds trainer.seed + 1000 i) for `candidate_kimg` each, keep going with
    # the one of lowest fd_vgg, drop the others. Needs the quality metric. Un-sticks a GAN whose curve stalls (horses:
    # best FD 110 -> 66), but a lower FD did not reliably mean better labels there (benchmarks/README.md).
    candidates: int = 1
    candidate_kimg: float = 16.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"gan_train.lr={self.lr} must be > 0 (StyleGAN2 uses 0.002)")
        if self.batch_size < 1:
            raise ConfigError(f"gan_train.batch_size={self.batch_size} must be >= 1")
        if (self.r1_gamma is not None and self.r1_gamma < 0) or self.pl_weight < 0:
            raise ConfigError(
                "gan_train.r1_gamma and pl_weight must be >= 0 (0 turns the regularizer off; r1_gamma=null = heuristic)"
            )
        if self.r1_interval < 1 or self.pl_interval < 1:
            raise ConfigError("gan_train.r1_interval and pl_interval must be >= 1 (16 and 4 are the StyleGAN2 values)")
        if self.ema_rampup < 0:
            raise ConfigError(f"gan_train.ema_rampup={self.ema_rampup} must be >= 0 (0.05 is the StyleGAN2-ADA value)")
        if self.ema_kimg < 0:
            raise ConfigError(f"gan_train.ema_kimg={self.ema_kimg} must be >= 0 (10 is the StyleGAN2 value)")
        if self.augment not in ("diffaugment", "none"):
            raise ConfigError(f"gan_train.augment={self.augment!r}: use 'diffaugment' or 'none'")
        if not 0.0 <= self.augment_p <= 1.0:
            raise ConfigError(f"gan_train.augment_p={self.augment_p} must be in [0, 1]")
        if not 0.0 <= self.ada_target < 1.0:
            raise ConfigError(f"gan_train.ada_target={self.ada_target} must be in [0, 1) (0 = fixed p; ADA uses 0.6)")
        if self.ada_kimg <= 0 or self.ada_interval < 1:
            raise ConfigError(
                f"gan_train.ada_kimg={self.ada_kimg} must be > 0 and ada_interval={self.ada_interval} >= 1 "
                "(NVIDIA: 500 and 4)"
            )
        if self.num_workers < 0 or not 0.0 <= self.pl_decay <= 1.0:
            raise ConfigError(f"gan_train.num_workers={self.num_workers} must be >= 0 and pl_decay={self.pl_decay} "
                              "in [0, 1]")  # fmt: skip
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise ConfigError(
                f"gan_train.style_mixing_prob={self.style_mixing_prob} must be in [0, 1] (0 = off; StyleGAN2 uses 0.9)"
            )

        if self.d_loss not in D_LOSSES:
            raise ConfigError(f"gan_train.d_loss={self.d_loss!r}: use one of {D_LOSSES}")
        if self.quality_every_kimg < 0 or self.quality_samples < 2:
            raise ConfigError("gan_train.quality_every_kimg must be >= 0 (0 = off) and quality_samples >= 2")
        if self.candidates < 1 or not self.candidate_kimg > 0:
            raise ConfigError(f"gan_train.candidates={self.candidates} must be >= 1 (1 = one start) and "
                              f"candidate_kimg={self.candidate_kimg} > 0")  # fmt: skip
        if self.candidates > 1 and self.quality_every_kimg <= 0:
            raise ConfigError(f"gan_train.candidates={self.candidates} picks a start by the quality metric: set "
                              "gan_train.quality_every_kimg (e.g. 2), or candidates=1")  # fmt: skip

    def resolved_r1_gamma(self, resolution: int, discriminator: str = "stylegan2") -> float:
        """``r1_gamma``, or when it is None: :func:`r1_gamma_heuristic` for the StyleGAN2 D, 0 for the projected D
        (Projected GAN trains without R1; a gradient penalty through the frozen backbone is costly)."""
        if self.r1_gamma is not None:
            return float(self.r1_gamma)
        return 0.0 if discriminator == "projected" else r1_gamma_heuristic(resolution, self.batch_size)

    def resolved_d_loss(self, discriminator: str = "stylegan2") -> str:
        """``d_loss``, with ``auto`` = hinge for the projected D (as Projected GAN), logistic for StyleGAN2's."""
        if self.d_loss != "auto":
            return self.d_loss
        return "hinge" if discriminator == "projected" else "logistic"
