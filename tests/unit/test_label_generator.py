import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from autolabel.config import TrainerConfig
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.engine import fit
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.gan import Generator
from autolabel.handsoff.hypercolumns import HypercolumnExtractor, rescale_coords
from autolabel.handsoff.label_generator import (
    LabelGeneratorEnsemble,
    PixelMLP,
    decode_keypoints,
    heatmap_values,
    image_uncertainty,
    js_divergence,
    keypoint_heatmaps,
    majority_vote,
)
from autolabel.handsoff.label_generator_module import (
    LabelDataModule,
    LabelGeneratorModule,
    LabelTargets,
    forward_seed,
    pixel_plan,
    suppress_small_classes,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machines: intra-op threads only add contention at these sizes
    yield
    torch.set_num_threads(n)


def tiny_gen() -> Generator:
    torch.manual_seed(0)
    return Generator(resolution=16, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32).eval()


def test_mlp_init_std():
    torch.manual_seed(0)
    m = PixelMLP(512, 4, (256, 32))
    w = m.net[0].weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert torch.all(m.net[0].bias == 0)


def test_ensemble_shapes_and_predict():
    torch.manual_seed(0)
    ens = LabelGeneratorEnsemble(12, "segmentation", n_classes=3, n_members=4, hidden=(8, 4))
    x = torch.randn(10, 12)
    assert ens(x).shape == (4, 10, 3)
    ens.eval()
    p = ens.predict(x)
    assert p["label"].shape == (10,) and p["probs"].shape == (10, 3) and p["uncertainty"].shape == (10,)
    kp = LabelGeneratorEnsemble(12, "keypoints", n_keypoints=2, n_members=3, hidden=(8, 4)).eval()
    q = kp.predict(x)
    assert q["heatmap"].shape == (10, 2) and q["uncertainty"].shape == (10,)
    dp = LabelGeneratorEnsemble(12, "depth", n_members=3, hidden=(8, 4)).eval()
    d = dp.predict(x)
    assert d["depth"].shape == (10,) and (d["uncertainty"] >= 0).all()


def test_majority_vote_known_answer():
    # 3 members, 4 pixels
    labels = torch.tensor([[0, 1, 2, 2], [0, 2, 2, 1], [1, 2, 0, 0]])
    assert majority_vote(labels, 3).tolist() == [0, 2, 2, 0]  # last pixel: tie 0/1/2 -> lowest


def test_js_divergence_known_answers():
    p = torch.tensor([[0.2, 0.3, 0.5]]).expand(5, 1, 3)
    assert js_divergence(p).abs().max() < 1e-6
    two = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert js_divergence(two).item() == pytest.approx(math.log(2), abs=1e-5)


def test_image_uncertainty_top_fraction():
    s = torch.arange(20, dtype=torch.float32).reshape(1, 4, 5)
    assert image_uncertainty(s, 0.1).item() == pytest.approx(18.5)  # top 2 of 20


def test_keypoint_decode_subpixel_exact():
    coords = torch.tensor([[[5.3, 7.6], [10.0, 2.0], [0.0, 15.0]]])
    hm = keypoint_heatmaps(coords, 16, sigma=1.5)
    dec, conf = decode_keypoints(hm)  # log-parabola refinement is exact for a Gaussian peak
    torch.testing.assert_close(dec, coords, atol=1e-4, rtol=0)
    assert conf.shape == (1, 3) and conf[0, 1].item() == pytest.approx(1.0)
    soft, _ = decode_keypoints(hm, refine="soft_argmax")
    torch.testing.assert_close(soft[0, 1], coords[0, 1], atol=1e-5, rtol=0)  # symmetric peak on a pixel
    none, _ = decode_keypoints(hm, refine="none")
    assert none[0, 0].tolist() == [5.0, 8.0]
    with pytest.raises(DataError, match="B, K, 2"):
        keypoint_heatmaps(torch.zeros(3, 2), 16)
    with pytest.raises(ConfigError, match="refine"):
        decode_keypoints(hm, refine="mean")


def test_suppress_small_classes():
    lab = torch.zeros(1, 10, 10, dtype=torch.long)
    lab[0, :5] = 1  # 50 pixels
    lab[0, 9, :3] = 2  # 3 pixels
    out = suppress_small_classes(lab, 30)
    assert (out == 1).sum() == 50 and (out == 2).sum() == 0


def test_bad_config_and_inputs():
    with pytest.raises(ConfigError, match="task"):
        LabelGeneratorEnsemble(8, "boxes")
    with pytest.raises(ConfigError, match="n_classes"):
        LabelGeneratorEnsemble(8, "segmentation", n_classes=1)
    ens = LabelGeneratorEnsemble(8, "segmentation", n_classes=2, n_members=2, hidden=(4, 4))
    with pytest.raises(DataError, match="expected"):
        ens(torch.zeros(3, 9))
    assert LabelGeneratorConfig(task="keypoints").n_keypoints == 0  # 0 = counted in the labeled folder
    with pytest.raises(ConfigError, match="n_keypoints"):
        LabelGeneratorConfig(task="keypoints", n_keypoints=-2)
    with pytest.raises(ConfigError, match="n_classes=1"):
        LabelGeneratorConfig(n_classes=1)
    with pytest.raises(ConfigError, match="lr"):
        LabelTrainConfig(lr=0)
    with pytest.raises(ConfigError, match="epochs"):
        LabelTrainConfig(epochs=-1)
    with pytest.raises(ConfigError, match="keypoint_peak_fraction"):
        LabelTrainConfig(keypoint_peak_fraction=1.0)
    with pytest.raises(DataError, match="negative"):
        LabelTargets(-torch.ones(2, 16, 16, dtype=torch.long), "segmentation", 16)
    with pytest.raises(DataError, match=r"class 4 but n_classes=3: set label_generator.n_classes >= 5"):
        LabelTargets(torch.full((1, 4, 4), 4), "segmentation", 4, n_classes=3)
    g = tiny_gen()
    ws = torch.zeros(2, g.num_ws, g.w_dim)
    ext = HypercolumnExtractor(g)
    module = LabelGeneratorModule(LabelGeneratorConfig(n_classes=2, n_members=2, hidden=[4, 4], fp16=False),
                                  LabelTrainConfig(batch_pixels=8), in_channels=ext.channels)  # fmt: skip
    with pytest.raises(ConfigError, match="attach"):
        module.training_step(0, 0)
    with pytest.raises(DataError, match="one label per"):
        module.attach(g, ws, LabelTargets(torch.zeros(3, 16, 16, dtype=torch.long), "segmentation", 16, n_classes=2))
    with pytest.raises(DataError, match="3 classes but the ensemble outputs 2"):
        module.attach(g, ws, LabelTargets(torch.zeros(2, 16, 16, dtype=torch.long), "segmentation", 16, n_classes=3))
    with pytest.raises(ConfigError, match="working resolution is 16"):
        module.attach(g, ws, LabelTargets(torch.zeros(2, 8, 8, dtype=torch.long), "segmentation", 8, n_classes=2))


def test_config_omegaconf_structured():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(LabelGeneratorConfig)
    cfg.layers = [0, 1]
    obj = OmegaConf.to_object(cfg)
    assert obj.layers == [0, 1] and obj.n_members == 10
    train = LabelTrainConfig()
    assert (train.batch_pixels, train.lr) == (64, 1e-3)  # the reference's per-member batch and Adam lr


def test_pixel_plan_known_answers():
    # reference settings: 10 members x 64 px; 4096 px computed per 512^2 image -> 6 steps on 3840 px, all used
    p = pixel_plan(16, 512, 10, 64, 4096, 1)
    assert (p.updates, p.total, p.counts, p.batch, p.disjoint) == (6, 3840, (3840,), 64, True)
    # 2 images x 100 px, 3 members x 16 px: 4 steps on 192 px, split over the two images
    p = pixel_plan(3, 16, 3, 16, 100, 2)
    assert (p.updates, p.total, p.counts, p.disjoint) == (4, 192, (96, 96), True)
    # the demo pipeline at 16 px: 4 x 256 px available < 5 x 256 needed -> one step, members share the pixels
    p = pixel_plan(16, 16, 5, 256, 256, 4)
    assert (p.updates, p.total, p.counts, p.batch, p.disjoint) == (1, 1024, (256,) * 4, 256, False)
    assert pixel_plan(2, 16, 2, 64, 10**6, 1).counts == (256,)  # capped at R^2: 4 steps of 2 x 32 px
    assert forward_seed(0, 1) == forward_seed(0, 1) != forward_seed(0, 2) != forward_seed(0, 1, rank=1)


def test_heatmap_values_equal_dense_heatmaps():
    coords = torch.tensor([[[3.0, 4.5], [10.2, 1.0]]])
    dense = keypoint_heatmaps(coords, 12, sigma=1.5)[0]  # [K, R, R]
    idx = torch.tensor([0, 5, 40, 143, 4 * 12 + 3])
    xy = torch.stack([idx % 12, idx // 12], -1).float()
    got = heatmap_values(xy, coords.expand(len(idx), -1, -1), sigma=1.5)
    torch.testing.assert_close(got, dense.flatten(1)[:, idx].T)


def test_label_targets_count_classes_at_full_resolution_and_store_compactly():
    lab = torch.zeros(2, 32, 32, dtype=torch.long)
    lab[0, :16] = 1
    lab[1, 5, 5] = 3  # one pixel: gone after the 32 -> 8 resize, yet a class of the data
    t = LabelTargets(lab, "segmentation", 8, min_class_pixels=0)
    assert t.n_outputs == 4 and int(t.labels.max()) == 1
    assert t.labels.dtype == torch.uint8 and t.labels.shape == (2, 8, 8) and t.nbytes == 2 * 64
    assert (t.labels[0, :4] == 1).all() and (t.labels[0, 4:] == 0).all()
    assert LabelTargets(lab, "segmentation", 8, n_classes=6).n_outputs == 6


def test_label_targets_keypoints_rescaled_and_invisible_weighted_zero():
    kps = torch.tensor([[[7.0, 3.0], [-1.0, -1.0]], [[0.0, 15.0], [8.0, 8.0]]])
    t = LabelTargets(kps, "keypoints", 8, image_resolution=16, heatmap_sigma=1.0)
    assert t.visible.tolist() == [[True, False], [True, True]]
    torch.testing.assert_close(t.labels[0, 0], torch.tensor([3.25, 1.25]))  # (x + 0.5) * 8 / 16 - 0.5
    torch.testing.assert_close(rescale_coords(t.labels, 8, 16)[1], kps[1])  # and back
    idx = torch.arange(64)
    y, w = t.targets(0, idx)
    assert y.shape == (64, 2) and w[:, 0].eq(1).all() and w[:, 1].eq(0).all() and y[:, 1].eq(0).all()
    assert y[:, 0].argmax().item() == 1 * 8 + 3  # the peak pixel nearest (3.25, 1.25)
    assert t.nbytes == 2 * 2 * 2 * 4 + 4  # coordinates + visibility, no [N, K, R, R] heatmaps
    rng = torch.Generator().manual_seed(0)
    near = t.sample_pixels(1, 64, rng, peak_fraction=0.5)
    d = (torch.stack([near % 8, near // 8], -1).float()[:, None] - t.labels[1][None]).norm(dim=-1).min(1).values
    assert len(near) == 64 and len(set(near[:32].tolist())) == 32  # 32 distinct uniform pixels, then 32 near peaks
    assert (d[32:] <= 4.5).float().mean() > 0.9 and (d[32:] <= 4.5).float().mean() > (d[:32] <= 4.5).float().mean()


def test_keypoint_loss_ignores_invisible_keypoints():
    ens = LabelGeneratorEnsemble(4, "keypoints", n_keypoints=2, n_members=1, hidden=(4, 4))
    out = torch.randn(1, 5, 2, requires_grad=True)
    target = torch.rand(5, 2)
    weight = torch.tensor([[1.0, 0.0]]).expand(5, -1)
    loss = ens.member_losses(out, target, weight=weight)
    loss.sum().backward()
    assert out.grad[..., 1].abs().max() == 0 and out.grad[..., 0].abs().min() > 0
    assert loss.item() == pytest.approx(((out[0, :, 0] - target[:, 0]) ** 2).mean().item(), rel=1e-6)


def _brightness_data(g, n=4):
    torch.manual_seed(5)
    with torch.no_grad():
        w = g.mapping(torch.randn(n, g.z_dim))
        ws = w[:, None].repeat(1, g.num_ws, 1)
        img = g.synthesis(ws)
    bright = img.mean(1)
    labels = (bright > bright.flatten(1).median(1).values[:, None, None]).long()
    return ws, labels


def _seg_module(g, ws, labels, model=None, train=None, **kw):
    t = LabelTargets(labels, "segmentation", 16, min_class_pixels=0)
    model = model or LabelGeneratorConfig(n_classes=2, n_members=3, hidden=[32, 16], fp16=False)
    train = train or LabelTrainConfig(lr=1e-2, batch_pixels=64, pixels_per_image=192, images_per_step=2)
    torch.manual_seed(0)
    return LabelGeneratorModule(model, train, in_channels=HypercolumnExtractor(g).channels, **kw).attach(g, ws, t)


def _trainer(tmp_path, steps):
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip


def test_every_computed_pixel_is_used_once_and_matches_its_label():
    g = tiny_gen()
    ws, labels = _brightness_data(g)
    module = _seg_module(g, ws, labels)
    plan = module.plan  # 2 images x 192 px; 3 members x 64 px -> 2 steps per forward
    assert (plan.updates, plan.total) == (2, 384)
    rows = [torch.arange(plan.total)[module.member_index(u, m)] for u in range(2) for m in range(3)]
    assert torch.equal(torch.cat(rows).sort().values, torch.arange(plan.total))  # disjoint, all used
    x, y, w = module.forward_pixels(0)
    assert x.shape == (384, module.ensemble.in_channels) and w is None
    x2, y2, _ = module.forward_pixels(0)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a function of (seed, forward)
    assert not torch.equal(module.forward_pixels(1)[0], x)
    dense = HypercolumnExtractor(g)(ws).permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # every pixel of every image
    nearest = torch.cdist(x.float(), dense.float(), compute_mode="donot_use_mm_for_euclid_dist").min(1)
    assert nearest.values.max() < 1e-4  # each row is a real pixel's hypercolumn ...
    assert torch.equal(y, labels.reshape(-1)[nearest.indices])  # ... and its target is that pixel's label


def test_label_module_learns_brightness_rule(tmp_path):
    g = tiny_gen()
    ws, labels = _brightness_data(g)
    module = _seg_module(g, ws, labels, class_names=["dark", "bright"])
    x, y, _ = module.forward_pixels(0)
    with torch.no_grad():
        before = module.ensemble.member_losses(module.ensemble(x), y).mean().item()
    trainer = _trainer(tmp_path, 12)
    trainer.fit(module, datamodule=LabelDataModule(module.steps_per_epoch))
    module.eval()
    with torch.no_grad():
        after = module.ensemble.member_losses(module.ensemble(x), y).mean().item()
        acc = (module.ensemble.predict(x)["label"] == y).float().mean().item()
    assert after < 0.7 * before and acc > 0.8
    # only the ensemble is optimized and saved: the frozen generator and the W+ codes are neither
    opt_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert opt_params == {id(p) for p in module.ensemble.parameters()}
    assert all(not p.requires_grad for p in g.parameters())
    ckpt = tmp_path / "lg.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert set(state) == {f"ensemble.{k}" for k in module.ensemble.state_dict()}
    loaded = LabelGeneratorModule.load_from_checkpoint(ckpt)
    assert loaded.hparams.class_names == ["dark", "bright"] and loaded.cfg.task == "segmentation"
    assert (loaded.train_cfg.pixels_per_image, loaded.train_cfg.images_per_step) == (192, 2)
    ext = loaded.make_extractor(g)
    assert ext.channels == module.ensemble.in_channels
    loaded.eval()
    torch.testing.assert_close(loaded.ensemble(x), module.ensemble(x))
    small = Generator(resolution=8, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32)
    with pytest.raises(CheckpointError, match="load the generator"):
        loaded.make_extractor(small)


class _Crash(pl.Callback):
    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated kill")


def _fit_seg(stage_dir, max_steps, callbacks=()):
    g = tiny_gen()
    ws, labels = _brightness_data(g)
    module = _seg_module(g, ws, labels, LabelGeneratorConfig(n_classes=2, n_members=2, hidden=[16, 8], fp16=False),
                         LabelTrainConfig(lr=1e-2, batch_pixels=32, pixels_per_image=128, seed=3))  # fmt: skip
    assert (module.plan.updates, module.steps_per_epoch) == (2, 32)  # 2 steps per forward, 32 steps per epoch
    tc = TrainerConfig(accelerator="cpu", max_steps=max_steps, checkpoint_every_n_steps=3, enable_progress_bar=False)
    fit(module, LabelDataModule(module.steps_per_epoch), tc, stage_dir, callbacks=list(callbacks), tensorboard=False)
    return module.ensemble.state_dict()


def test_resume_mid_training_equals_uninterrupted_run(tmp_path):
    reference = _fit_seg(tmp_path / "a", 8)
    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit_seg(tmp_path / "b", 8, callbacks=[_Crash(5)])
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3  # mid-epoch and mid-forward (3 % 2 == 1)
    resumed = _fit_seg(tmp_path / "b", 8)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def _keypoint_toy(g, steps, visible):
    torch.manual_seed(5)
    with torch.no_grad():
        w = g.mapping(torch.randn(4, g.z_dim))
    ws = w[:, None].repeat(1, g.num_ws, 1)
    truth = torch.tensor([[4.0, 11.0], [12.0, 3.0]])
    kps = truth.expand(4, -1, -1).clone()
    kps[~visible] = -1.0
    t = LabelTargets(kps, "keypoints", 16, visible=visible, heatmap_sigma=1.5)
    torch.manual_seed(0)
    model = LabelGeneratorConfig("keypoints", n_keypoints=2, n_members=3, hidden=[32, 16], fp16=False,
                                 heatmap_sigma=1.5)  # fmt: skip
    train = LabelTrainConfig(lr=1e-2, batch_pixels=64, pixels_per_image=192, images_per_step=2)
    module = LabelGeneratorModule(model, train, in_channels=HypercolumnExtractor(g).channels).attach(g, ws, t)
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(module, datamodule=LabelDataModule(module.steps_per_epoch))
    module.eval()
    x = HypercolumnExtractor(g)(ws).permute(0, 2, 3, 1).reshape(-1, module.ensemble.in_channels)
    heat = module.ensemble.predict(x)["heatmap"].reshape(4, 16, 16, 2).permute(0, 3, 1, 2)
    return truth, heat


def test_keypoint_ensemble_finds_keypoints_and_ignores_invisible_ones():
    g = tiny_gen()
    visible = torch.ones(4, 2, dtype=torch.bool)
    visible[:3, 1] = False  # keypoint 1 is invisible (-1, -1) in three of the four images
    truth, heat = _keypoint_toy(g, 100, visible)
    coords, _ = decode_keypoints(heat)
    err = (coords - truth).norm(dim=-1)  # [4 images, 2 keypoints]
    assert err[:, 0].max() < 1.0 and err[3, 1] < 1.0  # known answer: within a pixel where labeled
    # where keypoint 1 was invisible it is still found near (12, 3) -- nothing pulled it to the (-1, -1) corner
    assert err[:3, 1].max() < 3.0 and coords[:, 1].norm(dim=-1).min() > 8.0
    assert heat[:, 1, :3, :3].max() < 0.2


def test_depth_ensemble_regresses_a_known_map(tmp_path):
    g = tiny_gen()
    ws, labels = _brightness_data(g)
    depth = labels.float() * 2 + 1  # 1 on dark pixels, 3 on bright ones
    t = LabelTargets(depth, "depth", 16)
    torch.manual_seed(0)
    model = LabelGeneratorConfig("depth", n_members=2, hidden=[32, 16], fp16=False)
    train = LabelTrainConfig(lr=1e-2, batch_pixels=64, pixels_per_image=128)
    module = LabelGeneratorModule(model, train, in_channels=HypercolumnExtractor(g).channels).attach(g, ws, t)
    _trainer(tmp_path, 80).fit(module, datamodule=LabelDataModule(module.steps_per_epoch))
    module.eval()
    x = HypercolumnExtractor(g)(ws).permute(0, 2, 3, 1).reshape(-1, module.ensemble.in_channels)
    pred = module.ensemble.predict(x)
    mae = (pred["depth"] - depth.reshape(-1)).abs().mean().item()
    assert mae < 0.45 * (depth - depth.mean()).abs().mean().item()  # well below the best constant's error (1.0)
    assert (pred["uncertainty"] >= 0).all()


class _Allocations(TorchDispatchMode):
    """Largest and total bytes of the buffers (>= 1 KiB, views excluded) the ops create -- on the CPU too, where
    tracemalloc cannot see torch's allocator."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        seen = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                n = t.untyped_storage().nbytes()
                if n >= 1024:
                    self.largest, self.total = max(self.largest, n), self.total + n
        return out


@pytest.mark.parametrize("task", ["segmentation", "keypoints"])
def test_training_memory_is_flat_in_the_number_of_labeled_images(task):
    g = tiny_gen()
    stats = {}
    for n in (4, 16):
        torch.manual_seed(1)
        with torch.no_grad():
            ws = g.mapping(torch.randn(n, g.z_dim))[:, None].repeat(1, g.num_ws, 1)
        if task == "segmentation":
            t = LabelTargets(torch.randint(0, 3, (n, 16, 16)), task, 16, n_classes=3, min_class_pixels=0)
            kw = {"n_classes": 3}
        else:
            t = LabelTargets(torch.rand(n, 5, 2) * 15, task, 16)
            kw = {"n_keypoints": 5}
        model = LabelGeneratorConfig(task, n_members=2, hidden=[8, 4], fp16=False, **kw)
        train = LabelTrainConfig(batch_pixels=16, pixels_per_image=96)
        module = LabelGeneratorModule(model, train, in_channels=HypercolumnExtractor(g).channels).attach(g, ws, t)
        module.training_step(0, 0)  # warm-up (lazy init outside the measurement)
        module._cache = None
        with _Allocations() as alloc:
            module.training_step(0, 0)
        state = t.nbytes + module.train_ws.numel() * 4
        stats[n] = (alloc.largest, alloc.total, state / n)
    assert stats[4] == stats[16]  # same tensors per step, same stored bytes per labeled image
    dense_one_image = 16 * 16 * module.ensemble.in_channels * 4
    assert stats[4][0] < dense_one_image  # never materializes even one image's full hypercolumns
    per_image_limit = 16 * 16 + g.num_ws * g.w_dim * 4 if task == "segmentation" else 5 * 9 + g.num_ws * g.w_dim * 4
    assert stats[4][2] == per_image_limit  # a uint8 mask (or 5 coordinates + flags) and a W+ code per image


def test_generator_and_codes_follow_the_trainer_device():
    g = tiny_gen()
    ws, labels = _brightness_data(g)
    module = _seg_module(g, ws, labels)
    module.to("meta")  # what Lightning does with the module before on_fit_start, here to a device with no data
    assert module.train_ws.device.type == "meta"  # the W+ codes are a (non-persistent) buffer of the module
    assert next(g.parameters()).device.type == "cpu"  # the generator is outside the module tree ...
    module.on_fit_start()
    assert next(g.parameters()).device.type == "meta"  # ... and is moved to the module's device when training starts


def test_ignore_index_pixels_carry_no_loss():
    from autolabel.handsoff.label_generator_module import LabelTargets

    lab = torch.zeros(1, 8, 8, dtype=torch.long)
    lab[0, 2:6, 2:6] = 2
    lab[0, 1, :] = 255  # a void border row (VOC)
    t = LabelTargets(lab, "segmentation", 8, ignore_index=255, min_class_pixels=0)
    assert t.n_outputs == 3  # 255 is no class
    idx = torch.arange(64)
    y, w = t.targets(0, idx)
    assert w.reshape(8, 8)[1].eq(0).all() and w.sum() == 56 and y.max() == 2
    suppressed = LabelTargets(lab, "segmentation", 8, ignore_index=255, min_class_pixels=30)
    assert suppressed.labels[0, 1].eq(255).all()  # void is not a small class turned into background
    ens = LabelGeneratorEnsemble(4, "segmentation", n_classes=3, n_members=2, hidden=(4, 4))
    out = torch.randn(2, 64, 3)
    weighted = ens.member_losses(out, y, weight=w)
    keep = w.bool()
    plain = ens.member_losses(out[:, keep], y[keep])
    assert torch.allclose(weighted, plain)  # = cross-entropy over the labeled pixels only


def test_reconstruction_weights_known_answer():
    from autolabel.handsoff.invert import reconstruction_weights

    images = torch.zeros(2, 3, 4, 4)
    recon = torch.full((2, 3, 4, 4), 0.5)  # squared error 0.25 at 26 of the 32 pixels: the median
    recon[0, :, 0, 0] = 2.5  # error 6.25
    recon[1, :, 1:3, 1:3] = 1.5  # error 2.25
    recon[1, :, 3, 3] = 1.5
    w = reconstruction_weights(images, recon, 4, scale=1.0)
    e = (recon**2).mean(1)
    assert torch.allclose(w, torch.exp(-e / (1.0 * 0.25)))
    assert torch.allclose(w[0, 0, 1], torch.tensor(math.exp(-1.0)))  # the median error weighs exp(-1)
    # onto a 2x2 grid: the squared error is area-averaged before the weight is taken
    w2 = reconstruction_weights(images, recon, 2, scale=2.0)
    e2 = torch.nn.functional.avg_pool2d(e[:, None], 2)[:, 0]
    assert w2.shape == (2, 2, 2) and torch.allclose(w2, torch.exp(-e2 / (2.0 * e2.median())))
    with pytest.raises(DataError, match="equal"):
        reconstruction_weights(images, recon[:1], 4, 1.0)
    with pytest.raises(ConfigError, match="scale"):
        reconstruction_weights(images, recon, 4, 0.0)


def test_pixel_weights_become_the_targets_loss_weights():
    pw = torch.rand(2, 4, 4)
    lab = torch.zeros(2, 4, 4, dtype=torch.long)
    lab[:, 1:3, 1:3] = 1
    lab[1, 0, 0] = 255
    idx = torch.tensor([0, 5, 15])
    seg = LabelTargets(lab, "segmentation", 4, min_class_pixels=0, ignore_index=255, pixel_weight=pw)
    y, w = seg.targets(1, idx)
    assert y.tolist() == [0, 1, 0] and torch.allclose(w, pw[1].reshape(-1)[idx] * torch.tensor([0.0, 1.0, 1.0]))
    plain = LabelTargets(lab.clamp_max(1), "segmentation", 4, min_class_pixels=0, pixel_weight=pw)
    assert torch.allclose(plain.targets(0, idx)[1], pw[0].reshape(-1)[idx])
    assert plain.nbytes == 2 * 16 + 2 * 16 * 4
    kp = LabelTargets(torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]] * 2), "keypoints", 4, pixel_weight=pw)
    _, wk = kp.targets(0, idx)  # visibility [P, K] times the pixel's weight
    assert torch.allclose(wk, pw[0].reshape(-1)[idx][:, None] * torch.tensor([1.0, 0.0]))
    depth = LabelTargets(torch.rand(2, 8, 8), "depth", 4, pixel_weight=torch.ones(2, 8, 8) * 0.5)
    assert torch.allclose(depth.targets(0, idx)[1], torch.full((3,), 0.5))  # area-resized onto the 4x4 grid
    sub = seg.subset([1])
    assert torch.equal(sub.pixel_weight, pw[1:]) and torch.equal(sub.targets(0, idx)[1], w)
    assert LabelTargets(lab.clamp_max(1), "segmentation", 4, min_class_pixels=0).targets(0, idx)[1] is None
    with pytest.raises(DataError, match="one \\[H, W\\] map per labeled image"):
        LabelTargets(lab, "segmentation", 4, pixel_weight=pw[:1])
    with pytest.raises(DataError, match=">= 0"):
        LabelTargets(lab, "segmentation", 4, pixel_weight=-pw)


def test_weighted_depth_loss_known_answer():
    ens = LabelGeneratorEnsemble(4, "depth", n_members=2, hidden=(4, 4))
    out = torch.tensor([[[1.0], [3.0]], [[0.0], [0.0]]])  # [M=2, P=2, 1]
    target = torch.tensor([0.0, 1.0])
    w = torch.tensor([3.0, 1.0])
    l1 = ens.member_losses(out, target, "l1", w)
    assert torch.allclose(l1, torch.tensor([(3 * 1 + 1 * 2) / 4, (3 * 0 + 1 * 1) / 4]))
    l2 = ens.member_losses(out, target, "l2", w)
    assert torch.allclose(l2, torch.tensor([(3 * 1 + 1 * 4) / 4, 1 / 4]))
    assert torch.allclose(ens.member_losses(out, target, "l1"), torch.tensor([1.5, 0.5]))
