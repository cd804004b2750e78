"""HandsOff hypercolumns: every synthesis feature map of the generator, resized to one working resolution.

Full-resolution hypercolumns are huge (512^2 x 6080 floats per image), so besides the dense ``__call__`` the extractor
offers :meth:`HypercolumnExtractor.pixels`, which gathers only selected pixels by bilinear sampling each feature map at
those pixel centres (``F.grid_sample`` with ``align_corners=False`` is exactly ``F.interpolate(mode="bilinear")`` evaluated
at the chosen positions), so memory is O(P x C) instead of O(H x W x C).

Pixel grid convention: working-resolution pixel ``i`` is the centre of the image-space cell it was resized from
(``align_corners=False``), so a position ``u`` at resolution ``a`` is ``(u + 0.5) * b / a - 0.5`` at resolution ``b``
(:func:`rescale_coords`, the project's one convention: :mod:`autolabel.data.coords`). Keypoints move between the image and the working grid with this map, which keeps them
aligned with the hypercolumns; masks use ``nearest-exact`` and depth ``bilinear`` resizing (the same centres).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autolabel.data.coords import rescale_xy
from autolabel.errors import ConfigError, DataError


def rescale_coords(xy: Tensor, src_resolution: int, dst_resolution: int) -> Tensor:
    """Pixel coordinates ``xy [..., 2]`` (x, y) on a ``src_resolution`` grid mapped onto a ``dst_resolution`` grid of the
    same image (pixel centres aligned, see the module docstring); identity when the resolutions are equal."""
    if src_resolution < 1 or dst_resolution < 1:
        raise ConfigError(f"resolutions {src_resolution} -> {dst_resolution} must be >= 1")
    if src_resolution == dst_resolution:
        return xy.clone()
    return rescale_xy(xy, (src_resolution, src_resolution), (dst_resolution, dst_resolution))


def pixel_xy(index: Tensor, resolution: int) -> Tensor:
    """Flat positions ``y * R + x`` -> float coordinates ``[..., 2]`` (x, y) on the ``resolution`` grid."""
    index = torch.as_tensor(index).long()
    return torch.stack([(index % resolution).float(), (index // resolution).float()], dim=-1)


class HypercolumnExtractor:
    """Turns W+ latents into per-pixel hypercolumns using a frozen generator.

    ``generator`` follows the ``autolabel.gan.Generator`` contract (``synthesis(ws, noise_mode, return_features=True,
    noise=None)``, ``noise_shapes``, ``feature_channels``, ``feature_resolutions``). ``layers`` selects feature indices
    (``None`` = all), ``resolution`` is the working resolution (``None`` = the image resolution), ``dtype`` the output
    dtype (fp16 halves storage).
    """

    def __init__(
        self,
        generator: nn.Module,
        resolution: int | None = None,
        layers: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
        noise_mode: str = "const",
    ) -> None:
        self.generator = generator
        n_feats = len(generator.feature_channels)
        if layers is None or len(layers) == 0:
            layers = list(range(n_feats))
        layers = [int(i) for i in layers]
        bad = [i for i in layers if not 0 <= i < n_feats]
        if bad:
            raise ConfigError(
                f"hypercolumn layers {bad} out of range: the generator has {n_feats} feature maps (0..{n_feats - 1})"
            )
        if len(set(layers)) != len(layers):
            raise ConfigError(f"hypercolumn layers {layers} contain duplicates: list each feature index once")
        self.layers = layers
        res = int(generator.resolution) if resolution is None or int(resolution) <= 0 else int(resolution)
        self.resolution = res
        if dtype not in (torch.float16, torch.float32, torch.bfloat16):
            raise ConfigError(f"hypercolumn dtype {dtype} unsupported: use torch.float16 or torch.float32")
        self.dtype = dtype
        self.noise_mode = noise_mode

    @property
    def channels(self) -> int:
        """Total hypercolumn width: the sum of the chosen layers' channels."""
        return int(sum(int(self.generator.feature_channels[i]) for i in self.layers))

    def _check_ws(self, ws: Tensor) -> None:
        g = self.generator
        if ws.ndim != 3 or ws.shape[1] != g.num_ws or ws.shape[2] != g.w_dim:
            raise DataError(
                f"latents have shape {tuple(ws.shape)}, expected [B, {g.num_ws}, {g.w_dim}]: pass W+ latents "
                "(repeat a w over num_ws with w[:, None].repeat(1, num_ws, 1))"
            )
        if not torch.isfinite(ws).all():
            raise DataError("latents contain NaN/Inf: check the inversion/mapping that produced them")

    @torch.no_grad()
    def features(self, ws: Tensor, noise: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run the generator; return the image and the chosen (un-resized) feature maps. ``noise``: the generator's
        per-layer noise inputs (``synthesis(noise=...)``), else its ``noise_mode``."""
        self._check_ws(ws)
        if noise is None:
            img, feats = self.generator.synthesis(ws, noise_mode=self.noise_mode, return_features=True)
        else:
            img, feats = self.generator.synthesis(ws, return_features=True, noise=noise)
        return img, [feats[i] for i in self.layers]

    @torch.no_grad()
    def __call__(self, ws: Tensor) -> Tensor:
        """Dense hypercolumns ``[B, C, R, R]`` (every chosen map bilinearly resized to the working resolution)."""
        _, feats = self.features(ws)
        return self.resize_all(feats)

    def resize_all(self, feats: list[Tensor]) -> Tensor:
        """Resize and concatenate already-computed feature maps into ``[B, C, R, R]``."""
        r = self.resolution
        out = []
        for f in feats:
            if f.shape[-1] != r or f.shape[-2] != r:
                f = F.interpolate(f.float(), size=(r, r), mode="bilinear", align_corners=False)
            out.append(f.to(self.dtype))
        return torch.cat(out, dim=1)

    def gather(self, feats: list[Tensor], index: Tensor) -> Tensor:
        """Hypercolumns ``[B, P, C]`` of flat pixel positions ``index`` (``y * R + x``) from un-resized feature maps.

        ``index`` is ``[P]`` (same pixels in every image) or ``[B, P]`` (per-image pixels).
        """
        r = self.resolution
        b = feats[0].shape[0]
        index = torch.as_tensor(index, device=feats[0].device).long()
        if index.ndim == 1:
            index = index.unsqueeze(0).expand(b, -1)
        if index.ndim != 2 or index.shape[0] != b:
            raise DataError(f"pixel index has shape {tuple(index.shape)}: pass [P] or [B={b}, P] flat positions y*R+x")
        if index.numel() and (index.min() < 0 or index.max() >= r * r):
            raise DataError(f"pixel index out of range [0, {r * r}): positions are y*R+x at working resolution {r}")
        ys = (index // r).float()
        xs = (index % r).float()
        # normalized coords of pixel centres (align_corners=False): (2*i + 1)/R - 1
        grid = torch.stack([(2 * xs + 1) / r - 1, (2 * ys + 1) / r - 1], dim=-1).unsqueeze(1)  # [B, 1, P, 2]
        cols = []
        for f in feats:
            if f.shape[-1] == r and f.shape[-2] == r:
                flat = f.flatten(2)  # [B, C, R*R]
                g = torch.gather(flat, 2, index.unsqueeze(1).expand(-1, f.shape[1], -1))
            else:
                g = F.grid_sample(f.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
                g = g.squeeze(2)  # [B, C, P]
            cols.append(g.to(self.dtype))
        return torch.cat(cols, dim=1).transpose(1, 2).contiguous()  # [B, P, C]

    @torch.no_grad()
    def pixels(self, ws: Tensor, index: Tensor) -> Tensor:
        """Memory-safe hypercolumns ``[B, P, C]`` of selected flat pixel positions, never building full maps."""
        _, feats = self.features(ws)
        return self.gather(feats, index)

    @torch.no_grad()
    def sample_pixels(
        self, ws: Tensor, n_pixels: int, generator_rng: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample ``n_pixels`` distinct random pixels per image; return ``(hypercolumns [B, P, C], index [B, P])``."""
        r2 = self.resolution**2
        if not 0 < n_pixels <= r2:
            raise ConfigError(f"n_pixels={n_pixels} must be in [1, {r2}] (working resolution {self.resolution}^2)")
        idx = torch.stack([torch.randperm(r2, generator=generator_rng)[:n_pixels] for _ in range(ws.shape[0])])
        return self.pixels(ws, idx.to(ws.device)), idx
