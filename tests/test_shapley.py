"""shapley: truncated Monte-Carlo Neuron Shapley values and their rates (docs/methods/shapley.md)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import SMOKE, run_cli
from dropout_lab.dropout.base import DropoutContext
from dropout_lab.dropout.shapley import tmc_shapley
from dropout_lab.dropout.sites import Site
from model_nets import Net, _attach, _grads_and_bn_unchanged, smoke


def test_tmc_shapley_exact_on_additive_game():
    w = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.25])
    phi, coalitions, calls = tmc_shapley(
        lambda masks: masks @ w, 5, permutations=3, truncation=0.0, v_random=0.0, chunk=2
    )
    assert torch.allclose(phi, w)
    assert (coalitions, calls) == (1 + 3 * 5, 1 + 3 * 3)


def test_tmc_shapley_truncates_once_value_reaches_random_level():
    """v(S) = 1 if player 0 is in S else 0 (random level 0): phi = e_0, and no coalition is evaluated
    after player 0's removal (chunk of 1)."""
    phi, coalitions, _ = tmc_shapley(
        lambda masks: masks[:, 0],
        6,
        permutations=4,
        truncation=0.2,
        v_random=0.0,
        chunk=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(phi, torch.tensor([1.0, 0, 0, 0, 0, 0]))
    assert coalitions < 1 + 4 * 6


def _shapley(model, **kw):
    (m,) = _attach(
        model,
        _target_="dropout_lab.dropout.shapley.ShapleyDropout",
        name="shapley",
        p=0.3,
        initial_rate=0.1,
        max_rate=0.5,
        **kw,
    )
    return m


def test_unit_with_zero_outgoing_weights_has_zero_shapley_value():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc2.weight[:, 3] = 0.0
    m = _shapley(model, permutations=5, truncation=0.0)
    phi = m.shapley_values(model, torch.randn(64, 6), torch.randint(0, 3, (64,)), num_classes=3)
    assert phi[3] == 0.0
    assert (phi.abs() > 0).sum() >= 6  # the others matter (neg-loss value, generic weights)
    assert m.stats()["shapley_coalitions"] == 1 + 5 * 8


def test_shapley_rates_within_bounds_and_eval_identity():
    torch.manual_seed(0)
    model = Net()
    m = _shapley(model, permutations=2)
    m.update_scores(m.shapley_values(model, torch.randn(32, 6), torch.randint(0, 3, (32,)), num_classes=3))
    assert m.rates.min() >= 0.1 - 1e-6 and m.rates.max() <= 0.5 + 1e-6
    assert m.rates.mean().item() == pytest.approx(0.3, abs=1e-6)
    x = torch.rand(4, 8)
    assert torch.equal(m.eval()(x), x)


def test_shapley_pass_leaves_batchnorm_stats_and_grads_unchanged():
    model = Net(bn=True)
    m = _shapley(model, permutations=2)
    _grads_and_bn_unchanged(
        model, lambda: m.shapley_values(model, torch.randn(16, 6), torch.zeros(16, dtype=torch.long), 3)
    )


@pytest.mark.slow
def test_smoke_training(tmp_path):
    metrics, _ = smoke("shapley", ["dropout.update_every=3", "dropout.permutations=2"], tmp_path)
    assert metrics["dropout/drop_fc1/shapley_seconds"] > 0
    assert 0.1 <= metrics["dropout/drop_fc1/rate_min"] <= metrics["dropout/drop_fc1/rate_max"] <= 0.5


class StubDataModule:
    """The datamodule interface shapley may use (name, num_classes, held_out_batch): raw 28 px images
    in ``splits`` (which shapley must not read) and 32 px images out of ``held_out_batch``."""

    num_classes = 3

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.splits = {"val": (torch.rand(200, 1, 28, 28, generator=g), torch.randint(0, 3, (200,), generator=g))}
        self.calls = []

    def held_out_batch(self, n, split="val"):
        self.calls.append((n, split))
        x, y = self.splits[split]
        return nn.functional.interpolate(x[:n], size=32, mode="bilinear"), y[:n]


def test_heldout_batch_comes_from_the_datamodule_interface():
    """Defect: shapley read the datamodule's raw ``splits`` and so bypassed the resize (and crashed)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(32 * 32, 8), nn.ReLU(), Site("fc", 8, prev="1", next="3"), nn.Linear(8, 3)
    )
    m = _shapley(model, permutations=2, heldout=16, update_every=1)
    dm = StubDataModule()
    module = SimpleNamespace(model=model, trainer=SimpleNamespace(datamodule=dm))
    ctx = DropoutContext(global_step=1, epoch=0, max_steps=10, dataset_size=100, module=module)
    m.on_train_batch_end(ctx)
    assert dm.calls == [(16, "val")] and bool(m.scored)
    with pytest.raises(ValueError, match="dropout=shapley"):
        m.on_train_batch_end(
            DropoutContext(1, 0, 10, 100, SimpleNamespace(model=model, trainer=SimpleNamespace(datamodule=None)))
        )


@pytest.mark.slow
def test_cli_training_with_resized_inputs(tmp_path):
    """``train.py dropout=shapley dataset.image_size=32`` (source 004's 32 px setting) trains and tests."""
    proc = run_cli(
        [
            *SMOKE,
            "dropout=shapley",
            "dataset.image_size=32",
            "dropout.update_every=3",
            "dropout.permutations=2",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
