"""Image -> W+ inversion encoder (pSp/e4e-style feature pyramid, optional ReStyle iterations)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autolabel.errors import ConfigError, DataError


def _norm(ch: int) -> nn.GroupNorm:
    """GroupNorm (batch-size independent: no train/eval gap at the small batches inversion uses)."""
    return nn.GroupNorm(math.gcd(8, ch), ch)


class _ResBlock(nn.Module):
    """Residual block that halves the resolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 2, 1),
            _norm(cout),
            nn.LeakyReLU(0.2),
            nn.Conv2d(cout, cout, 3, 1, 1),
            _norm(cout),
        )
        self.skip = nn.Conv2d(cin, cout, 1, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.body(x) + self.skip(x), 0.2)


class _MapToStyle(nn.Module):
    """Strided convs down to 1x1, then a linear layer to ``n_styles`` style vectors (pSp's GradualStyleBlock)."""

    def __init__(self, cin: int, spatial: int, n_styles: int, w_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(cin, cin, 3, 2, 1), nn.LeakyReLU(0.2)]
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, n_styles * w_dim)
        with torch.no_grad():  # start near the average latent
            self.linear.weight.mul_(0.1)
            self.linear.bias.zero_()
        self.n_styles, self.w_dim = n_styles, w_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x).flatten(1)
        return self.linear(y).view(-1, self.n_styles, self.w_dim)


def style_groups(num_ws: int) -> tuple[int, int, int]:
    """Split ``num_ws`` into (coarse, medium, fine) counts with pSp's 3/4/11-of-18 proportions."""
    if num_ws < 3:
        return (num_ws, 0, 0)
    coarse = max(1, round(num_ws * 3 / 18))
    medium = max(1, round(num_ws * 4 / 18))
    return coarse, medium, num_ws - coarse - medium


