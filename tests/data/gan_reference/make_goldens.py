"""Hand-run: render the reference images of tests/unit/test_gan_reference.py with the ORIGINAL implementations.

rosinality: python make_goldens.py rosinality REF_DIR
  REF_DIR holds rosinality/stylegan2-pytorch's model.py (commit bef283a) and an `op` package of pure-torch CPU stand-ins
  for its CUDA ops (fused_leaky_relu, FusedLeakyReLU, upfirdn2d, conv2d_gradfix; see the README next to this file).
  The checkpoint is loaded with load_state_dict(strict=True), so every hand-written name and shape is checked against
  the original module tree.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _test_module():
    spec = importlib.util.spec_from_file_location("test_gan_reference", HERE.parents[1] / "unit" / "test_gan_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rosinality(ref_dir: str) -> None:
    sys.path.insert(0, ref_dir)
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


if __name__ == "__main__":
    {"rosinality": rosinality}[sys.argv[1]](*sys.argv[2:])
