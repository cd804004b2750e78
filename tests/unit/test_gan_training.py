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
                 ada_target=0.6, ada_kimg=0.001)  # fmt: skip
    m = GANModule(GEN, train)
    m.ada.interval = 1
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
    assert all(torch.equal(a, b) for a, b in zip(m.g_ema.state_dict().values(), m2.g_ema.state_dict().values()))


def test_bf16_mixed_no_nan():
    torch.manual_seed(0)
    m = GANModule(GEN, dict(batch_size=4, r1_interval=1))
    _trainer(1, precision="bf16-mixed").fit(m, datamodule=_dm())
    assert all(torch.isfinite(p).all() for p in m.parameters())


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
