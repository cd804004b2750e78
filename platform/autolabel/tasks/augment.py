"""Augmentation for dense-label datasets.

- :class:`RandomAffineDataset`: a random affine warp (shift, scale, rotation) applied jointly to the image and its
  labels (masks: nearest, depth: bilinear, keypoints: transformed, and invisible once outside). With a few labeled
  images a keypoint net otherwise memorizes where each keypoint sat in those images; warping them teaches it to find
  the keypoints wherever they are.
- :class:`PhotometricDataset`: random saturation, contrast, brightness and blur of the image alone (labels are
  untouched). With 16 labeled photos it keeps a net from keying on each photo's colours and sharpness; on the horses it
  raised the 16-real and the fine-tuned nets by 0.03-0.07 mIoU (benchmarks/README.md, "Photometric augmentation").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from autolabel.errors import ConfigError


def affine_matrix(hw: tuple[int, int], angle_deg: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    """3x3 forward map in pixel coordinates: rotate by ``angle_deg`` and scale about the image centre, then shift by
    ``shift`` (dx, dy) pixels."""
    h, w = hw
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return torch.tensor(
        [[c, -s, cx - c * cx + s * cy + shift[0]], [s, c, cy - s * cx - c * cy + shift[1]], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )


def warp_item(item: dict, forward: torch.Tensor) -> dict:
    """Apply the pixel-space affine ``forward`` (3x3, input -> output) to one dataset item."""
    item = dict(item)
    h, w = item["image"].shape[-2:]
    # grid_sample reads, for each output pixel, the input at inverse(forward) -- in normalized coordinates
    # (align_corners=False: u = (2p + 1) / size - 1)
    to_norm = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]], dtype=torch.float64)
    theta = (to_norm @ torch.linalg.inv(forward) @ torch.linalg.inv(to_norm))[:2].float()[None]
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)

    def sample(x: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
        y = F.grid_sample(x[None].float(), grid, mode=mode, padding_mode=padding, align_corners=False)[0]
        return y.to(x.dtype)

    item["image"] = sample(item["image"], "bilinear", "border")
    if "mask" in item:
        item["mask"] = sample(item["mask"][None], "nearest", "border")[0]
    if "depth" in item:
        item["depth"] = sample(item["depth"], "bilinear", "border")
    if "keypoints" in item:
        kp, vis = item["keypoints"], item["visible"].bool()
        homo = torch.cat([kp.double(), torch.ones(kp.shape[0], 1, dtype=torch.float64)], dim=1)
        moved = (homo @ forward.T)[:, :2].to(kp.dtype)
        inside = (moved[:, 0] >= 0) & (moved[:, 0] <= w - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= h - 1)
        vis = vis & inside
        item["keypoints"] = torch.where(vis[:, None], moved, torch.full_like(moved, -1.0))
        item["visible"] = vis
    return item


class SeededAugmentation(Dataset):
    """Base of the augmenting wrappers: holds the wrapped dataset and a seeded generator of its own (the same seed
    gives the same draws), and passes the dataset's facts (task, classes, keypoints, ids) through."""

    def __init__(self, base: Dataset, seed: int = 0):
        self.base = base
        self.gen = torch.Generator().manual_seed(seed)
        for attr in ("task", "n_classes", "n_keypoints", "ids"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]


class RandomAffineDataset(SeededAugmentation):
    """Wrap a dense-label dataset: every item is warped by a random affine (probability ``p``): rotation uniform in
    ``+-max_rotation`` degrees, scale uniform in ``scale``, shift uniform in ``+-max_shift`` x the image size."""

    def __init__(
        self,
        base: Dataset,
        max_shift: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        max_rotation: float = 15.0,
        p: float = 1.0,
        seed: int = 0,
    ):
        if max_shift < 0 or max_rotation < 0 or not 0 < scale[0] <= scale[1] or not 0 <= p <= 1:
            raise ConfigError(
                f"affine augmentation max_shift={max_shift}, scale={scale}, max_rotation={max_rotation}, p={p}: "
                "need max_shift, max_rotation >= 0, 0 < scale[0] <= scale[1] and p in [0, 1]"
            )
        super().__init__(base, seed)
        self.max_shift, self.scale, self.max_rotation, self.p = max_shift, scale, max_rotation, p

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        u = torch.rand(5, generator=self.gen, dtype=torch.float64).tolist()
        if u[0] >= self.p:
            return dict(item)
        h, w = item["image"].shape[-2:]
        angle = (2 * u[1] - 1) * self.max_rotation
        scale = self.scale[0] + u[2] * (self.scale[1] - self.scale[0])
        shift = ((2 * u[3] - 1) * self.max_shift * w, (2 * u[4] - 1) * self.max_shift * h)
        return warp_item(item, affine_matrix((h, w), angle, scale, shift))


class PhotometricDataset(SeededAugmentation):
    """Wrap a dense-label dataset: every image (float, in [-1, 1]) gets a random saturation and contrast factor
    uniform in ``1 +- saturation`` / ``1 +- contrast``, a brightness offset uniform in ``+-brightness`` (in units of
    the [-1, 1] range), and with probability ``blur_p`` a 5x5 Gaussian blur with sigma uniform in ``blur_sigma``;
    then clamped to [-1, 1]. Masks, depth and keypoints pass through unchanged. Seeded: the same ``seed`` gives the
    same sequence of draws."""

    def __init__(
        self,
        base: Dataset,
        saturation: float = 0.3,
        contrast: float = 0.3,
        brightness: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.3, 1.0),
        seed: int = 0,
    ):
        ok = 0 <= saturation < 1 and 0 <= contrast < 1 and 0 <= brightness <= 1 and 0 <= blur_p <= 1
        if not ok or not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ConfigError(
                f"photometric augmentation saturation={saturation}, contrast={contrast}, brightness={brightness}, "
                f"blur_p={blur_p}, blur_sigma={blur_sigma}: need saturation, contrast in [0, 1), brightness and blur_p "
                "in [0, 1] and 0 < blur_sigma[0] <= blur_sigma[1]"
            )
        from torchvision.transforms.v2.functional import gaussian_blur  # once per wrapper, not per item

        super().__init__(base, seed)
        self.saturation, self.contrast, self.brightness = saturation, contrast, brightness
        self.blur_p, self.blur_sigma, self._blur = blur_p, blur_sigma, gaussian_blur

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        x = item["image"].float()
        u = torch.rand(5, generator=self.gen).tolist()
        mean, gray = x.mean(), x.mean(0, keepdim=True)
        x = gray + (x - gray) * (1 - self.saturation + 2 * self.saturation * u[0])
        x = mean + (x - mean) * (1 - self.contrast + 2 * self.contrast * u[1])
        x = x + (2 * u[2] - 1) * self.brightness
        if u[3] < self.blur_p:
            sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[4]
            x = self._blur(x, [5, 5], [sigma, sigma])
        item["image"] = x.clamp(-1, 1).to(item["image"].dtype)
        return item
