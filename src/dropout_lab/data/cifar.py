"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009),
read by torchvision's own classes and held in memory by :class:`~dropout_lab.data.base.DataModule`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dropout_lab.data.base import DataModule


class CIFARDataModule(DataModule):
    """CIFAR-10/100 as normalised in-memory tensors on the training device, with a seeded validation split
    (45k/5k/10k with ``val_fraction=0.1``, source 004) and batch-wise augmentation on the device (source 004:
    horizontal flip, 4-pixel padded random crop and Cutout; :class:`~dropout_lab.data.augment.BatchTransform`).

    Args: as :class:`~dropout_lab.data.base.DataModule`, with ``torchvision_class`` ``CIFAR10`` or
    ``CIFAR100`` (fine labels) and ``root`` holding ``cifar-10-batches-py`` / ``cifar-100-python``.

    Shapes: batches are ((B, 3, image_size, image_size) float32, (B,) int64).

    Raises:
        ConfigError: from :meth:`setup` when the files are missing or fail torchvision's md5 check,
            naming the paths looked for.
    """

    native_size = 32

    def expected_files(self) -> list[Path]:
        """The pickled batches and the meta file torchvision's class looks for under ``root``."""
        folder = Path(self.root) / self.cls.base_folder
        return [folder / name for name, _ in self.cls.train_list + self.cls.test_list] + [
            folder / self.cls.meta["filename"]
        ]

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self.cls(self.root, train=train, download=self.download)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets, dtype=torch.long)
