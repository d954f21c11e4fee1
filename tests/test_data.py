"""The in-memory MNIST-family datamodule on the real files: split sizes, subsets, normalisation."""

import pytest
import torch

from conftest import make_cfg
from hydra.utils import instantiate

from dropout_lab.data import TensorBatches
from dropout_lab.data.splits import train_val_indices


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_full_split_is_54k_6k_10k_and_normalised(dataset, tmp_path):
    dm = instantiate(make_cfg([f"dataset={dataset}"], tmp_path).dataset)
    dm.setup("fit")
    sizes = {k: len(y) for k, (x, y) in dm.splits.items()}
    assert sizes == {"train": 54000, "val": 6000, "test": 10000}
    x, y = dm.splits["train"]
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


def test_subset_takes_first_n_of_each_split(tmp_path):
    dm = instantiate(make_cfg(["dataset.subset={train: 300, val: 50, test: 70}"], tmp_path).dataset)
    dm.setup("fit")
    assert {k: len(y) for k, (_, y) in dm.splits.items()} == {"train": 300, "val": 50, "test": 70}
    full = instantiate(make_cfg([], tmp_path).dataset)
    full.setup("fit")
    assert torch.equal(dm.splits["train"][0], full.splits["train"][0][:300])


def test_tensor_batches_cover_every_sample_once_per_epoch():
    x, y = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True)
    seen = torch.cat([yb for _, yb in batches])
    assert len(batches) == 3 and sorted(seen.tolist()) == list(range(10))
    assert len(TensorBatches(x, y, 4, shuffle=False, drop_last=True)) == 2
