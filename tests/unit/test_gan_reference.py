"""Checkpoint import against reference renders: a tiny generator written in the ORIGINAL layout of a format (names and
shapes spelled out here from the format itself, not from the importer's mapping), loaded by autolabel, must draw the
image the format's own code draws from the same file. The reference images under tests/data/gan_reference/ were rendered
by the original implementation (see make_goldens.py there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autolabel.gan import load_generator

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "gan_reference"
SIZE, STYLE, N_MLP, CH = 16, 16, 2, 512  # rosinality's channel table gives 512 channels up to 32 px


def _blur_kernel(scale: float) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    return k / k.sum() * scale


def rosinality_checkpoint(seed: int = 0) -> dict:
    """A ``convert_weight.py``-style file ``{"g_ema": state_dict, "latent_avg": w}`` of rosinality's Generator(size=16,
    style_dim=16, n_mlp=2), every name and shape written out from rosinality's model.py layout, values seeded."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g) * scale + shift

    sd: dict[str, torch.Tensor] = {}
    for i in range(1, N_MLP + 1):  # style.0 is PixelNorm
        sd[f"style.{i}.weight"] = rnd(STYLE, STYLE, scale=100.0)  # EqualLinear(lr_mul=0.01) stores weight / lr_mul
        sd[f"style.{i}.bias"] = rnd(STYLE, scale=10.0)
    sd["input.input"] = rnd(1, CH, 4, 4)

    def styled(name: str, up: bool) -> None:
        sd[f"{name}.conv.weight"] = rnd(1, CH, CH, 3, 3)
        sd[f"{name}.conv.modulation.weight"] = rnd(CH, STYLE)
        sd[f"{name}.conv.modulation.bias"] = rnd(CH, scale=0.1, shift=1.0)  # bias_init=1
        if up:
            sd[f"{name}.conv.blur.kernel"] = _blur_kernel(4.0)  # Blur(..., upsample_factor=2)
        sd[f"{name}.noise.weight"] = rnd(1, scale=0.5)
        sd[f"{name}.activate.bias"] = rnd(CH, scale=0.2)

    def to_rgb(name: str, up: bool) -> None:
        if up:
            sd[f"{name}.upsample.kernel"] = _blur_kernel(4.0)  # Upsample(factor=2)
        sd[f"{name}.conv.weight"] = rnd(1, 3, CH, 1, 1)
        sd[f"{name}.conv.modulation.weight"] = rnd(CH, STYLE)
        sd[f"{name}.conv.modulation.bias"] = rnd(CH, scale=0.1, shift=1.0)
        sd[f"{name}.bias"] = rnd(1, 3, 1, 1, scale=0.2)

    styled("conv1", False)
    to_rgb("to_rgb1", False)
    for j, _res in enumerate((8, 16)):
        styled(f"convs.{2 * j}", True)
        styled(f"convs.{2 * j + 1}", False)
        to_rgb(f"to_rgbs.{j}", True)
    for i, res in enumerate((4, 8, 8, 16, 16)):
        sd[f"noises.noise_{i}"] = rnd(1, 1, res, res)
    return {"g_ema": sd, "latent_avg": rnd(STYLE)}


def reference_z() -> torch.Tensor:
    return torch.randn(2, STYLE, generator=torch.Generator().manual_seed(123))


def test_rosinality_checkpoint_draws_the_reference_image(tmp_path):
    path = tmp_path / "stylegan2-tiny.pt"
    torch.save(rosinality_checkpoint(), path)
    g = load_generator(path).eval()
    assert (g.resolution, g.z_dim, g.w_dim, g.n_mapping) == (SIZE, STYLE, STYLE, N_MLP)
    with torch.no_grad():
        img = g(reference_z(), truncation_psi=1.0, noise_mode="const").numpy()
    want = np.load(GOLDEN / "rosinality_16.npy")
    assert img.shape == want.shape == (2, 3, SIZE, SIZE)
    assert float(np.abs(want).mean()) > 0.05  # the reference is a real picture, not zeros
    np.testing.assert_allclose(img, want, atol=2e-4, rtol=1e-3)
    with torch.no_grad():  # truncation toward the stored average latent, as rosinality's truncation_latent
        t = g(reference_z(), truncation_psi=0.5, noise_mode="const").numpy()
    np.testing.assert_allclose(t, np.load(GOLDEN / "rosinality_16_trunc05.npy"), atol=2e-4, rtol=1e-3)


def test_nvidia_pickle_draws_the_reference_image():
    """nvidia_16.pkl is NVIDIA's own pickled module tree (stylegan2-ada-pytorch's persistence, conv_clamp 256, noise
    strengths, biases and w_avg all non-zero); it is read without importing dnnlib/torch_utils."""
    import sys

    g = load_generator(GOLDEN / "nvidia_16.pkl").eval()
    assert not any(m.split(".")[0] in ("dnnlib", "torch_utils", "training") for m in sys.modules)
    assert (g.resolution, g.z_dim, g.w_dim) == (16, 16, 16)
    with torch.no_grad():
        img = g(reference_z(), truncation_psi=1.0, noise_mode="const").numpy()
        trunc = g(reference_z(), truncation_psi=0.5, noise_mode="const").numpy()
    want = np.load(GOLDEN / "nvidia_16.npy")
    assert float(np.abs(want).mean()) > 0.05
    np.testing.assert_allclose(img, want, atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(trunc, np.load(GOLDEN / "nvidia_16_trunc05.npy"), atol=2e-4, rtol=1e-3)
