"""DiffAugment (Zhao et al. 2020): differentiable color / translation / cutout, applied to real and fake images before D.

Each sample is augmented with probability ``p`` (per policy); :class:`AdaptiveP` adjusts ``p`` ADA-style towards an
overfitting target ``r_t = E[sign(D(real))]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from autolabel.errors import ConfigError

POLICIES = ("color", "translation", "cutout")


def _gate(x: Tensor, aug: Tensor, p: float) -> Tensor:
    if p >= 1.0:
        return aug
    keep = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p).to(x.dtype)
    return keep * aug + (1 - keep) * x


def rand_color(x: Tensor) -> Tensor:
    """Random brightness, saturation and contrast."""
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def rand_translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Random integer shift up to ``ratio`` of the size, zero padded."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gy = (torch.arange(h, device=x.device).view(1, h, 1) + ty + 1).clamp(0, h + 1)
    gx = (torch.arange(w, device=x.device).view(1, 1, w) + tx + 1).clamp(0, w + 1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[bi, gy, gx].permute(0, 3, 1, 2).contiguous()


def rand_cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a random square of ``ratio`` of the size."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((yy - cy).abs() * 2 < ch) & ((xx - cx).abs() * 2 < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def random_hflip(x: Tensor) -> Tensor:
    """Each image mirrored left-right with probability 0.5 (StyleGAN2-ADA's ``--mirror``: a dataset twice the size)."""
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


_FNS = {"color": rand_color, "translation": rand_translation, "cutout": rand_cutout}


class DiffAugment(torch.nn.Module):
    """Differentiable augmentation; ``p`` is the per-sample probability of each policy (1.0 = always, as in the paper)."""

    def __init__(self, policy: str = "color,translation,cutout", p: float = 1.0):
        super().__init__()
        self.policy = [s.strip() for s in policy.split(",") if s.strip()]
        bad = [s for s in self.policy if s not in _FNS]
        if bad:
            raise ConfigError(f"unknown DiffAugment policy {bad} -- use a comma list of {POLICIES}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"augment_p must be in [0, 1], got {p} -- set e.g. augment_p=0.5")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p <= 0.0:
            return x
        for name in self.policy:
            x = _gate(x, _FNS[name](x), self.p)
        return x


class AdaptiveP(torch.nn.Module):
    """ADA controller (Karras et al. 2020): every ``interval`` steps, measure ``r_t = E[sign(D(real))]`` over all
    images seen since the last update and move ``p`` by ``sign(r_t - target) * images / (speed_kimg * 1000)``
    (clamped to [0, 1]): up when D is overconfident on reals (r_t > target), down when r_t < target.

    ``p`` and the running sums are buffers, so they are saved in checkpoints and a resumed run continues exactly. Feed
    :meth:`accumulate` the *global* sums (sum of signs, image count) of each step -- under DDP reduce them over ranks
    first -- so every rank holds the same state. ``speed_kimg``: images (thousands) for ``p`` to go 0 -> 1.
    """

    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"ADA start p={p} must be in [0, 1] -- set augment_p in [0, 1]")
        if speed_kimg <= 0 or interval < 1:
            raise ConfigError(f"ADA needs ada_kimg > 0 and ada_interval >= 1, got {speed_kimg} and {interval}")
        self.target, self.speed_kimg, self.interval = float(target), float(speed_kimg), int(interval)
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float64))
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.long))  # sum of sign(D(real)) since last update
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # images since last update
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # steps since last update
        self._host_steps: int | None = None  # host copy of `steps` (no device read per step); None: read it once

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_steps = None  # `steps` came from a checkpoint: re-read it at the next accumulate

    @staticmethod
    def local_sums(real_pred: Tensor) -> Tensor:
        """``[sum(sign(real_pred)), numel]`` as int64 (exact, and all-reducible with a plain sum)."""
        s = torch.sign(real_pred.detach().float()).sum().round().long()
        return torch.stack([s, torch.full_like(s, real_pred.numel())])

    @torch.no_grad()
    def accumulate(self, sums: Tensor) -> float | None:
        """Add one step's global ``[sign sum, count]``; on every ``interval``-th call update ``p``, reset the sums and
        return the measured ``r_t`` (else None). Only update steps read a value back to the host."""
        sums = sums.to(self.sign_sum.device)
        self.sign_sum += sums[0]
        self.count += sums[1]
        self.steps += 1
        self._host_steps = int(self.steps) if self._host_steps is None else self._host_steps + 1
        if self._host_steps < self.interval:
            return None
        n = max(int(self.count), 1)
        rt = float(self.sign_sum) / n
        adjust = (1.0 if rt > self.target else -1.0 if rt < self.target else 0.0) * n / (self.speed_kimg * 1000.0)
        self.p.fill_(min(1.0, max(0.0, float(self.p) + adjust)))
        self.sign_sum.zero_()
        self.count.zero_()
        self.steps.zero_()
        self._host_steps = 0
        return rt
