"""The 28x28 grey-scale sets (MNIST, Fashion-MNIST, KMNIST), read by torchvision's own classes and
held as one normalised tensor per split; the base of every in-memory datamodule (CIFAR subclasses it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from torch import Tensor

from dropout_lab.data.augment import BatchTransform
from dropout_lab.data.batches import TensorBatches
from dropout_lab.data.splits import permutation, subset_size, train_val_indices


class MNISTDataModule(pl.LightningDataModule):
    """A torchvision MNIST-family dataset as in-memory tensors with a seeded validation split.

    The training file is split by :func:`~dropout_lab.data.splits.train_val_indices` (54k/6k for
    MNIST with ``val_fraction=0.1``); the test file is the test split. ``subset`` keeps the first N
    samples of each split (train/val in their seeded order, test in a seeded permutation). Pixels are
    scaled to [0, 1] and normalised with ``mean``/``std``; the tensors move to the training device
    once, and batches are slices of them (:class:`~dropout_lab.data.batches.TensorBatches`).
    Training batches are augmented and every batch is resized to ``image_size`` on the device
    (:class:`~dropout_lab.data.augment.BatchTransform`) when asked. Subclasses for other file formats
    override :meth:`_load` and :meth:`expected_files`.

    Args:
        name: config name (``mnist``, ``fashion_mnist``, ``kmnist``), used in messages.
        torchvision_class: class name in ``torchvision.datasets`` (``MNIST``, ``FashionMNIST``, ``KMNIST``).
        root: data root that holds ``<torchvision_class>/raw``.
        num_classes, in_channels: the label and input shape (read by the model config).
        image_size: side of the images the model sees; batches are resized to it on the device when it
            differs from the files' side (seed 004 feeds AlexNet/SqueezeNet 224x224).
        mean, std: per-channel normalisation constants of the training set.
        batch_size: training batch size; evaluation uses ``eval_batch_size``.
        val_fraction: fraction of the training file held out for validation.
        split_seed: seed of the split and subset permutations (independent of the run's seed).
        subset: None, an int, or {train, val, test} caps for smoke runs.
        download: let torchvision download missing files (needs internet).
        augment: None or {flip, crop_padding, cutout} for training batches (:class:`BatchTransform`).

    Shapes: batches are ((B, in_channels, image_size, image_size) float32, (B,) int64).

    Raises:
        FileNotFoundError: from :meth:`setup` when the files are missing, naming the paths looked for.
        ValueError: for unknown ``augment`` keys.
    """

    #: side in pixels of the images in the files
    native_size = 28

    def __init__(self, name: str, torchvision_class: str, root: str, num_classes: int, in_channels: int, image_size: int,
                 mean: list[float], std: list[float], batch_size: int = 128, eval_batch_size: int = 1000, val_fraction: float = 0.1,
                 split_seed: int = 0, subset: int | dict | None = None, download: bool = False,
                 augment: dict | None = None) -> None:
        super().__init__()
        self.name, self.cls = name, getattr(torchvision.datasets, torchvision_class)
        self.root = str(Path(root).expanduser().absolute())
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.mean, self.std = mean, std
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.split_seed, self.subset, self.download = val_fraction, split_seed, subset, download
        resize = None if image_size == self.native_size else image_size
        self.train_transform = BatchTransform(resize, augment, mean, std)
        self.eval_transform = BatchTransform(resize, None, mean, std)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._device = torch.device("cpu")

    def expected_files(self) -> list[Path]:
        """The raw files torchvision's class looks for under ``root``."""
        raw = Path(self.root) / self.cls.__name__ / "raw"
        return [raw / os.path.splitext(os.path.basename(url))[0] for url, _ in self.cls.resources]  # (or .gz)

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """The training or test file as (uint8 images (N, C, H, W), int64 labels (N,)).

        Raises:
            RuntimeError: from torchvision when files are missing or corrupted.
        """
        ds = self.cls(self.root, train=train, download=self.download)
        return ds.data.unsqueeze(1), ds.targets.long()

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            images, labels = self._load(train)
        except RuntimeError as err:
            looked = "\n  ".join(map(str, self.expected_files()))
            raise FileNotFoundError(
                f"dataset '{self.name}' not found under data_root={self.root}; looked for:\n  {looked}\n"
                "Set data_root=<folder holding them> (or the DROPOUT_LAB_DATA environment variable), "
                "or dataset.download=true where there is internet."
            ) from err
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std, labels

    def setup(self, stage: str | None = None) -> None:
        """Read and split the files once (later calls are no-ops)."""
        if self.splits:
            return
        x, y = self._read(train=True)
        train_idx, val_idx = train_val_indices(len(x), self.val_fraction, self.split_seed)
        x_test, y_test = self._read(train=False)
        test_idx = permutation(len(x_test), self.split_seed)
        for split, (xs, ys, idx) in {"train": (x, y, train_idx), "val": (x, y, val_idx), "test": (x_test, y_test, test_idx)}.items():
            idx = idx[: subset_size(self.subset, split)]
            self.splits[split] = (xs[idx].contiguous(), ys[idx].contiguous())

    @property
    def num_train(self) -> int:
        """Training samples after the split and subset (N for 1/N-scaled regularisers)."""
        return len(self.splits["train"][1])

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device != self._device:
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
            self._device = device
        x, y = self.splits[split]
        transform = self.train_transform if shuffle else self.eval_transform
        return TensorBatches(x, y, self.batch_size if shuffle else self.eval_batch_size, shuffle=shuffle,
                             transform=None if transform.identity else transform)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)
