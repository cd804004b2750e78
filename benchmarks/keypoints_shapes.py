"""Keypoint downstream net vs the mean-shape constant on procedural shapes (their 4 extreme points move with the shape).

16 labeled images, 40 test images, the same optimizer steps for every recipe: the mean labeled shape (constant), the
net as shipped (soft-argmax + mean-shape prior + affine augmentation), and ablations without the prior and without
the affine warp. ``--old-module FILE`` adds the previous recipe (heatmap MSE + argmax decoding) from an older
``autolabel/tasks/keypoints.py``, e.g. ``git show cef98c4:platform/autolabel/tasks/keypoints.py > /tmp/old_kp.py``.

    nice -n 10 .venv/bin/python benchmarks/keypoints_shapes.py --size 32 --steps 15 300 [--old-module /tmp/old_kp.py]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, nargs="+", default=[15, 300])
    ap.add_argument("--old-module", default=None, help="an older tasks/keypoints.py to compare with")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/keypoints_shapes.json"))
    a = ap.parse_args()

    import pytorch_lightning as pl
    import torch

    from autolabel.config.downstream import KeypointNetConfig
    from autolabel.data.labeled import LabeledFolder
    from autolabel.data.procedural import make_shapes_dataset
    from autolabel.tasks.compare import ConstantModel, augment, constant_prediction, relative_mean_shape
    from autolabel.tasks.keypoints import evaluate_keypoints
    from autolabel.tasks.keypoints_module import KeypointModule
    from autolabel.tasks.segmentation import DenseDataModule, FlipDataset

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="kp_shapes_"))
    make_shapes_dataset(root / "train", 16, size=a.size, seed=0)
    make_shapes_dataset(root / "test", 40, size=a.size, seed=1)
    train = LabeledFolder(root / "train", task="keypoints", size=a.size)
    test = LabeledFolder(root / "test", task="keypoints", size=a.size)
    old = None
    if a.old_module:
        spec = importlib.util.spec_from_file_location("old_keypoints", a.old_module)
        old = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(old)  # type: ignore[union-attr]

    def fit(module, data, steps):
        dm = DenseDataModule(root, None, "keypoints", None, 8)
        dm.train_set, dm.val_set = data, None
        trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
        trainer.fit(module, datamodule=dm)
        return module.eval().model

    flips = FlipDataset(train, flip_pairs=[(2, 3)])
    res: dict = {"mean shape (constant)": evaluate_keypoints(ConstantModel(constant_prediction(train, "keypoints"),
                                                                           "keypoints"), test)}  # fmt: skip
    for steps in a.steps:
        if old is not None:
            pl.seed_everything(0, verbose=False)
            o = old.evaluate_keypoints(fit(old.KeypointModule(4, 3, 16, 2, 1e-3, 1.5), flips, steps), test)
            res[f"old: heatmap MSE + argmax, {steps} steps"] = {"pck@0.1": o["pck@0.1"], "nme": o["nme"]}
        for name, prior, affine in (("shipped: soft-argmax + prior + affine", True, True),
                                    ("without the prior", False, True), ("without affine (flips only)", True, False)):  # fmt: skip
            pl.seed_everything(0, verbose=False)
            module = KeypointModule(KeypointNetConfig(16, 2, 1e-3, 1.5), n_keypoints=4,
                                    mean_shape=relative_mean_shape(train) if prior else None)  # fmt: skip
            data = augment(train, "keypoints", 0, [[2, 3]]) if affine else flips
            res[f"{name}, {steps} steps"] = evaluate_keypoints(fit(module, data, steps), test)
    print("| recipe | PCK@0.1 | PCK@0.05 | NME (diagonal) | NME (bbox) |\n|---|---|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v['pck@0.1']:.3f} | {v.get('pck@0.05', float('nan')):.3f} | {v['nme']:.3f} | "
              f"{v.get('nme_bbox', float('nan')):.3f} |")  # fmt: skip
    out = {"benchmark": "keypoints_shapes", "date": dt.date.today().isoformat(), "settings": vars(a),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg": os.getloadavg()},
           "results": res}  # fmt: skip
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
