"""Datasets: tiny fixtures in torchvision's exact on-disk formats, loaded through the real torchvision classes
by our datamodules; splits, lengths, label ranges, missing-file messages and the batch-wise augmentation.

Checksums: torchvision verifies CIFAR's pickles and Flowers-102's .mat files by md5 (``check_integrity`` in
``torchvision.datasets.cifar`` / ``.flowers102``); the fixtures cannot match the real files' md5, so the
``no_md5`` fixture replaces that function in those two modules by an existence check. Everything else
(file layout, pickle/idx/.mat parsing, label mapping, split ids) is torchvision's own code.
"""

from __future__ import annotations

import gzip
import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
from hydra.utils import instantiate

from dropout_lab.data import CIFARDataModule, Flowers102DataModule, ImageDataModule, MNISTDataModule
from dropout_lab.data.augment import BatchTransform, cutout, random_crop, random_flip
from dropout_lab.errors import ConfigError


@pytest.fixture
def no_md5(monkeypatch):
    exists = lambda path, md5=None: os.path.isfile(path)  # noqa: E731
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.flowers102, "check_integrity", exists)


def write_idx(root: Path, folder: str, n_train: int, n_test: int, rng: np.random.Generator) -> None:
    """torchvision's MNIST-family layout: <folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (and .gz)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        files = {
            f"{prefix}-images-idx3-ubyte": np.array([2051, n, 28, 28], ">i4").tobytes() + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte": np.array([2049, n], ">i4").tobytes() + labels.tobytes(),
        }
        for name, data in files.items():
            (raw / name).write_bytes(data)
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))


def write_cifar(root: Path, cls, n_per_batch: int, num_classes: int, rng: np.random.Generator) -> None:
    """torchvision's CIFAR layout: pickled dicts with 'data' (N, 3072) uint8 and (fine_)labels, plus the meta file."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    key = "labels" if cls is torchvision.datasets.CIFAR10 else "fine_labels"
    for name, _ in cls.train_list + cls.test_list:
        entry = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            key: [i % num_classes for i in range(n_per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / cls.meta["filename"]).write_bytes(
        pickle.dumps({cls.meta["key"]: [f"class{i}" for i in range(num_classes)]})
    )


def write_flowers(root: Path, rng: np.random.Generator) -> tuple[dict[str, list[int]], np.ndarray]:
    """torchvision's Flowers-102 layout: flowers-102/jpg/image_%05d.jpg, imagelabels.mat (1-based), setid.mat."""
    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    n = 14
    for i in range(1, n + 1):  # variable sizes, as the real JPEGs
        img = torch.from_numpy(rng.integers(0, 256, (3, 40 + 3 * i, 60 - 2 * i), dtype=np.uint8))
        torchvision.io.write_jpeg(img, str(base / "jpg" / f"image_{i:05d}.jpg"))
    labels = np.array([1, 102, 50, 7] * 3 + [1, 102])
    ids = {"trnid": [1, 2, 3, 4, 5, 6], "valid": [7, 8, 9], "tstid": [10, 11, 12, 13, 14]}
    scipy.io.savemat(base / "imagelabels.mat", {"labels": labels[None, :]})
    scipy.io.savemat(base / "setid.mat", {k: np.array(v)[None, :] for k, v in ids.items()})
    return ids, labels


def test_kmnist_fixture_through_torchvision(tmp_path, cfg_factory):
    write_idx(tmp_path, "KMNIST", 100, 20, np.random.default_rng(0))
    cfg = cfg_factory(["dataset=kmnist", f"data_root={tmp_path}"])
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, MNISTDataModule) and dm.cls is torchvision.datasets.KMNIST
    dm.setup()
    splits = dm.normalised()
    (xt, yt), (xv, yv), (_, ys) = splits["train"], splits["val"], splits["test"]
    assert (len(yt), len(yv), len(ys), dm.num_train) == (90, 10, 20, 90)
    assert xt.shape == (90, 1, 28, 28) and xt.dtype == torch.float32
    assert set(torch.cat([yt, yv]).tolist()) == set(range(10)) and ys.min() >= 0 and ys.max() <= 9
    # the split partitions the training file: every image appears once in train or val
    raw = torchvision.datasets.KMNIST(str(tmp_path), train=True).data
    normed = (raw.unsqueeze(1).float() / 255 - 0.1918) / 0.3483
    matches = (torch.cat([xt, xv]).flatten(1)[:, None, :] == normed.flatten(1)[None]).all(-1).sum(1)
    assert (matches == 1).all()
    # a fixed split_seed gives the same split; another seed a different one
    again = instantiate(cfg.dataset)
    again.setup()
    assert torch.equal(again.normalised()["val"][0], xv)


