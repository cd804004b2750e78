"""Shuffling that a resumed run reproduces exactly.

A ``DataLoader(shuffle=True)`` draws its permutation from the global RNG when an epoch's iterator is created, so a run
resumed from ``last.ckpt`` sees different batches than the uninterrupted run. :class:`EpochShuffleSampler` derives
each epoch's permutation from ``(seed, epoch)`` alone; Lightning calls ``set_epoch`` before every epoch (and under DDP
wraps it in a distributed sampler that shards the same order over ranks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation of ``range(len(data))`` per epoch, a pure function of ``(seed, epoch)``."""

    def __init__(self, data: Sized | int, seed: int = 0):
        self.n = data if isinstance(data, int) else len(data)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
