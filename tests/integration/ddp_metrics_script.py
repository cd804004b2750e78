"""Run by tests/integration/test_ddp_metrics.py: validate the same fixed nets on the same 8 images on 2 gloo ranks
(Lightning's subprocess launcher re-executes this file) and print, on rank 0, the synced val metrics next to the
single-process values computed from all 8 images and from rank 0's half alone."""

from __future__ import annotations

import json
import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from autolabel.config.downstream import KeypointNetConfig, SegmentationNetConfig
from autolabel.metrics.dense import confusion_matrix, keypoint_norms, miou
from autolabel.tasks.keypoints_module import KeypointModule
from autolabel.tasks.segmentation_module import SegmentationModule


class Items(Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def make_items(n: int = 8, size: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        mask = (torch.rand(size, size, generator=g) < (0.2 + 0.08 * i)).long()  # ranks see different class balances
        mask[0, 0] = 255  # an ignored pixel
        kp = torch.rand(3, 2, generator=g) * (size - 1)
        items.append({"image": torch.rand(3, size, size, generator=g), "mask": mask, "keypoints": kp,
                      "visible": torch.tensor([True, True, i % 3 != 0])})  # fmt: skip
    return items


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    items = make_items()
    loader = DataLoader(Items(items), batch_size=2, shuffle=False)
    torch.manual_seed(0)
    seg = SegmentationModule(SegmentationNetConfig(base=4, depth=1), n_classes=2)
    torch.manual_seed(1)
    kpm = KeypointModule(KeypointNetConfig(base=4, depth=1), n_keypoints=3)
    results = {}
    for name, module in (("seg", seg), ("kp", kpm)):
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
        trainer.validate(module, loader, verbose=False)
        results[name] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        results["world_size"] = trainer.world_size
    if trainer.global_rank != 0:
        return
    seg.eval()
    kpm.eval()
    with torch.no_grad():
        imgs = torch.stack([it["image"] for it in items])
        pred = seg(imgs).argmax(1)
        kp_pred = kpm.model.predict(imgs)
    masks = torch.stack([it["mask"] for it in items])
    kp = torch.stack([it["keypoints"] for it in items])
    vis = torch.stack([it["visible"] for it in items])

    def seg_miou(idx: list[int]) -> float:
        return miou(confusion_matrix(pred[idx], masks[idx], 2, ignore_index=255))[0]

    def kp_nme(idx: list[int]) -> float:
        norm = keypoint_norms(kp[idx], vis[idx], "diagonal", (8, 8))
        d = (kp_pred[idx].double() - kp[idx].double()).norm(dim=-1) / norm[:, None]
        return float(d[vis[idx]].mean())

    everything = list(range(8))
    rank0 = list(range(0, 8, 2))  # DistributedSampler(shuffle=False): rank 0 reads items 0, 2, 4, 6
    results["single"] = {"seg_miou": seg_miou(everything), "kp_nme": kp_nme(everything)}
    results["rank0_only"] = {"seg_miou": seg_miou(rank0), "kp_nme": kp_nme(rank0)}
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