@pytest.mark.parametrize(
    "name,cls,num_classes",
    [("cifar10", torchvision.datasets.CIFAR10, 10), ("cifar100", torchvision.datasets.CIFAR100, 100)],
)
def test_cifar_fixture_through_torchvision(name, cls, num_classes, tmp_path, cfg_factory, no_md5):
    n = 20 if cls is torchvision.datasets.CIFAR10 else 100  # CIFAR-10 has 5 training batches, CIFAR-100 one file
    write_cifar(tmp_path, cls, n, num_classes, np.random.default_rng(1))
    cfg = cfg_factory(
        [f"dataset={name}", f"data_root={tmp_path}", "dataset.batch_size=16", "dataset.image_size=32"]
    )  # the files' side
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, CIFARDataModule)
    dm.setup()
    splits = dm.normalised()
    n_train_file = n * len(cls.train_list)
    assert (len(splits["train"][1]), len(splits["val"][1]), len(splits["test"][1])) == (
        n_train_file - n_train_file // 10,
        n_train_file // 10,
        n,
    )
    assert splits["train"][0].shape[1:] == (3, 32, 32)
    labels = torch.cat([splits[s][1] for s in ("train", "val", "test")])
    assert labels.min() == 0 and labels.max() == num_classes - 1
    # per-channel normalisation of the real pixels: pixel (0, 0) of the first test image, channel 0
    raw = cls(str(tmp_path), train=False).data
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    expected = (raw[order[0], 0, 0, 0] / 255 - cfg.dataset.mean[0]) / cfg.dataset.std[0]
    assert splits["test"][0][0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    # training batches are augmented (flip/crop/Cutout on), evaluation batches are not
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and (x == 0).all(1).flatten(1).sum(1).min() > 0  # a Cutout hole in every image
    xv, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(xv, splits["val"][0][: len(xv)]) and torch.equal(dm.held_out_batch(len(xv))[0], xv)


def test_resize_on_device_for_alexnet(tmp_path, cfg_factory, no_md5):
    write_cifar(tmp_path, torchvision.datasets.CIFAR10, 4, 10, np.random.default_rng(2))
    cfg = cfg_factory(["dataset=cifar10", f"data_root={tmp_path}", "dataset.image_size=224", "model=alexnet"])
    assert cfg.dataset.image_size == 224 and "image_size" not in cfg.model  # one key: the data's side
    dm = instantiate(cfg.dataset)
    dm.setup()
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape[1:] == (3, 224, 224)
    torch.testing.assert_close(x.mean(), dm.normalised()["val"][0][: len(x)].mean(), atol=0.02, rtol=0)
    assert torch.equal(dm.held_out_batch(len(x))[0], x)


def test_image_size_defaults_to_the_models_input_size(cfg_factory):
    """dataset.image_size follows the model's declared native input size unless set."""
    assert cfg_factory(["model=lenet5"]).dataset.image_size == 28
    assert cfg_factory(["model.input_size=224"]).dataset.image_size == 224
    assert cfg_factory(["model.input_size=224", "dataset.image_size=64"]).dataset.image_size == 64
    assert cfg_factory(["dataset=cifar10", "model.input_size=224"]).dataset.image_size == 224


def test_flowers_fixture_through_torchvision(tmp_path, cfg_factory, no_md5):
    ids, labels = write_flowers(tmp_path, np.random.default_rng(3))
    cfg = cfg_factory(
        [
            "dataset=flowers102",
            f"data_root={tmp_path}",
            "dataset.image_size=32",
            "dataset.batch_size=4",
            "dataset.num_workers=1",
            "dataset.augment.crop_padding=4",
            "dataset.augment.cutout=16",
        ]
    )
    dm = instantiate(cfg.dataset)
    assert isinstance(dm, Flowers102DataModule)
    dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["val"]), len(dm.splits["test"]), dm.num_train) == (6, 3, 5, 6)
    xs, ys = zip(*(dm.splits["test"][i] for i in range(5)))
    assert all(x.shape == (3, 32, 32) for x in xs)
    assert sorted(ys) == sorted(labels[np.array(ids["tstid"]) - 1] - 1)  # 1-based .mat labels -> 0..101
    x, y = next(iter(dm.train_dataloader()))  # one forked worker decodes the JPEGs
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64 and set(y.tolist()) <= {0, 101, 49, 6}
    dm.trainer = SimpleNamespace(training=True)  # on the device after the transfer, training batches only
    aug, _ = dm.on_after_batch_transfer((x, y), 0)
    assert (aug == 0).all(1).flatten(1).sum(1).min() > 0
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer((x, y), 0)[0], x)
    # the interface's held-out batch: the first images of the Subset split, decoded as by the loaders
    dm.trainer = None
    assert isinstance(dm, ImageDataModule)
    xh, yh = dm.held_out_batch(2, "test")
    assert torch.equal(xh, torch.stack(xs[:2])) and yh.tolist() == list(ys[:2])


