"""Oxford Flowers-102 (Nilsback & Zisserman, "Automated Flower Classification over a Large Number of
Classes", ICVGIP 2008): variable-size JPEGs read by torchvision's ``Flowers102`` through a DataLoader."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import Flowers102
from torchvision.transforms import v2

from dropout_lab.data.augment import BatchTransform
from dropout_lab.data.base import SPLITS, OrderedDataModule, check_held_out, read_or_download, training_device
from dropout_lab.data.splits import permutation, subset_size


class Flowers102DataModule(OrderedDataModule):
    """Flowers-102 with the official split of ``setid.mat`` (1,020 train / 1,020 val / 6,149 test: 10 + 10
    images per class, the rest for testing).

    Worker processes decode each JPEG, resize its shorter side to ``image_size``, centre-crop a square and
    normalise (torchvision transforms v2); training batches are then augmented on the device after the
    transfer (flip, padded random crop, Cutout: :class:`~dropout_lab.data.augment.BatchTransform`, the same
    code as for CIFAR). ``subset`` keeps the first N of a seeded permutation of each split.
    Implements :class:`~dropout_lab.data.base.ImageDataModule`.

    Args:
        name: config name (``flowers102``), used in messages.
        root: data root holding ``flowers-102/`` (``jpg/``, ``imagelabels.mat``, ``setid.mat``).
        num_classes, in_channels: 102 and 3 (read by the model config).
        image_size: side of the square crops the model sees (224 by default; source 004 used 32 for ResNets).
        mean, std: per-channel normalisation constants.
        batch_size, eval_batch_size: training and evaluation batch sizes.
        num_workers: DataLoader worker processes (``fork`` context, so it works inside joblib workers).
        split_seed: seed of the subset permutations (``${seed}`` in the config: one data replicate per seed).
        order_seed: seed of the training order's own generator (:class:`~dropout_lab.data.base.OrderedDataModule`).
        subset: None, an int, or {train, val, test} caps for smoke runs.
        download: let torchvision download missing files (needs internet).
        augment: None or {flip, crop_padding, cutout} for training batches.

    Shapes: batches are ((B, 3, image_size, image_size) float32, (B,) int64).

    Raises:
        ConfigError: from :meth:`setup` when files are missing or fail torchvision's md5 check,
            naming the paths looked for (:func:`~dropout_lab.data.base.read_or_download`).
        ValueError: for unknown ``augment`` keys or ``image_size`` < 1.
    """

    def __init__(
        self,
        name: str,
        root: str,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 4,
        split_seed: int = 0,
        subset: int | dict | None = None,
        download: bool = True,
        augment: dict | None = None,
        order_seed: int | None = None,
    ) -> None:
        super().__init__(order_seed)
        self.name, self.root = name, str(Path(root).expanduser().absolute())
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.split_seed, self.subset, self.download = split_seed, subset, download
        self.train_transform = BatchTransform(None, augment, mean, std)
        if image_size < 1:
            raise ValueError(f"dataset.image_size must be at least 1, got {image_size}")
        self.decode = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(image_size, antialias=True),
                v2.CenterCrop(image_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean, std),
            ]
        )
        self.splits: dict[str, Subset] = {}

    def expected_files(self) -> list[Path]:
        """The image folder and label files torchvision's class looks for under ``root``."""
        base = Path(self.root) / "flowers-102"
        return [base / "jpg", base / "imagelabels.mat", base / "setid.mat"]

    def setup(self, stage: str | None = None) -> None:
        """Index the three splits once (later calls are no-ops); images are decoded by the loaders."""
        if self.splits:
            return
        for split in SPLITS:
            ds = read_or_download(
                self.name,
                self.root,
                self.download,
                self.expected_files(),
                lambda: Flowers102(self.root, split, transform=self.decode, download=self.download),
            )
            self.splits[split] = Subset(
                ds, permutation(len(ds), self.split_seed)[: subset_size(self.subset, split)].tolist()
            )

    @property
    def num_train(self) -> int:
        """Training samples after the subset (N for 1/N-scaled regularisers)."""
        return len(self.splits["train"])

    def held_out_batch(self, n: int, split: str = "val") -> tuple[Tensor, Tensor]:
        """:meth:`~dropout_lab.data.base.ImageDataModule.held_out_batch`: the first ``n`` images of the split,
        decoded, resized and normalised as by the loaders, on the training device."""
        check_held_out(n, split)
        items = [self.splits[split][i] for i in range(min(n, len(self.splits[split])))]
        device = training_device(self)
        return torch.stack([x for x, _ in items]).to(device), torch.tensor(
            [y for _, y in items], dtype=torch.long, device=device
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=workers,
            multiprocessing_context="fork" if workers > 0 else None,
            generator=self.order if shuffle else None,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Augment training batches on the device."""
        x, y = batch
        if self.trainer is not None and self.trainer.training and not self.train_transform.identity:
            x = self.train_transform(x, self.order)
        return x, y
