"""Hand-run: render the reference images of tests/unit/test_gan_reference.py with the ORIGINAL implementations.

rosinality: python make_goldens.py rosinality REF_DIR
  REF_DIR holds rosinality/stylegan2-pytorch's model.py (commit bef283a). Its CUDA ops are replaced by the pure-torch
  CPU stand-ins in ref_ops/op/ (fused_leaky_relu, FusedLeakyReLU, upfirdn2d, conv2d_gradfix, written from the ops'
  documented semantics).
  The checkpoint is loaded with load_state_dict(strict=True), so every hand-written name and shape is checked against
  the original module tree.

nvidia: python make_goldens.py nvidia REF_DIR
  REF_DIR is a checkout of NVlabs/stylegan2-ada-pytorch (commit d72cc7d). Builds its training.networks.Generator (16 px,
  z/w 16, 2 mapping layers, channel_max 32, conv_clamp 256), perturbs every parameter and the w_avg / noise_const
  buffers with seeded noise, renders with its reference (CPU) ops, and pickles {"G", "D", "G_ema", ...} with its own
  persistence module -- the original module tree -- except that the embedded networks.py source text is replaced by a
  placeholder (licence; autolabel's restricted unpickler never runs it).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _test_module():
    spec = importlib.util.spec_from_file_location(
        "test_gan_reference", HERE.parents[1] / "unit" / "test_gan_reference.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rosinality(ref_dir: str) -> None:
    sys.path[:0] = [ref_dir, str(HERE / "ref_ops")]
    from model import Generator  # rosinality's model.py

    t = _test_module()
    ckpt = t.rosinality_checkpoint()
    g = Generator(t.SIZE, t.STYLE, t.N_MLP, channel_multiplier=2).eval()
    g.load_state_dict(ckpt["g_ema"], strict=True)
    with torch.no_grad():
        img, _ = g([t.reference_z()], randomize_noise=False)
        trunc, _ = g([t.reference_z()], randomize_noise=False, truncation=0.5, truncation_latent=ckpt["latent_avg"])
    np.save(HERE / "rosinality_16.npy", img.numpy().astype(np.float32))
    np.save(HERE / "rosinality_16_trunc05.npy", trunc.numpy().astype(np.float32))
    print("rosinality", img.shape, float(img.abs().mean()))


def nvidia(ref_dir: str) -> None:
    import pickle

    sys.path.insert(0, ref_dir)
    from training.networks import Generator  # NVIDIA's networks.py

    torch.manual_seed(0)
    G = Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=256),
    ).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, p in G.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim <= 1 else 0.5))
        for name, b in G.named_buffers():
            if name.endswith("w_avg") or name.endswith("noise_const"):
                b.copy_(torch.randn(b.shape, generator=g))
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        img = G(z, None, truncation_psi=1.0, noise_mode="const", force_fp32=True)
        trunc = G(z, None, truncation_psi=0.5, noise_mode="const", force_fp32=True)
    for m in G.modules():
        if hasattr(type(m), "_orig_module_src"):
            type(m)._orig_module_src = "# networks.py source omitted from this test fixture"
    with open(HERE / "nvidia_16.pkl", "wb") as f:
        pickle.dump({"G": G, "D": None, "G_ema": G, "augment_pipe": None, "training_set_kwargs": None}, f)
    np.save(HERE / "nvidia_16.npy", img.numpy().astype(np.float32))
    np.save(HERE / "nvidia_16_trunc05.npy", trunc.numpy().astype(np.float32))
    print("nvidia", img.shape, float(img.abs().mean()))


if __name__ == "__main__":
    {"rosinality": rosinality, "nvidia": nvidia}[sys.argv[1]](*sys.argv[2:])
