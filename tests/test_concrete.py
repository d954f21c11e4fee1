"""Concrete dropout (Gal et al. 2017): the relaxed mask, the learnable p and its regulariser."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from dropout_lab.dropout.concrete import ConcreteDropout
from dropout_lab.module import Classifier
from layer_helpers import P, lenet_with, spec
from tolerance import binomial_tol


def test_concrete_mask_and_learnable_p():
    """p = sigmoid(p_logit) is a parameter reached by the data gradient; the hard drop rate of the
    relaxed mask (z > 1/2, i.e. keep factor below 1/2 / (1 - p)) is p."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 8)
    method = ConcreteDropout.spec.build(spec(next=linear), p=P).train()
    assert isinstance(method.p_logit, nn.Parameter) and method.drop_prob().item() == pytest.approx(P)
    x = torch.ones(512, 64)
    y = method(x)
    (y**2).sum().backward()
    assert method.p_logit.grad is not None and method.p_logit.grad != 0
    keep = y.detach() * (1 - P)  # = 1 - z
    hard = (keep < 0.5).float().mean().item()
    assert abs(hard - P) < binomial_tol(P, x.numel())
    assert method.stats()["drop_fraction"] == pytest.approx(1 - keep.mean().item(), abs=1e-5)
    assert "p_learned" in method.stats()
    conv = ConcreteDropout.spec.build(spec("conv", 8, next=nn.Conv2d(8, 4, 3)), p=P).train()
    ym = conv(torch.ones(4, 8, 5, 5))
    assert torch.all(ym == ym[:, :, :1, :1])  # spatial variant: one mask value per channel


def test_concrete_regulariser_formula():
    torch.manual_seed(0)
    linear = nn.Linear(64, 8)
    method = ConcreteDropout.spec.build(spec(next=linear), p=P, length_scale=0.5)
    n = 1000
    expected = (
        0.25 / 2 * linear.weight.detach().square().sum() / (1 - P) + 64 * (P * math.log(P) + (1 - P) * math.log(1 - P))
    ) / n
    assert method.extra_loss(n).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(("weight_scale", "direction"), [(0.0, +1), (10.0, -1)])
def test_concrete_p_moves_under_regulariser(weight_scale, direction):
    """Toy problem, regulariser only: with near-zero weights the entropy term -K H(p) dominates and
    pushes p up towards 1/2; with large weights l^2/2 ||W||^2/(1 - p) dominates and pushes p down."""
    linear = nn.Linear(64, 8)
    nn.init.constant_(linear.weight, weight_scale)
    method = ConcreteDropout.spec.build(spec(next=linear), p=0.2, length_scale=1.0)
    opt = torch.optim.SGD([method.p_logit], lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        method.extra_loss(100).backward()
        opt.step()
    moved = method.drop_prob().item() - 0.2
    assert moved * direction > 0.01
    assert method.drop_prob().item() < 0.5 + 1e-3  # the entropy term alone cannot push past 1/2


def test_concrete_regulariser_is_in_the_training_loss(cfg_factory):
    torch.manual_seed(0)
    model, methods = lenet_with("concrete")
    module = Classifier(model, instantiate(cfg_factory([]).optimizer), None, 10, dataset_size=500)
    assert len(module.regularised) == 2
    batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    torch.manual_seed(1)
    ce = F.cross_entropy(model(batch[0]), batch[1])
    reg = sum(m.extra_loss(500) for m in methods)
    assert loss.item() == pytest.approx((ce + reg).item(), rel=1e-6) and reg.item() != 0
    loss.backward()
    assert all(m.p_logit.grad is not None for m in methods)
