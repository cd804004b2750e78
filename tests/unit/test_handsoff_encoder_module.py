"""EncoderModule: two-phase training with a hard cap, frozen generator, checkpoints."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from test_handsoff_encoder import _loader, _trainer, real_generator, tiny_generator

from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from autolabel.errors import DataError
from autolabel.handsoff.encoder_module import EncoderModule


def test_phase1_loss_drops_and_generator_frozen() -> None:
    g = tiny_generator()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    train = EncoderTrainConfig(phase1_steps=20, finetune_steps=0, lr=5e-3, batch_size=4, style_mix_prob=0.0)
    module = EncoderModule(generator=g, encoder=EncoderConfig(width=4, max_width=8), train=train)
    torch.manual_seed(0)
    with torch.no_grad():
        ws = module.sample_ws(16)
        x = g.synthesis(ws, noise_mode="const")

    def eval_loss() -> float:
        module.encoder.eval()
        with torch.no_grad():
            ws_hat = module.encoder(x)
            return float(5 * torch.nn.functional.mse_loss(ws_hat, ws)
                         + torch.nn.functional.mse_loss(g.synthesis(ws_hat, noise_mode="const"), x))  # fmt: skip

    start = eval_loss()
    trainer = _trainer(100)
    trainer.fit(module, train_dataloaders=_loader(n=200))
    assert trainer.global_step == 20  # hard stop at phase1_steps + finetune_steps, not the trainer's 100
    assert eval_loss() < 0.85 * start  # 0.52 -> 0.40 on this seed
    assert all(not p.requires_grad for p in g.parameters())
    for k, v in g.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_phase_switch_and_hard_stop(tmp_path) -> None:
    g = tiny_generator()
    seen: list[tuple[int, int, bool]] = []

    class Spy(EncoderModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            seen.append((self.global_step, self.phase(), "train/lpips" in self.trainer.callback_metrics))
            return loss

    lp_calls = []

    def fake_lpips(a, b):  # a stand-in LPIPS: per-image L1, records that phase 2 used it
        lp_calls.append(a.shape[0])
        return (a - b).abs().flatten(1).mean(1).view(-1, 1, 1, 1)

    lp = torch.nn.Module()
    lp.forward = fake_lpips
    train = EncoderTrainConfig(phase1_steps=3, finetune_steps=2, lr=1e-3, batch_size=2)
    module = Spy(generator=g, encoder={"width": 4, "max_width": 8}, train=train, lpips=lp)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=50, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, train_dataloaders=_loader(n=40))
    assert trainer.global_step == 5
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4]
    assert [p for _, p, _ in seen] == [1, 1, 1, 2, 2]
    assert lp_calls == [4, 4]  # LPIPS only in phase 2, on the real batches


def test_checkpoint_roundtrip(tmp_path) -> None:
    g = tiny_generator()
    module = EncoderModule(
        generator=g, encoder={"width": 4, "max_width": 8}, train={"phase1_steps": 2, "finetune_steps": 0}
    )
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, train_dataloaders=_loader())
    path = tmp_path / "enc.ckpt"
    trainer.save_checkpoint(path)
    from autolabel.handsoff.encoder_module import load_encoder

    loaded = load_encoder(path, generator=tiny_generator())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    module.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), module(x), atol=1e-5)


def test_load_encoder_missing(tmp_path) -> None:
    from autolabel.errors import CheckpointError
    from autolabel.handsoff.encoder_module import load_encoder

    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "nope.ckpt")


def test_phase2_wrong_shape_batch() -> None:
    g = tiny_generator()
    module = EncoderModule(generator=g, encoder={"width": 4, "max_width": 8}, train={"phase1_steps": 0, "finetune_steps": 1},
                           lpips=None)  # fmt: skip
    module.train_cfg.lpips_weight = 0.0
    with pytest.raises(DataError, match="resize the dataset"):
        module.training_step(torch.zeros(2, 3, 32, 32), 0)


def test_real_generator_one_step_each_mode() -> None:
    g = real_generator()
    before = [p.clone() for p in g.parameters()]
    for mode in ("pyramid", "restyle"):
        module = EncoderModule(generator=g, encoder={"width": 4, "max_width": 8, "mode": mode, "n_iters": 2},
                               train={"phase1_steps": 1, "finetune_steps": 0, "batch_size": 2})  # fmt: skip
        opt = module.configure_optimizers()
        loss = module._generated_loss(2)[0]
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        assert module(torch.zeros(1, 3, 16, 16)).shape == (1, g.num_ws, g.w_dim)
    assert all(torch.equal(a, b) for a, b in zip(before, g.parameters(), strict=True))


def test_sample_ws_under_bf16_autocast_keeps_fp32_latents() -> None:
    # Under 16-/bf16-mixed the mapping net returns half precision while w_avg is an fp32 buffer: lerp must not mix them.
    g = real_generator()  # the StyleGAN2 mapping net (its lerp casts w_avg to the input dtype)
    train = EncoderTrainConfig(phase1_steps=1, finetune_steps=0, batch_size=2, style_mix_prob=0.0)
    module = EncoderModule(generator=g, encoder=EncoderConfig(width=4, max_width=8), train=train)
    torch.manual_seed(0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ws = module.sample_ws(3)
    assert ws.dtype == torch.float32 and ws.shape == (3, g.num_ws, g.w_dim)
    assert torch.isfinite(ws).all()
