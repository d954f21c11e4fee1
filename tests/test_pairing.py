"""Common random numbers and data replicates (docs/sweeps.md, "Replicates and pairing"): within one
seed every method starts from the same weights and sees the same batches in the same order in every
epoch; each seed draws its own stratified training and validation subsets."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor

from conftest import SMOKE, make_cfg
from dropout_lab.config import build
from dropout_lab.dropout.base import DropoutMethod
from dropout_lab.seeding import STREAMS, stream_seed
from dropout_lab.train import train

THREE = [*SMOKE, "trainer.max_epochs=3", "trainer.limit_train_batches=4", "deterministic=true"]


class DrawsAndKeeps(DropoutMethod):
    """Draws a uniform mask at every training forward and returns its input unchanged (no spec: it runs as
    ``dropout=none`` with its ``_target_`` replaced, so it has none's spec)."""

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        torch.rand_like(x)
        return x, torch.ones_like(x)


class Batches(pl.Callback):
    """Records the labels of every training batch, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[Tensor]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs[-1].append(batch[1].clone())


def fit_recording(overrides: list[str], tmp_path) -> tuple[dict[str, Tensor], list[list[Tensor]]]:
    cfg = make_cfg([*THREE, *overrides], tmp_path)
    parts = build(cfg)
    datamodule, module = parts.datamodule, parts.module
    initial = {k: v.detach().clone() for k, v in module.model.named_parameters()}
    batches = Batches()
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=4,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[batches],
    )
    trainer.fit(module, datamodule=datamodule)
    return initial, batches.epochs


def test_stream_seeds_are_distinct_and_reproducible():
    seeds = {(s, name): stream_seed(s, name) for s in range(20) for name in STREAMS}
    assert len(set(seeds.values())) == len(seeds)
    assert stream_seed(3, "order") == stream_seed(3, "order") and 0 <= stream_seed(3, "order") < 2**32
    with pytest.raises(ValueError, match="unknown random stream 'masks'"):
        stream_seed(0, "masks")


def test_two_methods_of_one_seed_share_initial_weights_and_every_epochs_batches(tmp_path):
    none_init, none_batches = fit_recording(["dropout=none"], tmp_path / "none")
    std_init, std_batches = fit_recording(["dropout=standard", "dropout.p=0.5"], tmp_path / "standard")
    assert none_init.keys() == std_init.keys()
    assert all(torch.equal(none_init[k], std_init[k]) for k in none_init)
    assert len(none_batches) == len(std_batches) == 3
    for a, b in zip(none_batches, std_batches):  # every epoch, not only the first
        assert len(a) == len(b) == 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(none_batches[0][0], none_batches[1][0])  # and the order changes between epochs
    _, other_seed = fit_recording(["dropout=none", "seed=1"], tmp_path / "seed1")
    assert not torch.equal(none_batches[0][0], other_seed[0][0])


def test_none_and_a_method_that_draws_but_changes_nothing_train_identically(tmp_path):
    target = f"{DrawsAndKeeps.__module__}.{DrawsAndKeeps.__qualname__}"
    none = train(make_cfg([*THREE, "dropout=none"], tmp_path / "none"))
    draws = train(make_cfg([*THREE, "dropout=none", f"dropout._target_={target}"], tmp_path / "draws"))
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss"):
        assert draws[key] == none[key], key


def class_counts(y: Tensor) -> Tensor:
    return torch.bincount(y, minlength=10)


def test_each_seed_draws_its_own_stratified_subsets_shared_by_every_method(tmp_path):
    subset = "dataset.subset={train: 200, val: 100, test: null}"
    dm = {}
    for name, overrides in {"s0": ["seed=0"], "s0_standard": ["seed=0", "dropout=standard"], "s1": ["seed=1"]}.items():
        dm[name] = instantiate(make_cfg([subset, *overrides], tmp_path / name).dataset)
        dm[name].setup()
    for split, n in (("train", 200), ("val", 100)):
        x0, y0 = dm["s0"]._uint8[split]
        assert (
            len(y0) == n and (class_counts(y0) - n / 10).abs().max() <= 3
        )  # stratified: MNIST's class shares are 9-11 %
        assert torch.equal(x0, dm["s0_standard"]._uint8[split][0])
        assert not torch.equal(x0, dm["s1"]._uint8[split][0])
    assert len(dm["s0"]._uint8["test"][1]) == 10_000 and torch.equal(
        dm["s0"]._uint8["test"][1].sort().values, dm["s1"]._uint8["test"][1].sort().values
    )
