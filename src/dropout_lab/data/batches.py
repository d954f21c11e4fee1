"""Minibatches sliced from tensors that are already in memory (on the GPU when training there)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from dropout_lab.data.augment import draw


class TensorBatches:
    """An iterable of ``(x, y)`` minibatches over in-memory tensors, reshuffled at every ``iter()``.

    It replaces a per-sample ``DataLoader``: one index permutation per epoch and one gather per batch,
    with no workers and no host-to-device copies when the tensors live on the training device
    (the airbench/hlb-CIFAR10 recipe).

    Args:
        x: inputs, shape (N, C, H, W), already normalised.
        y: integer labels, shape (N,).
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: draw a fresh permutation at every ``iter()``.
        transform: optional batch-wise augmentation ``(x, generator) -> x`` of shape (N, C, H, W), on the device.
        generator: a CPU generator for the permutations and the transform's draws (the data module's
            order stream, :mod:`dropout_lab.seeding`); None: torch's global generator.
        drop_last: skip the final incomplete batch.

    Raises:
        ValueError: if x and y differ in length or batch_size < 1.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool,
        transform: Callable[..., Tensor] | None = None,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.transform, self.drop_last, self.generator = transform, drop_last, generator

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = draw(self.x, self.generator, torch.randperm, len(self.x)) if self.shuffle else None
        for i in range(len(self)):
            if order is None:
                x, y = (
                    self.x[i * self.batch_size : (i + 1) * self.batch_size],
                    self.y[i * self.batch_size : (i + 1) * self.batch_size],
                )
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                x, y = self.x[idx], self.y[idx]
            yield (self.transform(x, self.generator) if self.transform else x), y
