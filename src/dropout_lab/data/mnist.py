"""The 28x28 grey-scale sets (MNIST, Fashion-MNIST, KMNIST), read by torchvision's own classes and
held in memory by :class:`~dropout_lab.data.base.DataModule`."""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor

from dropout_lab.data.base import DataModule


class MNISTDataModule(DataModule):
    """A torchvision MNIST-family dataset (``MNIST``, ``FashionMNIST``, ``KMNIST``) in memory, 54k/6k/10k
    with ``val_fraction=0.1`` (source 004's split).

    Args: as :class:`~dropout_lab.data.base.DataModule`; ``root`` holds ``<torchvision_class>/raw``.

    Shapes: batches are ((B, 1, image_size, image_size) float32, (B,) int64).

    Raises:
        ConfigError: from :meth:`setup` when the files are missing, naming the paths looked for.
    """

    native_size = 28

    def expected_files(self) -> list[Path]:
        """The raw files torchvision's class looks for under ``root``."""
        raw = Path(self.root) / self.cls.__name__ / "raw"
        return [raw / os.path.splitext(os.path.basename(url))[0] for url, _ in self.cls.resources]  # (or .gz)

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        ds = self.cls(self.root, train=train, download=self.download)
        return ds.data.unsqueeze(1), ds.targets.long()