@pytest.mark.parametrize("name", ["kmnist", "cifar10", "cifar100", "flowers102"])
def test_missing_files_name_the_paths(name, tmp_path, cfg_factory, monkeypatch):
    """Offline (no route to the mirrors), a missing dataset fails in a few lines naming the files looked for."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = instantiate(cfg_factory([f"dataset={name}", f"data_root={tmp_path}"]).dataset)
    with pytest.raises(
        ConfigError, match=rf"data_root='{tmp_path}': dataset '{name}' not found \(the download failed"
    ) as err:
        dm.setup()
    message = str(err.value)
    assert all(str(path) in message for path in dm.expected_files()) and "DROPOUT_LAB_DATA" in message
    assert len(message.splitlines()) <= len(dm.expected_files()) + 2


def test_augmentations_batchwise():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    flipped = random_flip(x)
    same, mirrored = (flipped == x).flatten(1).all(1), (flipped == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 16 < mirrored.sum() < 48  # each image flipped with p = 1/2 (binomial, > 4 sd)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    crops = random_crop(x, 2, fill)
    for i in range(8):  # each crop is a translate of its image by (dy, dx) in [-2, 2]^2, padded with fill
        padded = fill.view(3, 1, 1).expand(3, 12, 12).clone()
        padded[:, 2:10, 2:10] = x[i]
        assert any(torch.equal(crops[i], padded[:, dy : dy + 8, dx : dx + 8]) for dy in range(5) for dx in range(5))
    holes = (cutout(x, 4) == 0).all(1)
    assert (holes.flatten(1).sum(1) <= 16).all() and (
        holes.flatten(1).sum(1) >= 4
    ).all()  # a 4x4 square, clipped by at most 2 rows/cols
    t = BatchTransform(16, {"flip": True}, [0.5] * 3, [0.25] * 3)
    assert t(x).shape == (64, 3, 16, 16) and not t.identity and BatchTransform(None, None, [0.0], [1.0]).identity
    with pytest.raises(ValueError, match="dataset.augment has unknown keys \\['mixup'\\]"):
        BatchTransform(None, {"mixup": 1}, [0.0], [1.0])
