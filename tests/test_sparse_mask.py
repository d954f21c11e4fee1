"""sparse_mask: hard-concrete L0 gates (docs/methods/sparse_mask.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dropout_lab.config import attach
from dropout_lab.dropout.sites import Site
from dropout_lab.models.lenet import LeNet5
from model_nets import Net, _attach, smoke
from tolerance import binomial_tol


def test_sparse_mask_gates_in_unit_interval_and_initial_drop_rate():
    torch.manual_seed(0)
    (m,) = _attach(Net(), _target_="dropout_lab.dropout.sparse_mask.SparseMask", name="sparse_mask", p=0.3)
    x = torch.rand(4000, 8) + 0.5
    y = m.train()(x)
    z = y / x
    assert z.min() >= 0 and z.max() <= 1 + 1e-6
    n = z.numel()
    assert abs((y == 0).float().mean().item() - 0.3) <= binomial_tol(0.3, n)
    assert abs(m.stats()["drop_fraction"] - 0.3) <= binomial_tol(0.3, n)
    assert torch.allclose(m.prob_open(), torch.full((8,), 0.7))
    # eval: deterministic gate, the same on every call, no 1/(1-p) rescaling
    m.eval()
    assert torch.equal(m(x), m(x))
    gates = m.eval_gates()
    assert torch.allclose(m(x), x * gates) and gates.min() >= 0 and gates.max() <= 1


def test_sparse_mask_conv_gate_per_channel_and_group_size():
    model = LeNet5()
    methods = attach(
        model,
        {
            "_target_": "dropout_lab.dropout.sparse_mask.SparseMask",
            "_partial_": True,
            "name": "sparse_mask",
            "p": 0.5,
            "sites": "all",
        },
    )
    assert [m.group for m in methods] == [16 * 25, 120 * 25, 84, 10]  # weights of the next layer per unit/channel
    conv2 = methods[1].train()
    y = conv2(torch.ones(5, 16, 4, 4))
    assert (y.flatten(2).std(2) == 0).all()  # one gate per (sample, channel)


def test_l0_penalty_drives_useless_gates_to_zero():
    """Target depends on units 0 and 1 only; a strong L0 penalty closes the other six gates exactly."""
    torch.manual_seed(0)
    site = Site("fc", 8, next="head")
    model = nn.ModuleDict({"site": site, "head": nn.Linear(8, 1)})
    (m,) = attach(
        model,
        {
            "_target_": "dropout_lab.dropout.sparse_mask.SparseMask",
            "_partial_": True,
            "name": "sparse_mask",
            "p": 0.5,
            "lam": 20.0,
            "sites": "fc",
        },
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(256, 8)
    target = x[:, :1] * 2.0 - x[:, 1:2]
    for _ in range(250):
        opt.zero_grad()
        loss = (model["head"](m.train()(x)) - target).pow(2).mean() + m.extra_loss(dataset_size=256)
        loss.backward()
        opt.step()
        m.log_alpha.data.clamp_(math.log(1e-2), math.log(1e2))
    gates = m.eval_gates()
    assert (gates[2:] == 0).all(), gates
    assert (gates[:2] > 0.5).all(), gates
    assert m.stats()["gate_zero_fraction"] == 0.75


@pytest.mark.slow
def test_smoke_training(tmp_path):
    smoke("sparse_mask", ["dropout.lam=0.01"], tmp_path)  # its penalty scales with 1/N, N = 512 here


def test_sparse_mask_records_gate_variance_as_p_eq_and_zeros_at_p_0():
    """Gates are multiplicative masks without rescaling: the recorded p_eq is V / (1 + V) with
    V = Var(z) / E[z]^2 (the equivalent Bernoulli rate of the gates), beside the zero fraction."""
    torch.manual_seed(0)
    (m,) = _attach(Net(), _target_="dropout_lab.dropout.sparse_mask.SparseMask", name="sparse_mask", p=0.3)
    x = torch.ones(4000, 8)
    z = m.train()(x)  # x = 1: the output is the gate sample
    stats = m.stats()
    assert stats["drop_fraction"] == pytest.approx(float((z == 0).float().mean()))
    assert stats["p_eq"] == pytest.approx(float(1 - z.mean() ** 2 / z.square().mean()), rel=1e-5)
    assert stats["p_eq"] > stats["drop_fraction"]  # gates in (0, 1) add variance beyond the zeros
    (m0,) = _attach(Net(), _target_="dropout_lab.dropout.sparse_mask.SparseMask", name="sparse_mask", p=0.0)
    assert m0.train()(x) is x and m0.eval()(x) is x and m0.extra_loss(100) is None  # p = 0: no gates
    assert m0.stats()["drop_fraction"] == 0.0 and int(m0.recorded) == 1
