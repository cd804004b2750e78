"""Training the HandsOff label-generator ensemble on streamed hypercolumns (Lightning).

Memory is flat in the number of labeled images: the module holds the frozen generator, the W+ codes and the compact
targets (:class:`LabelTargets`: a class map, keypoint coordinates or a depth map per image, never hypercolumns or dense
heatmaps), and computes the hypercolumns of a few sampled pixels inside ``training_step``, on the trainer's device.

The stream. One *generator forward* picks ``images_per_step`` labeled images, samples pixels and computes their
hypercolumns; its pixels are shuffled and cut into disjoint minibatches of ``batch_pixels`` pixels, one per member, for
``k`` consecutive optimizer steps (:func:`pixel_plan`: ``k = images_per_step * min(pixels_per_image, R^2) //
(n_members * batch_pixels)``; only ``k * n_members * batch_pixels`` pixels are computed, so every computed pixel is
used exactly once). Optimizer step ``s`` uses forward ``s // k`` and minibatch ``s % k``; forward ``f`` draws its
images and pixels from a generator seeded with ``(seed, f, rank)``. The training stream is thus a function of
``(seed, global_step)``: a run resumed from any ``last.ckpt`` (mid-epoch too) trains exactly like an uninterrupted one.

Length. One *epoch over the labeled pixels* is ``ceil(N * R^2 / batch_pixels)`` optimizer steps: every member sees as
many pixels as the N labeled images have at the working resolution R (the reference's unit: DatasetGAN loops over
all cached pixels with batch 64). It is also the Lightning epoch, so ``last.ckpt`` is rewritten once per epoch over
the labeled pixels (or every ``trainer.checkpoint_every_n_steps`` steps).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from autolabel.config.core import as_config
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.handsoff.hypercolumns import HypercolumnExtractor, pixel_xy, rescale_coords
from autolabel.handsoff.label_generator import TASKS, LabelGeneratorEnsemble, heatmap_values


def suppress_small_classes(labels: Tensor, min_class_pixels: int = 30, ignore_index: int | None = None) -> Tensor:
    """Per image, classes with fewer than ``min_class_pixels`` pixels become background (0). ``labels [N, H, W]``;
    ``ignore_index`` pixels (void) are left alone."""
    out = labels.clone().long()
    if min_class_pixels <= 0:
        return out
    for i in range(out.shape[0]):
        cls, counts = out[i].unique(return_counts=True)
        for c, n in zip(cls.tolist(), counts.tolist()):
            if c != 0 and c != ignore_index and n < min_class_pixels:
                out[i][out[i] == c] = 0
    return out


def _class_dtype(n_classes: int) -> torch.dtype:
    return torch.uint8 if n_classes <= 256 else torch.int16 if n_classes <= 32768 else torch.int32


class LabelTargets:
    """The labeled images' targets on the working grid (``resolution`` R), stored compactly on the CPU.

    ``task="segmentation"``: ``labels [N, H, W]`` class indices, resized nearest-exact to R, classes with fewer than
    ``min_class_pixels`` pixels per image set to background; ``n_classes`` (e.g. the labeled folder's, counted at full
    resolution) or, when None, the largest label + 1. ``"keypoints"``: ``labels [N, K, 2]`` (x, y) pixels of an
    ``image_resolution`` image plus ``visible [N, K]`` (default: every keypoint not at (-1, -1)); coordinates are mapped
    onto the working grid, targets are Gaussian heatmap values computed at the sampled pixels only. ``"depth"``:
    ``labels [N, H, W]`` resized bilinearly to R. Memory: ``R^2`` bytes (masks), ``K * 9`` bytes (keypoints) or
    ``4 R^2`` bytes (depth) per image. ``ignore_index`` (segmentation): pixels with that value (e.g. VOC's 255 void
    borders) are no class; they are sampled like any pixel but carry zero loss weight. ``pixel_weight [N, H, W]``
    (optional, >= 0, area-resized to R): every target pixel's loss weight, e.g. :func:`~autolabel.handsoff.invert.
    reconstruction_weights` (how well the inversion reproduced the photo there).
    """

    def __init__(
        self,
        labels: Tensor,
        task: str,
        resolution: int,
        *,
        image_resolution: int | None = None,
        n_classes: int | None = None,
        visible: Tensor | None = None,
        min_class_pixels: int = 30,
        heatmap_sigma: float = 2.0,
        ignore_index: int | None = None,
        pixel_weight: Tensor | None = None,
    ) -> None:
        if task not in TASKS:
            raise ConfigError(f"task={task!r} unknown: use one of {', '.join(TASKS)}")
        if resolution < 1:
            raise ConfigError(f"working resolution {resolution} must be >= 1")
        if heatmap_sigma <= 0:
            raise ConfigError(f"heatmap_sigma={heatmap_sigma} must be > 0 (2 pixels is typical)")
        labels = torch.as_tensor(labels)
        r = int(resolution)
        self.task, self.resolution, self.heatmap_sigma = task, r, float(heatmap_sigma)
        self.visible: Tensor | None = None
        self.ignore_index = None if ignore_index is None or task != "segmentation" else int(ignore_index)
        if task == "segmentation":
            if labels.ndim != 3:
                raise DataError(f"segmentation labels have shape {tuple(labels.shape)}: pass [N, H, W] class indices")
            if labels.dtype.is_floating_point or labels.dtype == torch.bool:
                labels = labels.long()
            if labels.numel() and int(labels.min()) < 0:
                raise DataError("segmentation labels contain negative classes: use 0 for background, 1..K-1 for parts")
            ign = self.ignore_index
            valid = labels[labels != ign] if ign is not None else labels
            top = int(valid.max()) if valid.numel() else 0
            if n_classes is None:
                n_classes = top + 1  # before resizing: a thin class still counts
            if n_classes < 2:
                raise ConfigError(f"n_classes={n_classes}: segmentation needs >= 2 classes (background included)")
            if top >= n_classes:
                raise DataError(f"segmentation labels hold class {top} but n_classes={n_classes}: set label_generator."
                                f"n_classes >= {top + 1} (or -1 to count the classes in the data)")  # fmt: skip
            if labels.shape[-2:] != (r, r):
                labels = F.interpolate(labels[:, None].float(), size=(r, r), mode="nearest-exact")[:, 0]
            self.labels = suppress_small_classes(labels.long(), min_class_pixels, ign).to(
                _class_dtype(max(n_classes, (ign or 0) + 1))
            )
            self.n_outputs = int(n_classes)
        elif task == "keypoints":
            if labels.ndim != 3 or labels.shape[-1] != 2:
                raise DataError(f"keypoints have shape {tuple(labels.shape)}: pass [N, K, 2] (x, y) in pixels")
            labels = labels.float()
            if visible is None:
                visible = ~((labels[..., 0] == -1) & (labels[..., 1] == -1))
            visible = torch.as_tensor(visible).bool()
            if visible.shape != labels.shape[:2]:
                raise DataError(f"visible has shape {tuple(visible.shape)}, keypoints {tuple(labels.shape)}: pass "
                                "one flag per keypoint [N, K]")  # fmt: skip
            if not torch.isfinite(labels[visible]).all():
                raise DataError("visible keypoints contain NaN/Inf: fix them or mark them invisible (-1, -1)")
            src = int(image_resolution) if image_resolution else r
            coords = rescale_coords(labels, src, r)
            self.labels = torch.where(visible[..., None], coords, torch.full_like(coords, -1.0))
            self.visible = visible
            self.n_outputs = int(labels.shape[1])
        else:
            if labels.ndim != 3:
                raise DataError(f"depth labels have shape {tuple(labels.shape)}: pass [N, H, W] depth maps")
            if not torch.isfinite(labels).all():
                raise DataError("depth labels contain NaN/Inf: fill or mask invalid pixels before training")
            labels = labels.float()
            if labels.shape[-2:] != (r, r):
                labels = F.interpolate(labels[:, None], size=(r, r), mode="bilinear", align_corners=False)[:, 0]
            self.labels = labels.contiguous()
            self.n_outputs = 1
        self.pixel_weight: Tensor | None = None
        if pixel_weight is not None:
            pw = torch.as_tensor(pixel_weight).float()
            if pw.ndim != 3 or len(pw) != len(labels):
                raise DataError(f"pixel_weight has shape {tuple(pw.shape)}: pass one [H, W] map per labeled image "
                                f"([{len(labels)}, H, W])")  # fmt: skip
            if not torch.isfinite(pw).all() or bool((pw < 0).any()):
                raise DataError("pixel_weight holds negative or non-finite values: weights must be finite and >= 0")
            if pw.shape[-2:] != (r, r):
                pw = F.interpolate(pw[:, None], size=(r, r), mode="area")[:, 0]
            self.pixel_weight = pw.contiguous()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held (labels + visibility + pixel weights)."""
        extra = self.visible.numel() if self.visible is not None else 0
        if self.pixel_weight is not None:
            extra += self.pixel_weight.numel() * 4
        return int(self.labels.numel() * self.labels.element_size() + extra)

    def subset(self, index: Tensor | Sequence[int]) -> LabelTargets:
        """The targets of the images ``index`` only (same task, grid and settings): a held-out fold or its rest."""
        index = torch.as_tensor(index).long()
        out = copy.copy(self)
        out.labels = self.labels[index]
        out.visible = None if self.visible is None else self.visible[index]
        out.pixel_weight = None if self.pixel_weight is None else self.pixel_weight[index]
        return out

    def sample_pixels(self, image: int, count: int, rng: torch.Generator, peak_fraction: float = 0.0) -> Tensor:
        """``count`` flat pixel positions of ``image``: distinct uniform pixels, plus (keypoints) a ``peak_fraction``
        share drawn around a random visible keypoint (Gaussian offset, std ``2 * heatmap_sigma``)."""
        r = self.resolution
        n_peak = 0
        vis = None
        if self.task == "keypoints" and peak_fraction > 0:
            vis = self.visible[image].nonzero()[:, 0]
            n_peak = int(round(peak_fraction * count)) if len(vis) else 0
        uniform = torch.randperm(r * r, generator=rng)[: count - n_peak]
        if not n_peak:
            return uniform
        kp = vis[torch.randint(len(vis), (n_peak,), generator=rng)]
        off = torch.randn(n_peak, 2, generator=rng) * (2 * self.heatmap_sigma)
        xy = (self.labels[image, kp] + off).round().clamp(0, r - 1).long()
        return torch.cat([uniform, xy[:, 1] * r + xy[:, 0]])

    def targets(self, image: int, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """Targets at flat positions ``index [P]`` of ``image``: class ``[P]`` / depth ``[P]``, or heatmap values
        ``[P, K]`` with visibility weights ``[P, K]`` (keypoints); the loss weights (None: all 1) include
        ``pixel_weight`` when set."""
        pw = None if self.pixel_weight is None else self.pixel_weight[image].reshape(-1)[index]
        if self.task == "keypoints":
            kp = self.labels[image]  # [K, 2]
            xy = pixel_xy(index, self.resolution)
            values = heatmap_values(xy, kp[None].expand(len(index), -1, -1), self.heatmap_sigma)
            visible = self.visible[image][None].expand(len(index), -1).float()
            return values * visible, visible if pw is None else visible * pw[:, None]
        flat = self.labels[image].reshape(-1)[index]
        if self.task == "segmentation":
            flat = flat.long()
            if self.ignore_index is None:
                return flat, pw
            valid = (flat != self.ignore_index).float()
            return torch.where(valid.bool(), flat, torch.zeros_like(flat)), valid if pw is None else valid * pw
        return flat.float(), pw


@dataclass(frozen=True)
class PixelPlan:
    """How one generator forward is spent (see the module docstring)."""

    images: int  # images per generator forward
    counts: tuple[int, ...]  # pixels computed per image
    updates: int  # optimizer steps per forward (k)
    batch: int  # pixels per member per optimizer step
    disjoint: bool  # False: too few pixels for disjoint member batches, members share the forward's pixels

    @property
    def total(self) -> int:
        return int(sum(self.counts))


def pixel_plan(n_images: int, resolution: int, n_members: int, batch_pixels: int, pixels_per_image: int,
               images_per_step: int) -> PixelPlan:  # fmt: skip
    """The pixel budget of one generator forward: ``k = I * min(pixels_per_image, R^2) // (M * B)`` optimizer steps
    on ``k * M * B`` computed pixels (disjoint per member and step). With fewer pixels than ``M * B`` available, one
    step on all of them (each member takes ``min(B, total)``, members overlap)."""
    if min(n_images, resolution, n_members, batch_pixels, pixels_per_image, images_per_step) < 1:
        raise ConfigError(f"pixel plan needs positive sizes, got n_images={n_images}, resolution={resolution}, "
                          f"n_members={n_members}, batch_pixels={batch_pixels}, pixels_per_image={pixels_per_image}, "
                          f"images_per_step={images_per_step}")  # fmt: skip
    i = min(int(images_per_step), int(n_images))
    avail = i * min(int(pixels_per_image), resolution * resolution)
    need = n_members * batch_pixels
    if avail >= need:
        k, total, disjoint, batch = avail // need, (avail // need) * need, True, int(batch_pixels)
    else:
        k, total, disjoint, batch = 1, avail, False, min(int(batch_pixels), avail)
    counts = tuple(total // i + (1 if j < total % i else 0) for j in range(i))
    return PixelPlan(i, counts, int(k), batch, disjoint)


def forward_seed(seed: int, forward: int, rank: int = 0) -> int:
    """Seed of generator forward ``forward`` on ``rank`` (independent of process history)."""
    return int(np.random.SeedSequence([int(seed), int(forward), int(rank)]).generate_state(1, np.uint64)[0] >> 1)


class _Steps(Dataset):
    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return int(i)


class LabelDataModule(pl.LightningDataModule):
    """``steps_per_epoch`` placeholder batches per Lightning epoch: the pixels are drawn inside ``training_step`` from
    ``(seed, global_step)``, so the batches carry no data (and need no workers)."""

    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        if steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch={steps_per_epoch} must be >= 1")
        self.steps_per_epoch = int(steps_per_epoch)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Steps(self.steps_per_epoch), batch_size=None, shuffle=False, num_workers=0)


_MODEL_KEYS = ("task", "n_classes", "n_keypoints", "n_members", "hidden", "working_resolution", "layers", "fp16",
               "heatmap_sigma", "depth_loss")  # fmt: skip
_TRAIN_KEYS = ("lr", "batch_pixels", "pixels_per_image", "images_per_step", "keypoint_peak_fraction", "seed")


def configs_from_flat(flat: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields of the two configs of a label-generator checkpoint saved with flat hyper-parameters (before the
    config dataclasses): ``None`` counts become the configs' "resolve" values, ``None`` layers every layer."""
    unknown = sorted(set(flat) - set(_MODEL_KEYS) - set(_TRAIN_KEYS))
    if unknown:
        raise ConfigError(f"LabelGeneratorModule has no setting(s) {unknown}: use a LabelGeneratorConfig and a "
                          "LabelTrainConfig")  # fmt: skip
    m = {k: flat[k] for k in _MODEL_KEYS if k in flat}
    m["n_classes"] = m.get("n_classes") or -1
    m["n_keypoints"] = m.get("n_keypoints") or 0
    m["layers"] = list(m.get("layers") or [])
    m["hidden"] = list(m.get("hidden", (256, 32)))
    m.setdefault("fp16", False)  # the flat constructor's default
    return m, {k: flat[k] for k in _TRAIN_KEYS if k in flat}


class _Frozen:
    """Holds the frozen generator outside the module tree: not in ``state_dict``, the optimizer or DDP."""

    def __init__(self, extractor: HypercolumnExtractor, targets: LabelTargets) -> None:
        self.extractor, self.targets = extractor, targets


class LabelGeneratorModule(pl.LightningModule):
    """Trains the ensemble on pixels streamed from a frozen generator; each member its own disjoint minibatch.

    :meth:`attach` gives it the training data (generator, W+ codes, :class:`LabelTargets`); the generator is moved to
    the trainer's device and used under ``no_grad``, only ``ensemble`` is optimized and saved. The checkpoint is
    self-contained for synthesis: hparams hold the two configs (``model``: ensemble shape, task, hypercolumn layers,
    working resolution; ``train``: the pixel stream), the class / keypoint names and the paths of the generator and the
    inversion encoder (neither is stored). Checkpoints saved with the earlier flat hyper-parameters still load
    (:func:`configs_from_flat`).
    """

    def __init__(
        self,
        model: LabelGeneratorConfig | Mapping | None = None,
        train: LabelTrainConfig | Mapping | None = None,
        *,
        in_channels: int,
        class_names: Sequence[str] | None = None,
        keypoint_names: Sequence[str] | None = None,
        skeleton: Sequence[Sequence[int]] | None = None,
        generator_path: str | None = None,
        encoder_path: str | None = None,  # the inversion encoder used for the labeled images (`autolabel label`)
        **flat: Any,
    ) -> None:
        super().__init__()
        flat_model, flat_train = configs_from_flat(flat) if flat else (None, None)  # a checkpoint of flat hparams
        cfg = as_config(model, LabelGeneratorConfig, flat_model)
        tcfg = as_config(train, LabelTrainConfig, flat_train)
        n_out = cfg.n_classes if cfg.task == "segmentation" else cfg.n_keypoints if cfg.task == "keypoints" else 1
        if n_out < 1:
            raise ConfigError(f"LabelGeneratorModule needs the {cfg.task} output count resolved (n_classes / "
                              "n_keypoints from the labeled folder), got -1/0")  # fmt: skip
        if class_names is not None and cfg.task == "segmentation" and len(class_names) != cfg.n_classes:
            raise ConfigError(f"{len(class_names)} class_names for n_classes={cfg.n_classes}: give one name per class")
        self.cfg, self.train_cfg = cfg, tcfg
        self.save_hyperparameters({"model": asdict(cfg), "train": asdict(tcfg), "in_channels": in_channels,
                                   "class_names": None if class_names is None else list(class_names),
                                   "keypoint_names": None if keypoint_names is None else list(keypoint_names),
                                   "skeleton": None if skeleton is None else [list(map(int, e)) for e in skeleton],
                                   "generator_path": generator_path, "encoder_path": encoder_path})  # fmt: skip
        self.ensemble = LabelGeneratorEnsemble(in_channels, cfg.task, n_out if cfg.task == "segmentation" else None,
                                               n_out if cfg.task == "keypoints" else None, cfg.n_members,
                                               cfg.hidden)  # fmt: skip
        self._frozen: _Frozen | None = None
        self._cache: tuple | None = None
        self.plan: PixelPlan | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.ensemble(x)

    def label_names(self) -> dict[str, list]:
        """The names this ensemble's outputs stand for (what synthesis writes into ``plan.json``): ``classes`` (one
        per class, unnamed ones ``class_<i>``) or ``keypoint_names`` (``kp<i>``) + ``skeleton``; empty for depth."""
        from autolabel.data.formats.meta import LabelNames

        hp, ens = self.hparams, self.ensemble
        ln = LabelNames(classes=list(hp.get("class_names") or []), keypoints=list(hp.get("keypoint_names") or []))
        if ens.task == "segmentation":
            return {"classes": ln.class_names(ens.out_channels)}
        if ens.task == "keypoints":
            return {"keypoint_names": ln.keypoint_names(ens.out_channels),
                    "skeleton": [list(map(int, p)) for p in hp.get("skeleton") or []]}  # fmt: skip
        return {}

    # ------------------------------------------------------------------ training data
    def attach(self, generator: nn.Module, ws: Tensor, targets: LabelTargets) -> LabelGeneratorModule:
        """Give the module its training data: the frozen ``generator``, W+ codes ``ws [N, num_ws, w_dim]`` (or W
        ``[N, w_dim]``) of the labeled images and their ``targets``. The codes become a non-persistent buffer (moved
        to the device with the module, not saved); the generator is kept outside the module tree."""
        ext = self.make_extractor(generator)
        if targets.task != self.ensemble.task:
            raise ConfigError(f"targets are {targets.task} but the ensemble is {self.ensemble.task}: use one task")
        if targets.resolution != ext.resolution:
            raise ConfigError(f"targets are on a {targets.resolution}px grid but the working resolution is "
                              f"{ext.resolution}: build LabelTargets with resolution={ext.resolution}")  # fmt: skip
        if targets.n_outputs != self.ensemble.out_channels:
            what = "classes" if targets.task == "segmentation" else "keypoints"
            raise DataError(f"the labels have {targets.n_outputs} {what} but the ensemble outputs "
                            f"{self.ensemble.out_channels}: set n_{what} to {targets.n_outputs}")  # fmt: skip
        ws = torch.as_tensor(ws).detach().float()
        if ws.ndim == 2:
            ws = ws[:, None].repeat(1, generator.num_ws, 1)
        ext._check_ws(ws)
        if ws.shape[0] != len(targets):
            raise DataError(f"{len(targets)} labels for {ws.shape[0]} latents: pass one label per inverted image")
        generator.requires_grad_(False).eval()
        self.register_buffer("train_ws", ws.clone(), persistent=False)
        self._frozen = _Frozen(ext, targets)
        self._cache = None
        tc = self.train_cfg
        self.plan = pixel_plan(len(targets), ext.resolution, self.ensemble.n_members, tc.batch_pixels,
                               tc.pixels_per_image, tc.images_per_step)  # fmt: skip
        return self

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps of one epoch over the labeled pixels: ``ceil(N * R^2 / batch_pixels)``."""
        st = self._require_attached()
        return int(math.ceil(len(st.targets) * st.extractor.resolution**2 / self.plan.batch))

    def _require_attached(self) -> _Frozen:
        if self._frozen is None:
            raise ConfigError("the label module has no training data: call module.attach(generator, ws, targets) "
                              "before trainer.fit")  # fmt: skip
        return self._frozen

    def extractor_on(self, device: torch.device) -> HypercolumnExtractor:
        """The attached hypercolumn extractor, its generator moved to ``device`` (training and held-out scoring)."""
        ext = self._require_attached().extractor
        p = next(ext.generator.parameters(), None)
        if p is not None and p.device != device:
            ext.generator.to(device)
        return ext

    def on_fit_start(self) -> None:
        self.extractor_on(self.device)  # inversion may have left it elsewhere; features run on the trainer's device

    @torch.no_grad()
    def forward_pixels(self, forward: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Generator forward ``forward``: shuffled hypercolumns ``[T, C]``, targets, (keypoints) weights; on device."""
        st, plan, tc = self._require_attached(), self.plan, self.train_cfg
        rng = torch.Generator().manual_seed(forward_seed(tc.seed, forward, self.global_rank))
        images = torch.randperm(len(st.targets), generator=rng)[: plan.images]
        pix = [st.targets.sample_pixels(int(images[j]), c, rng, tc.keypoint_peak_fraction)
               for j, c in enumerate(plan.counts)]  # fmt: skip
        order = torch.randperm(plan.total, generator=rng)
        ext, dev = self.extractor_on(self.device), self.device
        gdtype = next(ext.generator.parameters()).dtype
        _, feats = ext.features(self.train_ws[images.to(dev)].to(gdtype))
        x = torch.cat([ext.gather([f[j : j + 1] for f in feats], p.to(dev)[None])[0] for j, p in enumerate(pix)])
        ys, ws = zip(*(st.targets.targets(int(images[j]), p) for j, p in enumerate(pix)))
        order_d = order.to(dev)
        y = torch.cat(ys).to(dev)[order_d]
        w = torch.cat(ws).to(dev)[order_d] if ws[0] is not None else None
        return x[order_d], y, w

    def member_index(self, update: int, member: int) -> slice | Tensor:
        """Rows of the forward's shuffled pixels that ``member`` trains on at update ``update`` of that forward."""
        plan = self.plan
        if plan.disjoint:
            start = (update * self.ensemble.n_members + member) * plan.batch
            return slice(start, start + plan.batch)
        return (torch.arange(plan.batch) + member * plan.batch) % plan.total

    def training_step(self, batch: object, batch_idx: int) -> Tensor:
        self._require_attached()
        forward, update = divmod(int(self.global_step), self.plan.updates)
        if self._cache is None or self._cache[0] != forward:
            self._cache = (forward, *self.forward_pixels(forward))
        _, x, y, w = self._cache
        dtype = next(self.ensemble.parameters()).dtype
        losses, correct = [], []
        for m, member in enumerate(self.ensemble.members):
            sel = self.member_index(update, m)
            if isinstance(sel, Tensor):
                sel = sel.to(x.device)
            out = member(x[sel].to(dtype))
            loss = self.ensemble.member_losses(out[None], y[sel], self.cfg.depth_loss,
                                               None if w is None else w[sel])[0]  # fmt: skip
            losses.append(loss)
            if self.ensemble.task == "segmentation":
                hit = (out.argmax(-1) == y[sel]).float()
                correct.append(hit.mean() if w is None else (hit * w[sel]).sum() / w[sel].sum().clamp_min(1.0))
        total = torch.stack(losses).sum()
        self.log("train/loss", total / len(losses), prog_bar=True, batch_size=self.plan.batch)
        if correct:
            self.log("train/acc", torch.stack(correct).mean(), batch_size=self.plan.batch)
        return total

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Adam is per-parameter, so one optimizer over all members equals one per member; the generator is not in it.
        return torch.optim.Adam(self.ensemble.parameters(), lr=self.train_cfg.lr)

    def make_extractor(self, generator: nn.Module) -> HypercolumnExtractor:
        """The hypercolumn extractor this ensemble was trained with, on ``generator``."""
        res, cfg = self.cfg.working_resolution, self.cfg
        ext = HypercolumnExtractor(generator, None if res <= 0 else res, list(cfg.layers) or None,
                                   torch.float16 if cfg.fp16 else torch.float32)  # fmt: skip
        if ext.channels != self.ensemble.in_channels:
            raise CheckpointError(
                f"generator gives {ext.channels}-wide hypercolumns but the ensemble expects {self.ensemble.in_channels}: "
                "load the generator this label generator was trained with"
            )
        return ext
