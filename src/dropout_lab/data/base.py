"""The datamodule interface (:class:`ImageDataModule`) and the in-memory base (:class:`DataModule`).

Methods that need data outside the training batches (e.g. Shapley dropout's held-out batch) use only
:class:`ImageDataModule`, through ``trainer.datamodule``. :class:`DataModule` holds each split as
uint8 tensors and normalises them once on the training device; a process-level cache
(:data:`_CACHE`) makes a worker that runs many jobs (the basic launcher, a joblib worker, a Slurm
task) read, split and normalise each dataset once (docs/bench_harness.md, "end to end").
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from torch import Tensor

from dropout_lab.data.augment import BatchTransform
from dropout_lab.data.batches import TensorBatches
from dropout_lab.data.splits import permutation, stratified_prefix, subset_size, train_val_indices
from dropout_lab.errors import ConfigError

SPLITS = ("train", "val", "test")
#: files, splits and normalised split sets kept per process (least recently used dropped first): MNIST is 220 MB as float32
CACHE_ENTRIES = 8
_CACHE: OrderedDict[Hashable, object] = OrderedDict()


@runtime_checkable
class ImageDataModule(Protocol):
    """What the harness and the dropout methods may use of a datamodule.

    Attributes:
        name: config name (``mnist``, ``cifar10``, ...).
        num_classes: number of labels; labels are int64 in [0, num_classes).
        in_channels, image_size: batches are (B, in_channels, image_size, image_size) float32.
        num_train: training samples after split and subset (N for 1/N-scaled regularisers).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int

    @property
    def num_train(self) -> int: ...

    def held_out_batch(self, n: int, split: str = "val") -> tuple[Tensor, Tensor]:
        """The first ``n`` samples of ``split`` (all of them if it has fewer), through the evaluation
        preprocessing (normalisation, resize to ``image_size``; no augmentation) and on the training
        device: ((n, in_channels, image_size, image_size) float32, (n,) int64).

        Raises:
            ValueError: for a split other than train | val | test, or n < 1.
        """
        ...


def cached(key: Hashable, build: Callable[[], object]) -> object:
    """``build()``, computed once per process for each ``key`` (at most :data:`CACHE_ENTRIES` kept).

    The cached tensors are shared by every job of the process: callers must not modify them in place.
    """
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = _CACHE[key] = build()
    while len(_CACHE) > CACHE_ENTRIES:
        _CACHE.popitem(last=False)
    return value


def training_device(dm: pl.LightningDataModule) -> torch.device:
    """The device of the trainer the datamodule is attached to, else the CPU."""
    return dm.trainer.strategy.root_device if dm.trainer is not None else torch.device("cpu")


def check_held_out(n: int, split: str) -> None:
    """Raise ValueError for an unknown split or n < 1 (the arguments of :meth:`ImageDataModule.held_out_batch`)."""
    if split not in SPLITS:
        raise ValueError(f"held_out_batch: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if n < 1:
        raise ValueError(f"held_out_batch: n must be at least 1, got {n}")


def read_or_download(name: str, root: str, download: bool, expected: list[Path], read: Callable[[], object]) -> object:
    """``read()`` (a torchvision dataset constructor), with torchvision's download messages kept off the
    console unless it fails.

    Raises:
        ConfigError: on ``data_root`` when the files are missing (offline, or ``download`` off) or corrupt,
            naming the files looked for, data_root, ``DROPOUT_LAB_DATA`` and ``dataset.download``.
    """
    messages = io.StringIO()
    try:
        with contextlib.redirect_stdout(messages):
            return read()
    except (RuntimeError, OSError) as err:
        looked = "\n  ".join(map(str, expected))
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        how, retry = (
            (f"the download failed: {detail}", "or run where there is internet")
            if download
            else ("dataset.download=false", "or dataset.download=true where there is internet")
        )
        env = os.environ.get("DROPOUT_LAB_DATA")
        raise ConfigError(
            "data_root",
            root,
            f"dataset '{name}' not found ({how}); looked for:\n  {looked}\n"
            f"Fix: data_root=<folder holding them> or the DROPOUT_LAB_DATA environment variable "
            f"({'DROPOUT_LAB_DATA=' + env if env else 'unset'}), {retry}.",
        ) from None


class OrderedDataModule(pl.LightningDataModule):
    """A datamodule whose training batches draw their order and augmentation from their own CPU generator
    (:attr:`order`, seeded with ``order_seed``), saved in Lightning checkpoints through
    :meth:`state_dict`, so a resumed run continues the same order (:mod:`dropout_lab.seeding`).

    Args:
        order_seed: the generator's seed; None seeds it from torch's global generator.
    """

    def __init__(self, order_seed: int | None = None) -> None:
        super().__init__()
        seed = int(torch.randint(2**62, ())) if order_seed is None else int(order_seed)
        self.order = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Tensor]:
        return {"order": self.order.get_state()}

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        self.order.set_state(state_dict["order"])


