"""Model-level dropout methods: sparse_mask (hard-concrete L0 gates), shapley (Neuron Shapley scores),
lrp (LRP-guided top-p drop). Small constructed networks where the answer is known, plus a smoke run each."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import SMOKE, make_cfg
from dropout_lab.dropout.lrp import LRPDropout, site_relevance
from dropout_lab.dropout.shapley import ShapleyDropout, tmc_shapley
from dropout_lab.config import attach
from dropout_lab.dropout.sites import Site
from dropout_lab.dropout.sparse_mask import SparseMask
from dropout_lab.models.lenet import LeNet5
from tolerance import binomial_tol


class Net(nn.Module):
    """Linear(6, 8) - BN - ReLU - site (8 units) - Linear(8, 3)."""

    def __init__(self, bn: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8, bias=bias)
        self.bn = nn.BatchNorm1d(8) if bn else nn.Identity()
        self.drop = Site("fc", 8, prev="fc1", next="fc2")
        self.fc2 = nn.Linear(8, 3, bias=bias)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def _attach(model, **node):
    return attach(model, {"sites": "fc", "_partial_": True, **node})


# --------------------------------------------------------------------------------------- sparse_mask
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
    methods = attach(model, {"_target_": "dropout_lab.dropout.sparse_mask.SparseMask", "_partial_": True, "name": "sparse_mask", "p": 0.5, "sites": "all"})
    assert [m.group for m in methods] == [16 * 25, 120 * 25, 84, 10]  # weights of the next layer per unit/channel
    conv2 = methods[1].train()
    y = conv2(torch.ones(5, 16, 4, 4))
    assert (y.flatten(2).std(2) == 0).all()  # one gate per (sample, channel)


def test_l0_penalty_drives_useless_gates_to_zero():
    """Target depends on units 0 and 1 only; a strong L0 penalty closes the other six gates exactly."""
    torch.manual_seed(0)
    site = Site("fc", 8, next="head")
    model = nn.ModuleDict({"site": site, "head": nn.Linear(8, 1)})
    (m,) = attach(model, {"_target_": "dropout_lab.dropout.sparse_mask.SparseMask", "_partial_": True, "name": "l0", "p": 0.5, "lam": 20.0, "sites": "fc"})
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


# --------------------------------------------------------------------------------------- lrp
def test_lrp_relevance_conserved_layer_to_layer():
    """Bias-free LeNet5, eps ~ 0: the relevance at every site sums to the target logits (Bach et al. 2015, eq. 2)."""
    torch.manual_seed(0)
    model = LeNet5()
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            nn.init.zeros_(mod.bias)
    methods = attach(model, {"_target_": "dropout_lab.dropout.lrp.LRPDropout", "_partial_": True, "name": "lrp", "p": 0.5, "sites": "all"})
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    total = model.eval()(x).gather(1, y.view(-1, 1)).sum()
    rel = site_relevance(model, methods, x, y, eps=1e-9)
    assert [r.shape[0] for r in rel] == [6, 16, 120, 84]
    for r in rel:
        assert torch.allclose(r.sum(), total, rtol=1e-4), (r.sum(), total)


def test_lrp_epsilon_rule_matches_explicit_formula():
    torch.manual_seed(0)
    model = Net()
    (m,) = _attach(model, _target_="dropout_lab.dropout.lrp.LRPDropout", name="lrp", p=0.25)
    x, y, eps = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1]), 0.1
    rel = site_relevance(model, [m], x, y, eps)[0]
    a = torch.relu(model.fc1(x))
    z = model.fc2(a)
    out = torch.zeros_like(z).scatter(1, y.view(-1, 1), z.gather(1, y.view(-1, 1)))  # R at the logits
    s = out / (z + eps * torch.where(z >= 0, 1.0, -1.0))
    expected = (a * (s @ model.fc2.weight)).sum(0)  # R_i = sum_j a_i w_ji R_j / (z_j + eps sign z_j)
    assert torch.allclose(rel, expected, atol=1e-5)


def test_lrp_drops_top_p_by_absolute_relevance_and_eval_identity():
    model = Net()
    (m,) = _attach(model, _target_="dropout_lab.dropout.lrp.LRPDropout", name="lrp", p=0.25)
    m.set_mask(torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 1.0, 0.5]))
    assert m.mask.tolist() == [1, 0, 1, 0, 1, 1, 1, 1]
    x = torch.rand(3, 8)
    assert torch.allclose(m.train()(x), x * m.mask * 8 / 6)
    assert m.stats()["drop_fraction"] == pytest.approx(0.25)
    assert torch.equal(m.eval()(x), x)


def _grads_and_bn_unchanged(model: nn.Module, run) -> None:
    model.train()
    model(torch.randn(32, 6)).sum().backward()  # BN stats moved, grads present
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    bn = {k: v.clone() for k, v in model.bn.state_dict().items()}
    run()
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert all(torch.equal(v, bn[k]) for k, v in model.bn.state_dict().items())
    assert model.training and model.drop.method.training


def test_lrp_pass_leaves_batchnorm_stats_and_grads_unchanged():
    model = Net(bn=True)
    methods = _attach(model, _target_="dropout_lab.dropout.lrp.LRPDropout", name="lrp", p=0.25)
    _grads_and_bn_unchanged(model, lambda: site_relevance(model, methods, torch.randn(7, 6), torch.zeros(7, dtype=torch.long), 1e-2))


# --------------------------------------------------------------------------------------- shapley
def test_tmc_shapley_exact_on_additive_game():
    w = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.25])
    phi, coalitions, calls = tmc_shapley(lambda masks: masks @ w, 5, permutations=3, truncation=0.0, v_random=0.0, chunk=2)
    assert torch.allclose(phi, w)
    assert (coalitions, calls) == (1 + 3 * 5, 1 + 3 * 3)


def test_tmc_shapley_truncates_once_value_reaches_random_level():
    """v(S) = 1 if player 0 is in S else 0 (random level 0): phi = e_0, and no coalition is evaluated
    after player 0's removal (chunk of 1)."""
    phi, coalitions, _ = tmc_shapley(lambda masks: masks[:, 0], 6, permutations=4, truncation=0.2, v_random=0.0, chunk=1,
                                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(phi, torch.tensor([1.0, 0, 0, 0, 0, 0]))
    assert coalitions < 1 + 4 * 6


def _shapley(model, **kw):
    (m,) = _attach(model, _target_="dropout_lab.dropout.shapley.ShapleyDropout", name="shapley", p=0.3,
                   initial_rate=0.1, max_rate=0.5, **kw)
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
    _grads_and_bn_unchanged(model, lambda: m.shapley_values(model, torch.randn(16, 6), torch.zeros(16, dtype=torch.long), 3))


# --------------------------------------------------------------------------------------- smoke
@pytest.mark.slow
@pytest.mark.parametrize("key, extra", [("sparse_mask", ["dropout.lam=0.01"]), ("shapley", ["dropout.update_every=3", "dropout.permutations=2"]), ("lrp", [])])
def test_smoke_training(key, extra, tmp_path: Path):
    """Real MNIST subset (N = 512: sparse_mask gets lam = 0.01, as its penalty scales with 1/N)."""
    from dropout_lab.train import train

    cfg = make_cfg(SMOKE + [f"dropout={key}", *extra], tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/loss"])
    assert 0.0 < metrics["dropout/drop_fraction"] < 1.0
    if key == "shapley":
        assert metrics["dropout/drop_fc1/shapley_seconds"] > 0
        assert 0.1 <= metrics["dropout/drop_fc1/rate_min"] <= metrics["dropout/drop_fc1/rate_max"] <= 0.5
    if key == "lrp":  # 7 of 8 steps (none before the first relevance pass) drop exactly p * 120 units
        assert metrics["dropout/drop_fc1/drop_fraction"] == pytest.approx(cfg.dropout.p * 7 / 8)
