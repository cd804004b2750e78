"""HandsOff inversion schemas: the image -> W+ encoder and its two-phase training."""

from __future__ import annotations

from dataclasses import dataclass

from autolabel.errors import ConfigError


@dataclass
class EncoderConfig:
    mode: str = "pyramid"  # pyramid (pSp/e4e FPN, one pass) | restyle (image + reconstruction, n_iters refinements)
    width: int = 32  # backbone channels at full resolution (doubles per level)
    max_width: int = 256  # channel cap of the backbone
    n_iters: int = 5  # ReStyle refinement iterations (restyle mode only)

    def __post_init__(self) -> None:
        if self.mode not in ("pyramid", "restyle"):
            raise ConfigError(f"encoder.mode={self.mode!r}: use pyramid or restyle")
        if self.width < 1 or self.max_width < self.width:
            raise ConfigError(
                f"encoder.width={self.width} must be >= 1 and encoder.max_width={self.max_width} >= width"
            )
        if self.n_iters < 1:
            raise ConfigError(f"encoder.n_iters={self.n_iters} must be >= 1 (ReStyle uses 5)")

    def kwargs(self) -> dict:
        """Keyword arguments for :class:`autolabel.handsoff.encoder.InversionEncoder`."""
        return {"mode": self.mode, "width": self.width, "max_width": self.max_width, "n_iters": self.n_iters}


@dataclass
class EncoderTrainConfig:
    phase1_steps: int = 20_000  # steps on generator samples only
    finetune_steps: int = 2_000  # phase-2 steps on real images (the cap: training stops after both phases)
    lr: float = 1e-4
    batch_size: int = 8
    latent_weight: float = 5.0  # weight of MSE(E(G(w)), w) in phase 1 (EditGAN)
    mse_weight: float = 1.0  # pixel MSE weight
    lpips_weight: float = 10.0  # LPIPS weight in phase 2
    phase1_lpips_weight: float = 0.0  # LPIPS weight in phase 1 (0 = pixel MSE only)
    lpips_net: str = "vgg"  # vgg | alex
    lpips_weights: str | None = None  # backbone file; None = torchvision's cache file
    truncation_psi: float = 0.7  # truncation of phase-1 samples
    style_mix_prob: float = 0.5  # probability that a phase-1 sample mixes two latents in W+
    phase2_generated_fraction: float = 0.0  # phase 2: also train on a generated batch with this probability

    def __post_init__(self) -> None:
        if self.phase1_steps < 0 or self.finetune_steps < 0 or self.phase1_steps + self.finetune_steps < 1:
            raise ConfigError(
                f"phase1_steps={self.phase1_steps}, finetune_steps={self.finetune_steps}: both >= 0 and their sum >= 1"
            )
        if self.lr <= 0 or self.batch_size < 1:
            raise ConfigError(f"lr={self.lr} must be > 0 and batch_size={self.batch_size} >= 1")
        for name in ("latent_weight", "mse_weight", "lpips_weight", "phase1_lpips_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if self.lpips_net not in ("vgg", "alex"):
            raise ConfigError(f"lpips_net={self.lpips_net!r}: use vgg or alex")
        if not 0.0 < self.truncation_psi <= 1.0:
            raise ConfigError(f"truncation_psi={self.truncation_psi} must be in (0, 1] (0.7 is typical)")
        for name in ("style_mix_prob", "phase2_generated_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be in [0, 1]")

    @property
    def max_steps(self) -> int:
        """Total optimizer steps: phase 1 plus the capped phase 2."""
        return self.phase1_steps + self.finetune_steps
