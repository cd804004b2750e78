"""Several GAN starts (``gan_train.candidates``): each start trains ``candidate_kimg``, the one with the lowest quality
metric goes on -- exactly as a single run of its seed would -- and a killed stage picks the same start again."""

import dataclasses

import pytest
import torch
from PIL import Image

from autolabel.config import TrainerConfig
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.errors import ConfigError
from autolabel.gan import load_generator
from pipelines.stages.gan import candidate_seed, train_gan

GEN = GeneratorConfig(resolution=8, z_dim=8, w_dim=8, n_mapping=1, channel_base=64, channel_max=8)
TC = TrainerConfig(accelerator="cpu", devices=1, enable_progress_bar=False, seed=3)


def _tcfg(**kw) -> GANTrainConfig:
    return GANTrainConfig(batch_size=4, quality_every_kimg=0.012, quality_samples=2, random_backbone=True,
                          ema_kimg=0.01, **kw)  # fmt: skip


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    # 10 images, batch 4, drop_last: 2 steps per epoch; quality every 3 steps, so step 4 is not on the schedule
    for i in range(10):
        Image.fromarray((torch.rand(8, 8, 3, generator=g) * 255).byte().numpy()).save(d / f"{i}.png")
    return d


def _weights(path):
    return {k: v.clone() for k, v in load_generator(path).state_dict().items()}


def _history_in_last_ckpt(run_dir):
    ck = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for v in ck["callbacks"].values() if isinstance(v, dict) and "history" in v]
    return state["history"], int(ck["state_dict"]["n_iter"])


def test_two_starts_keep_the_lowest_metric_and_continue_it_like_a_single_run(images, tmp_path):
    out = train_gan(images, 0.05, GEN, _tcfg(candidates=2, candidate_kimg=0.02), TC, tmp_path / "gan")
    m = out["metrics"]
    best = {i: m[f"candidate{i}_best_fd_vgg"] for i in range(2)}
    assert m["candidate"] == min(best, key=best.get)
    assert m["candidate_seed"] == candidate_seed(3, m["candidate"]) == 3 + 1000 * m["candidate"]
    win_dir = tmp_path / "gan" / "candidates" / str(m["candidate"])
    assert out["outputs"]["checkpoint"] == win_dir / "checkpoints" / "last.ckpt"
    assert (
        str(tmp_path / "gan" / "candidates.png") in out["figures"] and (tmp_path / "gan" / "candidates.png").is_file()
    )
    for i in range(2):  # every start trained 0.02 kimg = 2 epochs = 4 steps; the kept one 0.05 kimg = 5 epochs
        history, n_iter = _history_in_last_ckpt(tmp_path / "gan" / "candidates" / str(i))
        assert n_iter == (10 if i == m["candidate"] else 4)
        assert history[-1]["step"] == n_iter  # the final evaluation is inside last.ckpt
        assert min(r["fd_vgg"] for r in history if r["step"] <= 4) == best[i]

    # the kept start continued exactly as one run of its seed, trained to 0.05 kimg from the start
    single = train_gan(images, 0.05, GEN, _tcfg(), dataclasses.replace(TC, seed=m["candidate_seed"]), tmp_path / "one")
    kept, one = (
        torch.load(p, weights_only=False)["state_dict"]
        for p in (out["outputs"]["checkpoint"], single["outputs"]["checkpoint"])
    )
    assert kept.keys() == one.keys()
    for k, v in one.items():
        torch.testing.assert_close(kept[k], v, rtol=0, atol=0)
    gen = _weights(out["outputs"]["generator"])

    # killed before generator.pt was written: the same start is kept, the same generator comes out
    out["outputs"]["generator"].unlink()
    again = train_gan(images, 0.05, GEN, _tcfg(candidates=2, candidate_kimg=0.02), TC, tmp_path / "gan")
    assert {k: again["metrics"][k] for k in m if k.startswith("candidate")} == {
        k: v for k, v in m.items() if k.startswith("candidate")
    }
    for k, v in _weights(again["outputs"]["generator"]).items():
        torch.testing.assert_close(gen[k], v, rtol=0, atol=0)


def test_a_stage_killed_after_the_starts_keeps_the_same_start(images, tmp_path, monkeypatch):
    """Killed once every start has trained but before the choice was written: fitted again, the finished starts
    (whose training loop Lightning skips) report the same curves from their last.ckpt, so the same start is kept."""
    import autolabel.engine.io as io

    cfg = _tcfg(candidates=2, candidate_kimg=0.02)
    clean = train_gan(images, 0.02, GEN, cfg, TC, tmp_path / "clean")  # kept start: nothing left to train
    write_json = io.write_json

    def killed(path, obj):
        if str(path).endswith("choice.json"):
            raise KeyboardInterrupt
        return write_json(path, obj)

    monkeypatch.setattr(io, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        train_gan(images, 0.02, GEN, cfg, TC, tmp_path / "gan")
    monkeypatch.setattr(io, "write_json", write_json)
    again = train_gan(images, 0.02, GEN, cfg, TC, tmp_path / "gan")
    assert {k: v for k, v in again["metrics"].items() if k.startswith("candidate")} == {
        k: v for k, v in clean["metrics"].items() if k.startswith("candidate")
    }
    gen = _weights(clean["outputs"]["generator"])
    for k, v in _weights(again["outputs"]["generator"]).items():
        torch.testing.assert_close(gen[k], v, rtol=0, atol=0)


def test_candidates_need_the_quality_metric():
    with pytest.raises(ConfigError, match="quality_every_kimg"):
        GANTrainConfig(candidates=2)
    with pytest.raises(ConfigError, match="candidates=0"):
        GANTrainConfig(candidates=0, quality_every_kimg=2)
    with pytest.raises(ConfigError, match="candidate_kimg=0"):
        GANTrainConfig(candidates=2, candidate_kimg=0, quality_every_kimg=2)
    assert GANTrainConfig(candidates=2, quality_every_kimg=2).candidate_kimg == 16.0