class PyramidNet(nn.Module):
    """ResNet-ish backbone + FPN; returns W+ offsets ``[B, num_ws, w_dim]``."""

    def __init__(self, in_channels: int, resolution: int, num_ws: int, w_dim: int, width: int, max_width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1), _norm(width), nn.LeakyReLU(0.2))
        # pyramid taps (pSp: 1/4, 1/8, 1/16 of the input), never below 16 / 8 / 4 pixels
        self.tap_res = (max(16, resolution // 4), max(8, resolution // 8), max(4, resolution // 16))
        blocks, chans, res, ch = [], [width], resolution, width
        while res > 4:
            nxt = min(ch * 2, max_width)
            blocks.append(_ResBlock(ch, nxt))
            ch, res = nxt, res // 2
            chans.append(ch)
        self.blocks = nn.ModuleList(blocks)
        self.resolution = resolution
        self._chan_at = {resolution >> i: c for i, c in enumerate(chans)}
        c_fine, c_med, c_coarse = (self._chan_at[r] for r in self.tap_res)
        self.lat_med = nn.Conv2d(c_med, c_coarse, 1)
        self.lat_fine = nn.Conv2d(c_fine, c_coarse, 1)
        n_c, n_m, n_f = style_groups(num_ws)
        heads = [(n_c, self.tap_res[2]), (n_m, self.tap_res[1]), (n_f, self.tap_res[0])]
        self.heads = nn.ModuleList([_MapToStyle(c_coarse, s, n, w_dim) if n > 0 else nn.Identity() for n, s in heads])
        self.counts = (n_c, n_m, n_f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = {}
        h = self.stem(x)
        feats[h.shape[-1]] = h
        for block in self.blocks:
            h = block(h)
            feats[h.shape[-1]] = h
        r_fine, r_med, r_coarse = self.tap_res
        p_coarse = feats[r_coarse]
        p_med = F.interpolate(p_coarse, size=r_med, mode="bilinear", align_corners=False) + self.lat_med(feats[r_med])
        p_fine = F.interpolate(p_med, size=r_fine, mode="bilinear", align_corners=False) + self.lat_fine(feats[r_fine])
        outs = [head(p) for head, p, n in zip(self.heads, (p_coarse, p_med, p_fine), self.counts, strict=True) if n > 0]
        return torch.cat(outs, dim=1)


class InversionEncoder(nn.Module):
    """Encode images ``[B, C, R, R]`` in [-1, 1] to W+ latents ``[B, num_ws, w_dim]`` as offsets from ``w_avg``.

    ``mode="pyramid"``: one pass of the feature-pyramid network. ``mode="restyle"``: the network sees the image
    concatenated with the current reconstruction (2C channels) and refines the latent ``n_iters`` times, starting
    from the average latent; this mode needs the generator passed to :meth:`forward`.
    """

    def __init__(
        self,
        resolution: int,
        num_ws: int,
        w_dim: int,
        img_channels: int = 3,
        mode: str = "pyramid",
        width: int = 32,
        max_width: int = 256,
        n_iters: int = 5,
        w_avg: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if resolution < 16 or resolution & (resolution - 1):
            raise ConfigError(f"encoder resolution={resolution} must be a power of two >= 16; resize the images")
        if mode not in ("pyramid", "restyle"):
            raise ConfigError(f"encoder mode={mode!r}: use 'pyramid' or 'restyle'")
        if n_iters < 1 or width < 1 or max_width < width or num_ws < 1 or w_dim < 1 or img_channels < 1:
            raise ConfigError(
                f"encoder sizes invalid (n_iters={n_iters}, width={width}, max_width={max_width}, num_ws={num_ws}, "
                f"w_dim={w_dim}, img_channels={img_channels}); all must be >= 1 and max_width >= width"
            )
        self.resolution, self.num_ws, self.w_dim, self.img_channels = resolution, num_ws, w_dim, img_channels
        self.mode, self.n_iters = mode, n_iters
        in_ch = img_channels * (2 if mode == "restyle" else 1)
        self.net = PyramidNet(in_ch, resolution, num_ws, w_dim, width, max_width)
        avg = torch.zeros(w_dim) if w_avg is None else w_avg.detach().float().reshape(-1).clone()
        if avg.numel() != w_dim:
            raise ConfigError(f"w_avg has {avg.numel()} values, expected w_dim={w_dim}; pass generator.w_avg")
        self.register_buffer("w_avg", avg)

    @classmethod
    def from_generator(cls, generator: nn.Module, **kwargs) -> InversionEncoder:
        """Size the encoder from a generator (resolution, num_ws, w_dim, img_channels, w_avg)."""
        return cls(
            resolution=int(generator.resolution),
            num_ws=int(generator.num_ws),
            w_dim=int(generator.w_dim),
            img_channels=int(generator.img_channels),
            w_avg=generator.w_avg,
            **kwargs,
        )

    def _check(self, x: torch.Tensor) -> None:
        want = (self.img_channels, self.resolution, self.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise DataError(
                f"encoder input has shape {tuple(x.shape)}, expected [B, {want[0]}, {want[1]}, {want[2]}]; resize"
            )
        if not torch.isfinite(x).all():
            raise DataError("encoder input contains NaN/inf values; clean the images (expected range [-1, 1])")

    def average_ws(self, batch: int) -> torch.Tensor:
        """The average latent broadcast to W+: ``[batch, num_ws, w_dim]``."""
        return self.w_avg.view(1, 1, -1).expand(batch, self.num_ws, self.w_dim)

    def forward(
        self, x: torch.Tensor, generator: nn.Module | None = None, return_steps: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        """Return W+ ``[B, num_ws, w_dim]`` (restyle with ``return_steps``: the list of all iterations' W+)."""
        self._check(x)
        if self.mode == "pyramid":
            ws = self.average_ws(x.shape[0]) + self.net(x)
            return [ws] if return_steps else ws
        if generator is None:
            raise ConfigError("restyle encoder needs the generator: call encoder(images, generator)")
        ws = self.average_ws(x.shape[0])
        with torch.no_grad():
            y = generator.synthesis(ws.contiguous(), noise_mode="const")
        steps = []
        for i in range(self.n_iters):
            ws = ws + self.net(torch.cat([x, y.detach()], dim=1))
            steps.append(ws)
            if i + 1 < self.n_iters:
                with torch.no_grad():
                    y = generator.synthesis(ws, noise_mode="const")
        return steps if return_steps else ws
