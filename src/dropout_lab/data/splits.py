"""Seeded train/validation split and subsets, shared by every datamodule."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def permutation(n: int, seed: int) -> Tensor:
    """A fixed permutation of range(n) from a private generator (the global RNG is untouched)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def train_val_indices(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split range(n) into (train, val) index tensors: the first round(val_fraction * n) entries of a
    seeded permutation are the validation set (MNIST: 54,000 / 6,000 with 0.1, as source 004).

    Raises:
        ValueError: if val_fraction is not in [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction={val_fraction} is outside [0, 1)")
    order = permutation(n, seed)
    n_val = round(val_fraction * n)
    return order[n_val:], order[:n_val]


def stratified_prefix(idx: Tensor, labels: Tensor, n: int | None) -> Tensor:
    """The first ``n`` entries of ``idx`` (a seeded order of sample indices) stratified by class: each class
    contributes its proportional share of ``n`` rounded to the nearest whole sample (Sainte-Laguë
    apportionment; ties by position), its samples taken in the order of ``idx``. ``n`` None or >= len(idx)
    keeps all of ``idx``.

    Every prefix of the returned order is itself stratified: the samples are ordered by
    (within-class rank + 1/2) / class count, ties by their position in ``idx``.

    Shapes: idx (M,) int64, labels (N,) with N > max(idx); returns (min(n, M),) int64.
    """
    if n is None or n >= len(idx):
        return idx
    y = labels[idx]
    counts = torch.bincount(y)
    rank = torch.empty_like(idx)
    for c in torch.unique(y):
        where = (y == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where))
    key = (rank.double() + 0.5) / counts[y].double()
    return idx[torch.sort(key, stable=True).indices[:n]]


def subset_size(subset: int | dict | None, split: str) -> int | None:
    """How many samples of ``split`` (train | val | test) to keep: ``subset`` is None (all), an int
    (the same cap for every split) or a mapping from split name to a cap (missing = all).

    Raises:
        ValueError: for a cap below 1.
    """
    n = subset.get(split) if isinstance(subset, Mapping) else subset
    if n is not None and int(n) < 1:
        raise ValueError(f"dataset.subset for {split} must be at least 1, got {n}")
    return None if n is None else int(n)
