"""StyleGAN2 generator and discriminator in pure PyTorch (no custom CUDA kernels).

Module layout and parameter names follow rosinality's ``stylegan2-pytorch`` (``style``, ``input.input``, ``conv1``,
``to_rgb1``, ``convs``, ``to_rgbs``, ``noises``) so its ``.pt`` checkpoints load without renames. Weights are stored
unscaled and multiplied by the equalized-learning-rate gain at run time (as rosinality and NVIDIA both do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autolabel.errors import ConfigError, DataError

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, scale: float = SQRT2) -> Tensor:
    """``leaky_relu(x + bias) * sqrt(2)`` with ``bias`` broadcast over the channel dim (dim 1)."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape).to(x.dtype), negative_slope) * scale


def make_kernel(k: Sequence[float]) -> Tensor:
    """Separable 2-D FIR kernel from a 1-D one, normalized to sum 1."""
    t = torch.tensor(k, dtype=torch.float32)
    t = t[None, :] * t[:, None] if t.ndim == 1 else t
    return t / t.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, filter with ``kernel`` (depthwise), downsample; same convention as rosinality."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (p0, p1, p0, p1))
    k = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)
    x = F.conv2d(x, k[None, None].expand(c, 1, *k.shape), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


class Blur(nn.Module):
    """FIR low-pass filter (used after transposed convs and before strided convs)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor**2)
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (toRGB skip path)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * (factor**2))
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class PixelNorm(nn.Module):
    """Normalize each vector to unit second moment."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weight stored / lr_mul, scaled at run time)."""

    def __init__(
        self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0, activation=None
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight * self.scale)
        if self.activation:
            return fused_leaky_relu(out, self.bias * self.lr_mul)
        return out + self.bias * self.lr_mul if self.bias is not None else out


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) conv: one grouped conv over the batch, or (on the CPU) the
    equivalent unfused form -- see :meth:`_forward_unfused`."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size, self.in_channel, self.out_channel = kernel_size, in_ch, out_ch
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        # True: one grouped per-sample conv; False: the unfused form (same numbers); None: unfused on the CPU only
        self.fused: bool | None = True

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = x.shape
        fused = self.fused if self.fused is not None else x.device.type != "cpu"
        if not fused:
            return self._forward_unfused(x, style)
        s = self.modulation(style).view(b, 1, c, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(b, self.out_channel, 1, 1, 1)
        weight = weight.to(x.dtype)
        k = self.kernel_size
        if self.upsample:
            x = x.reshape(1, b * c, h, w)
            weight = weight.view(b, self.out_channel, c, k, k).transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = out.view(b, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        x = x.reshape(1, b * c, h, w)
        out = F.conv2d(x, weight.view(b * self.out_channel, c, k, k), padding=self.padding, groups=b)
        return out.view(b, self.out_channel, out.shape[2], out.shape[3])

    def _forward_unfused(self, x: Tensor, style: Tensor) -> Tensor:
        """The same map as the grouped path, as StyleGAN2-ADA's ``fused_modconv=False``: scale the input channels by
        the style, run one ordinary conv with the shared weight over the whole batch, scale the output channels by the
        demodulation coefficients (linear, so it commutes with the conv and the blur). No per-sample weights and no
        grouped conv, which CPUs run far slower than one batched conv."""
        b = x.shape[0]
        s = self.modulation(style)  # [b, in]
        w0 = self.scale * self.weight[0]  # [out, in, k, k]
        x = x * s.to(x.dtype).view(b, -1, 1, 1)
        w = w0.to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), padding=0, stride=2)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (w0[o, i, k] s[b, i])^2 = (s^2) @ (sum_k w0^2)^T
            demod = torch.rsqrt(s.pow(2) @ w0.pow(2).sum([2, 3]).t() + self.eps)  # [b, out]
            out = out * demod.to(out.dtype).view(b, -1, 1, 1)
        return self.blur(out) if self.upsample else out


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by a learned scalar."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    """Learned 4x4 constant input."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) * sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel=(1, 3, 3, 1),
        clamp: float | None = None,
    ):
        """``clamp``: clamp the activated output to +-clamp (NVIDIA's ``conv_clamp``; None = off)."""
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)
        self.clamp = None if clamp is None else float(clamp)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None) -> Tensor:
        out = self.conv(x, style)
        if noise is not None:
            out = self.noise(out, noise)
        out = self.activate(out)
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv to image channels (no demodulation), added to the upsampled skip image."""

    def __init__(
        self,
        in_ch: int,
        style_dim: int,
        upsample: bool = True,
        img_channels: int = 3,
        blur_kernel=(1, 3, 3, 1),
        clamp: float | None = None,
    ):
        """``clamp``: clamp this layer's RGB contribution (before the skip sum) to +-clamp (NVIDIA ``conv_clamp``)."""
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, img_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, img_channels, 1, 1))
        self.clamp = None if clamp is None else float(clamp)

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias.to(x.dtype)
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def _check_resolution(resolution: int) -> int:
    r = int(resolution)
    if r < 8 or r > 4096 or (r & (r - 1)) != 0:
        raise ConfigError(f"resolution must be a power of two in 8..4096, got {resolution} -- set e.g. resolution=256")
    return r