class DataModule(OrderedDataModule):
    """A torchvision dataset as in-memory tensors with a seeded validation split; the base of every
    in-memory datamodule (:class:`~dropout_lab.data.mnist.MNISTDataModule`,
    :class:`~dropout_lab.data.cifar.CIFARDataModule`). Implements :class:`ImageDataModule`.

    The training file is split by :func:`~dropout_lab.data.splits.train_val_indices` (54k/6k for
    MNIST with ``val_fraction=0.1``); the test file is the test split. ``subset`` keeps the first N
    samples of each split, stratified by class (:func:`~dropout_lab.data.splits.stratified_prefix`;
    train/val in their seeded order, test in a seeded permutation), before normalising. ``split_seed``
    follows the run's ``seed`` by default, so each replicate draws its own subsets (docs/sweeps.md). The uint8 splits go to the training device once and are normalised there
    (``(x / 255 - mean) / std``); batches are slices of them (:class:`~dropout_lab.data.batches.TensorBatches`).
    Reading, splitting and normalising happen once per process for each setting (:func:`cached`).
    Training batches are augmented and every batch is resized to ``image_size`` on the device
    (:class:`~dropout_lab.data.augment.BatchTransform`) when asked. Subclasses set :attr:`native_size`
    and implement :meth:`_load` and :meth:`expected_files`.

    Args:
        name: config name (``mnist``, ``cifar10``, ...), used in messages.
        torchvision_class: class name in ``torchvision.datasets`` (``MNIST``, ``CIFAR10``, ...).
        root: data root in torchvision's layout (``~`` expanded).
        num_classes, in_channels: the label and input shape (read by the model config).
        image_size: side of the images the model sees (None: the files' side); batches are resized to it
            on the device when it differs from the files' side (source 004 feeds AlexNet/SqueezeNet 224x224).
        mean, std: per-channel normalisation constants of the training set.
        batch_size: training batch size; evaluation uses ``eval_batch_size``.
        val_fraction: fraction of the training file held out for validation.
        split_seed: seed of the split and subset permutations (the config sets it to ``${seed}``: one
            data replicate per seed).
        order_seed: seed of the training batches' own generator (order and augmentation of every epoch;
            :func:`dropout_lab.seeding.stream_seed` of the run's seed); None draws it from torch's global generator.
        subset: None, an int, or {train, val, test} caps for smoke runs.
        download: let torchvision download missing files (needs internet).
        augment: None or {flip, crop_padding, cutout} for training batches (:class:`BatchTransform`).

    Shapes: batches are ((B, in_channels, image_size, image_size) float32, (B,) int64).

    Raises:
        ConfigError: from :meth:`setup` when the files are missing (:func:`read_or_download`).
        ValueError: for unknown ``augment`` keys or ``image_size`` < 1.
    """

    #: side in pixels of the images in the files
    native_size: int

    def __init__(
        self,
        name: str,
        torchvision_class: str,
        root: str,
        num_classes: int,
        in_channels: int,
        image_size: int | None,
        mean: list[float],
        std: list[float],
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        subset: int | dict | None = None,
        download: bool = True,
        augment: dict | None = None,
        order_seed: int | None = None,
    ) -> None:
        super().__init__(order_seed)
        import torchvision

        self.name, self.cls = name, getattr(torchvision.datasets, torchvision_class)
        self.root = str(Path(root).expanduser().absolute())
        self.image_size = self.native_size if image_size is None else int(image_size)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.split_seed, self.subset, self.download = val_fraction, split_seed, subset, download
        resize = None if self.image_size == self.native_size else self.image_size
        self.train_transform = BatchTransform(resize, augment, mean, std)
        self.eval_transform = BatchTransform(resize, None, mean, std)
        self._uint8: dict[str, tuple[Tensor, Tensor]] = {}

    def expected_files(self) -> list[Path]:
        """The files torchvision's class looks for under ``root``."""
        raise NotImplementedError

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """The training or test file as (uint8 images (N, C, H, W), int64 labels (N,)).

        Raises:
            RuntimeError, OSError: from torchvision when files are missing or corrupted.
        """
        raise NotImplementedError

    def _key(self) -> tuple:
        """Everything that changes the uint8 split tensors."""
        subset = tuple(sorted(dict(self.subset).items())) if isinstance(self.subset, Mapping) else self.subset
        return self.cls.__name__, self.root, self.val_fraction, self.split_seed, subset

    def _split(self) -> dict[str, tuple[Tensor, Tensor]]:
        def read(train: bool) -> tuple[Tensor, Tensor]:  # the files once per process, whatever the split seed
            return cached(
                ("file", self.cls.__name__, self.root, train),
                lambda: read_or_download(
                    self.name, self.root, self.download, self.expected_files(), lambda: self._load(train)
                ),
            )

        x, y = read(True)
        train_idx, val_idx = train_val_indices(len(x), self.val_fraction, self.split_seed)
        x_test, y_test = read(False)
        test_idx = permutation(len(x_test), self.split_seed)
        out = {}
        for split, (xs, ys, idx) in {
            "train": (x, y, train_idx),
            "val": (x, y, val_idx),
            "test": (x_test, y_test, test_idx),
        }.items():
            idx = stratified_prefix(idx, ys, subset_size(self.subset, split))
            out[split] = (xs[idx].contiguous(), ys[idx].contiguous())
        return out

    def setup(self, stage: str | None = None) -> None:
        """Read and split the files (once per process for this setting; later calls are no-ops)."""
        if not self._uint8:
            self._uint8 = cached(("uint8", *self._key()), self._split)

    @property
    def num_train(self) -> int:
        """Training samples after the split and subset (N for 1/N-scaled regularisers)."""
        return len(self._uint8["train"][1])

    def normalised(self, device: torch.device | str = "cpu") -> dict[str, tuple[Tensor, Tensor]]:
        """Every split as normalised float32 tensors on ``device`` (shared, cached per process: do not
        modify in place). Shapes: {split: ((N, C, H, W) float32 at the files' side, (N,) int64)}."""
        device = torch.device(device)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)

        def build() -> dict[str, tuple[Tensor, Tensor]]:
            return {
                split: ((x.to(device).float() / 255.0 - mean) / std, y.to(device))
                for split, (x, y) in self._uint8.items()
            }

        return cached(("normalised", *self._key(), self.mean, self.std, str(device)), build)

    def held_out_batch(self, n: int, split: str = "val") -> tuple[Tensor, Tensor]:
        """:meth:`ImageDataModule.held_out_batch`: the first ``n`` samples of ``split``, normalised, resized
        and on the training device."""
        check_held_out(n, split)
        x, y = self.normalised(training_device(self))[split]
        x, y = x[:n], y[:n]  # views of the shared tensors: the copy keeps callers from writing into them
        return (x.clone() if self.eval_transform.identity else self.eval_transform(x)), y.clone()

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        x, y = self.normalised(training_device(self))[split]
        transform = self.train_transform if shuffle else self.eval_transform
        return TensorBatches(
            x,
            y,
            self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            transform=None if transform.identity else transform,
            generator=self.order if shuffle else None,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)
