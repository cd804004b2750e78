"""GANModule: a few manual-optimization steps under pl.Trainer, EMA, config validation, datamodule."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset

from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.errors import ConfigError, DataError
from autolabel.gan import GANDataModule, GANModule

GEN = dict(resolution=16, z_dim=16, w_dim=16, n_mapping=2, channel_base=64, channel_max=32)


def _trainer(iters, **kw):
    # manual optimization: Lightning's max_steps counts every optimizer step, so bound iterations by batches instead
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=iters, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)  # fmt: skip


def _dm(n=8, batch=4):
    torch.manual_seed(0)
    return GANDataModule(dataset=TensorDataset(torch.rand(n, 3, 16, 16) * 2 - 1), batch_size=batch)


class _Rec(pl.Callback):
    def __init__(self):
        self.logs = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.logs.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_few_steps_change_g_ema_log_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    train = dict(batch_size=2, r1_interval=2, pl_weight=2.0, pl_interval=2, ema_kimg=0.001, augment_p=0.2,
                 ada_target=0.6, ada_kimg=0.001, ada_interval=1)  # fmt: skip
    m = GANModule(GEN, train)
    before = [p.detach().clone() for p in m.g_ema.parameters()]
    rec = _Rec()
    t = _trainer(3, callbacks=[rec], default_root_dir=tmp_path)
    t.fit(m, datamodule=_dm(n=6, batch=2))
    assert int(m.n_iter) == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, m.g_ema.parameters()))
    assert all(not p.requires_grad for p in m.g_ema.parameters())
    keys = set().union(*[r.keys() for r in rec.logs])
    assert {"train/g_loss", "train/d_loss", "train/r1", "train/pl"} <= keys
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rec.logs)
    assert torch.any(m.g_ema.w_avg) and float(m.mean_path_length) > 0
    assert m.augment.p != 0.2  # ADA-style controller moved p
    grid = m.sample_grid(n=4)
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    m2 = GANModule.load_from_checkpoint(path)
    assert int(m2.n_iter) == 3
    assert m2.augment.p == m.augment.p == float(m.ada.p)  # restored from the controller's buffer, not augment_p
    assert all(torch.equal(a, b) for a, b in zip(m.g_ema.state_dict().values(), m2.g_ema.state_dict().values()))


def _one_step_update(precision: str) -> tuple[dict, set]:
    """Parameter change of one full step (D, R1, G, path length) from a fixed init and seed, and the dtypes seen."""
    torch.manual_seed(0)
    m = GANModule(GEN, dict(batch_size=4, r1_interval=1, pl_weight=2.0, pl_interval=1, augment="none",
                            style_mixing_prob=0.0))  # fmt: skip
    init = {k: v.detach().clone() for k, v in m.named_parameters() if not k.startswith("g_ema.")}
    seen = set()
    m.discriminator.convs.register_forward_hook(lambda mod, i, o: seen.add(("D", o.dtype)))
    m.generator.convs[-1].register_forward_hook(lambda mod, i, o: seen.add(("G", o.dtype)))
    rec = _Rec()
    torch.manual_seed(1)
    _trainer(1, precision=precision, callbacks=[rec]).fit(m, datamodule=_dm())
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rec.logs)
    assert {"train/r1", "train/pl"} <= rec.logs[-1].keys() and rec.logs[-1]["train/r1"] > 0
    return {k: v.detach() - init[k] for k, v in m.named_parameters() if k in init}, seen


def test_bf16_mixed_step_matches_fp32_step():
    ref, seen32 = _one_step_update("32-true")
    bf, seen16 = _one_step_update("bf16-mixed")
    assert seen32 == {("D", torch.float32), ("G", torch.float32)}
    # autocast really ran the D/G passes in bf16, while R1 and path length ran in fp32
    assert seen16 == {("D", torch.bfloat16), ("D", torch.float32), ("G", torch.bfloat16), ("G", torch.float32)}
    for net in ("generator.", "discriminator."):
        a = torch.cat([v.flatten() for k, v in ref.items() if k.startswith(net)])
        b = torch.cat([v.flatten() for k, v in bf.items() if k.startswith(net)])
        assert torch.isfinite(b).all() and (b != 0).float().mean() > 0.99  # every network was stepped
        moved = a != 0
        # Adam's first step is ~lr * sign(grad): bf16 must push (almost) every weight the same way as fp32
        assert ((a * b) > 0)[moved].float().mean() > 0.95, net


def test_ada_in_module_uses_the_fraction_of_positive_reals():
    m = GANModule(GEN, dict(batch_size=8, augment_p=0.5, ada_target=0.6, ada_kimg=1.0, ada_interval=2))
    pred = torch.cat([torch.full((6, 1), 0.3), torch.full((2, 1), -4.0)])  # mean D(real) < 0 but r_t = 0.5
    m._ada_update(pred)
    assert m.augment.p == 0.5
    m._ada_update(pred)
    assert m.augment.p == pytest.approx(0.5 - 16 / 1000, abs=1e-12)  # r_t < target -> p down by 2 x 8 / 1000
    for _ in range(2):
        m._ada_update(-pred)  # r_t = -0.5
    assert m.augment.p == pytest.approx(0.5 - 32 / 1000, abs=1e-12)
    for _ in range(2):
        m._ada_update(torch.ones(8, 1))  # r_t = 1 > target -> up
    assert m.augment.p == pytest.approx(0.5 - 16 / 1000, abs=1e-12)


def test_ada_state_survives_a_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = GANModule(GEN, dict(batch_size=2, augment_p=0.5, ada_target=0.6, ada_kimg=0.01, ada_interval=2))
    t = _trainer(3, default_root_dir=tmp_path)
    t.fit(m, datamodule=_dm(n=6, batch=2))
    # 3 steps: one update after step 2, then step 3 is accumulated and pending
    assert int(m.ada.steps) == 1 and int(m.ada.count) == 2 and m.augment.p != 0.5
    t.save_checkpoint(tmp_path / "m.ckpt")
    m2 = GANModule.load_from_checkpoint(tmp_path / "m.ckpt")
    for k in ("p", "sign_sum", "count", "steps"):
        assert torch.equal(getattr(m2.ada, k), getattr(m.ada, k)), k
    assert m2.augment.p == m.augment.p
    m3 = GANModule(GEN, dict(batch_size=2, augment_p=0.5, ada_target=0.6, ada_kimg=0.01, ada_interval=2))
    sd = torch.load(tmp_path / "m.ckpt", weights_only=False)["state_dict"]
    m3.load_state_dict(sd)  # what a resume does
    assert m3.augment.p == m.augment.p
    old = GANModule(GEN, dict(batch_size=2, augment_p=0.5, ada_target=0.6, ada_kimg=0.01, ada_interval=2))
    with pytest.warns(UserWarning, match="no ADA state"):  # a checkpoint from before the state was saved
        old.load_state_dict({k: v for k, v in sd.items() if not k.startswith("ada.")})
    assert old.augment.p == 0.5 and int(old.n_iter) == 3
    pred = torch.tensor([[1.0], [-1.0]])
    for mod in (m, m2):  # the pending step completes the interval identically
        mod._ada_update(pred)
    assert m2.augment.p == m.augment.p and int(m2.ada.steps) == 0


def test_style_mixing_feeds_two_latents_to_synthesis():
    def recorded(prob: float) -> list[torch.Tensor]:
        torch.manual_seed(0)
        m = GANModule(GEN, dict(batch_size=4, style_mixing_prob=prob, r1_gamma=0.0))
        seen = []
        orig = m.generator.synthesis
        m.generator.synthesis = lambda ws, **kw: (seen.append(ws.detach().clone()), orig(ws, **kw))[1]
        _trainer(2).fit(m, datamodule=_dm())
        return seen

    mixed = recorded(1.0)
    assert len(mixed) == 4  # D fakes + G fakes, 2 steps
    for ws in mixed:
        same = (ws[:, 1:] == ws[:, :1]).all(dim=(0, 2))  # which rows still equal row 0
        cutoff = 1 + int(same.long().cumprod(0).sum())
        assert 1 <= cutoff < ws.shape[1]  # a crossover inside the W+ stack
        assert not torch.allclose(ws[:, cutoff - 1], ws[:, cutoff])  # rows differ across it ...
        assert (ws[:, cutoff:] == ws[:, cutoff : cutoff + 1]).all()  # ... and the tail is one latent
    for ws in recorded(0.0):
        assert (ws == ws[:, :1]).all()  # no mixing: one w broadcast to every layer


def test_r1_gamma_heuristic_default_and_override():
    from omegaconf import OmegaConf

    from autolabel.config.gan import r1_gamma_heuristic

    assert GANTrainConfig().r1_gamma is None
    assert r1_gamma_heuristic(64, 16) == pytest.approx(0.0512)  # StyleGAN2-ADA 'auto': 0.0002 * res^2 / batch
    assert r1_gamma_heuristic(256, 32) == pytest.approx(0.4096)
    assert GANModule(GEN, dict(batch_size=4)).r1_gamma == pytest.approx(0.0002 * 16**2 / 4)
    assert GANModule(GEN, dict(batch_size=4, r1_gamma=2.5)).r1_gamma == 2.5
    assert GANModule(GEN, dict(batch_size=4, r1_gamma=0.0)).r1_gamma == 0.0
    cfg = OmegaConf.merge(OmegaConf.structured(GANTrainConfig), {"r1_gamma": 1.0})
    assert cfg.r1_gamma == 1.0 and OmegaConf.structured(GANTrainConfig).r1_gamma is None
    with pytest.raises(ConfigError, match="r1_gamma"):
        GANTrainConfig(r1_gamma=-1.0)


def test_setup_refuses_true_half_precision_and_ddp_without_unused_parameter_detection():
    from types import SimpleNamespace

    from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

    m = GANModule(GEN, dict(batch_size=4))
    m._trainer = SimpleNamespace(precision="bf16-true", strategy=SingleDeviceStrategy("cpu"))
    with pytest.raises(ConfigError, match="precision='bf16-true'"):
        m.setup("fit")
    m._trainer = SimpleNamespace(precision="32-true", strategy=DDPStrategy())
    with pytest.raises(ConfigError, match="ddp_find_unused_parameters_true"):
        m.setup("fit")
    m._trainer = SimpleNamespace(precision="bf16-mixed", strategy=DDPStrategy(find_unused_parameters=True))
    m.setup("fit")  # accepted
    m._trainer = None


def test_fit_gan_picks_a_ddp_strategy_that_finds_unused_parameters():
    from autolabel.config import TrainerConfig
    from pipelines.stages.gan import gan_strategy

    def s(**kw):
        return gan_strategy(TrainerConfig(**kw))

    assert s(strategy="ddp", devices=2) == "ddp_find_unused_parameters_true"
    assert s(strategy="ddp_spawn", devices=2) == "ddp_spawn_find_unused_parameters_true"
    assert s(strategy="auto", devices=2) == s(strategy="auto", devices=[0, 1]) == "ddp_find_unused_parameters_true"
    assert s(strategy="auto", devices="0,1") == s(strategy="auto", num_nodes=2) == "ddp_find_unused_parameters_true"
    assert s(strategy="auto", devices=1) == s(strategy="auto", devices="auto", accelerator="cpu") == "auto"
    assert s(strategy="ddp_find_unused_parameters_true", devices=2) == "ddp_find_unused_parameters_true"
    assert s(strategy="fsdp", devices=2) == "fsdp"


def _ema_after_one_update(train: dict, n_iter: int) -> list[torch.Tensor]:
    m = GANModule(GEN, train)
    with torch.no_grad():
        for p in m.generator.parameters():
            p.zero_()
        for p in m.g_ema.parameters():
            p.fill_(1.0)
        m.n_iter.fill_(n_iter)
    m.update_ema(4)
    return list(m.g_ema.parameters())


def test_ema_half_life():
    ema = _ema_after_one_update(dict(batch_size=4, ema_kimg=0.004, ema_rampup=0.0), 0)  # half-life = 4 images
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in ema)


def test_ema_rampup_caps_the_half_life_early_in_training():
    # first step: half-life = 0.05 x 4 images seen = 0.2 images -> g_ema ~ G (0), not its init (1)
    early = _ema_after_one_update(dict(batch_size=4, ema_kimg=0.004, ema_rampup=0.05), 0)
    assert all(float(p.max()) < 1e-4 for p in early)
    # after 4 * 20 = 80 images the cap (0.05 x 80 = 4 images) reaches ema_kimg: plain half-life again
    late = _ema_after_one_update(dict(batch_size=4, ema_kimg=0.004, ema_rampup=0.05), 19)
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in late)


def test_no_augment_option():
    m = GANModule(GEN, dict(batch_size=4, augment="none", r1_gamma=0.0))
    assert m.augment is None and m.ada is None
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(m._aug(x), x)


def test_config_validation_and_errors():
    with pytest.raises(ConfigError, match="power of two"):
        GeneratorConfig(resolution=100)
    with pytest.raises(ConfigError, match="augment"):
        GANTrainConfig(augment="ada")
    with pytest.raises(ConfigError, match="r1_interval"):
        GANTrainConfig(r1_interval=0)
    with pytest.raises(ConfigError, match="lr"):
        GANTrainConfig(lr=-1)
    with pytest.raises(ConfigError, match="style_mixing_prob"):
        GANTrainConfig(style_mixing_prob=1.5)
    with pytest.raises(ConfigError, match="ada_interval"):
        GANTrainConfig(ada_interval=0)
    with pytest.raises(DataError, match="image folder"):
        GANDataModule()
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(GANTrainConfig)
    assert cfg.r1_interval == 16 and OmegaConf.structured(GeneratorConfig).n_mapping == 8


def test_nan_images_refused():
    m = GANModule(GEN, dict(batch_size=4))
    bad = torch.full((4, 3, 16, 16), float("nan"))
    with pytest.raises(DataError, match="NaN"):
        m.training_step((bad,), 0)


def test_image_folder_datamodule(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray((torch.rand(20, 20, 3) * 255).byte().numpy()).save(tmp_path / f"{i}.png")
    dm = GANDataModule(root=str(tmp_path), size=16, batch_size=2)
    dm.setup("fit")
    x = next(iter(dm.train_dataloader()))[0]
    assert x.shape == (2, 3, 16, 16) and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("mirror", [False, True])
def test_mirror_shows_the_discriminator_real_images_or_their_mirror_images(mirror):
    torch.manual_seed(0)
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    m = GANModule(GEN, dict(batch_size=8, augment="none", r1_gamma=0.0, mirror=mirror))
    seen = []
    m.discriminator.register_forward_hook(lambda mod, i, o: seen.append(i[0].detach().clone()))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(m, datamodule=GANDataModule(dataset=TensorDataset(real), batch_size=8))
    reals = seen[0::3]  # per step: D(real), D(fake) for D's loss, D(fake) for G's loss
    assert len(reals) == 3
    flipped = 0
    for batch in reals:  # rows in shuffled order: each must be one of the real images, or its mirror image
        plain = [bool((row == real).flatten(1).all(1).any()) for row in batch]
        mirrored = [bool((row == real.flip(-1)).flatten(1).all(1).any()) for row in batch]
        assert all(p or q for p, q in zip(plain, mirrored))
        flipped += sum(q and not p for p, q in zip(plain, mirrored))
    assert (flipped > 0) == mirror  # 24 draws at p 0.5: none mirrored with probability 6e-8
