"""The in-memory datamodules on the real MNIST files: split sizes, subsets, normalisation, the held-out batch
of the datamodule interface and the per-process cache."""

import pytest
import torch
from hydra.utils import instantiate

from conftest import make_cfg
from dropout_lab.data import DataModule, ImageDataModule, MNISTDataModule, TensorBatches, base
from dropout_lab.data.splits import train_val_indices


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_full_split_is_54k_6k_10k_and_normalised(dataset, tmp_path):
    dm = instantiate(make_cfg([f"dataset={dataset}"], tmp_path).dataset)
    dm.setup("fit")
    sizes = {k: len(y) for k, (x, y) in dm.normalised().items()}
    assert sizes == {"train": 54000, "val": 6000, "test": 10000} and dm.num_train == 54000
    x, y = dm.normalised()["train"]
    assert x.shape == (54000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    # normalised with the training-set constants: mean ~0, std ~1 (the constants are rounded to 4 digits)
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert set(y.unique().tolist()) == set(range(10))


def test_split_is_seeded_disjoint_and_complete():
    train, val = train_val_indices(1000, 0.1, seed=3)
    again, _ = train_val_indices(1000, 0.1, seed=3)
    other, _ = train_val_indices(1000, 0.1, seed=4)
    assert len(val) == 100 and torch.equal(train, again) and not torch.equal(train, other)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))


def test_subset_takes_a_stratified_prefix_of_each_split(tmp_path):
    """The subset is drawn from the full split's seeded order, each class in proportion to its share."""
    dm = instantiate(make_cfg(["dataset.subset={train: 300, val: 50, test: 70}"], tmp_path).dataset)
    dm.setup("fit")
    assert {k: len(y) for k, (_, y) in dm.normalised().items()} == {"train": 300, "val": 50, "test": 70}
    full = instantiate(make_cfg([], tmp_path).dataset)
    full.setup("fit")
    x_sub, y_sub = dm._uint8["train"]
    x_full, y_full = full._uint8["train"]
    share = torch.bincount(y_full, minlength=10) / len(y_full)
    assert (torch.bincount(y_sub, minlength=10) - 300 * share).abs().max() <= 1  # proportional allocation
    for c in range(10):  # each class's samples are the first of that class in the full split's order
        assert torch.equal(x_sub[y_sub == c], x_full[y_full == c][: int((y_sub == c).sum())])


def test_held_out_batch_is_the_first_samples_preprocessed(tmp_path):
    """The interface's held-out batch: first n of the split, normalised, resized to image_size, a copy."""
    dm = instantiate(
        make_cfg(["dataset.subset={train: 64, val: 40, test: 8}", "dataset.image_size=32"], tmp_path).dataset
    )
    dm.setup("fit")
    assert isinstance(dm, ImageDataModule) and isinstance(dm, DataModule) and issubclass(MNISTDataModule, DataModule)
    x, y = dm.held_out_batch(16)
    assert x.shape == (16, 1, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    xv, yv = dm.normalised()["val"]
    assert torch.equal(y, yv[:16])
    torch.testing.assert_close(x, torch.nn.functional.interpolate(xv[:16], size=(32, 32), mode="bilinear"))
    assert torch.equal(next(iter(dm.val_dataloader()))[0][:16], x)  # the same preprocessing as the loaders'
    assert len(dm.held_out_batch(1000, "test")[1]) == 8  # a short split gives what it has
    native = instantiate(make_cfg(["dataset.subset={train: 64, val: 40, test: 8}"], tmp_path).dataset)
    native.setup()
    x28, _ = native.held_out_batch(4)
    x28 += 1  # a copy: the shared tensors are untouched
    assert torch.equal(native.normalised()["val"][0][:4] + 1, x28)
    with pytest.raises(ValueError, match="split must be one of train, val, test, got 'dev'"):
        dm.held_out_batch(4, "dev")


def test_data_is_read_split_and_normalised_once_per_process(tmp_path, monkeypatch):
    """A second job in the same process with the same data settings reuses the tensors, one with another
    split seed reuses the files; subset is applied before normalising (the normalised subset equals the first rows of the normalised full split)."""
    monkeypatch.setattr(base, "_CACHE", type(base._CACHE)())
    reads = []
    load = MNISTDataModule._load
    monkeypatch.setattr(MNISTDataModule, "_load", lambda self, train: reads.append(train) or load(self, train))
    overrides = ["dataset.subset={train: 100, val: 20, test: 30}"]
    first, second = (instantiate(make_cfg(overrides, tmp_path / name).dataset) for name in "ab")
    first.setup()
    second.setup()
    assert reads == [True, False]
    assert first.normalised()["train"][0] is second.normalised()["train"][0]
    other = instantiate(
        make_cfg(["dataset.subset={train: 100, val: 20, test: 30}", "dataset.split_seed=1"], tmp_path).dataset
    )
    other.setup()
    assert reads == [True, False] and not torch.equal(
        other.normalised()["val"][1], first.normalised()["val"][1]
    )  # files read once
    x_uint8 = first._uint8["train"][0]
    assert x_uint8.dtype == torch.uint8 and x_uint8.shape == (100, 1, 28, 28)
    torch.testing.assert_close(
        first.normalised()["train"][0], (x_uint8.float() / 255 - 0.1307) / 0.3081, rtol=0, atol=0
    )


def test_tensor_batches_cover_every_sample_once_per_epoch():
    x, y = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True)
    seen = torch.cat([yb for _, yb in batches])
    assert len(batches) == 3 and sorted(seen.tolist()) == list(range(10))
    assert len(TensorBatches(x, y, 4, shuffle=False, drop_last=True)) == 2