def channel_schedule(
    resolution: int, channel_base: int = 16384, channel_max: int = 512, channel_multiplier: int = 2
) -> list[int]:
    """Channels per resolution 4, 8, ..., R: ``min(channel_max, channel_base * channel_multiplier // res)``.

    With the defaults this is rosinality's config-f table (512 up to 32 px, then 512, 256, 128, 64, 32).
    """
    log = int(math.log2(_check_resolution(resolution)))
    return [max(1, min(channel_max, channel_base * channel_multiplier // (2**i))) for i in range(2, log + 1)]


class Generator(nn.Module):
    """StyleGAN2 generator (config-f style, skip toRGB) that can return every synthesis block's feature map."""

    def __init__(
        self,
        resolution: int,
        z_dim: int = 512,
        w_dim: int = 512,
        n_mapping: int = 8,
        channel_base: int = 16384,
        channel_max: int = 512,
        channel_multiplier: int = 2,
        img_channels: int = 3,
        lr_mlp: float = 0.01,
        **kw,
    ):
        """``kw``: ``channels`` (explicit list per resolution 4..R, overrides the schedule), ``blur_kernel``,
        ``w_avg_beta`` (decay of the running ``w_avg``, default 0.995), ``fused_modconv`` (True: grouped per-sample
        convs; False: the unfused form, same numbers; None: unfused on the CPU only -- a run-time choice, not saved),
        ``conv_clamp`` (clamp every styled-conv and
        toRGB output to +-conv_clamp as NVIDIA's stylegan2-ada does in all layers when it is set; default None = off)."""
        super().__init__()
        channels = kw.pop("channels", None)
        blur_kernel = tuple(kw.pop("blur_kernel", (1, 3, 3, 1)))
        self.w_avg_beta = float(kw.pop("w_avg_beta", 0.995))
        conv_clamp = kw.pop("conv_clamp", None)
        fused_modconv = kw.pop("fused_modconv", None)
        if conv_clamp is not None and not float(conv_clamp) > 0:
            raise ConfigError(f"conv_clamp={conv_clamp} must be > 0 or None (off); NVIDIA uses 256")
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        if kw:
            raise ConfigError(f"unknown Generator options {sorted(kw)} -- remove them (see GeneratorConfig)")
        self.resolution = _check_resolution(resolution)
        if z_dim < 1 or w_dim < 1 or n_mapping < 1 or img_channels < 1:
            raise ConfigError("z_dim, w_dim, n_mapping and img_channels must be >= 1 -- fix the generator config")
        self.z_dim, self.w_dim, self.n_mapping, self.img_channels = (
            int(z_dim),
            int(w_dim),
            int(n_mapping),
            int(img_channels),
        )
        self.log_size = int(math.log2(self.resolution))
        if channels is None:
            channels = channel_schedule(self.resolution, channel_base, channel_max, channel_multiplier)
        channels = [int(c) for c in channels]
        if len(channels) != self.log_size - 1:
            raise ConfigError(
                f"channels has {len(channels)} entries, need {self.log_size - 1} (one per resolution 4..{self.resolution})"
            )
        self.channels = channels
        self.init_kwargs = dict(
            resolution=self.resolution, z_dim=self.z_dim, w_dim=self.w_dim, n_mapping=self.n_mapping,
            img_channels=self.img_channels, lr_mlp=float(lr_mlp), channels=list(channels), blur_kernel=list(blur_kernel),
            w_avg_beta=self.w_avg_beta,
        )  # fmt: skip
        if self.conv_clamp is not None:  # only when set, so files stay readable by builds without the option
            self.init_kwargs["conv_clamp"] = self.conv_clamp
        clamp = self.conv_clamp

        layers: list[nn.Module] = [PixelNorm()]
        for i in range(self.n_mapping):
            layers.append(
                EqualLinear(self.z_dim if i == 0 else self.w_dim, self.w_dim, lr_mul=lr_mlp, activation="fused_lrelu")
            )
        self.style = nn.Sequential(*layers)

        self.input = ConstantInput(channels[0])
        self.conv1 = StyledConv(channels[0], channels[0], 3, self.w_dim, blur_kernel=blur_kernel, clamp=clamp)
        self.to_rgb1 = ToRGB(channels[0], self.w_dim, upsample=False, img_channels=self.img_channels, clamp=clamp)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2**res, 2**res))
        in_ch = channels[0]
        for i in range(3, self.log_size + 1):
            out_ch = channels[i - 2]
            self.convs.append(
                StyledConv(in_ch, out_ch, 3, self.w_dim, upsample=True, blur_kernel=blur_kernel, clamp=clamp)
            )
            self.convs.append(StyledConv(out_ch, out_ch, 3, self.w_dim, blur_kernel=blur_kernel, clamp=clamp))
            self.to_rgbs.append(ToRGB(out_ch, self.w_dim, img_channels=self.img_channels, clamp=clamp))
            in_ch = out_ch
        self.num_ws = self.log_size * 2 - 2
        self.register_buffer("w_avg", torch.zeros(self.w_dim))
        self.feature_channels = [channels[0], channels[0]] + [c for c in channels[1:] for _ in range(2)]
        self.feature_resolutions = [4, 4] + [2**i for i in range(3, self.log_size + 1) for _ in range(2)]
        self.set_fused_modconv(fused_modconv)

    def set_fused_modconv(self, fused: bool | None) -> None:
        """True: grouped per-sample modulated convs (fastest on GPUs); False: the unfused form (one batched conv, the
        same numbers; faster on CPUs in ``benchmarks/gan_step_cpu.py``); None: unfused on the CPU only."""
        if fused not in (True, False, None):
            raise ConfigError(f"fused_modconv={fused!r} must be true, false or null (auto: unfused on the CPU)")
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.fused = fused

    # ------------------------------------------------------------------ mapping
    def mapping(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """z [B, z_dim] -> w [B, w_dim], optionally truncated towards ``w_avg``."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise DataError(
                f"z must have shape [B, {self.z_dim}], got {tuple(z.shape)} -- sample z with z_dim={self.z_dim}"
            )
        w = self.style(z)
        if truncation_psi != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, float(truncation_psi))
        return w

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0) -> Tensor:
        """Average of ``n`` mapped latents [w_dim] (independent of ``w_avg``). The z are drawn on the CPU from a private
        generator seeded with ``seed``, so the result is the same on every call and device and the global RNG is left
        untouched (an import without a stored average gets the same ``w_avg`` on every load)."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(int(seed)))
        ref = self.style[1].weight
        return self.style(z.to(device=ref.device, dtype=ref.dtype)).mean(0)

    @torch.no_grad()
    def update_w_avg(self, w: Tensor) -> None:
        """Move the running ``w_avg`` towards the batch mean of ``w`` [B, w_dim] (decay ``w_avg_beta``)."""
        self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg.float(), self.w_avg_beta))

    def mix_styles(self, w: Tensor, w2: Tensor, cutoff: int) -> Tensor:
        """W+ [B, num_ws, w_dim] whose first ``cutoff`` rows are ``w`` and the rest ``w2`` (style mixing)."""
        if not 0 < cutoff <= self.num_ws:
            raise ConfigError(f"style-mixing cutoff must be in 1..{self.num_ws}, got {cutoff}")
        rows = torch.arange(self.num_ws, device=w.device).view(1, -1, 1) < cutoff
        return torch.where(rows, w.unsqueeze(1), w2.unsqueeze(1))

    # ---------------------------------------------------------------- synthesis
    @property
    def noise_shapes(self) -> list[tuple[int, int]]:
        """(height, width) of each layer's noise input, in synthesis order (what ``synthesis(noise=...)`` takes)."""
        return [tuple(getattr(self.noises, f"noise_{i}").shape[2:]) for i in range(self.num_layers)]

    def _noises(self, batch: int, mode: str, like: Tensor) -> list[Tensor | None]:
        if mode not in NOISE_MODES:
            raise ConfigError(
                f"noise_mode must be one of {NOISE_MODES}, got {mode!r} -- use 'const' for deterministic features"
            )
        out: list[Tensor | None] = []
        for i in range(self.num_layers):
            buf = getattr(self.noises, f"noise_{i}")
            if mode == "const":
                out.append(buf)
            elif mode == "random":
                out.append(torch.randn(batch, 1, buf.shape[2], buf.shape[3], device=like.device, dtype=like.dtype))
            else:
                out.append(None)
        return out

    def synthesis(self, ws: Tensor, noise_mode: str = "const", return_features: bool = False,
                  noise: list[Tensor] | None = None):  # fmt: skip
        """W+ latents [B, num_ws, w_dim] -> image [B, C, R, R] (about [-1, 1]); with ``return_features`` also the list of
        feature maps: the 4x4 constant, conv1, then both styled convs per resolution 8..R (after noise + activation).
        ``noise``: each layer's noise input ``[B, 1, H, W]`` (shapes: :attr:`noise_shapes`), given by the caller (e.g.
        drawn from per-sample seeds, so a sample does not depend on its batch); it replaces ``noise_mode``."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise DataError(
                f"ws must have shape [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)} -- broadcast w with "
                f"w.unsqueeze(1).repeat(1, {self.num_ws}, 1)"
            )
        b = ws.shape[0]
        if noise is None:
            noise = self._noises(b, noise_mode, ws)
        else:
            shapes = [(b, 1, *hw) for hw in self.noise_shapes]
            if len(noise) != len(shapes) or any(tuple(n.shape) != sh for n, sh in zip(noise, shapes)):
                got = [tuple(n.shape) for n in noise]
                raise DataError(f"noise inputs have shapes {got}, expected {shapes}: one [B, 1, H, W] map per layer")
            noise = [n.to(ws.dtype) for n in noise]
        out = self.input(b).to(ws.dtype)
        feats = [out]
        out = self.conv1(out, ws[:, 0], noise[0])
        feats.append(out)
        skip = self.to_rgb1(out, ws[:, 1])
        i = 1
        for conv_a, conv_b, n1, n2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
        ):
            out = conv_a(out, ws[:, i], n1)
            feats.append(out)
            out = conv_b(out, ws[:, i + 1], n2)
            feats.append(out)
            skip = to_rgb(out, ws[:, i + 2], skip)
            i += 2
        return (skip, feats) if return_features else skip

    def forward(self, z: Tensor, truncation_psi: float = 1.0, noise_mode: str = "const", return_features: bool = False):
        """Mapping + broadcast w to W+ + synthesis. In training mode also updates the running ``w_avg``."""
        w = self.mapping(z, truncation_psi=1.0)
        if self.training and torch.is_grad_enabled():
            self.update_w_avg(w)
        if truncation_psi != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, float(truncation_psi))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return self.synthesis(ws, noise_mode=noise_mode, return_features=return_features)


# ---------------------------------------------------------------------- discriminator
class ConvLayer(nn.Sequential):
    """(Blur + strided) equalized conv, optional bias + leaky ReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
    ):
        layers: list[nn.Module] = []
        blur_kernel = (1, 3, 3, 1)
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias and not activate)
        )
        if activate:
            layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual downsampling block: two 3x3 convs + 1x1 skip, summed / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator with minibatch standard deviation; returns logits [B, 1]."""

    def __init__(
        self,
        resolution: int,
        channel_base: int = 16384,
        channel_max: int = 512,
        img_channels: int = 3,
        mbstd_group: int = 4,
        channel_multiplier: int = 2,
        channels: Sequence[int] | None = None,
    ):
        super().__init__()
        self.resolution = _check_resolution(resolution)
        self.img_channels = int(img_channels)
        ch = (
            list(channels)
            if channels is not None
            else channel_schedule(resolution, channel_base, channel_max, channel_multiplier)
        )
        self.init_kwargs = dict(
            resolution=self.resolution, img_channels=self.img_channels, mbstd_group=int(mbstd_group), channels=ch
        )
        log = int(math.log2(self.resolution))
        blocks: list[nn.Module] = [ConvLayer(self.img_channels, ch[-1], 1)]
        in_ch = ch[-1]
        for i in range(log, 2, -1):
            out_ch = ch[i - 3]
            blocks.append(ResBlock(in_ch, out_ch))
            in_ch = out_ch
        self.convs = nn.Sequential(*blocks)
        self.stddev_group = int(mbstd_group)
        self.final_conv = ConvLayer(in_ch + 1, ch[0], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[0] * 16, ch[0], activation="fused_lrelu"), EqualLinear(ch[0], 1)
        )

    def forward(self, img: Tensor) -> Tensor:
        if img.ndim != 4 or img.shape[1] != self.img_channels or img.shape[-1] != self.resolution:
            raise DataError(
                f"discriminator input must be [B, {self.img_channels}, {self.resolution}, {self.resolution}], got "
                f"{tuple(img.shape)} -- resize images to the GAN resolution"
            )
        out = self.convs(img)
        b, c, h, w = out.shape
        group = max(g for g in range(1, min(b, self.stddev_group) + 1) if b % g == 0)
        y = out.float().view(group, -1, 1, c, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        y = y.repeat(group, 1, h, w).to(out.dtype)
        out = self.final_conv(torch.cat([out, y], 1))
        return self.final_linear(out.reshape(b, -1))


def requires_grad(module: nn.Module, flag: bool) -> None:
    """Toggle ``requires_grad`` on all parameters of ``module``."""
    for p in module.parameters():
        p.requires_grad_(flag)
